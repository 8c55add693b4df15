"""Registration gate end to end: RunCompleted / RunStatusChanged from the fake platform's own events,
delivered three times, against real Azurite state."""

from __future__ import annotations

from typing import Any

import pytest
from azure.functions import EventGridEvent

from functions import registration as registration_fn
from shared.batches import admission
from shared.core import reaction
from shared.core.deps import Deps
from shared.core.platform import APPROVAL_TAG, CHAMPION_TAG, REFLEX_TAG, TrainingRequest
from shared.core.state import StateStore
from shared.registration.flow import SCORED_TAG, job_key
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings


def submit(fake: FakePlatform, name: str, *, reflex: bool = True, batch: str = "", scored: str | None = None,
           mode: str = "command") -> str:
    """A training job as data arrival submits it: command jobs name the champion they score (`scored`)."""
    fake.register_data(name="ds", version="b1", path="azureml://datastores/reflexdata/paths/ds/b1/", tags={})
    tags = {REFLEX_TAG: "true", "reflex.data": "ds:b1", "reflex.batch": batch} if reflex else {"team": "other"}
    if scored is not None:
        tags[SCORED_TAG] = scored
    fake.submit_training(TrainingRequest(job_name=name, experiment_name="reflex", data_name="ds", data_version="b1",
                                         mode=mode, task="classification", label_column="label",
                                         compute="cpu-cluster", environment="azureml:reflex-train:1", tags=tags,
                                         champion_model="" if not scored or scored == "none" else scored))
    return name


def champion(fake: FakePlatform, auc: float, version: str = "1") -> None:
    job = submit(fake, f"champion-job-{version}")
    fake.finish_job(job, metrics={"auc": auc})
    fake.register_model(name="reflex-model", version=version, job_name=job, tags={CHAMPION_TAG: "true"},
                        properties={"reflex.metric.auc": repr(auc)})
    fake.events.clear()


def deliver3(fake: FakePlatform, deps: Deps) -> list[reaction.Outcome]:
    event = fake.events[-1]
    return [reaction.run("registration.run_event", event, event_id=event["id"], deps=deps) for _ in range(3)]


@pytest.fixture
def deps(blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> Deps:
    return make_deps(make_settings(), state=blob_state, platform=fake_platform, clock=clock)


def sent(deps: Deps) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, dict(e.data)) for e in deps.publisher.sent]


def test_no_champion_registers_once_with_lineage_and_metrics(deps: Deps, fake_platform: FakePlatform) -> None:
    job = submit(fake_platform, "reflex-train-1")
    fake_platform.finish_job(job, metrics={"auc": 0.8, "accuracy": 0.75})
    outcomes = deliver3(fake_platform, deps)
    assert [o.status for o in outcomes] == ["acted", "duplicate", "duplicate"]
    assert fake_platform.calls["register_model"] == 1
    [model] = fake_platform.models.values()
    assert (model.name, model.version, model.job_name, model.type) == ("reflex-model", "1", job, "mlflow_model")
    assert model.tags[REFLEX_TAG] == "true" and model.tags["reflex.parent"] == job
    assert model.tags["reflex.data"] == "ds:b1" and model.tags["reflex.event_id"] == fake_platform.events[0]["id"]
    assert model.tags["reflex.trigger"] == f"run:{job}" and APPROVAL_TAG not in model.tags
    assert float(model.properties["reflex.metric.auc"]) == 0.8
    assert float(model.properties["reflex.metric.accuracy"]) == 0.75
    assert [t for t, _ in sent(deps)] == ["Reflex.ModelRegistered"]
    assert fake_platform.events[-1]["eventType"].endswith("ModelRegistered")  # what AML itself would emit


def test_better_model_gets_the_next_version(deps: Deps, fake_platform: FakePlatform) -> None:
    champion(fake_platform, 0.80, version="4")
    job = submit(fake_platform, "reflex-train-2", scored="reflex-model:4")
    fake_platform.finish_job(job, metrics={"auc": 0.85, "champion.auc": 0.80, "n_test": 50})
    assert deliver3(fake_platform, deps)[0].status == "acted"
    assert ("reflex-model", "5") in fake_platform.models
    [(kind, data)] = sent(deps)
    assert kind == "Reflex.ModelRegistered" and data["decision"]["champion"] == 0.8
    assert data["decision"]["challenger"] == 0.85 and data["version"] == "5"
    assert data["decision"]["rows"] == {"source": "holdout", "data": "ds:b1", "count": 50, "job": job, "note": ""}
    assert "champion.auc" not in str(fake_platform.models[("reflex-model", "5")].properties)


