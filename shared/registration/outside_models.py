"""Models registered outside Reflex (a person, a notebook, another pipeline) under a name Reflex serves.

The policy (README "Models from outside Reflex"):

* Reflex's own registrations carry `reflex.managed=true`; they passed the gate already and roll out as before.
* Any other version of a served model is **evaluated against the champion on the same rows before rollout**
  (the default): an evaluation job (shared/registration/evaluation.py) scores it and the champion on the evaluation set
  (REFLEX_EVAL_DATA) or, without one, on the holdout of the champion's training batch (else of the latest
  batch). It rolls out only if it beats the champion by the gate's rule (REFLEX_GATE_METRIC, direction,
  margin); otherwise it stays registered, tagged `reflex.evaluation=failed`, and the reason is recorded.
* It is **trusted without evaluation** only when the user says so: `REFLEX_TRUST_OUTSIDE_MODELS=true` for all,
  or the tag `reflex.trusted=true` on that version. With no champion yet there is nothing to compare with,
  and the version rolls out.
* Once it is champion, it never blocks retraining: the next challenger's job scores it on its own rows
  (shared/registration/flow.py), whatever metrics it was registered with.

State (shared/registration/records.py): `evaluations/outside/<model>/<version>` (`OutsideEvaluation`: "model",
"version", "endpoint", "status": "evaluating" | "passed" | "failed", "job", "champion", "decision", "event_id");
a passed version also gets `evaluations/ready/<model>/<version>` (`ReadyToRoll`), which the rollout reconciler
consumes through `take_ready` (functions/rollout.py hands this module to it; it starts the rollout, deletes the
record), so the scan each tick costs what is waiting, never the history. The model's tag `reflex.evaluation`
(pending | passed | failed) shows the verdict in the registry.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from shared.core import champion as champions
from shared.core.errors import PermanentError
from shared.core.platform import REFLEX_TAG, Job, ModelVersion
from shared.core.reaction import Outcome
from shared.registration import evaluation, gate
from shared.registration.records import OutsideEvaluation, ReadyToRoll

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["EVALUATION_TAG", "READY_PREFIX", "TRUSTED_TAG", "admit", "evaluated", "record_key", "take_ready"]

log = logging.getLogger("reflex.outside")

TRUSTED_TAG = "reflex.trusted"
EVALUATION_TAG = "reflex.evaluation"
READY_PREFIX = ReadyToRoll.PREFIX


def record_key(name: str, version: str) -> str:
    return OutsideEvaluation.key_of(name, version)


def _training_data(deps: Deps, champion: ModelVersion) -> str:
    """The data asset whose holdout both are scored on: the champion's training batch, else the latest batch."""
    data = str(champion.tags.get("reflex.data", ""))
    if not data and champion.job_name:
        job = deps.platform.get_job(champion.job_name)
        data = str(job.tags.get("reflex.data", "")) if job else ""
    if data:
        return data
    from shared.batches.training import latest_batch

    latest = latest_batch(deps)
    asset = latest[1].data if latest else None
    return asset.ref if asset is not None and asset.name and asset.version else ""


def admit(deps: Deps, model: ModelVersion, endpoint: str, event_id: str) -> Outcome | None:
    """None: roll `model` out now. Otherwise why not yet (being evaluated) or not (it did not pass)."""
    from shared.core.control import read_control

    if model.tags.get(REFLEX_TAG) == "true":
        return None
    if deps.settings.trust_outside_models or model.tags.get(TRUSTED_TAG) == "true":
        log.info("%s was registered outside Reflex and is trusted: rolled out without evaluation", model.ref)
        return None
    key = record_key(model.name, model.version)
    details: dict[str, Any] = {"model": model.ref, "endpoint": endpoint}
    found = deps.state.get(key)
    if found is not None:
        v = OutsideEvaluation.from_dict(found.value)
        details.update(evaluation=v.job, decision=dict(v.decision))
        if v.status == "passed":
            return None
        if v.status == "failed":
            return Outcome("skipped", f"{model.ref} was registered outside Reflex and did not pass its evaluation: "
                                      f"{v.reason}", details)
        return Outcome("duplicate", f"{model.ref} is being evaluated against the champion {v.champion} "
                                    f"(job {v.job}) before any rollout", details)
    champion = champions.find(deps, model.name)
    if champion is None or champion.ref == model.ref:
        return None  # nothing to compare with: the first model of a name rolls out, as a first registration does
    try:
        plan = evaluation.rows_plan(deps, _training_data(deps, champion))
    except PermanentError as exc:
        reason = (f"cannot evaluate it against the champion {champion.ref}: {exc}; or tag it "
                  f"{TRUSTED_TAG}=true to roll it out without evaluation")
        return Outcome("skipped", f"{model.ref} was registered outside Reflex; {reason}", details)
    if read_control(deps).dry_run:
        return Outcome("dry-run", f"would evaluate {model.ref} against the champion {champion.ref} on "
                                  f"{plan.source} {plan.data} before rollout", details)
    job = evaluation.submit(deps, purpose="outside", parent=model.ref,
                            models={"challenger": f"azureml:{model.ref}", "champion": f"azureml:{champion.ref}"},
                            plan=plan, tags={"reflex.eval.champion": champion.ref, "reflex.eval.model": model.ref})
    deps.state.create(key, OutsideEvaluation(model.name, model.version, endpoint, "evaluating", job.name, champion.ref,
                                             event_id, {"source": plan.source, "data": plan.data}).to_dict())
    deps.platform.update_model_tags(model.name, model.version, set_tags={EVALUATION_TAG: "pending"})
    details.update(evaluation=job.name, champion=champion.ref)
    return Outcome("acted", f"{model.ref} was registered outside Reflex: evaluating it against the champion "
                            f"{champion.ref} on the same rows ({plan.source} {plan.data}) before any rollout: "
                            f"job {job.name}", details)


