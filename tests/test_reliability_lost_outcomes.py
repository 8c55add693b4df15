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


# ------------------------------------------------------------------ batch scoring jobs (#18.2 "likewise batch jobs")
# A batch scoring job's own run event is no trigger at all (the gate skips it: test_batch_scoring.py
# test_registration_gate_skips_batch_scoring_jobs); its end is read by the scoring tracker's timer from the job
# as the platform reports it. So an event that never came loses nothing, and timer ticks that overlap (two hosts,
# a slow tick and the next) end the batch once: the record's compare-and-swap decides which tick publishes.

@pytest.fixture
def scoring_job(container_factory: Callable[[str], Any], blob_state: StateStore, fake_platform: FakePlatform,
                clock: Clock) -> tuple[Deps, str]:
    """A scoring batch landed and its batch job submitted for the champion; (deps, the job's name)."""
    from tests.test_batch_scoring import _batch
    from tests.timers_support import make_champion

    container = container_factory("score")
    deps = make_deps(make_settings(REFLEX_SCORING_CONTAINER=container.container_name), state=blob_state,
                     platform=fake_platform, clock=clock)
    make_champion(fake_platform)
    for raw in _batch(container, "p", "b1"):
        reaction.run("scoring.blob", raw, event_id=raw["id"], deps=deps)
    [job] = [j.name for j in fake_platform.jobs.values() if j.kind == "batch"]
    return deps, job


def _end_unheard(platform: FakePlatform, job: str, status: str, **how: str) -> dict[str, Any]:
    """The platform ends `job`; its run event is never delivered (returned, for a late delivery)."""
    platform.finish_job(job, status, **how)
    return platform.events.pop()


