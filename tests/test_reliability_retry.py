"""#18 item 3: a batch whose job failed for a transient reason (a dependency down, throttled, 5xx, as the
platform reports the job's failure) is trained again with backoff, up to REFLEX_TRANSIENT_RETRIES; a failure
in the user's script or data is not, and says why. Real Azurite state and data container, the behavioural
fake platform, an injected clock (no sleeping)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import shared.handlers  # noqa: F401 - the named handlers the sweep and the events run
from shared.batches import admission
from shared.batches.retries import retry_delay
from shared.core import reaction
from shared.core.deps import Deps
from shared.core.platform import FAILURE_TRANSIENT, FAILURE_USER
from shared.core.state import StateStore
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.real_chain import Lake
from tests.test_reliability_lost_outcomes import land_batch, running, sent


@pytest.fixture
def lake(container_factory: Callable[[str], Any]) -> Lake:
    return Lake(container_factory("data"))


def deps_with(lake: Lake, state: StateStore, fake: FakePlatform, clock: Clock, **env: str) -> Deps:
    return make_deps(make_settings(REFLEX_DATA_CONTAINER=lake.name, **env), state=state, platform=fake, clock=clock)


def record(lake: Lake, deps: Deps) -> dict[str, Any]:
    [found] = deps.state.records(f"arrivals/{lake.name}/")
    return found.value


def fail(fake: FakePlatform, job: str, deps: Deps, *, failure: str, error: str, copies: int = 1,
         deliver: bool = True) -> list[reaction.Outcome]:
    fake.finish_job(job, "Failed", error=error, failure=failure)
    event = fake.events.pop()
    if not deliver:
        return []
    return [reaction.run("registration.run_event", event, event_id=event["id"], deps=deps) for _ in range(copies)]


def test_a_transient_failure_is_trained_again_after_a_growing_wait_up_to_the_limit(
        lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_with(lake, blob_state, fake_platform, clock, REFLEX_TRANSIENT_RETRIES="2")
    first = land_batch(lake, deps)
    outcomes = fail(fake_platform, first, deps, failure=FAILURE_TRANSIENT, copies=3,
                    error="MLflow at http://127.0.0.1:5000 unreachable: connection refused")
    assert [o.status for o in outcomes] == ["acted", "duplicate", "duplicate"]
    assert "failed for a transient reason" in outcomes[0].reason and "retry 1 of 2" in outcomes[0].reason
    value = record(lake, deps)
    assert value["status"] == "waiting" and value["attempt"] == 2 and value["previous_job"] == first
    assert value["not_before"] == clock() + retry_delay(0) and running(deps) == {}
    assert "Reflex.TrainingFailed" not in sent(deps)   # not final: nothing tells the world it failed

    assert reaction.run("data.sweep", {}, deps=deps).details["started"] == 0   # the backoff holds
    assert list(fake_platform.jobs) == [first]
    clock.advance(retry_delay(0))
    assert reaction.run("data.sweep", {}, deps=deps).details["started"] == 1
    second = record(lake, deps)["job"]
    assert second != first and record(lake, deps)["status"] == "submitted" and list(running(deps)) == [second]

    fail(fake_platform, second, deps, failure=FAILURE_TRANSIENT, error="service answered 503")
    assert record(lake, deps)["not_before"] == clock() + retry_delay(1)  # longer the second time
    clock.advance(retry_delay(1))
    reaction.run("data.sweep", {}, deps=deps)
    third = record(lake, deps)["job"]
    assert third not in (first, second)
    [final] = fail(fake_platform, third, deps, failure=FAILURE_TRANSIENT, error="throttled (429)")
    assert final.status == "acted" and "REFLEX_TRANSIENT_RETRIES=2 used up" in final.reason
    assert record(lake, deps)["status"] == "failed" and sent(deps).count("Reflex.TrainingFailed") == 1
    assert len(fake_platform.jobs) == 3 and running(deps) == {}


def test_a_failure_in_the_users_script_or_data_is_not_retried_and_says_why(
        lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_with(lake, blob_state, fake_platform, clock)
    job = land_batch(lake, deps)
    [outcome] = fail(fake_platform, job, deps, failure=FAILURE_USER,
                     error="train.py: error: label column 'label' not found")
    assert outcome.status == "acted" and "a failure in the training script or its data: not retried" \
        in outcome.reason
    assert record(lake, deps)["status"] == "failed"
    [event] = [e for e in deps.publisher.sent if e.type == "Reflex.TrainingFailed"]
    assert event.data["not_retried"] == "a failure in the training script or its data: not retried"
    clock.advance(86_400)
    reaction.run("data.sweep", {}, deps=deps)
    assert list(fake_platform.jobs) == [job]


def test_retries_off_reports_the_transient_failure_as_final(
        lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_with(lake, blob_state, fake_platform, clock, REFLEX_TRANSIENT_RETRIES="0")
    job = land_batch(lake, deps)
    [outcome] = fail(fake_platform, job, deps, failure=FAILURE_TRANSIENT, error="connection refused")
    assert "REFLEX_TRANSIENT_RETRIES=0" in outcome.reason and record(lake, deps)["status"] == "failed"


def test_a_transient_failure_found_by_the_sweep_is_retried_the_same_way(
        lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_with(lake, blob_state, fake_platform, clock)
    job = land_batch(lake, deps)
    fail(fake_platform, job, deps, failure=FAILURE_TRANSIENT, error="connection refused", deliver=False)
    reaction.run("data.sweep", {}, deps=deps)   # the event was lost: the sweep hands the job to its reaction
    value = record(lake, deps)
    assert value["status"] == "waiting" and value["previous_job"] == job and running(deps) == {}
    clock.advance(retry_delay(0))
    reaction.run("data.sweep", {}, deps=deps)
    assert record(lake, deps)["status"] == "submitted" and len(fake_platform.jobs) == 2


def test_a_retry_waiting_out_its_backoff_does_not_hold_up_later_batches(
        lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_with(lake, blob_state, fake_platform, clock, REFLEX_MAX_CONCURRENT_TRAINING="1")
    first = land_batch(lake, deps, "b1")
    for raw in (lake.put("ds/b2/p.csv"), lake.put("ds/b2/_SUCCESS", b"")):
        reaction.run("data.arrival", raw, event_id=raw["id"], deps=deps)   # waits for the slot
    fail(fake_platform, first, deps, failure=FAILURE_TRANSIENT, error="connection refused")
    assert reaction.run("data.sweep", {}, deps=deps).details["started"] == 1   # b2 takes the free slot
    adm = deps.state.get(admission.ADMISSION_KEY)
    assert adm is not None and [v["batch"] for v in adm.value["running"].values()] == [
        f"arrivals/{lake.name}/ds/b2"]


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [retry_delay(n) for n in range(7)] == [120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0]


# ---------------------------------------------------------------- batch scoring: the same rule, the tracker's timer
def test_a_scoring_job_that_failed_for_a_transient_reason_is_submitted_again_after_a_backoff(
        container_factory: Callable[[str], Any], blob_state: StateStore, fake_platform: FakePlatform,
        clock: Clock) -> None:
    from shared.scoring import flow as scoring
    from tests.test_batch_scoring import _batch, _deps, _published
    from tests.timers_support import make_champion

    container = container_factory("score")
    deps = _deps(container, blob_state, fake_platform, clock, REFLEX_TRANSIENT_RETRIES="1")
    make_champion(fake_platform)
    for raw in _batch(container, "p", "b1"):
        scoring.handle_blob(raw, deps)
    (first,) = [j.name for j in fake_platform.jobs.values() if j.kind == "batch"]
    [record] = blob_state.records(f"scoring/{container.container_name}/")
    first_output = record.value["output"]
    fake_platform.finish_job(first, "Failed", error="storage answered 503", failure=FAILURE_TRANSIENT)
    scoring.track(deps)
    scoring.track(deps)   # the backoff holds: nothing submitted yet, nothing published
    [record] = blob_state.records(f"scoring/{container.container_name}/")
    assert record.value["status"] == "deploying" and record.value["previous_job"] == first
    assert [j.name for j in fake_platform.jobs.values() if j.kind == "batch"] == [first]
    assert not _published(deps, "BatchScoringFailed")
    clock.advance(retry_delay(0))
    scoring.track(deps)
    second = [j.name for j in fake_platform.jobs.values() if j.kind == "batch" and j.name != first]
    assert len(second) == 1
    [record] = blob_state.records(f"scoring/{container.container_name}/")
    assert record.value["status"] == "submitted" and record.value["job"] == second[0]
    assert record.value["output"] != first_output   # each attempt writes to a fresh folder
    fake_platform.finish_job(second[0], "Failed", error="throttled", failure=FAILURE_TRANSIENT)
    scoring.track(deps)
    (failed,) = _published(deps, "BatchScoringFailed")
    assert "REFLEX_TRANSIENT_RETRIES=1 used up" in failed.data["reason"]


def test_a_scoring_job_that_failed_on_its_data_is_not_retried(
        container_factory: Callable[[str], Any], blob_state: StateStore, fake_platform: FakePlatform,
        clock: Clock) -> None:
    from shared.scoring import flow as scoring
    from tests.test_batch_scoring import _batch, _deps, _published
    from tests.timers_support import make_champion

    container = container_factory("score")
    deps = _deps(container, blob_state, fake_platform, clock)
    make_champion(fake_platform)
    for raw in _batch(container, "p", "b1"):
        scoring.handle_blob(raw, deps)
    (job,) = [j.name for j in fake_platform.jobs.values() if j.kind == "batch"]
    fake_platform.finish_job(job, "Failed", error="column 'age' missing", failure=FAILURE_USER)
    clock.advance(86_400)
    scoring.track(deps)
    (failed,) = _published(deps, "BatchScoringFailed")
    assert "not retried" in failed.data["reason"] and len([j for j in fake_platform.jobs.values()
                                                           if j.kind == "batch"]) == 1


def test_status_says_what_a_retry_waits_for(lake: Lake, blob_state: StateStore, fake_platform: FakePlatform,
                                            clock: Clock) -> None:
    from reflex.records import waiting_for

    deps = deps_with(lake, blob_state, fake_platform, clock)
    job = land_batch(lake, deps)
    fail(fake_platform, job, deps, failure=FAILURE_TRANSIENT, error="connection refused")
    text = waiting_for("training", record(lake, deps), deps.settings, clock())
    assert f"job {job} failed for a transient reason (connection refused)" in text
    assert "attempt 2 (retry 1 of 3) starts after" in text
