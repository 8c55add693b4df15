"""Registration gate flow: Azure ML `RunCompleted` / `RunStatusChanged` -> a registered model, or why not.

Why this shape: Event Grid may deliver a run event several times, and two deliveries may race. The decision
itself is pure (`shared/registration/gate.py`); this module gathers its inputs (the job, its metrics, the champion's
recorded metric) and makes the side effects happen once:

* Reflex's own jobs are recognised by the `reflex.managed=true` tag on the job as the platform reports it
  (not only the event's runTags); any other job is skipped with that reason;
* the model version is explicit: allocated from a per-model counter (`registrations/models/<model>`, CAS,
  never below the highest existing version + 1) and stored in the job's record
  (`registrations/jobs/<job>`) before registering, so a redelivery reuses it and two racing deliveries
  register the same version (Azure ML answers a repeated name+version+path with the existing model);
* the record's final status (`registered` | `skipped`) is written by compare-and-swap, and only the writer
  that made the transition publishes `Reflex.ModelRegistered` / `Reflex.ModelRegistrationSkipped`;
* champion and challenger are compared on the same rows (shared/registration/gate.py): the command job scores the
  champion it was given (`reflex.eval.champion` tag, `champion.<metric>` metrics) on its own holdout; when it could
  not (AutoML, a champion that changed meanwhile, a fixed evaluation set) the gate submits an evaluation job
  (shared/registration/evaluation.py), records `evaluating`, and decides when that job's run event arrives. A champion's
  stored numbers are never compared: they come from other rows. The metric values are still stored on the
  model as properties `reflex.metric.<name>` (for people, and the gate's reason as `reflex.gate`);
* a failed or canceled run publishes `Reflex.TrainingFailed` once (a claim) and closes its arrival record.

Record `registrations/jobs/<job>`: `shared.registration.records.Registration`::

    {"job", "status": "evaluating" | "registering" | "registered" | "skipped" | "dry-run", "version",
     "decision": {... "rows": {"source", "data", "count", "job", "note"}}, "evaluation": {"job", "champion"},
     "event_id", "by": <token of the invocation that decided>}
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from shared.batches.training import mark_job_finished
from shared.core import champion as champions
from shared.core import events
from shared.core.errors import PermanentError, TransientError
from shared.core.platform import APPROVAL_TAG, REFLEX_TAG, Job, ModelVersion, model_output
from shared.core.reaction import Outcome
from shared.core.state import key_part
from shared.registration import evaluation, gate, outside_models
from shared.registration.records import Registration, VersionCounter

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["METRIC_PREFIX", "SCORED_TAG", "handle_run_event", "job_key", "model_output"]

log = logging.getLogger("reflex.registration")

METRIC_PREFIX = "reflex.metric."
SCORED_TAG = "reflex.eval.champion"   # on a training job: the champion (name:version) it scores on its holdout
FAILED_STATES = frozenset({"failed", "canceled", "notresponding"})


def job_key(job: str) -> str:
    return Registration.key_of(job)


def _registration(deps: Deps, key: str) -> Registration | None:
    found = deps.state.get(key)
    return Registration.from_dict(found.value) if found is not None else None


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
        if evaluation.is_evaluation(job):
            return _evaluated(event, job, deps)
        return _failed(event, job, event.run_status, deps)
    if evaluation.is_evaluation(job) and (job.status == "Completed" or job.status.lower() in FAILED_STATES):
        return _evaluated(event, job, deps)
    if job.status.lower() in FAILED_STATES:
        return _failed(event, job, job.status, deps)
    if job.status != "Completed":
        raise TransientError(f"job {job.name}: RunCompleted received but the job reports {job.status}",
                             retry_after=30.0)
    return _gate(event, job, deps)


def _failed(event: events.RunCompleted, job: Job, status: str, deps: Deps) -> Outcome:
    from shared.core.control import read_control

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


def _model_output(job: Job) -> str:
    """The job's model output: AutoML's is `best_model` (AutoML job YAML reference), a command job's `model`;
    the one the job reports wins, the kind decides when it reports neither (`shared.core.platform.model_output`; then
    the reason names it)."""
    for name in ("best_model", "model"):
        if name in job.outputs:
            return name
    return model_output(job.kind)


def _base(deps: Deps) -> dict[str, Any]:
    s = deps.settings
    return {"metric": s.gate_metric, "direction": s.gate_direction, "margin": s.gate_min_margin,
            "approval": s.require_approval}


def _holdout_rows(job: Job, metrics: Mapping[str, Any]) -> gate.Rows:
    count = gate.metric_value(metrics, "n_test")
    return gate.Rows("holdout", job.tags.get("reflex.data", ""), None if count is None else int(count), job=job.name)


def _run_metrics(deps: Deps, job: Job, memo: dict[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    """The run's metrics, fetched once per event however many steps read them (#17.3)."""
    if job.name not in memo:
        memo[job.name] = deps.platform.get_job_metrics(job.name)
    return memo[job.name]


