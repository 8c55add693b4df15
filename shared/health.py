"""Health check: look for failures Azure ML never announces, and report each one once.

Why a timer: Azure ML emits no event when an endpoint's traffic goes wrong, a rollout stalls or a job dies
without its RunStatusChanged reaching us. The health timer observes and publishes `Reflex.HealthCheckFailed`
with the evidence, for three kinds of finding:

* `traffic`: a configured online endpoint whose live traffic does not sum to 0 or 100, or sends traffic to a
  deployment that is missing or not Succeeded (the same `traffic_problems` rules every platform enforces);
* `rollout-overdue`: a rollout record (`rollouts/<endpoint>`) not in a terminal status past its `deadline`
  (or `started_at`/`created_at` + REFLEX_ROLLOUT_DEADLINE_SECONDS when it has none). With
  REFLEX_HEALTH_REMEDIATE=true the record is marked, by compare-and-swap, with
  `remediate: {"action": "rollback", "reason", "finding", "at"}` and `operator_rollback: true`, which the
  rollout reconciler treats as an operator's rollback request; health never moves traffic itself;
* `job-unhandled`: a Reflex training job (arrival or retrain record still `submitted`) or batch scoring job
  (scoring record still `submitted`) that failed, was canceled or vanished, and for training jobs with no
  TrainingFailed reaction recorded (`claims/training-failed/<job>`).

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

from shared.errors import ReflexError
from shared.platform import TERMINAL_JOB_STATES, Endpoint, Job, traffic_problems
from shared.reaction import Outcome
from shared.state import key_part, utcnow_iso

if TYPE_CHECKING:
    from shared.deps import Deps

__all__ = ["Finding", "ROLLOUT_TERMINAL", "check", "job_finding", "rollout_finding", "traffic_finding"]

log = logging.getLogger("reflex.health")

ROLLOUT_TERMINAL = frozenset({"done", "rolled_back", "failed", "superseded", "completed", "promoted-done",
                              "aborted", "canceled"})
FAILED_JOB_STATES = TERMINAL_JOB_STATES - {"Completed"}
MISSING_JOB_GRACE_SECONDS = 600.0


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
    states = {d.name: d.state for d in endpoint.deployments}
    problems = traffic_problems(endpoint.traffic, endpoint.mirror, states)
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


def rollout_finding(key: str, value: Mapping[str, Any], now: float, default_seconds: int) -> Finding | None:
    """A rollout not terminal past its deadline (read tolerantly: the record is the rollout reconciler's)."""
    status = str(value.get("status", ""))
    if status in ROLLOUT_TERMINAL:
        return None
    deadline = _epoch(value.get("deadline"))
    if not deadline:
        started = _epoch(value.get("started_at")) or _epoch(value.get("created_at"))
        if started is None:
            return None
        deadline = started + default_seconds
    if now < deadline:
        return None
    endpoint = str(value.get("endpoint") or key.rsplit("/", 1)[-1])
    model = f"{value.get('model', '?')}:{value.get('version', '?')}"
    evidence = {"record": key, "endpoint": endpoint, "model": model, "status": status, "phase": value.get("phase"),
                "deadline": deadline, "overdue_seconds": round(now - deadline), "reason": value.get("reason", "")}
    return Finding("rollout-overdue", f"rollout/{endpoint}",
                   f"rollout of {model} on {endpoint} is still {status} {round(now - deadline)} s past its deadline",
                   evidence, {"model": model, "status": status, "phase": value.get("phase"), "deadline": deadline})


def job_finding(kind: str, record_key: str, job_name: str, job: Job | None, *, reacted: bool,
                age_seconds: float) -> Finding | None:
    """A Reflex job that ended badly (or vanished) while its record still says it runs."""
    if reacted:
        return None
    if job is None:
        if age_seconds < MISSING_JOB_GRACE_SECONDS:
            return None
        status, error = "missing", "the platform does not know the job"
    elif job.status in FAILED_JOB_STATES:
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
        found = rollout_finding(record.key, record.value, now, deps.settings.rollout_deadline_seconds)
        if found:
            yield found


def _job_findings(deps: Deps, now: float) -> Iterable[Finding]:
    sources = (("training", "arrivals/"), ("training", "retrains/"), ("batch-scoring", "scoring/"))
    for kind, prefix in sources:
        for record in deps.state.records(prefix):
            value = record.value
            job_name = str(value.get("job") or "")
            if value.get("status") != "submitted" or not job_name:
                continue
            reacted = kind == "training" and deps.state.get(f"claims/training-failed/{key_part(job_name)}") is not None
            age = now - float(value.get("submitted_at") or (value.get("history") or [[now]])[-1][0])
            found = job_finding(kind, record.key, job_name, deps.platform.get_job(job_name), reacted=reacted,
                                age_seconds=age)
            if found:
                yield found


def _remediate(deps: Deps, finding: Finding) -> bool:
    """Ask the rollout reconciler to roll back (CAS on its record); True when this call set the request."""
    key = str(finding.evidence["record"])
    done: dict[str, bool] = {}

    def mark(value: dict[str, Any] | None) -> dict[str, Any] | None:
        done["it"] = False
        if value is None or value.get("status") in ROLLOUT_TERMINAL or value.get("remediate"):
            return None
        done["it"] = True
        return {**value, "operator_rollback": True,
                "remediate": {"action": "rollback", "reason": finding.summary, "finding": finding.id,
                              "by": "health", "at": utcnow_iso()}}

    deps.state.update(key, mark)
    return done.get("it", False)


def check(deps: Deps) -> Outcome:
    """Timer: gather every finding, publish the new ones once, remediate overdue rollouts when allowed."""
    from shared.control import read_control

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
        if finding.kind == "rollout-overdue" and deps.settings.health_remediate and _remediate(deps, finding):
            data["remediation"] = "rollback requested on the rollout record"
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
