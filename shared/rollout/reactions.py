"""The rollout reactions: a model registration starts (or supersedes) a rollout; the reconciler advances each.

The decisions are shared/rollout/machine.py's and the side effects shared/rollout/flow.py's; this module turns
a trigger's payload into calls of them and one Outcome, so functions/rollout.py stays a thin trigger module
that imports this only when a rollout event or tick actually arrives (cold start).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shared.core import events
from shared.core import trace as tracing
from shared.core.control import read_control
from shared.core.errors import PermanentError, TransientError
from shared.core.ledger import refs_from
from shared.core.platform import APPROVAL_TAG
from shared.core.reaction import Outcome
from shared.rollout.discovery import discover
from shared.rollout.flow import PREFIX, drive, register, roll_back, rollout_key, summary
from shared.rollout.machine import RollBack, Rollout, Wait, read

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.platform import ModelVersion

__all__ = ["OutsideModels", "ReadyModel", "handle_model_registered", "handle_reconcile"]

log = logging.getLogger("reflex.rollout")

class ReadyModel(Protocol):
    """An outside model that passed its evaluation (`shared.registration.records.ReadyToRoll`); `key`: its record,
    deleted once the rollout is recorded."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def key(self) -> str: ...


class OutsideModels(Protocol):
    """The policy for models registered outside Reflex, as the rollout needs it: shared/registration/outside_models.py,
    handed in by functions/rollout.py (reactions do not import each other)."""

    def admit(self, deps: Deps, model: ModelVersion, endpoint: str, event_id: str) -> Outcome | None: ...

    def take_ready(self, deps: Deps) -> Sequence[ReadyModel]: ...


def handle_model_registered(raw: Any, deps: Deps, outside: OutsideModels) -> Outcome:
    event = events.parse(raw)
    if not isinstance(event, events.ModelRegistered):  # Azure ML's, or Reflex's own (events.ReflexModelRegistered)
        return Outcome("skipped", f"not a model registration: {event.type}")
    name, version = event.model_name, event.model_version
    endpoint = deps.settings.endpoint_for(name)
    if endpoint is None:
        return Outcome("skipped", f"model {name} has no endpoint configured (REFLEX_ENDPOINTS)", {"model": name})
    model = deps.platform.get_model(name, version)
    if model is None:
        raise PermanentError(f"model {name}:{version} is not registered on the platform")
    if model.type != "mlflow_model":
        return Outcome("skipped", f"model {name}:{version} is a {model.type}, not an MLflow model: "
                                  "Reflex deploys MLflow models without scoring code", {"model": model.ref})
    held = outside.admit(deps, model, endpoint, event.id)  # a person's model: evaluated before rollout
    if held is not None:
        return held
    if read_control(deps).dry_run:
        return Outcome("dry-run", f"would roll out {model.ref} on {endpoint}", {"endpoint": endpoint})
    retry_of = event.retry_of if isinstance(event, events.ReflexModelRegistered) else ""
    verdict = register(deps, endpoint, name, version, event.id, retry_of=retry_of)
    if verdict == "duplicate":
        return Outcome("duplicate", f"{model.ref} is already being or has been rolled out on {endpoint}")
    if verdict == "older":
        return Outcome("skipped", f"{model.ref} is older than the version already rolled out on {endpoint}")
    # Event Grid waits 30 s for this to return (#14.7): the rollout is recorded (CAS) and its first step, which
    # reads the endpoint and quota and begins a deployment, is the reconciler's on its next tick.
    record = deps.state.get(rollout_key(endpoint))
    r = Rollout.from_dict(record.value) if record else None
    details = summary(r) if r else {}
    if verdict == "start" and model.tags.get(APPROVAL_TAG) == "pending":   # what the first step would wait for
        return Outcome("skipped", f"{model.ref} is awaiting approval; the reconciler starts it once "
                                  "reflex.approval=approved", details)
    what = "superseded the running rollout; " if verdict == "supersede" else ""
    return Outcome("acted", f"{what}rollout of {model.ref} on {endpoint}: {r.status if r else '?'} (the reconciler "
                            "takes its steps)", details)


def _advance(deps: Deps, key: str, dry_run: bool, listed: Any) -> dict[str, Any]:
    """One rollout's step, as a span of its own chain's trace (the listed record's `trace`; the tick's span links
    to it, shared/core/trace.py `chain_step`). A finished rollout with nothing queued takes no step and gets no
    span: its trace ended with it, and ticks must not keep adding to it."""
    found = read(listed) if isinstance(listed, dict) else None
    if found is not None and found.terminal and not found.queued:
        return _step(deps, key, dry_run)
    with tracing.chain_step("rollout.step", found.trace if found else "", record=key) as span:
        result = _step(deps, key, dry_run)
        tracing.annotate(span, str(result.get("status", "error" if "error" in result else "")),
                         str(result.get("waiting") or result.get("error") or result.get("reason") or ""),
                         {k: [str(result[k])] for k in ("rollout", "model", "deployment", "endpoint") if result.get(k)},
                         {"action": result["action"]} if result.get("action") else None)
        return result