def evaluated(deps: Deps, job: Job, *, event_id: str) -> Outcome:
    """The evaluation job of an outside model ended: passed (the reconciler rolls it out) or failed, once."""
    name, _, version = job.tags.get("reflex.parent", "").partition(":")
    key = record_key(name, version)
    record = deps.state.get(key)
    if record is None:
        return Outcome("skipped", f"evaluation {job.name}: no evaluation record for {name}:{version}",
                       {"job": job.name})
    current = OutsideEvaluation.from_dict(record.value)
    if current.status != "evaluating":
        return Outcome("duplicate", f"{name}:{version} already {current.status}: {current.reason}", {"job": job.name})
    s = deps.settings
    champion = job.tags.get("reflex.eval.champion", "")
    if job.status != "Completed":
        decision = gate.GateDecision(False, f"evaluation job {job.name} {job.status.lower()}"
                                            + (f": {job.error}" if job.error else ""),
                                     s.gate_metric, s.gate_direction, s.gate_min_margin, None, None)
    else:
        found = evaluation.outcome_of(job, deps.platform.get_job_metrics(job.name), metric=s.gate_metric)
        if found["challenger_error"]:
            decision = gate.GateDecision(False, f"it {found['challenger_error'].removeprefix('challenger ')}",
                                         s.gate_metric, s.gate_direction, s.gate_min_margin, None, None)
        else:
            decision = gate.decide(found["challenger"], found["champion"], metric=s.gate_metric,
                                   direction=s.gate_direction, margin=s.gate_min_margin, rows=found["rows"],
                                   champion_version=champion.rpartition(":")[2],
                                   champion_error=found["champion_error"])
    status = "passed" if decision.register else "failed"
    token = uuid.uuid4().hex

    def conclude(v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None or OutsideEvaluation.from_dict(v).status != "evaluating":
            return None
        return OutsideEvaluation.from_dict(v).but(status=status, reason=decision.reason, decision=decision.as_dict(),
                                                  by=token).to_dict()

    stored = deps.state.update(key, conclude)
    details = {"model": f"{name}:{version}", "job": job.name, "champion": champion, "decision": decision.as_dict()}
    concluded = OutsideEvaluation.from_dict(stored.value) if stored is not None else None
    if concluded is None or concluded.by != token:
        return Outcome("duplicate", f"{name}:{version}: evaluation already concluded", details)
    deps.platform.update_model_tags(name, version, set_tags={EVALUATION_TAG: status})
    if decision.register:
        deps.state.create(ReadyToRoll.key_of(name, version), ReadyToRoll(
            name, version, concluded.endpoint, concluded.event_id or event_id).to_dict())
    deps.publisher.publish("ModelEvaluated", f"models/{name}:{version}", {**details, "status": status})
    verdict = "passed: the reconciler starts its rollout" if decision.register else "failed: not rolled out"
    return Outcome("acted", f"{name}:{version} (registered outside Reflex) {verdict}: {decision.reason}", details)


def take_ready(deps: Deps) -> list[ReadyToRoll]:
    """Passed outside models whose rollout has not started yet (for the reconciler, which deletes each `key`
    once the rollout is recorded)."""
    return [ReadyToRoll.from_dict(r.value).but(key=r.key) for r in deps.state.records(READY_PREFIX)]