def _decide(job: Job, deps: Deps, memo: dict[str, Mapping[str, Any]]) -> gate.GateDecision | ModelVersion | None:
    """The decision when the job's own numbers allow one; else what an evaluation job must score it against:
    the champion (`ModelVersion`), or None for the challenger alone (AutoML or an evaluation set, no champion).
    """
    s = deps.settings
    output = _model_output(job)
    if output not in job.outputs:
        have = ", ".join(sorted(job.outputs)) or "none"
        return gate.GateDecision(False, f"run {job.name} has no model output {output!r} (outputs: {have})",
                                 s.gate_metric, s.gate_direction, s.gate_min_margin, None, None)
    champion = champions.find(deps, s.model_name)
    if job.kind == "automl" or s.eval_data:
        return champion  # scored by an evaluation job, on its rows, with our arithmetic
    metrics = _run_metrics(deps, job, memo)
    rows = _holdout_rows(job, metrics)
    if champion is None:
        return gate.decide(metrics, None, rows=rows, **_base(deps))
    prefix = gate.CHAMPION_PREFIX
    scored_here = job.tags.get(SCORED_TAG) == champion.ref and (
        f"{prefix}{s.gate_metric}" in metrics or f"{prefix}failed" in metrics)
    if not scored_here:
        return champion
    failed = gate.metric_value(metrics, f"{prefix}failed") == 1.0
    theirs = {s.gate_metric: metrics[f"{prefix}{s.gate_metric}"]} if f"{prefix}{s.gate_metric}" in metrics else {}
    return gate.decide(metrics, theirs, rows=rows, champion_version=champion.version,
                       champion_error="it cannot predict them (see the run's reflex.champion_error tag)"
                       if failed else "", **_base(deps))


def _evaluate(event: events.RunCompleted, job: Job, champion: ModelVersion | None, key: str,
              deps: Deps) -> Outcome:
    """Submit the evaluation job that scores challenger and champion on the same rows; record `evaluating`."""
    from shared.core.control import read_control

    s = deps.settings
    output = _model_output(job)
    models = {"challenger": f"azureml://jobs/{job.name}/outputs/{output}"}
    if champion is not None:
        models["champion"] = f"azureml:{champion.ref}"
    champ = champion.ref if champion else "none"
    details: dict[str, Any] = {"job": job.name, "model": s.model_name, "champion": champ,
                               "data": job.tags.get("reflex.data", ""), "event_id": event.id}
    current = _registration(deps, key)
    pending = current.evaluation if current and current.status == "evaluating" else {}
    if pending.get("champion") == champ:
        return Outcome("duplicate", f"{job.name} is being evaluated against the champion {champ}: evaluation job "
                                    f"{pending.get('job')}", {**details, "evaluation": pending.get("job")})
    try:
        plan = evaluation.rows_plan(deps, job.tags.get("reflex.data", ""), in_sample=job.kind == "automl")
    except PermanentError as exc:
        decision = gate.GateDecision(False, str(exc), s.gate_metric, s.gate_direction, s.gate_min_margin, None, None)
        return _conclude(event, job, decision, deps)
    if read_control(deps).dry_run:
        return Outcome("dry-run", f"would evaluate {job.name} against the champion {champ} on {plan.source} "
                                  f"{plan.data}", details)
    evaluated = evaluation.submit(deps, purpose="gate", parent=job.name, models=models, plan=plan,
                                  tags={SCORED_TAG: champ, "reflex.data": job.tags.get("reflex.data", ""),
                                        "reflex.batch": job.tags.get("reflex.batch", "")})
    details.update(evaluation=evaluated.name, rows={"source": plan.source, "data": plan.data, "note": plan.note})
    deps.state.update(key, lambda v: None if v and Registration.from_dict(v).final else Registration.from_dict(
        v or {}).but(job=job.name, status="evaluating", event_id=event.id, evaluation={
            "job": evaluated.name, "champion": champ, "source": plan.source, "data": plan.data}).to_dict())
    return Outcome("acted", f"evaluating {job.name} against the champion {champ} on the same rows ({plan.source} "
                            f"{plan.data}): evaluation job {evaluated.name}", details)


