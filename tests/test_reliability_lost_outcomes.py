"""#18 item 2: no lost outcome. A job whose end no event announced (the host was down, Event Grid gave up,
Azure ML's preview events did not fire) is found by the sweep and handled exactly as its event would have
been, once: the gate registers the model, a failure publishes TrainingFailed. A late real event is then a
duplicate. Real Azurite state and data container, the behavioural fake platform; no event is delivered
except where the test says so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import shared.handlers  # noqa: F401 - the named-handler table the sweep hands unheard jobs to
from shared.arrival.flow import arrival_key
from shared.batches import admission
from shared.batches.paths import parse_blob_path
from shared.core import reaction, unheard
from shared.core.control import write_control
from shared.core.deps import Deps
from shared.core.state import StateStore
from shared.registration.flow import job_key
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.real_chain import Lake


@pytest.fixture
def lake(container_factory: Callable[[str], Any]) -> Lake:
    return Lake(container_factory("data"))


@pytest.fixture
def deps(lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> Deps:
    return make_deps(make_settings(REFLEX_DATA_CONTAINER=lake.name), state=blob_state, platform=fake_platform,
                     clock=clock)


def land_batch(lake: Lake, deps: Deps, batch: str = "b1") -> str:
    """A batch lands and its job is submitted; the job's name."""
    for raw in (lake.put(f"ds/{batch}/p.csv"), lake.put(f"ds/{batch}/_SUCCESS", b"")):
        reaction.run("data.arrival", raw, event_id=raw["id"], deps=deps)
    record = deps.state.get(arrival_key(parse_blob_path(lake.name, f"ds/{batch}/x.csv")))
    assert record is not None and record.value["status"] == "submitted"
    return str(record.value["job"])


def status_of(lake: Lake, deps: Deps, batch: str = "b1") -> str:
    record = deps.state.get(arrival_key(parse_blob_path(lake.name, f"ds/{batch}/x.csv")))
    return str(record.value["status"]) if record else "gone"


def running(deps: Deps) -> dict[str, Any]:
    adm = deps.state.get(admission.ADMISSION_KEY)
    return dict((adm.value if adm else {}).get("running") or {})


def sent(deps: Deps) -> list[str]:
    return [e.type for e in deps.publisher.sent]


def test_a_completed_job_whose_event_was_lost_is_gated_by_the_sweep_once(
        lake: Lake, deps: Deps, fake_platform: FakePlatform) -> None:
    job = land_batch(lake, deps)
    fake_platform.finish_job(job, metrics={"auc": 0.81, "n_test": 30})
    lost = fake_platform.events.pop()  # the host was down: nothing delivered it
    swept = reaction.run("data.sweep", {}, deps=deps)
    assert swept.details["released"] == 1 and running(deps) == {}
    assert list(fake_platform.models) == [("reflex-model", "1")]
    assert fake_platform.models[("reflex-model", "1")].job_name == job
    assert status_of(lake, deps) == "trained"
    record = deps.state.get(job_key(job))
    assert record is not None and record.value["status"] == "registered"
    assert sent(deps).count("Reflex.ModelRegistered") == 1
    # the real event, late, and the next sweeps: nothing twice
    late = reaction.run("registration.run_event", lost, event_id=lost["id"], deps=deps)
    assert late.status == "duplicate"
    assert reaction.run("data.sweep", {}, deps=deps).details["released"] == 0
    assert fake_platform.calls["register_model"] == 1 and sent(deps).count("Reflex.ModelRegistered") == 1


def test_a_failed_job_whose_event_was_lost_publishes_training_failed_once(
        lake: Lake, deps: Deps, fake_platform: FakePlatform) -> None:
    job = land_batch(lake, deps)
    fake_platform.finish_job(job, "Failed", error="train.py: error: the label column 'label' is missing")
    lost = fake_platform.events.pop()
    reaction.run("data.sweep", {}, deps=deps)
    assert status_of(lake, deps) == "failed" and running(deps) == {}
    assert sent(deps).count("Reflex.TrainingFailed") == 1
    assert reaction.run("registration.run_event", lost, event_id=lost["id"], deps=deps).status == "duplicate"
    reaction.run("data.sweep", {}, deps=deps)
    assert sent(deps).count("Reflex.TrainingFailed") == 1


def test_the_real_event_first_then_the_sweep_changes_nothing(lake: Lake, deps: Deps,
                                                             fake_platform: FakePlatform) -> None:
    job = land_batch(lake, deps)
    fake_platform.finish_job(job, metrics={"auc": 0.81, "n_test": 30})
    event = fake_platform.events[-1]
    assert reaction.run("registration.run_event", event, event_id=event["id"], deps=deps).status == "acted"
    assert reaction.run("data.sweep", {}, deps=deps).details["released"] == 0
    assert fake_platform.calls["register_model"] == 1


