"""Health check: look for failures Azure ML never announces, and report each one once.

Why a timer: Azure ML emits no event when an endpoint's traffic goes wrong, a rollout stalls or a job dies
without its RunStatusChanged reaching us. The health timer observes and publishes `Reflex.HealthCheckFailed`
with the evidence, for three kinds of finding:

* `traffic`: a configured online endpoint whose live traffic does not sum to 0 or 100, or sends traffic to a
  deployment that is missing or not Succeeded (the same `traffic_problems` rules every platform enforces);
* `rollout-overdue`: a rollout record (`rollouts/<endpoint>`) still open when the rollout reconciler should
  have ended it: past its `deadline` (or `started_at`/`created_at` + REFLEX_ROLLOUT_DEADLINE_SECONDS when it
  has none), or, while it awaits approval, past `created_at` + its plan's approval timeout, or, once promoted,
  past the end of its plan's retention. With REFLEX_HEALTH_REMEDIATE=true a rollout that may still hold
  traffic is rolled back through the rollout machinery (`rollout_flow.operator_rollback`, as the CLI's
  `rollback` does: previous split restored in one update, the rollout record's CAS guarding the race with
  the reconciler), never by moving traffic around it;
* `job-unhandled`: a Reflex training job (arrival or retrain record still `submitted`, or an arrival record
  the sweep closed as `failed`) or batch scoring job (scoring record still `submitted`) that failed, was
  canceled or vanished, and for training jobs with no TrainingFailed published (`claims/training-failed/<job>`).

Too early is as bad as never: Reflex reacts to these failures itself (the run event's TrainingFailed, the
batch tracker's BatchScoringFailed, the reconciler's rollback at the deadline), and a finding for something
about to be handled is noise the operator learns to ignore. So every finding waits REFLEX_HEALTH_GRACE_SECONDS
after the moment Reflex should have handled it: a failed job counts from when health first saw it ended
(remembered in `health/ended/<job>`, as the platform reports no end time, and forgotten once the job is no
longer watched), a vanished job from its submission, a rollout from its deadline. Only what is still
unhandled then is reported.

"Once": a finding's id hashes its kind, resource and evidence *state* (the problems, the rollout status and
step, the job status), never the time; publishing claims `claims/health/<id>` first. The same broken state
seen every tick is published once; if it is repaired and breaks again in another way (a different state), that
is a new finding and is published; the exact same state reappearing after a repair is not re-published.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.batches.record import ArrivalRecord, RetrainRecord, ScoringRecord, StatusRecord
from shared.core.errors import ReflexError
from shared.core.platform import TERMINAL_JOB_STATES, Endpoint, Job, serving_states, traffic_problems
from shared.core.reaction import Outcome
from shared.core.state import key_part
from shared.rollout.plan import Plan

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["Finding", "ROLLOUT_TERMINAL", "check", "job_finding", "rollout_due", "rollout_finding", "traffic_finding"]

log = logging.getLogger("reflex.health")

ROLLOUT_TERMINAL = frozenset({"done", "rolled_back", "failed", "superseded", "completed", "promoted-done",
                              "aborted", "canceled"})
REMEDIABLE = frozenset({"creating", "smoke", "mirroring", "baking"})  # a rollback makes sense (may hold traffic)
FAILED_JOB_STATES = TERMINAL_JOB_STATES - {"Completed"}
AWAITING_APPROVAL = "awaiting approval"  # how the rollout machine's Wait while pending on approval begins


@dataclass(frozen=True)
class Finding:
    kind: str
    resource: str
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)  # what identifies this broken state

    @property
    def id(self) -> str:
        text = json.dumps([self.kind, self.resource, self.state], sort_keys=True, default=str)
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"

    def to_dict(self) -> dict[str, Any]:
        return {"finding": self.id, "kind": self.kind, "resource": self.resource, "summary": self.summary,
                "evidence": dict(self.evidence)}


# ------------------------------------------------------------------------------------ pure decisions


def traffic_finding(endpoint: Endpoint) -> Finding | None:
    """Broken traffic on a live endpoint. A deployment that is Updating or Scaling keeps serving the traffic it
    has (Azure ML does that on every traffic change and autoscale), so that alone is not a finding."""
    states = {d.name: d.state for d in endpoint.deployments}
    problems = traffic_problems(endpoint.traffic, endpoint.mirror, serving_states(states))
    if not problems:
        return None
    return Finding("traffic", f"endpoint/{endpoint.name}", f"endpoint {endpoint.name}: {'; '.join(problems)}",
                   {"traffic": dict(endpoint.traffic), "mirror": dict(endpoint.mirror), "deployments": states,
                    "problems": problems},
                   {"problems": sorted(problems), "traffic": dict(endpoint.traffic), "mirror": dict(endpoint.mirror)})


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _awaiting_approval(value: Mapping[str, Any]) -> bool:
    history = value.get("history") or []
    last = history[-1] if history and isinstance(history[-1], Mapping) else {}
    return last.get("action") == "Wait" and str(last.get("detail", "")).startswith(AWAITING_APPROVAL)


def rollout_due(value: Mapping[str, Any], default_seconds: int) -> float | None:
    """When the reconciler should have ended this open rollout by itself (epoch), or None when unknown."""
    try:  # the plan copied into the record (defaults for fields older records lack)
        plan = Plan.from_dict(value.get("plan") or {})
    except (TypeError, ValueError, AttributeError):
        plan = Plan()
    status = str(value.get("status", ""))
    started = _epoch(value.get("started_at")) or _epoch(value.get("created_at"))
    due = _epoch(value.get("deadline")) or (None if started is None else started + default_seconds)
    if status == "pending" and _awaiting_approval(value):
        created = _epoch(value.get("created_at"))
        if created is not None:
            due = created + plan.approval_timeout_seconds
    elif status in ("promoted", "retiring"):
        promoted = _epoch(value.get("phase_started_at"))
        if promoted is not None:
            due = max(due or 0.0, promoted + plan.retain_seconds)
    return due


def rollout_finding(key: str, value: Mapping[str, Any], now: float, default_seconds: int,
                    grace_seconds: float = 0.0) -> Finding | None:
    """A rollout still open `grace_seconds` after the reconciler should have ended it (read tolerantly: the
    record is the rollout reconciler's)."""
    status = str(value.get("status", ""))
    if status in ROLLOUT_TERMINAL:
        return None
    deadline = rollout_due(value, default_seconds)
    if deadline is None or now < deadline + grace_seconds:
        return None
    endpoint = str(value.get("endpoint") or key.rsplit("/", 1)[-1])
    model = f"{value.get('model', '?')}:{value.get('version', '?')}"
    evidence = {"record": key, "endpoint": endpoint, "model": model, "status": status, "phase": value.get("phase"),
                "deadline": deadline, "overdue_seconds": round(now - deadline), "reason": value.get("reason", "")}
    return Finding("rollout-overdue", f"rollout/{endpoint}",
                   f"rollout of {model} on {endpoint} is still {status} {round(now - deadline)} s past its deadline",
                   evidence, {"model": model, "status": status, "phase": value.get("phase"), "deadline": deadline})


def job_finding(kind: str, record_key: str, job_name: str, job: Job | None, *, age_seconds: float,
                ended_seconds: float, grace_seconds: float) -> Finding | None:
    """A Reflex job that ended badly (or vanished) and is still unhandled `grace_seconds` after Reflex's own
    reaction should have handled it: `ended_seconds` since health first saw it ended, `age_seconds` since it
    was submitted (for a job the platform does not know). A reaction that was recorded is checked before."""
    if job is None:
        if age_seconds < grace_seconds:
            return None
        status, error = "missing", "the platform does not know the job"
    elif job.status in FAILED_JOB_STATES:
        if ended_seconds < grace_seconds:
            return None
        status, error = job.status, job.error
    else:
        return None
    return Finding("job-unhandled", f"job/{job_name}",
                   f"{kind} job {job_name} is {status} but no reaction recorded it",
                   {"job": job_name, "job_kind": kind, "status": status, "error": error, "record": record_key,
                    "url": job.url if job else ""},
                   {"job": job_name, "status": status})


# ------------------------------------------------------------------------------------ observation


def _endpoint_findings(deps: Deps) -> Iterable[Finding]:
    for name in sorted(set(deps.settings.endpoints.values())):
        endpoint = deps.platform.get_endpoint(name)
        if endpoint is not None:
            found = traffic_finding(endpoint)
            if found:
                yield found


def _rollout_findings(deps: Deps, now: float) -> Iterable[Finding]:
    for record in deps.state.records("rollouts/"):
        if record.key.count("/") != 1:  # rollouts/<endpoint> only; archives and sub-records are not live
            continue
        found = rollout_finding(record.key, record.value, now, deps.settings.rollout_deadline_seconds,
                                deps.settings.health_grace_seconds)
        if found:
            yield found


# (kind, record prefix and its type, record statuses in which the job may be unhandled)
_JOB_SOURCES: tuple[tuple[str, str, type[StatusRecord], tuple[str, ...]], ...] = (
    ("training", "arrivals/", ArrivalRecord, ("submitted", "failed")),
    ("training", "retrains/", RetrainRecord, ("submitted",)),
    ("batch-scoring", "scoring/", ScoringRecord, ("submitted",)))


def _ended_seconds(deps: Deps, job: Job | None, now: float) -> float:
    """How long ago health first saw `job` ended badly (0 the first time: remembered in `health/ended/<job>`)."""
    if job is None or job.status not in FAILED_JOB_STATES:
        return 0.0
    key = f"health/ended/{key_part(job.name)}"
    seen = deps.state.get(key)
    if seen is None:
        seen = deps.state.create(key, {"job": job.name, "status": job.status, "seen_at": now}) or deps.state.get(key)
    return now - float((seen.value if seen else {}).get("seen_at", now))


def _job_findings(deps: Deps, now: float) -> Iterable[Finding]:
    grace = deps.settings.health_grace_seconds
    watched: set[str] = set()
    for kind, prefix, record_type, statuses in _JOB_SOURCES:
        for record in deps.state.records(prefix):
            work = record_type.from_dict(record.value)
            job_name = work.job
            if work.status not in statuses or not job_name:
                continue
            if kind == "training" and deps.state.get(f"claims/training-failed/{key_part(job_name)}") is not None:
                continue  # TrainingFailed went out: handled
            job = deps.platform.get_job(job_name)
            watched.add(job_name)
            age = now - float(work.submitted_at or work.changed_at or now)
            found = job_finding(kind, record.key, job_name, job, age_seconds=age,
                                ended_seconds=_ended_seconds(deps, job, now), grace_seconds=grace)
            if found:
                yield found
    _forget_handled(deps, watched)


def _forget_handled(deps: Deps, watched: set[str]) -> None:
    """Drop `health/ended/<job>` for jobs no longer watched (handled, or their record closed): the marks are
    only needed while a failed job waits out its grace, and would otherwise pile up one per failure."""
    for record in deps.state.records("health/ended/"):
        if str(record.value.get("job", "")) not in watched:
            deps.state.delete(record.key, record.etag)


def _remediate(deps: Deps, finding: Finding) -> str | None:
    """Roll the overdue rollout back through the rollout machinery (as `python -m reflex rollback` does);
    what happened, or None when the rollout is no longer one a rollback helps."""
    from shared.rollout.flow import operator_rollback

    record = deps.state.get(str(finding.evidence["record"]))
    if record is None or record.value.get("status") not in REMEDIABLE:
        return None
    status, reason = operator_rollback(deps, str(record.value.get("endpoint", "")), by="health",
                                       why=finding.summary)
    return None if status in ("missing", "finished") else f"{status}: {reason}"


def check(deps: Deps) -> Outcome:
    """Timer: gather every finding, publish the new ones once, remediate overdue rollouts when allowed."""
    from shared.core.control import read_control

    now = deps.clock()
    findings: list[Finding] = []
    errors: list[str] = []
    for source in (_endpoint_findings(deps), _rollout_findings(deps, now), _job_findings(deps, now)):
        try:
            findings.extend(source)
        except ReflexError as exc:  # one unreachable source must not hide the others' findings
            errors.append(str(exc))
            log.warning("health source failed: %s", exc)
    dry_run = read_control(deps).dry_run
    published, remediated, known = [], [], 0
    for finding in findings:
        if dry_run:
            continue
        if not deps.state.claim(f"claims/health/{key_part(finding.id)}", {"finding": finding.to_dict()}):
            known += 1
            continue
        data = finding.to_dict()
        remedy = _remediate(deps, finding) if finding.kind == "rollout-overdue" and deps.settings.health_remediate \
            else None
        if remedy:
            data["remediation"] = f"rollback through the rollout machinery: {remedy}"
            remediated.append(finding.id)
        log.error("health: %s", finding.summary)
        deps.publisher.publish("HealthCheckFailed", finding.resource, data)
        published.append(finding.id)
    details = {"findings": [f.to_dict() for f in findings], "published": published, "already_reported": known,
               "remediated": remediated, "errors": errors}
    if dry_run and findings:
        return Outcome("dry-run", f"{len(findings)} finding(s), none published (dry run)", details)
    if published:
        return Outcome("acted", f"{len(published)} new finding(s) published, {known} already reported", details)
    reason = f"healthy ({known} finding(s) already reported)" if findings else "healthy: no finding"
    if errors:
        reason += f"; {len(errors)} source(s) could not be checked"
    return Outcome("skipped", reason, details)