def _evaluated(event: events.RunCompleted, job: Job, deps: Deps) -> Outcome:
    """An evaluation job ended: decide the gate (or the outside model's evaluation) on its numbers."""
    if job.tags.get("reflex.purpose") == "outside":
        return outside_models.evaluated(deps, job, event_id=event.id)
    training = deps.platform.get_job(job.tags.get("reflex.parent", ""))
    if training is None:
        return Outcome("skipped", f"evaluation {job.name}: its training job {job.tags.get('reflex.parent')} is gone",
                       {"job": job.name})
    concluded = _registration(deps, job_key(training.name))
    if concluded is not None and concluded.final:
        return _duplicate(training, concluded, deps)  # a late redelivery: decided already
    s = deps.settings
    if job.status != "Completed":
        reason = f"evaluation job {job.name} {job.status.lower()}" + (f": {job.error}" if job.error else "")
        decision = gate.GateDecision(False, reason, s.gate_metric, s.gate_direction, s.gate_min_margin, None, None)
        return _conclude(event, training, decision, deps)
    champion = champions.find(deps, s.model_name)
    if (champion.ref if champion else "none") != job.tags.get(SCORED_TAG, ""):
        return _evaluate(event, training, champion, job_key(training.name), deps)  # crowned meanwhile: again
    found = evaluation.outcome_of(job, deps.platform.get_job_metrics(job.name), metric=s.gate_metric)
    if found["challenger_error"]:
        decision = gate.GateDecision(False, f"the challenger {found['challenger_error']}", s.gate_metric,
                                     s.gate_direction, s.gate_min_margin, None, None,
                                     rows=asdict(found["rows"]))
    else:
        decision = gate.decide(found["challenger"], found["champion"], rows=found["rows"],
                               champion_version=champion.version if champion else "",
                               champion_error=found["champion_error"], **_base(deps))
    return _conclude(event, training, decision, deps)


def _finish(key: str, status: str, token: str, fields: Mapping[str, Any], deps: Deps) -> bool:
    """CAS the job's record to its final status; True for the one invocation that made the transition."""

    def change(value: dict[str, Any] | None) -> dict[str, Any] | None:
        current = Registration.from_dict(value or {})
        return None if value is not None and current.final else current.but(**fields, status=status, by=token).to_dict()

    stored = deps.state.update(key, change)
    return stored is not None and Registration.from_dict(stored.value).by == token


def _gate(event: events.RunCompleted, job: Job, deps: Deps) -> Outcome:
    key = job_key(job.name)
    existing = _registration(deps, key)
    if existing is not None and existing.final:
        return _duplicate(job, existing, deps)
    mark_job_finished(deps, job.name, job.tags.get("reflex.batch", ""), "trained", "run completed",
                      parent=job.tags.get("reflex.parent", ""))
    memo: dict[str, Mapping[str, Any]] = {}
    decided = _decide(job, deps, memo)
    if not isinstance(decided, gate.GateDecision):
        return _evaluate(event, job, decided, key, deps)
    return _conclude(event, job, decided, deps, memo)