def _step(deps: Deps, key: str, dry_run: bool) -> dict[str, Any]:
    """One rollout's step, isolated: its failure is logged and recorded, never blocks the others."""
    try:
        steps = drive(deps, key, dry_run=dry_run)
    except TransientError as exc:
        log.warning("rollout %s: transient failure, retried next tick: %s", key, exc)
        return {"error": str(exc)}
    except Exception as exc:
        log.exception("rollout %s: step failed; rolling it back", key)
        return _force_rollback(deps, key, f"{type(exc).__name__}: {exc}")
    if not steps:
        return {}
    last = steps[-1]
    result = {"action": last.action.name if last.executed else f"would {last.action.name}", **summary(last.rollout)}
    if isinstance(last.action, Wait):  # what it waits for, in the ledger line and the outcome (explain, status)
        result["waiting"] = last.action.reason
    return result


def _force_rollback(deps: Deps, key: str, reason: str) -> dict[str, Any]:
    try:
        record = deps.state.get(key)
        if record is None:
            return {"error": reason}
        r = Rollout.from_dict(record.value)
        if r.terminal:
            return {"error": reason}
        after = roll_back(deps, record, r, RollBack(f"step failed: {reason}", {"error": reason}), deps.clock())
        return {"action": "RollBack", **summary(after)}
    except Exception:
        log.exception("rollout %s: could not roll back after a failed step; it stays for the next tick", key)
        return {"error": reason}


def _start_evaluated(deps: Deps, outside: OutsideModels) -> None:
    """Outside models that passed their evaluation since the last tick: their rollout starts now."""
    for ready in outside.take_ready(deps):
        try:
            register(deps, ready.endpoint, ready.model, ready.version, ready.event_id)
        except Exception:
            log.exception("rollout of %s:%s after its evaluation: not started; retried next tick", ready.model,
                          ready.version)
            continue
        deps.state.delete(ready.key)


def _discovered(raw: Any, deps: Deps, outside: OutsideModels) -> Outcome:
    """A version no event announced, through the ModelRegistered reaction, in a span of the chain its model's tag
    names (shared/rollout/discovery.py puts it in the event): the rollout it records continues that trace."""
    with tracing.chain_step("rollout.model_registered", events.trace_carrier(raw), discovered="true") as span:
        outcome = handle_model_registered(raw, deps, outside)
        tracing.annotate(span, outcome.status, outcome.reason, refs_from(outcome.details, raw))
        return outcome


def handle_reconcile(payload: Any, deps: Deps, outside: OutsideModels) -> Outcome:
    dry_run = read_control(deps).dry_run
    if not dry_run:
        _start_evaluated(deps, outside)
    results = {record.key: _advance(deps, record.key, dry_run, record.value)
               for record in deps.state.records(PREFIX)}
    moved = {k: v for k, v in results.items() if v}
    # a served model's newest version that no event announced goes through handle_model_registered (#14.8)
    found = discover(deps, functools.partial(_discovered, outside=outside))
    if not dry_run:  # a rollout discovery just recorded takes its first step in this same tick
        for v in found.values():
            key = rollout_key(v["endpoint"]) if v.get("outcome") == "acted" and v.get("endpoint") else ""
            if key and key not in moved:
                recorded = deps.state.get(key)
                stepped = _advance(deps, key, dry_run, recorded.value if recorded else None)
                if stepped:
                    moved[key] = stepped
    # one lineage group per rollout (shared/core/ledger.py `links`): endpoints advanced together stay unrelated
    details = {**moved, "links": [v for v in [*moved.values(), *found.values()] if v.get("rollout")]}
    if found:
        details["discovered"] = found
    news = f"; found {len(found)} unannounced registration(s)" if found else ""
    if dry_run:
        return Outcome("dry-run", f"{len(moved)} rollout(s) would advance{news}", details)
    started = [m for m, v in found.items() if v.get("outcome") == "acted"]
    if not moved and not started:
        return Outcome("skipped", f"no unfinished rollout{news}", details if found else {})
    acted = [k for k, v in moved.items() if v.get("action") not in (None, "Wait")]
    if not acted and not started:
        waits = "; ".join(f"{v.get('endpoint', k)}: {v['waiting']}" for k, v in moved.items() if v.get("waiting"))
        return Outcome("skipped", f"{len(moved)} rollout(s) waiting" + (f": {waits}" if waits else "") + news,
                       details)
    return Outcome("acted", f"advanced {len(acted)} of {len(moved)} unfinished rollout(s){news}", details)
