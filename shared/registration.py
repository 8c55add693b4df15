"""Registration gate flow: Azure ML `RunCompleted` / `RunStatusChanged` -> a registered model, or why not.

Why this shape: Event Grid may deliver a run event several times, and two deliveries may race. The decision
itself is pure (`shared/gate.py`); this module gathers its inputs (the job, its metrics, the champion's
recorded metric) and makes the side effects happen once:

* Reflex's own jobs are recognised by the `reflex.managed=true` tag on the job as the platform reports it
  (not only the event's runTags); any other job is skipped with that reason;
* the model version is explicit: allocated from a per-model counter (`registrations/models/<model>`, CAS,
  never below the highest existing version + 1) and stored in the job's record
  (`registrations/jobs/<job>`) before registering, so a redelivery reuses it and two racing deliveries
  register the same version (Azure ML answers a repeated name+version+path with the existing model);
* the record's final status (`registered` | `skipped`) is written by compare-and-swap, and only the writer
  that made the transition publishes `Reflex.ModelRegistered` / `Reflex.ModelRegistrationSkipped`;
* the metric values are stored on the model as properties `reflex.metric.<name>`, so a later gate reads the
  champion's number from the model instead of recomputing it;
* a failed or canceled run publishes `Reflex.TrainingFailed` once (a claim) and closes its arrival record.

Record `registrations/jobs/<job>`::

    {"job", "status": "registering" | "registered" | "skipped" | "dry-run", "version", "decision": {...},
     "event_id", "by": <token of the invocation that decided>}
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared import events, gate
from shared.arrival import mark_job_finished
from shared.errors import PermanentError, TransientError
from shared.platform import APPROVAL_TAG, REFLEX_TAG, Job, ModelVersion, model_output
from shared.reaction import Outcome
from shared.state import key_part

if TYPE_CHECKING:
    from shared.deps import Deps

__all__ = ["METRIC_PREFIX", "handle_run_event", "job_key"]

log = logging.getLogger("reflex.registration")

METRIC_PREFIX = "reflex.metric."
FAILED_STATES = frozenset({"failed", "canceled", "notresponding"})


def job_key(job: str) -> str:
    return f"registrations/jobs/{key_part(job)}"


def handle_run_event(raw: Any, deps: Deps) -> Outcome:
    event = events.parse(raw)
    if not isinstance(event, events.RunCompleted):
        return Outcome("skipped", f"not a run event: {event.type}")
    job = deps.platform.get_job(event.run_id)
    if job is None:
        return Outcome("skipped", f"job {event.run_id} is not in this workspace", {"job": event.run_id})
    if job.tags.get(REFLEX_TAG) != "true":
        return Outcome("skipped", f"job {job.name} is not a Reflex job (no {REFLEX_TAG}=true tag)", {"job": job.name})
    if job.kind == "batch" or job.tags.get("reflex.kind") == "batch-scoring":
        # batch scoring jobs end through the batch tracker, never through the registration gate
        return Outcome("skipped", f"job {job.name} is a batch scoring job: tracked by batch_tracker",
                       {"job": job.name})
    if isinstance(event, events.RunStatusChanged):
        if event.run_status.lower() not in FAILED_STATES:
            return Outcome("skipped", f"run status {event.run_status!r} needs no reaction", {"job": job.name})
        return _failed(event, job, event.run_status, deps)
    if job.status.lower() in FAILED_STATES:
        return _failed(event, job, job.status, deps)
    if job.status != "Completed":
        raise TransientError(f"job {job.name}: RunCompleted received but the job reports {job.status}",
                             retry_after=30.0)
    return _gate(event, job, deps)


def _failed(event: events.RunCompleted, job: Job, status: str, deps: Deps) -> Outcome:
    from shared.control import read_control

    reason = f"job {status.lower()}" + (f": {job.error}" if job.error else "")
    mark_job_finished(deps, job.name, job.tags.get("reflex.batch", ""), "failed", reason,
                      parent=job.tags.get("reflex.parent", ""))
    details = {"job": job.name, "status": status.lower(), "error": job.error, "batch": job.tags.get("reflex.batch", ""),
               "data": job.tags.get("reflex.data", ""), "event_id": event.id, "url": job.url}
    if read_control(deps).dry_run:
        return Outcome("dry-run", f"would publish TrainingFailed for {job.name}", details)
    if not deps.state.claim(f"claims/training-failed/{key_part(job.name)}", {"event_id": event.id}):
        return Outcome("duplicate", f"TrainingFailed already published for {job.name}", details)
    deps.publisher.publish("TrainingFailed", job.name, details)
    return Outcome("acted", f"training failed: {reason}", details)


def _champion_metrics(champion: ModelVersion, metric: str, deps: Deps) -> Mapping[str, Any]:
    """The champion's recorded metrics: properties set at registration, then tags, then its job's metrics."""
    for source in (champion.properties, champion.tags):
        if f"{METRIC_PREFIX}{metric}" in source:
            return {metric: source[f"{METRIC_PREFIX}{metric}"]}
    if champion.job_name:
        try:
            return deps.platform.get_job_metrics(champion.job_name)
        except PermanentError as exc:
            log.warning("champion %s: its job's metrics are unavailable: %s", champion.ref, exc)
    return {}


def _decide(event: events.RunCompleted, job: Job, deps: Deps) -> gate.GateDecision:
    s = deps.settings
    base = {"metric": s.gate_metric, "direction": s.gate_direction, "margin": s.gate_min_margin}
    output = model_output(job.kind)   # `model` for a command job, `best_model` for AutoML (shared.platform)
    if output not in job.outputs:
        have = ", ".join(sorted(job.outputs)) or "none"
        return gate.GateDecision(False, f"run {job.name} has no model output {output!r} (outputs: {have})",
                                 challenger=None, champion=None, **base)
    metrics = deps.platform.get_job_metrics(job.name)
    champion = deps.platform.find_champion(s.model_name)
    return gate.decide(metrics, None if champion is None else _champion_metrics(champion, s.gate_metric, deps),
                       approval=s.require_approval, champion_version="" if champion is None else champion.version,
                       **base)


def _finish(key: str, status: str, token: str, fields: Mapping[str, Any], deps: Deps) -> bool:
    """CAS the job's record to its final status; True for the one invocation that made the transition."""

    def change(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("status") in ("registered", "skipped"):
            return None
        return {**(value or {}), **fields, "status": status, "by": token}

    stored = deps.state.update(key, change)
    return stored is not None and stored.value.get("by") == token


def _gate(event: events.RunCompleted, job: Job, deps: Deps) -> Outcome:
    from shared.control import read_control

    key = job_key(job.name)
    existing = deps.state.get(key)
    if existing is not None and existing.value.get("status") in ("registered", "skipped"):
        v = existing.value
        return Outcome("duplicate", f"run {job.name} already {v['status']}: {v.get('decision', {}).get('reason', '')}",
                       {"job": job.name, "version": v.get("version", ""), "model": deps.settings.model_name,
                        "model_version": v.get("version", "")})
    mark_job_finished(deps, job.name, job.tags.get("reflex.batch", ""), "trained", "run completed",
                      parent=job.tags.get("reflex.parent", ""))
    decision = _decide(event, job, deps)
    model = deps.settings.model_name
    details: dict[str, Any] = {"job": job.name, "model": model, "decision": decision.as_dict(),
                               "data": job.tags.get("reflex.data", ""), "event_id": event.id}
    token = uuid.uuid4().hex
    if read_control(deps).dry_run:
        deps.state.update(key, lambda v: {**(v or {}), "job": job.name, "status": "dry-run",
                                          "decision": decision.as_dict(), "event_id": event.id})
        return Outcome("dry-run", f"{'would register' if decision.register else 'would skip'}: {decision.reason}",
                       details)
    if not decision.register:
        if _finish(key, "skipped", token, {"job": job.name, "decision": decision.as_dict(), "event_id": event.id},
                   deps):
            deps.publisher.publish("ModelRegistrationSkipped", job.name, details)
        return Outcome("skipped", decision.reason, details)
    version = _version(key, job.name, model, deps)
    metrics = {} if decision.challenger is None else deps.platform.get_job_metrics(job.name)
    tags = {REFLEX_TAG: "true", "reflex.trigger": f"run:{job.name}", "reflex.event_id": event.id,
            "reflex.data": job.tags.get("reflex.data", ""), "reflex.parent": job.name,
            "reflex.batch": job.tags.get("reflex.batch", "")}
    if decision.approval:
        tags[APPROVAL_TAG] = decision.approval
    properties = {f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()
                  if gate.metric_value(metrics, k) is not None}
    properties["reflex.gate"] = decision.reason
    registered = deps.platform.register_model(name=model, version=version, job_name=job.name,
                                              output_name=model_output(job.kind),
                                              tags=tags, properties=properties,
                                              description=f"trained by {job.name}: {decision.reason}")
    details.update(version=registered.version, approval=decision.approval or "none")
    if _finish(key, "registered", token, {"job": job.name, "version": version, "decision": decision.as_dict(),
                                          "event_id": event.id}, deps):
        deps.publisher.publish("ModelRegistered", f"models/{model}:{version}", details)
    return Outcome("acted", f"registered {model}:{version}: {decision.reason}",
                   {**details, "model_version": registered.version})  # the ledger's model ref is name:version


def _version(key: str, job: str, model: str, deps: Deps) -> str:
    """The explicit version for this job's model: stored in its record, else allocated from the model's counter."""
    current = deps.state.get(key)
    if current is not None and current.value.get("version"):
        return str(current.value["version"])
    existing = [int(m.version) for m in deps.platform.list_models(model) if m.version.isdigit()]
    floor = max(existing, default=0) + 1
    allocated: dict[str, int] = {}

    def take(value: dict[str, Any] | None) -> dict[str, Any]:
        allocated["v"] = max(int((value or {}).get("next", 1)), floor)
        return {"model": model, "next": allocated["v"] + 1}

    deps.state.update(f"registrations/models/{key_part(model)}", take)
    stored = deps.state.update(key, lambda v: None if v and v.get("version") else {
        **(v or {}), "job": job, "status": "registering", "version": str(allocated["v"])})
    if stored is None or not stored.value.get("version"):
        raise TransientError(f"registration record {key} has no version yet")
    return str(stored.value["version"])
