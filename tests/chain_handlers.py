"""A small, honest stand-in for the three chained reactions, for ledger and CLI tests.

Each handler does real work on the fake platform (register data, submit a job, register a model, create a
deployment and shift traffic) and reports the ids it touched in `Outcome.details` under the keys the ledger
documents, so the ledger and `explain` are exercised on the same shapes the real reactions produce. The real
reactions' own chain test lives with them (tests/test_cli.py adds one when they are on main).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared import events, reaction
from shared.errors import PermanentError
from shared.platform import REFLEX_TAG, TrainingRequest

ARRIVAL, REGISTRATION, ROLLOUT = "t.arrival", "t.registration", "t.rollout"
ENDPOINT = "reflex-endpoint"
MODEL = "reflex-model"


def blob_delivery(name: str, etag: str = "0x1") -> dict[str, Any]:
    return {"name": name, "uri": f"http://127.0.0.1:10000/devstoreaccount1/{name}", "etag": etag, "length": 10}


def _arrival(payload: Any, deps: Any) -> reaction.Outcome:
    blob = events.from_blob_delivery(payload)
    dataset, _, rest = blob.blob_name.partition("/")
    batch_name = rest.partition("/")[0]
    batch = f"{blob.container}/{dataset}/{batch_name}"
    job_name = f"reflex-{dataset}-{batch_name}".lower()
    refs = {"blob": blob.url, "batch": batch, "data_name": dataset, "data_version": batch_name, "job_name": job_name}
    if not deps.state.claim(f"claims/t.arrival/{batch_name}"):
        return reaction.Outcome("duplicate", f"batch {batch} already submitted", refs)
    tags = {REFLEX_TAG: "true", "reflex.trigger": blob.url, "reflex.event_id": blob.id,
            "reflex.data": f"{dataset}:{batch_name}"}
    deps.platform.register_data(name=dataset, version=batch_name, path=f"azureml://datastores/d/paths/{batch}",
                                tags=tags)
    deps.platform.submit_training(TrainingRequest(
        job_name=job_name, experiment_name="reflex", data_name=dataset, data_version=batch_name, mode="command",
        task="classification", label_column="label", compute="cpu", environment="azureml:e:1", tags=tags))
    return reaction.Outcome("acted", f"batch {batch} submitted as {job_name}", {**refs, "files": 1})


def _registration(payload: Any, deps: Any) -> reaction.Outcome:
    event = events.parse(payload)
    run_id = getattr(event, "run_id", "")
    if deps.settings.label_column == "fail-registration":
        raise PermanentError(f"run {run_id}: cannot read metrics")
    version = str(len(deps.platform.list_models(MODEL)) + 1)
    deps.platform.register_model(name=MODEL, version=version, job_name=run_id,
                                 tags={REFLEX_TAG: "true", "reflex.parent": run_id, "reflex.event_id": event.id})
    return reaction.Outcome("acted", "beats the champion", {"job": run_id, "model_name": MODEL,
                                                            "model_version": version,
                                                            "decision": {"metric": "auc", "challenger": 0.9,
                                                                         "champion": None}})


def _rollout(payload: Any, deps: Any) -> reaction.Outcome:
    event = events.parse(payload)
    ref = f"{event.model_name}:{event.model_version}"
    deployment = f"v{event.model_version}"
    deps.platform.begin_create_endpoint(ENDPOINT)
    deps.platform.begin_create_deployment(ENDPOINT, deployment, model=ref, instance_type="Standard_DS3_v2",
                                          instance_count=1)
    old = deps.platform.get_endpoint(ENDPOINT)
    traffic = {name: 0 for name in (old.traffic if old else {})} | {deployment: 100}
    deps.platform.set_traffic(ENDPOINT, traffic)
    return reaction.Outcome("acted", "promoted to 100%", {"model": ref, "endpoint": ENDPOINT,
                                                          "deployment": deployment, "rollout": f"rollouts/{ENDPOINT}"})


def install() -> Iterator[None]:
    """Register the handlers for one test and restore the registry afterwards (use as a fixture body)."""
    saved = dict(reaction.HANDLERS)
    reaction.HANDLERS.update({ARRIVAL: _arrival, REGISTRATION: _registration, ROLLOUT: _rollout})
    yield
    reaction.HANDLERS.clear()
    reaction.HANDLERS.update(saved)


def run_chain(deps: Any, platform: Any, blob_names: list[str]) -> list[reaction.Outcome]:
    """Upload event(s) -> job -> finish_job -> RunCompleted -> registration -> ModelRegistered -> rollout."""
    outcomes = []
    for name in blob_names:
        raw = blob_delivery(name)
        outcomes.append(reaction.run(ARRIVAL, raw, event_id=events.from_blob_delivery(raw).id, deps=deps))
    job_name = outcomes[0].details["job_name"]
    platform.finish_job(job_name, metrics={"auc": 0.9})
    [run_completed] = [e for e in platform.events if e["eventType"].endswith("RunCompleted")
                       and e["data"]["runId"] == job_name]
    outcomes.append(reaction.run(REGISTRATION, run_completed, event_id=run_completed["id"], deps=deps))
    registered = [e for e in platform.events if e["eventType"].endswith("ModelRegistered")][-1]
    outcomes.append(reaction.run(ROLLOUT, registered, event_id=registered["id"], deps=deps))
    return outcomes
