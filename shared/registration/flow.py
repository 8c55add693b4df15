"""Registration gate flow: Azure ML `RunCompleted` / `RunStatusChanged` -> a registered model, or why not.

Why this shape: Event Grid may deliver a run event several times, and two deliveries may race. The decision
itself is pure (`shared/registration/gate.py`); this module gathers its inputs (the job, its metrics, the champion's
recorded metric) and makes the side effects happen once:

* Reflex's own jobs are recognised by the `reflex.managed=true` tag on the job as the platform reports it
  (not only the event's runTags); any other job is skipped with that reason;
* the model version is explicit and claimed per job before anything is registered: the platform's own
  numbering is read back (the highest existing version + 1, never a counter of Reflex's that copies of an
  event could move), and that number is claimed for the job (`registrations/versions/<model>/<n>`,
  create-if-absent, the job in it), then stored in the job's record (`registrations/jobs/<job>`). Copies of the
  job's event, however many race, find their own job's claim and reuse it; another job's claim on a version not
  registered yet makes a later job wait (a transient retry) rather than leave a gap MLflow cannot fill (it
  numbers versions itself, one after the other); a claim held past `VERSION_LEASE_SECONDS` (its holder
  crashed) is taken over. An attempt that ends without registering (a permanent refusal, a decision to skip)
  releases its claim, so nothing blocks the next job (#18). Azure ML answers a repeated
  name+version+path with the existing model;
* the record's final status (`registered` | `skipped`) is written by compare-and-swap, and only the writer
  that made the transition publishes `Reflex.ModelRegistered` / `Reflex.ModelRegistrationSkipped` and answers
  `acted` (or `skipped`); every concurrent copy answers `duplicate`, so the ledger has one outcome per run;
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

from shared.batches.retries import retry_training
from shared.batches.training import mark_job_finished
from shared.core import champion as champions
from shared.core import events, trace, unheard
from shared.core.errors import PermanentError, TransientError
from shared.core.platform import (
    APPROVAL_TAG,
    FAILURE_TRANSIENT,
    FAILURE_USER,
    REFLEX_TAG,
    Job,
    ModelVersion,
    model_output,
)
from shared.core.reaction import Outcome
from shared.core.state import Conflict, key_part
from shared.registration import evaluation, gate, outside_models
from shared.registration.records import Registration

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["METRIC_PREFIX", "SCORED_TAG", "handle_run_event", "job_key", "model_output"]

log = logging.getLogger("reflex.registration")

METRIC_PREFIX = "reflex.metric."
SCORED_TAG = "reflex.eval.champion"   # on a training job: the champion (name:version) it scores on its holdout
FAILED_STATES = frozenset({"failed", "canceled", "notresponding"})
# how long a job's claim on a version number holds while that version is not registered: past it, the holder
# is taken to have crashed between claiming and registering, and the next job takes the number over
VERSION_LEASE_SECONDS = 300.0


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
    """A failed training job: trained again when it failed for a transient reason and retries remain
    (shared/batches/retries.py `retry_training`), else TrainingFailed once, with why it is not retried."""
    from shared.core.control import read_control

    reason = f"job {status.lower()}" + (f": {job.error}" if job.error else "")
    batch = job.tags.get("reflex.batch", "")
    if job.failure == FAILURE_TRANSIENT and not read_control(deps).dry_run:
        retried = retry_training(deps, job.name, batch, job.error or status.lower())
        if retried is not None:
            return Outcome(retried.status, retried.reason, {**retried.details, "batch": batch, "event_id": event.id})
    not_retried = _not_retried(job, status, deps)
    mark_job_finished(deps, job.name, job.tags.get("reflex.batch", ""), "failed", reason,
                      parent=job.tags.get("reflex.parent", ""))
    details = {"job": job.name, "status": status.lower(), "error": job.error, "batch": job.tags.get("reflex.batch", ""),
               "data": job.tags.get("reflex.data", ""), "event_id": event.id, "url": job.url}
    if not_retried:
        details["not_retried"] = not_retried.strip(" ()")
    if read_control(deps).dry_run:
        return Outcome("dry-run", f"would publish TrainingFailed for {job.name}", details)
    if not deps.state.claim(f"claims/training-failed/{key_part(job.name)}", {"event_id": event.id}):
        return Outcome("duplicate", f"TrainingFailed already published for {job.name}", details)
    deps.publisher.publish("TrainingFailed", job.name, details)
    return Outcome("acted", f"training failed: {reason}{not_retried}", details)


def _not_retried(job: Job, status: str, deps: Deps) -> str:
    """Why a failed job is not trained again, for its reason (the operator reads it in `status`)."""
    if status.lower() != "failed":
        return ""  # canceled (by a person) or not responding: nothing Reflex should second-guess
    if job.failure == FAILURE_TRANSIENT:
        n = deps.settings.transient_retries
        return (f" (a transient failure, not retried: REFLEX_TRANSIENT_RETRIES={n} used up)" if n else
                " (a transient failure, not retried: REFLEX_TRANSIENT_RETRIES=0)")
    if job.failure == FAILURE_USER:
        return " (a failure in the training script or its data: not retried)"
    return ""  # the platform did not say why: not retried, as before; `python -m reflex train` tries again


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
    token = uuid.uuid4().hex

    def record(v: dict[str, Any] | None) -> dict[str, Any] | None:
        current = Registration.from_dict(v or {})
        recorded = current.status == "evaluating" and current.evaluation.get("job") == evaluated.name
        if v and (current.final or recorded):
            return None  # decided meanwhile, or a racing copy recorded this very evaluation
        return current.but(job=job.name, status="evaluating", event_id=event.id, by=token, evaluation={
            "job": evaluated.name, "champion": champ, "source": plan.source, "data": plan.data}).to_dict()

    stored = deps.state.update(key, record)
    if stored is None or Registration.from_dict(stored.value).by != token:
        return Outcome("duplicate", f"{job.name} is being evaluated against the champion {champ}: evaluation job "
                                    f"{evaluated.name}", {**details, "evaluation": evaluated.name})
    # the sweep finds the evaluation job through this marker if its run event never comes (shared/core/unheard.py)
    deps.state.claim(unheard.awaiting_key(evaluated.name), {"job": evaluated.name, "record": key})
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
    # The slot and the batch record close once the gate has an outcome, not before: a gate that fails for a
    # transient reason keeps the job in its slot, where the sweep finds it again if no redelivery comes (#18).
    memo: dict[str, Mapping[str, Any]] = {}
    try:
        decided = _decide(job, deps, memo)
        outcome = _evaluate(event, job, decided, key, deps) if not isinstance(decided, gate.GateDecision) \
            else _conclude(event, job, decided, deps, memo)
    except TransientError:
        raise
    except BaseException:
        _trained(job, deps)  # dead-lettered: the job did train; its slot must not stay taken
        raise
    _trained(job, deps)
    return outcome


def _trained(job: Job, deps: Deps) -> None:
    mark_job_finished(deps, job.name, job.tags.get("reflex.batch", ""), "trained", "run completed",
                      parent=job.tags.get("reflex.parent", ""))


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
        if not _finish(key, "skipped", token, {"job": job.name, "decision": decision.as_dict(),
                                               "event_id": event.id}, deps):
            return _duplicate(job, _registration(deps, key) or Registration(), deps)
        # a version an earlier attempt claimed (it decided otherwise then) must not hold up the next job
        _release(model, (_registration(deps, key) or Registration()).version, job.name, deps)
        deps.publisher.publish("ModelRegistrationSkipped", job.name, details)
        return Outcome("skipped", decision.reason, details)
    version = _version(key, job.name, model, deps)
    metrics = _run_metrics(deps, job, {} if memo is None else memo)
    tags = {REFLEX_TAG: "true", "reflex.trigger": f"run:{job.name}", "reflex.event_id": event.id,
            "reflex.data": job.tags.get("reflex.data", ""), "reflex.parent": job.name,
            "reflex.batch": job.tags.get("reflex.batch", ""),
            **trace.tags()}  # reflex.traceparent: the model's ModelRegistered continues the registration's trace
    if decision.approval:
        tags[APPROVAL_TAG] = decision.approval
    properties = {f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()
                  if gate.metric_value(metrics, k) is not None and "." not in k}
    properties["reflex.gate"] = decision.reason
    try:
        registered = deps.platform.register_model(name=model, version=version, job_name=job.name,
                                                  output_name=_model_output(job), tags=tags, properties=properties,
                                                  description=f"trained by {job.name}: {decision.reason}")
    except PermanentError:
        # refused for good: the number goes back, so the next job (or this one, replayed) is not blocked by it
        _release(model, version, job.name, deps)
        deps.state.update(key, lambda v: _forget_version(v, version, only_registering=True))
        raise
    details.update(version=registered.version, approval=decision.approval or "none")
    if not _finish(key, "registered", token, {"job": job.name, "version": version, "decision": decision.as_dict(),
                                              "event_id": event.id}, deps):
        # a racing copy made the transition and published
        return _duplicate(job, _registration(deps, key) or Registration(), deps)
    deps.publisher.publish(*events.ReflexModelRegistered.outbound(model, version, details))
    return Outcome("acted", f"registered {model}:{version}: {decision.reason}",
                   {**details, "model_version": registered.version})  # the ledger's model ref is name:version


def _forget_version(value: dict[str, Any] | None, version: str, *, only_registering: bool = False
                    ) -> dict[str, Any] | None:
    """The record without `version` (it went back, or was taken over); None when it holds another one."""
    current = Registration.from_dict(value or {})
    if value is None or current.version != version or (only_registering and current.status != "registering"):
        return None
    return current.but(version="").to_dict()


def version_key(model: str, version: str) -> str:
    """The claim on `model:version` for one job (`{"job", "since"}`), created before the job registers it."""
    return f"registrations/versions/{key_part(model)}/{key_part(version)}"


def _version(key: str, job: str, model: str, deps: Deps) -> str:
    """The explicit version for this job's model: the one its record holds while the job's claim on it stands,
    else the next number the platform would give (read back, never predicted from a counter), claimed for
    this job first. Racing copies of one job's event all end with the same number.

    Raises:
        TransientError: the next number is claimed by another job whose registration is under way.
    """
    current = _registration(deps, key)
    held = current.version if current is not None else ""
    if held:
        claim = deps.state.get(version_key(model, held))
        if claim is None or claim.value.get("job") == job:
            return held
        # the claim was taken over (this job was presumed crashed): forget the number, take the next one
        deps.state.update(key, lambda v: _forget_version(v, held))
    # above the newest version (one request, not a listing of every version: #17), read back from the platform
    latest = deps.platform.get_latest_model(model)
    candidate = (int(latest.version) if latest is not None and latest.version.isdigit() else 0) + 1
    numbers: set[int] = set()
    while _claim_version(model, candidate, job, numbers, deps) is None:
        candidate += 1
    stored = deps.state.update(key, lambda v: None if v and Registration.from_dict(v).version else (
        Registration.from_dict(v or {}).but(job=job, status="registering", version=str(candidate)).to_dict()))
    version = Registration.from_dict(stored.value).version if stored is not None else ""
    if not version:
        raise TransientError(f"registration record {key} has no version yet", retry_after=5.0)
    if version != str(candidate):  # a racing copy stored another number first: hand this one back
        _release(model, str(candidate), job, deps)
    return version


def _claim_version(model: str, number: int, job: str, registered: set[int], deps: Deps) -> int | None:
    """`number` once this job holds its claim; None when it is registered already (try the next one)."""
    if number in registered:
        return None
    key = version_key(model, str(number))
    now = deps.clock()
    if deps.state.claim(key, {"job": job, "since": now}):
        return number
    claim = deps.state.get(key)
    if claim is None:  # released just now: claim it again
        return _claim_version(model, number, job, registered, deps)
    holder = str(claim.value.get("job") or "")
    if holder == job:
        return number
    if deps.platform.get_model(model, str(number)) is not None:
        registered.add(number)
        return None
    if now - float(claim.value.get("since") or 0) <= VERSION_LEASE_SECONDS:
        raise TransientError(f"model {model}:{number} is claimed by job {holder}, whose registration is under way; "
                             f"job {job} takes the next number after it", retry_after=10.0)
    try:
        deps.state.replace(claim, {"job": job, "since": now, "took_over_from": holder})
    except Conflict as exc:
        raise TransientError(f"model {model}:{number}: another job took over the stale claim of {holder}",
                             retry_after=1.0) from exc
    log.warning("model %s:%s: took over the claim of job %s (held %.0f s, never registered)", model, number, holder,
                now - float(claim.value.get("since") or 0))
    return number


def _release(model: str, version: str, job: str, deps: Deps) -> None:
    """Hand back this job's claim on `model:version` (only while this job holds it and it is not registered)."""
    if not version:
        return
    claim = deps.state.get(version_key(model, version))
    if claim is not None and claim.value.get("job") == job and deps.platform.get_model(model, version) is None:
        deps.state.delete(claim.key, claim.etag)