def _duplicate(job: Job, r: Registration, deps: Deps) -> Outcome:
    return Outcome("duplicate", f"run {job.name} already {r.status}: {r.decision.get('reason', '')}",
                   {"job": job.name, "version": r.version, "model": deps.settings.model_name,
                    "model_version": r.version})


def _conclude(event: events.RunCompleted, job: Job, decision: gate.GateDecision, deps: Deps,
              memo: dict[str, Mapping[str, Any]] | None = None) -> Outcome:
    """Act on a decision for the training `job`: register once, or record and publish why not, once."""
    from shared.core.control import read_control

    key = job_key(job.name)
    existing = _registration(deps, key)
    if existing is not None and existing.final:
        return _duplicate(job, existing, deps)
    model = deps.settings.model_name
    details: dict[str, Any] = {"job": job.name, "model": model, "decision": decision.as_dict(),
                               "data": job.tags.get("reflex.data", ""), "event_id": event.id}
    token = uuid.uuid4().hex
    if read_control(deps).dry_run:
        deps.state.update(key, lambda v: Registration.from_dict(v or {}).but(
            job=job.name, status="dry-run", decision=decision.as_dict(), event_id=event.id).to_dict())
        return Outcome("dry-run", f"{'would register' if decision.register else 'would skip'}: {decision.reason}",
                       details)
    if not decision.register:
        if _finish(key, "skipped", token, {"job": job.name, "decision": decision.as_dict(), "event_id": event.id},
                   deps):
            deps.publisher.publish("ModelRegistrationSkipped", job.name, details)
        return Outcome("skipped", decision.reason, details)
    version = _version(key, job.name, model, deps)
    metrics = _run_metrics(deps, job, {} if memo is None else memo)
    tags = {REFLEX_TAG: "true", "reflex.trigger": f"run:{job.name}", "reflex.event_id": event.id,
            "reflex.data": job.tags.get("reflex.data", ""), "reflex.parent": job.name,
            "reflex.batch": job.tags.get("reflex.batch", "")}
    if decision.approval:
        tags[APPROVAL_TAG] = decision.approval
    properties = {f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()
                  if gate.metric_value(metrics, k) is not None and "." not in k}
    properties["reflex.gate"] = decision.reason
    registered = deps.platform.register_model(name=model, version=version, job_name=job.name,
                                              output_name=_model_output(job), tags=tags, properties=properties,
                                              description=f"trained by {job.name}: {decision.reason}")
    details.update(version=registered.version, approval=decision.approval or "none")
    if _finish(key, "registered", token, {"job": job.name, "version": version, "decision": decision.as_dict(),
                                          "event_id": event.id}, deps):
        deps.publisher.publish(*events.ReflexModelRegistered.outbound(model, version, details))
    return Outcome("acted", f"registered {model}:{version}: {decision.reason}",
                   {**details, "model_version": registered.version})  # the ledger's model ref is name:version


def _version(key: str, job: str, model: str, deps: Deps) -> str:
    """The explicit version for this job's model: stored in its record, else allocated from the model's counter."""
    current = _registration(deps, key)
    if current is not None and current.version:
        return current.version
    # above the newest version (one request, not a listing of every version: #17): versions registered outside
    # Reflex since the counter last moved are skipped, so an explicit version never lands on someone else's model
    latest = deps.platform.get_latest_model(model)
    floor = (int(latest.version) if latest is not None and latest.version.isdigit() else 0) + 1
    allocated: dict[str, int] = {}

    def take(value: dict[str, Any] | None) -> dict[str, Any]:
        counter = VersionCounter.from_dict(value or {})
        allocated["v"] = max(int(counter.next), floor)
        return counter.but(model=model, next=allocated["v"] + 1).to_dict()

    deps.state.update(VersionCounter.key_of(model), take)
    stored = deps.state.update(key, lambda v: None if v and Registration.from_dict(v).version else (
        Registration.from_dict(v or {}).but(job=job, status="registering", version=str(allocated["v"])).to_dict()))
    version = Registration.from_dict(stored.value).version if stored is not None else ""
    if not version:
        raise TransientError(f"registration record {key} has no version yet")
    return version