def test_while_paused_the_unheard_job_is_held_once_and_keeps_its_slot(lake: Lake, deps: Deps,
                                                                     fake_platform: FakePlatform) -> None:
    job = land_batch(lake, deps)
    fake_platform.finish_job(job, metrics={"auc": 0.81, "n_test": 30})
    fake_platform.events.pop()
    write_control(deps, paused=True, by="test", why="maintenance")
    for _ in range(3):
        reaction.run("data.sweep", {}, deps=deps, honour_pause=False)
    assert list(running(deps)) == [job] and not fake_platform.models
    held = deps.state.keys(f"held/{unheard.RUN_REACTION}/")
    assert len(held) == 1  # one held event for the job, however many sweeps saw it


def test_a_transient_failure_of_the_gate_keeps_the_slot_for_the_next_sweep(
        lake: Lake, deps: Deps, fake_platform: FakePlatform) -> None:
    from shared.core.errors import TransientError

    job = land_batch(lake, deps)
    fake_platform.finish_job(job, metrics={"auc": 0.81, "n_test": 30})
    fake_platform.events.pop()
    fake_platform.inject("register_model", TransientError("registry throttled", retry_after=1.0))
    assert reaction.run("data.sweep", {}, deps=deps).details["released"] == 0
    assert list(running(deps)) == [job] and not fake_platform.models
    assert reaction.run("data.sweep", {}, deps=deps).details["released"] == 1
    assert list(fake_platform.models) == [("reflex-model", "1")]


def test_the_unheard_event_has_the_form_of_azure_mls_samples(fake_platform: FakePlatform) -> None:
    """The keys and value types of tests/events/run_completed.json and run_status_changed.json (Microsoft's
    samples): the parser reads it as the same event type, with the job as runId and its tags as runTags."""
    import json
    from pathlib import Path

    from shared.core import events
    from shared.core.platform import Job

    samples = Path(__file__).parent / "events"
    for status, sample in (("Completed", "run_completed.json"), ("Failed", "run_status_changed.json")):
        [real] = json.loads((samples / sample).read_text())
        built = unheard.run_event(Job("job-1", status, experiment_name="reflex", tags={"reflex.managed": "true"}))
        assert set(built) == set(real) and set(built["data"]) == set(real["data"])
        assert built["eventType"] == real["eventType"]
        parsed = events.parse(built)
        assert isinstance(parsed, events.RunCompleted) and parsed.run_id == "job-1"
        assert dict(parsed.run_tags) == {"reflex.managed": "true"}
        if status == "Failed":
            assert isinstance(parsed, events.RunStatusChanged) and parsed.run_status == real["data"]["runStatus"]


def test_an_evaluation_job_whose_event_was_lost_concludes_the_gate_from_the_sweep(
        blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    from tests.test_registration_flow import champion, submit

    deps = make_deps(make_settings(), state=blob_state, platform=fake_platform, clock=clock)
    champion(fake_platform, 0.9, version="1")
    job = submit(fake_platform, "reflex-train-eval-lost", scored="none")  # scored by an evaluation job
    fake_platform.finish_job(job, metrics={"auc": 0.95, "n_test": 30})
    event = fake_platform.events[-1]
    assert reaction.run("registration.run_event", event, event_id=event["id"], deps=deps).status == "acted"
    [name] = fake_platform.evaluation_requests
    fake_platform.finish_job(name, metrics={"challenger.auc": 0.95, "challenger.failed": 0, "champion.auc": 0.9,
                                            "champion.failed": 0, "eval.rows": 30})
    lost = fake_platform.events.pop()
    assert len(deps.state.keys(unheard.AWAITED)) == 1   # the gate's marker: what the sweep looks for
    reaction.run("data.sweep", {}, deps=deps)
    assert ("reflex-model", "2") in fake_platform.models
    assert deps.state.get(job_key(job)).value["status"] == "registered"  # type: ignore[union-attr]
    assert reaction.run("registration.run_event", lost, event_id=lost["id"], deps=deps).status == "duplicate"
    reaction.run("data.sweep", {}, deps=deps)
    assert fake_platform.calls["register_model"] == 2 and sent(deps).count("Reflex.ModelRegistered") == 1
    assert deps.state.keys(unheard.AWAITED) == []   # decided: the marker is dropped
