"""Batch scoring over real Azurite blobs and the behavioural fake platform: one job per batch under repeated
delivery, unique output folders, no champion -> kept and scored later, completion published once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from local.sampledata import generate, to_csv_bytes
from shared.core.state import BlobStateStore
from shared.scoring import flow as scoring
from shared.scoring.rules import deployment_name, instance_count, output_path, scoring_job_name
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.timers_support import make_champion, upload


@pytest.fixture
def scoring_container(container_factory: Callable[[str], Any]) -> Any:
    return container_factory("score")


def _deps(container: Any, state: BlobStateStore, platform: FakePlatform, clock: Clock, **env: str) -> Any:
    settings = make_settings(REFLEX_SCORING_CONTAINER=container.container_name, **env)
    return make_deps(settings, state=state, platform=platform, clock=clock)


def _batch(container: Any, dataset: str, batch: str, files: int = 2) -> list[dict[str, Any]]:
    rows = generate(40, seed=hash(batch) % 1000)
    deliveries = [upload(container, f"{dataset}/{batch}/part-{i}.csv", to_csv_bytes(rows[i::files]))
                  for i in range(files)]
    deliveries.append(upload(container, f"{dataset}/{batch}/_SUCCESS", b""))
    return deliveries


def _published(deps: Any, kind: str) -> list[Any]:
    return [e for e in deps.publisher.sent if e.type == f"Reflex.{kind}"]


def test_triple_delivery_gives_one_job_and_two_batches_distinct_outputs(
        scoring_container: Any, blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = _deps(scoring_container, blob_state, fake_platform, clock)
    champion = make_champion(fake_platform)
    for batch in ("2024-06-01", "2024-06-02"):
        deliveries = _batch(scoring_container, "patients", batch)
        for _ in range(3):
            for raw in deliveries:
                outcome = scoring.handle_blob(raw, deps)
                assert outcome.status in ("acted", "duplicate"), outcome
    batch_jobs = {n: j for n, j in fake_platform.jobs.items() if j.kind == "batch"}
    assert len(batch_jobs) == 2
    assert fake_platform.calls["invoke_batch"] == 2
    outputs = {j.outputs["score"] for j in batch_jobs.values()}
    assert len(outputs) == 2
    for job in batch_jobs.values():
        assert job.tags["reflex.managed"] == "true" and job.tags["reflex.parent"] == champion.ref
        assert job.name in job.outputs["score"]
    assert len(_published(deps, "BatchScoringSubmitted")) == 2
    # a redelivery long after submission changes nothing
    scoring.handle_blob(deliveries[-1], deps)
    assert fake_platform.calls["invoke_batch"] == 2


def test_no_champion_is_kept_then_scored_by_the_tracker(
        scoring_container: Any, blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = _deps(scoring_container, blob_state, fake_platform, clock)
    outcomes = [scoring.handle_blob(raw, deps) for raw in _batch(scoring_container, "patients", "b1")]
    assert outcomes[-1].status == "skipped" and "no champion yet" in outcomes[-1].reason
    (record,) = blob_state.records("scoring/")
    assert record.value["status"] == "no-champion"
    assert scoring.track(deps).details["advanced"] == 0
    make_champion(fake_platform)
    tracked = scoring.track(deps)
    assert tracked.details["advanced"] == 1
    assert blob_state.get(record.key).value["status"] == "submitted"  # type: ignore[union-attr]


def test_deployment_still_creating_waits_without_blocking(
        scoring_container: Any, blob_state: BlobStateStore, clock: Clock) -> None:
    platform = FakePlatform(clock=clock, provisioning_seconds=300)
    deps = _deps(scoring_container, blob_state, platform, clock)
    make_champion(platform)
    outcome = [scoring.handle_blob(raw, deps) for raw in _batch(scoring_container, "p", "b1")][-1]
    # the batch endpoint is created first, then its deployment (as on Azure ML): the batch waits, never blocks
    assert outcome.status == "skipped" and ("Creating" in outcome.reason or "missing" in outcome.reason)
    assert platform.calls["invoke_batch"] == 0
    for _ in range(3):
        clock.advance(301)
        scoring.track(deps)
    assert platform.calls["invoke_batch"] == 1


def test_tracker_publishes_completion_once_with_output(
        scoring_container: Any, blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = _deps(scoring_container, blob_state, fake_platform, clock)
    make_champion(fake_platform)
    for raw in _batch(scoring_container, "p", "b1"):
        scoring.handle_blob(raw, deps)
    (job,) = [j for j in fake_platform.jobs.values() if j.kind == "batch"]
    assert scoring.track(deps).details["advanced"] == 0  # still queued: nothing to publish
    fake_platform.finish_job(job.name, "Completed")
    for _ in range(3):
        scoring.track(deps)
    (done,) = _published(deps, "BatchScoringCompleted")
    assert done.data["output"] == job.outputs["score"] and done.data["job"] == job.name
    assert not _published(deps, "BatchScoringFailed")


def test_failed_batch_job_published_once(
        scoring_container: Any, blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = _deps(scoring_container, blob_state, fake_platform, clock)
    make_champion(fake_platform)
    for raw in _batch(scoring_container, "p", "b1"):
        scoring.handle_blob(raw, deps)
    (job,) = [j for j in fake_platform.jobs.values() if j.kind == "batch"]
    fake_platform.finish_job(job.name, "Failed", error="out of memory")
    scoring.track(deps)
    scoring.track(deps)
    (failed,) = _published(deps, "BatchScoringFailed")
    assert "out of memory" in failed.data["reason"] and failed.data["output"]


def test_empty_and_unreadable_batch_is_skipped_with_reason(
        scoring_container: Any, blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = _deps(scoring_container, blob_state, fake_platform, clock)
    make_champion(fake_platform)
    outcomes = [scoring.handle_blob(upload(scoring_container, name, body), deps)
                for name, body in (("p/b1/notes.txt", b"hello"), ("p/b1/empty.csv", b""), ("p/b1/_SUCCESS", b""))]
    assert outcomes[-1].status == "skipped" and "empty batch" in outcomes[-1].reason
    for _ in range(2):
        scoring.track(deps)
    (skipped,) = _published(deps, "BatchScoringSkipped")
    assert set(skipped.data["rejected"]) == {"notes.txt", "empty.csv"}
    assert fake_platform.calls["invoke_batch"] == 0


def test_quiet_window_completes_batch_without_marker(
        scoring_container: Any, blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = _deps(scoring_container, blob_state, fake_platform, clock, REFLEX_COMPLETION_MARKER="",
                 REFLEX_QUIET_SECONDS="60")
    make_champion(fake_platform)
    for raw in _batch(scoring_container, "p", "b1")[:-1]:
        scoring.handle_blob(raw, deps)
    assert scoring.track(deps).details["completed_batches"] == 0
    clock.advance(61)
    assert scoring.track(deps).details["completed_batches"] == 1
    assert fake_platform.calls["invoke_batch"] == 1


def test_schedule_rescores_latest_batch_only_when_champion_changed(
        scoring_container: Any, blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = _deps(scoring_container, blob_state, fake_platform, clock, REFLEX_BATCH_SCHEDULE_ENABLED="true")
    make_champion(fake_platform)
    for raw in _batch(scoring_container, "p", "b1"):
        scoring.handle_blob(raw, deps)
    (first,) = [j for j in fake_platform.jobs.values() if j.kind == "batch"]
    fake_platform.finish_job(first.name)
    scoring.track(deps)
    assert scoring.scheduled(deps).status == "duplicate"  # same champion: already scored
    fake_platform.update_model_tags("reflex-model", "1", remove=("reflex.champion",))
    make_champion(fake_platform, version="2")
    assert scoring.scheduled(deps).status == "acted"
    jobs = [j for j in fake_platform.jobs.values() if j.kind == "batch"]
    assert len(jobs) == 2 and len({j.outputs["score"] for j in jobs}) == 2
    off = _deps(scoring_container, blob_state, fake_platform, clock)
    assert "disabled" in scoring.scheduled(off).reason


def test_names_are_deterministic_and_sizing() -> None:
    files = {"a.csv": {"etag": "1"}}
    job = scoring_job_name("c/d/b", files, "m:1")
    assert job == scoring_job_name("c/d/b", files, "m:1") and job.startswith("reflex-score-")
    assert job != scoring_job_name("c/d/b", files, "m:2") != scoring_job_name("c/d/b2", files, "m:1")
    assert output_path("out", "d", "b", job).endswith(f"/scoring/d/b/{job}/")
    assert deployment_name("reflex-model:12") == "reflex-v12"
    odd = deployment_name("m:Some_Version.With.Dots.And.A.Very.Long.Tail")
    assert 3 <= len(odd) <= 32 and odd[0].isalpha() and odd == odd.lower()
    assert instance_count(1000, configured=0, mini_batch_size=10, max_concurrency=2) == 10
    assert instance_count(5, configured=3, mini_batch_size=10, max_concurrency=2) == 3


def test_registration_gate_skips_batch_scoring_jobs(
        scoring_container: Any, blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    from shared.registration import flow as registration

    deps = _deps(scoring_container, blob_state, fake_platform, clock)
    make_champion(fake_platform)
    for raw in _batch(scoring_container, "p", "b1"):
        scoring.handle_blob(raw, deps)
    (job,) = [j for j in fake_platform.jobs.values() if j.kind == "batch"]
    fake_platform.finish_job(job.name, "Completed")
    outcome = registration.handle_run_event(fake_platform.events[-1], deps)
    assert outcome.status == "skipped" and "batch scoring job" in outcome.reason
    assert fake_platform.calls["register_model"] == 1  # only make_champion's registration
