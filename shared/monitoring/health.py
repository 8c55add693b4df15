"""Health check: look for failures Azure ML never announces, and report each one once.

Why a timer: Azure ML emits no event when an endpoint's traffic goes wrong, a rollout stalls or a job dies
without its RunStatusChanged reaching us. The health timer observes and publishes `Reflex.HealthCheckFailed`
with the evidence (a `shared.core.findings.Finding`), for three kinds of finding:

* `traffic`: a configured online endpoint whose live traffic does not sum to 0 or 100, or sends traffic to a
  deployment that is missing or not Succeeded (the same `traffic_problems` rules every platform enforces);
* `rollout-overdue`: a rollout still open when the rollout reconciler should have ended it. The rollout owns
  that check (shared/rollout/health.py: when each of its states should end, and the rollback that remediates
  one with REFLEX_HEALTH_REMEDIATE=true); the monitoring function hands it to `check` (functions/monitoring.py),
  as reactions do not import each other;
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
step, the job status), never the time; publishing claims `claims/health/<id>` (`shared.core.findings.Reported`)
first. The same broken state seen every tick is published once; if it is repaired and breaks again in another
way (a different state), that is a new finding and is published; the exact same state reappearing after a
repair is not re-published.

What a tick reads (#17.2): only the unfinished records (`StateStore.active`) and the failed arrivals held for
health, never the history. Azure ML is asked about a job only while its outcome is unknown: not once TrainingFailed
went out, not once health reported its finding (`health/ended/<job>` says `reported`), and a held failed record
leaves the scanned set (`StateStore.settle`) as soon as nothing is left to learn about it. The same tick applies
retention: finished records older than REFLEX_RETENTION_DAYS are deleted by day (`StateStore.purge`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from shared.batches.record import ArrivalRecord, RetrainRecord, ScoringRecord, StatusRecord
from shared.batches.retention import kept
from shared.core.errors import ReflexError
from shared.core.findings import Finding, HealthCheck, Reported
from shared.core.platform import TERMINAL_JOB_STATES, Endpoint, Job, serving_states, traffic_problems
from shared.core.reaction import Outcome
from shared.core.state import key_part, lifecycle_of
from shared.monitoring.records import EndedJob

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["Finding", "check", "job_finding", "traffic_finding"]

log = logging.getLogger("reflex.health")

FAILED_JOB_STATES = TERMINAL_JOB_STATES - {"Completed"}


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


# (kind, record prefix and its type, record statuses in which the job may be unhandled)
_JOB_SOURCES: tuple[tuple[str, str, type[StatusRecord], tuple[str, ...]], ...] = (
    ("training", "arrivals/", ArrivalRecord, ("submitted", "failed")),
    ("training", "retrains/", RetrainRecord, ("submitted",)),
    ("batch-scoring", "scoring/", ScoringRecord, ("submitted",)))


def _ended_seconds(deps: Deps, job: Job | None, now: float, seen: EndedJob | None) -> float:
    """How long ago health first saw `job` ended badly (0 the first time: remembered in `health/ended/<job>`)."""
    if job is None or job.status not in FAILED_JOB_STATES:
        return 0.0
    if seen is None:
        key = EndedJob.key_of(job.name)
        created = deps.state.create(key, EndedJob(job=job.name, status=job.status, seen_at=now).to_dict())
        stored = created or deps.state.get(key)
        seen = EndedJob.from_dict(stored.value) if stored else None
    at = seen.seen_at if seen else None
    return now - (now if at is None else at)


def _job_findings(deps: Deps, now: float) -> Iterable[Finding]:
    """Findings for the jobs of the unfinished records (`StateStore.active`), and of the failed ones held for
    health until it knows their failure was reported. The platform is asked about a job only while its outcome
    is unknown: never once TrainingFailed went out or health reported it (`EndedJob.reported`), and a held
    record is settled (it leaves the scanned set) as soon as health has nothing left to learn about it."""
    grace = deps.settings.health_grace_seconds
    watched: set[str] = set()
    for kind, prefix, record_type, statuses in _JOB_SOURCES:
        lifecycle = lifecycle_of(prefix)
        for record in deps.state.active(prefix):
            work = record_type.from_dict(record.value)
            job_name = work.job
            held = lifecycle is not None and work.status in lifecycle.held  # finished, scanned until settled
            if work.status not in statuses or not job_name or (
                    kind == "training" and deps.state.get(f"claims/training-failed/{key_part(job_name)}")):
                if held:  # nothing to watch, or TrainingFailed went out: handled
                    deps.state.settle(record.key)
                continue
            mark = deps.state.get(EndedJob.key_of(job_name))
            seen = EndedJob.from_dict(mark.value) if mark else None
            watched.add(job_name)
            if seen is not None and seen.reported:
                if held:
                    deps.state.settle(record.key)
                continue  # reported already: its outcome is known, the platform is not asked again
            job = deps.platform.get_job(job_name)
            age = now - float(work.submitted_at or work.changed_at or now)
            found = job_finding(kind, record.key, job_name, job, age_seconds=age,
                                ended_seconds=_ended_seconds(deps, job, now, seen), grace_seconds=grace)
            if found:
                yield found
            elif held and job is not None and job.status not in FAILED_JOB_STATES:
                deps.state.settle(record.key)  # its job did not fail: no finding will ever come of it
    _forget_handled(deps, watched)


def _reported(deps: Deps, finding: Finding, now: float) -> None:
    """A job finding is published (or was, by an earlier tick): remember it, so the job is never asked about
    again, and let a held record leave the scanned set."""
    job = str(finding.evidence.get("job") or "")
    if not job:
        return
    deps.state.update(EndedJob.key_of(job), lambda v: None if v and v.get("reported") else EndedJob(
        job=job, status=str(finding.evidence.get("status") or ""), seen_at=(v or {}).get("seen_at") or now,
        reported=True).to_dict())
    deps.state.settle(str(finding.evidence.get("record") or ""))


def _forget_handled(deps: Deps, watched: set[str]) -> None:
    """Drop `health/ended/<job>` for jobs no longer watched (handled, or their record closed): the marks are
    only needed while a failed job waits out its grace or stays unhandled, and would otherwise pile up one per
    failure. Decided from the keys alone."""
    keep = {EndedJob.key_of(job) for job in watched}
    for key in deps.state.keys("health/ended/"):
        if key not in keep:
            deps.state.delete(key)


def check(deps: Deps, checks: Sequence[HealthCheck] = ()) -> Outcome:
    """Timer: gather every finding (this module's and those of `checks`), publish the new ones once, and with
    REFLEX_HEALTH_REMEDIATE=true let the check that found one remediate it."""
    from shared.core.control import read_control

    now = deps.clock()
    findings: list[Finding] = []
    errors: list[str] = []
    for source in (_endpoint_findings(deps), *(c.findings(deps, now) for c in checks), _job_findings(deps, now)):
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
        if not deps.state.claim(f"claims/health/{key_part(finding.id)}", Reported.of(finding).to_dict()):
            known += 1
            if finding.kind == "job-unhandled":
                _reported(deps, finding, now)  # a tick that published it may have stopped before this
            continue
        data = finding.to_dict()
        owner = next((c for c in checks if finding.kind in c.kinds), None)
        remedy = owner.remediate(deps, finding) if owner is not None and deps.settings.health_remediate else None
        if remedy:
            data["remediation"] = f"rollback through the rollout machinery: {remedy}"
            remediated.append(finding.id)
        log.error("health: %s", finding.summary)
        deps.publisher.publish("HealthCheckFailed", finding.resource, data)
        published.append(finding.id)
        if finding.kind == "job-unhandled":
            _reported(deps, finding, now)
    purged = 0
    try:  # retention: finished records older than REFLEX_RETENTION_DAYS, by day (one listing when none expired)
        purged = deps.state.purge(deps.settings.retention_days, keep=lambda: kept(deps))
    except ReflexError as exc:
        errors.append(f"retention: {exc}")
        log.warning("health: retention purge failed: %s", exc)
    details = {"findings": [f.to_dict() for f in findings], "published": published, "already_reported": known,
               "remediated": remediated, "errors": errors, "purged": purged}
    if dry_run and findings:
        return Outcome("dry-run", f"{len(findings)} finding(s), none published (dry run)", details)
    if published:
        return Outcome("acted", f"{len(published)} new finding(s) published, {known} already reported", details)
    reason = f"healthy ({known} finding(s) already reported)" if findings else "healthy: no finding"
    if errors:
        reason += f"; {len(errors)} source(s) could not be checked"
    return Outcome("skipped", reason, details)
