"""The rollout's health check: a rollout record still open when the reconciler should have ended it.

Why the rollout owns it: only the rollout knows when each of its states should have ended, and only it can undo
one. The health timer (shared/monitoring/health.py) gathers this check's findings with its own (the monitoring
function hands it this module: functions/monitoring.py; reactions do not import each other) and publishes each
new one once as `Reflex.HealthCheckFailed`.

`rollout-overdue`: a rollout record (`rollouts/<endpoint>`, read as `Rollout`) still open past its `deadline` (or
`started_at`/`created_at` + REFLEX_ROLLOUT_DEADLINE_SECONDS when it has none), or, while it awaits approval
(`Rollout.awaiting_approval`), past `created_at` + its plan's approval timeout, or, once promoted, past the end of
its plan's retention, each plus REFLEX_HEALTH_GRACE_SECONDS: the reconciler's rollback at the deadline comes
first. With REFLEX_HEALTH_REMEDIATE=true a rollout that may still hold traffic is rolled back through the rollout
machinery (`flow.operator_rollback`, as the CLI's `rollback` does: previous split restored in one update, the
record's CAS guarding the race with the reconciler), never by moving traffic around it. A record that is not a
rollout (`Rollout.from_dict` refuses it) is logged and left to an operator: the reconciler fails on it too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from shared.core.findings import Finding
from shared.rollout.flow import PREFIX, operator_rollback
from shared.rollout.machine import ACTIVE, TERMINAL, Rollout, read

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["findings", "kinds", "remediate", "rollout_due", "rollout_finding"]

log = logging.getLogger("reflex.health")

kinds = frozenset({"rollout-overdue"})


def _read(key: str, value: Mapping[str, Any]) -> Rollout | None:
    r = read(value)
    if r is None:
        log.warning("health: %s is not a readable rollout record", key)
    return r


def rollout_due(value: Mapping[str, Any], default_seconds: int) -> float | None:
    """When the reconciler should have ended this open rollout by itself (epoch), or None when unreadable."""
    r = _read("rollout", value)
    return None if r is None else _due(r, default_seconds)


def _due(r: Rollout, default_seconds: int) -> float:
    due = r.deadline or (r.started_at or r.created_at) + default_seconds
    if r.status == "pending" and r.awaiting_approval:
        return r.created_at + r.plan.approval_timeout_seconds
    if r.status in ("promoted", "retiring"):
        return max(due, r.phase_started_at + r.plan.retain_seconds)
    return due


def rollout_finding(key: str, value: Mapping[str, Any], now: float, default_seconds: int,
                    grace_seconds: float = 0.0) -> Finding | None:
    """A rollout still open `grace_seconds` after the reconciler should have ended it."""
    r = _read(key, value)
    if r is None or r.status in TERMINAL:
        return None
    deadline = _due(r, default_seconds)
    if now < deadline + grace_seconds:
        return None
    endpoint = r.endpoint or key.rsplit("/", 1)[-1]
    evidence = {"record": key, "endpoint": endpoint, "model": r.ref, "status": r.status, "phase": r.phase,
                "deadline": deadline, "overdue_seconds": round(now - deadline), "reason": r.reason}
    return Finding("rollout-overdue", f"rollout/{endpoint}",
                   f"rollout of {r.ref} on {endpoint} is still {r.status} {round(now - deadline)} s past its deadline",
                   evidence, {"model": r.ref, "status": r.status, "phase": r.phase, "deadline": deadline})


def findings(deps: Deps, now: float) -> Iterable[Finding]:
    for record in deps.state.records(PREFIX):
        if record.key.count("/") != 1:  # rollouts/<endpoint> only; archives and sub-records are not live
            continue
        found = rollout_finding(record.key, record.value, now, deps.settings.rollout_deadline_seconds,
                                deps.settings.health_grace_seconds)
        if found:
            yield found


def remediate(deps: Deps, finding: Finding) -> str | None:
    """Roll the overdue rollout back through the rollout machinery (as `python -m reflex rollback` does);
    what happened, or None when the rollout is no longer one a rollback helps (it may hold no traffic)."""
    key = str(finding.evidence["record"])
    record = deps.state.get(key)
    r = _read(key, record.value) if record is not None else None
    if r is None or r.status not in ACTIVE:
        return None
    status, reason = operator_rollback(deps, r.endpoint, by="health", why=finding.summary)
    return None if status in ("missing", "finished") else f"{status}: {reason}"