def test_worse_model_is_skipped_with_the_numbers_once(deps: Deps, fake_platform: FakePlatform) -> None:
    champion(fake_platform, 0.90)
    job = submit(fake_platform, "reflex-train-3", scored="reflex-model:1")
    fake_platform.finish_job(job, metrics={"auc": 0.85, "champion.auc": 0.9, "n_test": 40})
    outcomes = deliver3(fake_platform, deps)
    assert [o.status for o in outcomes] == ["skipped", "duplicate", "duplicate"]
    assert "auc 0.85 does not beat the champion 0.9 (max, margin 0) on 40 rows of holdout ds:b1" in outcomes[0].reason
    assert fake_platform.calls["register_model"] == 1  # the champion's only
    [(kind, data)] = sent(deps)
    assert kind == "Reflex.ModelRegistrationSkipped"
    expected = {"challenger": 0.85, "champion": 0.9, "metric": "auc", "direction": "max", "margin": 0.0,
                "champion_version": "1", "register": False}
    assert {k: data["decision"][k] for k in expected} == expected


def test_within_margin_is_skipped(blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = make_deps(make_settings(REFLEX_GATE_MIN_MARGIN="0.02"), state=blob_state, platform=fake_platform,
                     clock=clock)
    champion(fake_platform, 0.80)
    fake_platform.finish_job(submit(fake_platform, "reflex-train-4", scored="reflex-model:1"),
                             metrics={"auc": 0.81, "champion.auc": 0.80})
    assert deliver3(fake_platform, deps)[0].status == "skipped"


def test_approval_registers_pending(blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = make_deps(make_settings(REFLEX_REQUIRE_APPROVAL="true"), state=blob_state, platform=fake_platform,
                     clock=clock)
    fake_platform.finish_job(submit(fake_platform, "reflex-train-5"), metrics={"auc": 0.7})
    deliver3(fake_platform, deps)
    [model] = fake_platform.models.values()
    assert model.tags[APPROVAL_TAG] == "pending"
    assert sent(deps)[0][1]["approval"] == "pending"


def test_missing_metric_is_skipped_with_reason(deps: Deps, fake_platform: FakePlatform) -> None:
    fake_platform.finish_job(submit(fake_platform, "reflex-train-6"), metrics={"accuracy": 0.7})
    outcome = deliver3(fake_platform, deps)[0]
    assert outcome.status == "skipped" and "metric 'auc' missing" in outcome.reason and "accuracy" in outcome.reason
    assert not fake_platform.models and [t for t, _ in sent(deps)] == ["Reflex.ModelRegistrationSkipped"]


def test_run_without_model_output_is_skipped_with_reason(deps: Deps, fake_platform: FakePlatform) -> None:
    fake_platform.finish_job(submit(fake_platform, "reflex-train-7"), metrics={"auc": 0.9}, outputs={"logs": "x"})
    outcome = deliver3(fake_platform, deps)[0]
    assert outcome.status == "skipped" and "has no model output 'model' (outputs: logs)" in outcome.reason
    assert not fake_platform.models


def test_foreign_job_is_skipped_with_reason(deps: Deps, fake_platform: FakePlatform) -> None:
    fake_platform.finish_job(submit(fake_platform, "someone-elses-job", reflex=False), metrics={"auc": 0.99})
    event = fake_platform.events[-1]
    event["data"]["runTags"] = {REFLEX_TAG: "true"}  # a forged event tag is not enough: the job's tags decide
    outcome = reaction.run("registration.run_event", event, event_id=event["id"], deps=deps)
    assert outcome.status == "skipped" and "is not a Reflex job" in outcome.reason
    assert not fake_platform.models and not sent(deps)
    unknown = {**event, "id": "e2", "data": {**event["data"], "runId": "not-there"}}
    assert "is not in this workspace" in reaction.run("registration.run_event", unknown, deps=deps).reason


def test_failed_run_publishes_training_failed_once_and_frees_the_slot(deps: Deps, fake_platform: FakePlatform,
                                                                      blob_state: StateStore) -> None:
    job = submit(fake_platform, "reflex-train-8", batch="arrivals/c/ds/b1")
    blob_state.update(admission.ADMISSION_KEY, lambda v: admission.reserve(v, job, "arrivals/c/ds/b1", 0.0,
                                                                           max_concurrent=2, daily_cap=0)[0])
    blob_state.create("arrivals/c/ds/b1", {"status": "submitted", "job": job, "history": []})
    fake_platform.finish_job(job, "Failed", error="OOM")
    outcomes = deliver3(fake_platform, deps)
    assert [o.status for o in outcomes] == ["acted", "duplicate", "duplicate"]
    [(kind, data)] = sent(deps)
    assert kind == "Reflex.TrainingFailed" and data["error"] == "OOM" and data["status"] == "failed"
    record = blob_state.get("arrivals/c/ds/b1")
    assert record and record.value["status"] == "failed" and "OOM" in record.value["reason"]
    assert blob_state.get(admission.ADMISSION_KEY).value["running"] == {}  # type: ignore[union-attr]


def test_canceled_run_is_a_failure_too(deps: Deps, fake_platform: FakePlatform) -> None:
    fake_platform.finish_job(submit(fake_platform, "reflex-train-9"), "Canceled")
    assert deliver3(fake_platform, deps)[0].status == "acted"
    assert [t for t, _ in sent(deps)] == ["Reflex.TrainingFailed"]


def test_two_winners_finishing_together_get_distinct_versions(deps: Deps, fake_platform: FakePlatform) -> None:
    a, b = submit(fake_platform, "reflex-train-a"), submit(fake_platform, "reflex-train-b")
    fake_platform.finish_job(a, metrics={"auc": 0.7})
    fake_platform.finish_job(b, metrics={"auc": 0.8})
    for event in list(fake_platform.events)[:2] * 2:
        reaction.run("registration.run_event", event, event_id=event["id"], deps=deps)
    assert sorted(v for (_, v) in fake_platform.models) == ["1", "2"]
    assert deps.state.get(job_key(a)).value["version"] != deps.state.get(job_key(b)).value["version"]  # type: ignore


def test_dry_run_decides_and_registers_nothing(blob_state: StateStore, fake_platform: FakePlatform,
                                               clock: Clock) -> None:
    deps = make_deps(make_settings(REFLEX_DRY_RUN="true"), state=blob_state, platform=fake_platform, clock=clock)
    fake_platform.finish_job(submit(fake_platform, "reflex-train-10"), metrics={"auc": 0.9})
    outcome = deliver3(fake_platform, deps)[0]
    assert outcome.status == "dry-run" and "would register" in outcome.reason
    assert not fake_platform.models and not sent(deps)


def test_through_the_decorated_event_grid_trigger(deps: Deps, fake_platform: FakePlatform,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.core.deps.get_deps", lambda: deps)
    fake_platform.finish_job(submit(fake_platform, "reflex-train-11"), metrics={"auc": 0.9})
    raw = fake_platform.events[-1]
    event = EventGridEvent(id=raw["id"], data=raw["data"], topic=raw["topic"], subject=raw["subject"],
                           event_type=raw["eventType"], event_time=None, data_version=raw["dataVersion"])
    for _ in range(3):
        registration_fn.on_run_event(event)
    assert list(fake_platform.models) == [("reflex-model", "1")]


def test_the_whole_chain_with_every_event_delivered_three_times(container_factory: Any, blob_state: StateStore,
                                                                fake_platform: FakePlatform, clock: Clock) -> None:
    """A completed batch -> data asset + job -> RunCompleted -> registered model; then a worse batch -> skipped."""
    from shared.arrival.flow import arrival_key
    from shared.batches.paths import parse_blob_path
    from tests.test_arrival_flow import Lake, deliver

    lake = Lake(container_factory("data"))
    deps = make_deps(make_settings(REFLEX_DATA_CONTAINER=lake.name), state=blob_state, platform=fake_platform,
                     clock=clock)
    for batch, auc in (("b1", 0.8), ("b2", 0.7)):
        files = lake.put_many([f"ds/{batch}/p{i}.csv" for i in range(5)])
        for raw in [*files, lake.put(f"ds/{batch}/_SUCCESS", b"")] * 3:
            deliver(raw, deps)
        job = fake_platform.jobs[list(fake_platform.jobs)[-1]].name
        assert fake_platform.jobs[job].tags[SCORED_TAG] == ("none" if batch == "b1" else "reflex-model:1")
        assert fake_platform.job_requests[job].champion_model == ("" if batch == "b1" else "reflex-model:1")
        fake_platform.finish_job(job, metrics={"auc": auc, "champion.auc": 0.8})
        deliver3(fake_platform, deps)
        if batch == "b1":  # the rollout would crown it; here the test does
            fake_platform.update_model_tags("reflex-model", "1", set_tags={CHAMPION_TAG: "true"})
        record = blob_state.get(arrival_key(parse_blob_path(lake.name, f"ds/{batch}/x.csv")))
        assert record and record.value["status"] == "trained"
    assert len(fake_platform.jobs) == 2 and list(fake_platform.models) == [("reflex-model", "1")]
    assert fake_platform.models[("reflex-model", "1")].tags["reflex.data"] == "ds:b1"
    assert [t for t, _ in sent(deps)] == ["Reflex.TrainingSubmitted", "Reflex.ModelRegistered",
                                           "Reflex.TrainingSubmitted", "Reflex.ModelRegistrationSkipped"]
    assert blob_state.get(admission.ADMISSION_KEY).value["running"] == {}  # type: ignore[union-attr]


def test_run_status_changed_that_is_not_a_failure_is_skipped(deps: Deps, fake_platform: FakePlatform) -> None:
    fake_platform.finish_job(submit(fake_platform, "reflex-train-12"), "Failed")
    event = {**fake_platform.events[-1], "id": "x1"}
    event["data"] = {**event["data"], "runStatus": "running"}
    outcome = reaction.run("registration.run_event", event, deps=deps)
    assert outcome.status == "skipped" and "needs no reaction" in outcome.reason