def _overlapping_ticks(deps: Deps, ticks: int = 3) -> list[reaction.Outcome]:
    """`ticks` scoring tracker timer runs at once, as two hosts (or a slow tick and the next) run them."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(ticks) as pool:
        return list(pool.map(lambda _: reaction.run("scoring.track", {}, deps=deps), range(ticks)))


def _scoring_status(deps: Deps) -> str:
    [record] = deps.state.records("scoring/")
    return str(record.value["status"])


def test_a_scoring_job_that_completed_unheard_is_closed_by_the_tracker_once(
        scoring_job: tuple[Deps, str], fake_platform: FakePlatform) -> None:
    deps, job = scoring_job
    lost = _end_unheard(fake_platform, job, "Completed")
    _overlapping_ticks(deps)
    _overlapping_ticks(deps)
    assert _scoring_status(deps) == "completed"
    [done] = [e for e in deps.publisher.sent if e.type == "Reflex.BatchScoringCompleted"]
    assert done.data["job"] == job and done.data["output"] == fake_platform.jobs[job].outputs["score"]
    # its event, late: the gate leaves batch jobs to the tracker; nothing is published again
    late = reaction.run("registration.run_event", lost, event_id=lost["id"], deps=deps)
    assert late.status == "skipped" and "batch scoring job" in late.reason
    assert sent(deps).count("Reflex.BatchScoringCompleted") == 1 and "Reflex.BatchScoringFailed" not in sent(deps)


def test_a_scoring_job_that_failed_unheard_publishes_its_failure_once_with_why(
        scoring_job: tuple[Deps, str], fake_platform: FakePlatform) -> None:
    from shared.core.platform import FAILURE_USER

    deps, job = scoring_job
    _end_unheard(fake_platform, job, "Failed", error="score.py: KeyError: 'age'", failure=FAILURE_USER)
    _overlapping_ticks(deps)
    _overlapping_ticks(deps)
    assert _scoring_status(deps) == "failed"
    [failed] = [e for e in deps.publisher.sent if e.type == "Reflex.BatchScoringFailed"]
    assert "KeyError: 'age'" in failed.data["reason"] and "not retried" in failed.data["reason"]
    assert fake_platform.calls["invoke_batch"] == 1


def test_a_scoring_job_that_failed_transiently_unheard_is_retried_once_then_closed(
        scoring_job: tuple[Deps, str], fake_platform: FakePlatform, clock: Clock) -> None:
    from shared.core.platform import FAILURE_TRANSIENT

    deps, job = scoring_job
    _end_unheard(fake_platform, job, "Failed", error="ServiceUnavailable: 503", failure=FAILURE_TRANSIENT)
    outcomes = _overlapping_ticks(deps)
    assert _scoring_status(deps) == "deploying" and fake_platform.calls["invoke_batch"] == 1
    assert sum(o.details.get("advanced", 0) for o in outcomes) == 1  # one tick scheduled the retry
    clock.advance(3600)  # past the backoff
    outcomes = _overlapping_ticks(deps)
    retries = [j.name for j in fake_platform.jobs.values() if j.kind == "batch" and j.name != job]
    assert len(retries) == 1 and _scoring_status(deps) == "submitted"
    assert sum(o.details.get("advanced", 0) for o in outcomes) == 1  # one tick submitted it, the others: duplicate
    assert sent(deps).count("Reflex.BatchScoringSubmitted") == 2     # the first job and its one retry
    _end_unheard(fake_platform, retries[0], "Completed")
    _overlapping_ticks(deps)
    assert _scoring_status(deps) == "completed"
    assert sent(deps).count("Reflex.BatchScoringCompleted") == 1 and "Reflex.BatchScoringFailed" not in sent(deps)


# ------------------------------------------------------------------ registrations and deployments (#18.2)
def test_a_reflex_registered_model_whose_event_was_lost_is_rolled_out_by_the_reconciler_as_the_event_would(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    """Two worlds, one chain each: the gate registers the model; in one its ModelRegistered reaches the rollout,
    in the other it is lost. The reconcile timer's discovery starts the same rollout (the same version,
    deployment, plan and first step) once, and the lost event, arriving late, is a duplicate."""
    from tests.real_chain import ENDPOINT, make_world

    heard, unheard_world = make_world(container_factory, clock), make_world(container_factory, clock)
    heard.chain("ds/b1", upto="rolling")
    heard.tick()
    chain = unheard_world.chain("ds/b1", upto="registered")
    assert chain.model == "reflex-model:1" and unheard_world.rollout() is None
    lost = unheard_world.last_event("ModelRegistered")
    ticked = unheard_world.tick()
    assert ticked.status == "acted" and ticked.details["discovered"]["reflex-model"]["outcome"] == "acted"
    a, b = heard.rollout(), unheard_world.rollout()
    assert a is not None and b is not None
    assert (b.ref, b.deployment, b.plan, b.status, b.phase, b.previous) == \
        (a.ref, a.deployment, a.plan, a.status, a.phase, a.previous)
    assert b.event_id.startswith("reconcile-") and a.event_id != b.event_id
    late = unheard_world.run("rollout.model_registered", lost, lost["id"])
    assert late.status == "duplicate"
    for _ in range(3):
        unheard_world.tick()
    assert unheard_world.platform.calls["begin_create_deployment"] == 1
    ended = unheard_world.roll_out()
    assert ended.status == heard.roll_out().status and ended.status in ("promoted", "done"), ended.reason
    assert unheard_world.platform.get_endpoint(ENDPOINT).traffic == {b.deployment: 100}  # type: ignore[union-attr]


@pytest.mark.parametrize("outcome", ["Succeeded", "Failed"])
def test_a_deployment_whose_provisioning_ended_while_the_host_was_down_is_picked_up_by_the_next_tick(
        blob_state: StateStore, clock: Clock, outcome: str) -> None:
    """Azure ML announces no end of a deployment's provisioning to Reflex at all: the reconciler reads the
    deployment's state each tick. The host is down for the whole provisioning (no tick); the first tick after
    it goes on from the state the deployment ended in, once."""
    from shared.rollout.flow import rollout_key
    from shared.rollout.plan import deployment_name
    from tests.rollout_helpers import ENDPOINT, MODEL, ROLLOUT_ENV, live_endpoint, register_model
    from tests.test_rollout_flow import GOOD, LIVE

    fp = FakePlatform(clock=clock, provisioning_seconds=300)
    deps = make_deps(make_settings(**ROLLOUT_ENV), state=blob_state, platform=fp, clock=clock)
    live_endpoint(fp)
    created = fp.calls["begin_create_deployment"]   # the live one's
    new = deployment_name(MODEL, "2")
    if outcome == "Failed":
        fp.failing_deployments.add(new)   # its provisioning will end Failed (an image that does not start)
    event = register_model(fp, "2")
    reaction.run("rollout.model_registered", event, event_id=event["id"], deps=deps)
    reaction.run("rollout.reconcile", {"past_due": False}, deps=deps)   # the first step: the deployment begins
    record = deps.state.get(rollout_key(ENDPOINT))
    assert record is not None and record.value["status"] == "creating"
    assert fp.get_deployment(ENDPOINT, new).state == "Creating"  # type: ignore[union-attr]
    clock.advance(3 * 300)   # the host was down: provisioning ended meanwhile, no tick saw it
    fp.metrics[(ENDPOINT, new)], fp.metrics[(ENDPOINT, "blue")] = GOOD, LIVE
    for _ in range(3):
        reaction.run("rollout.reconcile", {"past_due": False}, deps=deps)
        clock.advance(5)
    after = deps.state.get(rollout_key(ENDPOINT))
    assert after is not None
    if outcome == "Succeeded":
        assert after.value["status"] == "baking" and fp.get_endpoint(ENDPOINT).traffic[new] == 10  # type: ignore[union-attr]
        assert fp.calls["invoke"] == 1   # one smoke test
    else:
        assert after.value["status"] in ("failed", "rolled_back")
        assert fp.get_endpoint(ENDPOINT).traffic == {"blue": 100}  # type: ignore[union-attr]
        assert sent(deps).count("Reflex.RolloutFailed") + sent(deps).count("Reflex.RolloutRolledBack") == 1
    assert fp.calls["begin_create_deployment"] == created + 1
