"""Data arrival end to end on real Azurite state and data container, with the behavioural fake platform.

Bursts are delivered shuffled and three times each; the assertions are on what the platform holds (one data
asset, one job) and on the arrival record, never on timings.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from functions import data_arrival
from local.host.blobs import blob_created_event
from shared.arrival.flow import arrival_key, handle_blob
from shared.batches import admission, manifest, mltable
from shared.batches.intake import complete_batch
from shared.batches.paths import manifest_digest, parse_blob_path
from shared.batches.record import ArrivalRecord
from shared.core import reaction
from shared.core.control import write_control
from shared.core.deps import Deps
from shared.core.platform import REFLEX_TAG
from shared.core.state import StateStore
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.real_chain import Lake


@pytest.fixture
def lake(container_factory: Callable[[str], Any]) -> Lake:
    return Lake(container_factory("data"))


def deps_for(lake: Lake, state: StateStore, platform: FakePlatform, clock: Clock, **env: str) -> Deps:
    return make_deps(make_settings(REFLEX_DATA_CONTAINER=lake.name, **env), state=state, platform=platform,
                     clock=clock)


def files_of(deps: Deps, record: Any) -> dict[str, Any]:
    """The frozen manifest's files of a stored arrival record (shared/batches/manifest.py `load`)."""
    return dict(manifest.load(deps, ArrivalRecord.from_dict(record.value)).files)


def deliver(raw: dict[str, Any], deps: Deps) -> reaction.Outcome:
    return reaction.run("data.arrival", raw, event_id=raw["id"], deps=deps)


def test_burst_of_1000_blobs_shuffled_three_times_gives_one_job(lake: Lake, blob_state: StateStore,
                                                               fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    deliveries = lake.put_many([f"sales/2024-06-01/part-{i:04d}.csv" for i in range(1000)])
    deliveries.append(lake.put("sales/2024-06-01/_SUCCESS", b""))
    stream = deliveries * 3
    random.Random(7).shuffle(stream)
    outcomes = Counter(deliver(raw, deps).status for raw in stream)
    # freezing 1000 files (shared/batches/freeze.py) is bounded per invocation: on a busy machine the marker's
    # deliveries may leave it `freezing`, and the sweep goes on with it; however many passes, one job
    key = arrival_key(parse_blob_path(lake.name, "sales/2024-06-01/x.csv"))
    for _ in range(200):
        found = blob_state.get(key)
        if found is None or found.value["status"] != "freezing":
            break
        assert not fake_platform.jobs
        reaction.run("data.sweep", {}, deps=deps)

    assert fake_platform.calls["submit_training"] == 1 and fake_platform.calls["register_data"] == 1
    job = next(iter(fake_platform.jobs))
    assert list(fake_platform.jobs) == [job]
    assert list(fake_platform.data) == [("sales", "2024-06-01")]
    asset = fake_platform.data[("sales", "2024-06-01")]
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "sales/2024-06-01/x.csv")))
    assert record is not None
    # the frozen copy of exactly the recorded versions, not the live folder (#18.4, shared/batches/freeze.py)
    recorded = files_of(deps, record)
    frozen = f".reflex-frozen/sales/2024-06-01/{manifest_digest(recorded)[:16]}/"
    assert asset.path == f"azureml://datastores/reflexdata/paths/{frozen}"
    copies = {b.name[len(frozen):]: b.metadata["reflexsourceetag"]
              for b in lake.container.list_blobs(name_starts_with=frozen, include=["metadata"])}
    assert copies == {f: e["etag"] for f, e in recorded.items()}
    request = fake_platform.job_requests[job]
    assert (request.data_name, request.data_version, request.mode) == ("sales", "2024-06-01", "command")
    assert request.tags[REFLEX_TAG] == "true" and request.tags["reflex.data"] == "sales:2024-06-01"
    assert request.tags["reflex.trigger"] == f"blob:{lake.name}/sales/2024-06-01"
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "sales/2024-06-01/x.csv")))
    assert record and record.value["status"] == "submitted" and record.value["job"] == job
    assert len(files_of(deps, record)) == 1000 and record.value["late_files"] == {}
    # the event that submitted it: the marker (any of its deliveries carries its id), or the sweep that finished
    # freezing it; only a batch that waited as `freezing` can have been submitted by the sweep
    submitted_by = [record.value["completing_event"]]
    if "freezing" in [h[1] for h in record.value["history"]]:
        submitted_by.append(f"sweep:{int(clock())}")
    assert request.tags["reflex.event_id"] in submitted_by
    assert all(e["url"].startswith(lake.container.url) and e["etag"] for e in files_of(deps, record).values())
    # every delivery ended in exactly one outcome; nothing was dead-lettered
    assert sum(outcomes.values()) == 3003 and outcomes["dead-lettered"] == 0
    assert [e.type for e in deps.publisher.sent] == ["Reflex.TrainingSubmitted"]


def test_two_batches_interleaved_give_two_jobs(lake: Lake, blob_state: StateStore, fake_platform: FakePlatform,
                                               clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    a = [*lake.put_many([f"sales/a/p{i}.csv" for i in range(20)]), lake.put("sales/a/_SUCCESS", b"")]
    b = [*lake.put_many([f"sales/b/p{i}.csv" for i in range(20)]), lake.put("sales/b/_SUCCESS", b"")]
    stream = [x for pair in zip(a, b, strict=True) for x in pair] * 3
    random.Random(3).shuffle(stream)
    for raw in stream:
        deliver(raw, deps)
    assert fake_platform.calls["submit_training"] == 2
    assert sorted(fake_platform.data) == [("sales", "a"), ("sales", "b")]
    assert len({r.data_version for r in fake_platform.job_requests.values()}) == 2


def test_concurrent_workers_deliver_one_batch_one_job(lake: Lake, blob_state: StateStore,
                                                       fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    stream = [*lake.put_many([f"ds/b1/p{i}.csv" for i in range(30)]), lake.put("ds/b1/_SUCCESS", b"")] * 3
    random.Random(5).shuffle(stream)
    lock = threading.Lock()
    outcomes: list[str] = []

    def work(raw: dict[str, Any]) -> None:
        status = deliver(raw, deps).status
        with lock:
            outcomes.append(status)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(work, stream))
    assert fake_platform.calls["submit_training"] == 1 and len(fake_platform.jobs) == 1
    assert len(outcomes) == len(stream) and "dead-lettered" not in outcomes
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv")))
    assert record and len(files_of(deps, record)) == 30 and record.value["status"] == "submitted"


def test_through_the_decorated_trigger_with_the_event_the_worker_builds(lake: Lake, blob_state: StateStore,
                                                                       fake_platform: FakePlatform, clock: Clock,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`on_data_blob` gets the `func.EventGridEvent` the worker decodes from the webhook body (the library's own
    converter, as local/host/invoke.py uses it) for each BlobCreated: a batch and its marker train once."""
    from local.host.invoke import decode_event

    deps = deps_for(lake, blob_state, fake_platform, clock)
    monkeypatch.setattr("shared.core.deps.get_deps", lambda: deps)
    for blob, data in (("ds/b1/part-0.csv", b"a,label\n1,0\n"), ("ds/b1/_SUCCESS", b"")):
        event = decode_event(lake.put(blob, data))
        assert type(event).__name__ == "EventGridEvent"
        data_arrival.on_data_blob(event)
    assert len(fake_platform.jobs) == 1
    job = next(iter(fake_platform.jobs.values()))
    assert job.tags["reflex.data"] == "ds:b1"
    data_arrival.sweep_batches(TimerRequest(past_due=False))  # nothing to do: runs cleanly
    assert len(fake_platform.jobs) == 1


def test_a_blobcreated_that_does_not_complete_a_blob_is_skipped_with_its_reason(
        lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    raw = lake.put("ds/b1/part-0.csv")
    raw["data"]["api"] = "CreateFile"  # Data Lake Gen2: the file is created, not yet flushed
    outcome = deliver(raw, deps)
    assert outcome.status == "skipped" and "'CreateFile' does not complete a blob" in outcome.reason
    assert blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv"))) is None
    raw["data"]["api"] = "FlushWithClose"
    assert deliver(raw, deps).status == "acted"


def test_a_redelivered_event_and_a_second_event_for_the_same_version_coalesce(
        lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    """Idempotency is keyed on the blob version (URL + ETag), not the event id."""
    deps = deps_for(lake, blob_state, fake_platform, clock)
    raw = lake.put("ds/b1/part-0.csv")
    other = {**raw, "id": "another-event-id", "data": {**raw["data"], "eTag": raw["data"]["eTag"].strip('"')}}
    assert [deliver(e, deps).status for e in (raw, raw, other)] == ["acted", "duplicate", "duplicate"]


def test_a_blobcreated_for_another_container_is_skipped(lake: Lake, blob_state: StateStore,
                                                        fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    raw = lake.put("ds/b1/part-0.csv")
    raw["subject"] = raw["subject"].replace(f"/containers/{lake.name}/", "/containers/elsewhere/")
    outcome = deliver(raw, deps)
    assert outcome.status == "skipped" and "'elsewhere' is not the data container" in outcome.reason


def test_marker_first_still_trains_on_everything_in_the_folder(lake: Lake, blob_state: StateStore,
                                                               fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    files = lake.put_many([f"ds/b1/p{i}.csv" for i in range(5)])
    marker = lake.put("ds/b1/_SUCCESS", b"")
    assert deliver(marker, deps).status == "acted"
    assert [deliver(f, deps).status for f in files] == ["duplicate"] * 5  # already in the frozen manifest
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv")))
    assert record and len(files_of(deps, record)) == 5 and len(fake_platform.jobs) == 1


def test_late_file_is_recorded_and_does_not_retrigger(lake: Lake, blob_state: StateStore,
                                                      fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    for raw in [lake.put("ds/b1/p0.csv"), lake.put("ds/b1/_SUCCESS", b"")]:
        deliver(raw, deps)
    late = deliver(lake.put("ds/b1/p9.csv"), deps)
    assert late.status == "skipped" and "late file" in late.reason and "not trained on" in late.reason
    again = lake.put("ds/b1/_SUCCESS", b"")  # the marker rewritten: still no second job
    assert deliver(again, deps).status == "duplicate"
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv")))
    assert record and "p9.csv" in record.value["late_files"] and len(fake_platform.jobs) == 1


def test_bad_inputs_end_skipped_with_reasons(lake: Lake, blob_state: StateStore, fake_platform: FakePlatform,
                                             clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    outcomes = {name: deliver(lake.put(name, data), deps) for name, data in [
        ("root.csv", b"x"), ("ds/flat.csv", b"x"), ("ds/b 1/p.csv", b"x"), ("ds/b1/empty.csv", b""),
        ("ds/b1/notes.txt", b"hello")]}
    assert "container root" in outcomes["root.csv"].reason
    assert "not in a batch" in outcomes["ds/flat.csv"].reason
    assert "unsafe" in outcomes["ds/b 1/p.csv"].reason
    assert "zero bytes" in outcomes["ds/b1/empty.csv"].reason
    assert "unreadable format" in outcomes["ds/b1/notes.txt"].reason
    assert {o.status for o in outcomes.values()} == {"skipped"}
    # the ETag the blob trigger's Properties carried ({}: azure-sdk-for-net PR #5469): a clear dead letter
    no_etag = lake.put("ds/b2/p.csv")
    no_etag["data"]["eTag"] = {}
    dead = deliver(no_etag, deps)
    assert dead.status == "dead-lettered" and "data.eTag must be a string, got dict" in dead.reason
    # a batch with only unusable files: completing it ends as skipped, "empty batch", no job
    empty = deliver(lake.put("ds/b1/_SUCCESS", b""), deps)
    assert empty.status == "skipped" and "empty batch" in empty.reason and not fake_platform.jobs
    assert [e.type for e in deps.publisher.sent] == ["Reflex.TrainingSkipped"]


def test_unsafe_dataset_names_are_mapped_deterministically(lake: Lake, blob_state: StateStore,
                                                           fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    for raw in [lake.put("sales.eu/date=2024-06-01/p.csv"), lake.put("sales.eu/date=2024-06-01/_SUCCESS", b"")]:
        deliver(raw, deps)
    [(name, version)] = list(fake_platform.data)
    assert name.startswith("sales-eu-") and version.startswith("b-")
    assert re.fullmatch(r"azureml://datastores/reflexdata/paths/\.reflex-frozen/sales\.eu/date=2024-06-01/[0-9a-f]{16}/",
                        fake_platform.data[(name, version)].path)


def test_quiet_window_completes_via_sweep(lake: Lake, blob_state: StateStore, fake_platform: FakePlatform,
                                          clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock, REFLEX_COMPLETION_MARKER="", REFLEX_QUIET_SECONDS="60")
    for raw in lake.put_many([f"ds/b1/p{i}.csv" for i in range(4)]) * 3:
        assert deliver(raw, deps).status in ("acted", "duplicate")
    clock.advance(30)
    assert reaction.run("data.sweep", {}, deps=deps).details["completed"] == 0
    deliver(lake.put("ds/b1/p9.csv"), deps)  # a new blob restarts the window
    clock.advance(45)
    assert reaction.run("data.sweep", {}, deps=deps).details["completed"] == 0 and not fake_platform.jobs
    clock.advance(20)
    swept = reaction.run("data.sweep", {}, deps=deps)
    assert swept.details["completed"] == 1 and swept.details["started"] == 1
    assert len(fake_platform.jobs) == 1
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv")))
    assert record and len(files_of(deps, record)) == 5
    assert reaction.run("data.sweep", {}, deps=deps).details["started"] == 0 and len(fake_platform.jobs) == 1


def test_concurrency_limit_and_daily_cap_make_batches_wait_for_the_sweep(
        lake: Lake, blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock, REFLEX_MAX_CONCURRENT_TRAINING="1",
                    REFLEX_DAILY_TRAINING_CAP="2")
    for b in ("b1", "b2", "b3"):
        deliver(lake.put(f"ds/{b}/p.csv"), deps)
        outcome = deliver(lake.put(f"ds/{b}/_SUCCESS", b""), deps)
    assert len(fake_platform.jobs) == 1 and "waiting for the sweep" in outcome.reason
    assert "maximum 1" in outcome.reason
    assert reaction.run("data.sweep", {}, deps=deps).details["started"] == 0  # the first job still runs
    first = next(iter(fake_platform.jobs))
    fake_platform.finish_job(first, "Completed", metrics={"auc": 0.9})
    swept = reaction.run("data.sweep", {}, deps=deps)  # refresh releases the slot; b2 starts (arrival order)
    assert swept.details["released"] == 1 and swept.details["started"] == 1 and len(fake_platform.jobs) == 2
    assert {r.data_version for r in fake_platform.job_requests.values()} == {"b1", "b2"}
    fake_platform.finish_job(list(fake_platform.jobs)[1], "Failed", error="boom")
    reaction.run("data.sweep", {}, deps=deps)
    waiting = blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b3/x.csv")))
    assert waiting and waiting.value["status"] == "waiting" and "daily training cap reached" in waiting.value["reason"]
    clock.advance(86_400)
    reaction.run("data.sweep", {}, deps=deps)
    assert len(fake_platform.jobs) == 3
    adm = blob_state.get(admission.ADMISSION_KEY)
    assert adm and len(adm.value["running"]) == 1


def test_dry_run_records_and_acts_on_nothing(lake: Lake, blob_state: StateStore, fake_platform: FakePlatform,
                                             clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock, REFLEX_DRY_RUN="true")
    deliver(lake.put("ds/b1/p.csv"), deps)
    outcome = deliver(lake.put("ds/b1/_SUCCESS", b""), deps)
    assert outcome.status == "dry-run" and "would register ds:b1 and submit reflex-train-" in outcome.reason
    assert not fake_platform.calls and not deps.publisher.sent
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv")))
    assert record and record.value["status"] == "dry-run" and record.value["job"].startswith("reflex-train-")


def test_paused_holds_deliveries_for_replay(lake: Lake, blob_state: StateStore, fake_platform: FakePlatform,
                                            clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    write_control(deps, by="test", why="maintenance", paused=True)
    held = deliver(lake.put("ds/b1/p.csv"), deps)
    assert held.status == "held" and blob_state.keys("held/data.arrival/")
    assert not fake_platform.calls and not blob_state.keys("arrivals/")


def test_platform_rejection_is_recorded_and_dead_lettered_once(lake: Lake, blob_state: StateStore,
                                                               fake_platform: FakePlatform, clock: Clock) -> None:
    from shared.core.errors import PermanentError

    deps = deps_for(lake, blob_state, fake_platform, clock)
    fake_platform.inject("submit_training", PermanentError("job x: compute cpu-cluster does not exist"))
    deliver(lake.put("ds/b1/p.csv"), deps)
    marker = lake.put("ds/b1/_SUCCESS", b"")
    first = deliver(marker, deps)
    assert first.status == "dead-lettered" and "compute cpu-cluster does not exist" in first.reason
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv")))
    assert record and record.value["status"] == "submit-failed"
    assert deliver(marker, deps).status == "duplicate"  # redelivery: no crash loop
    assert not (blob_state.get(admission.ADMISSION_KEY).value["running"])  # type: ignore[union-attr]
    assert [e.type for e in deps.publisher.sent] == ["Reflex.TrainingFailed"]
    # the operator creates the compute and replays the dead letter: the batch starts again, once
    (letter,) = blob_state.dead_letters()
    replayed = reaction.run("data.arrival", letter.value["payload"], event_id=letter.value["event_id"], deps=deps,
                            replay=True)
    assert replayed.status == "acted" and replayed.reason.startswith("submitted reflex-train-")
    record = blob_state.get(arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv")))
    assert record and record.value["status"] == "submitted" and len(fake_platform.jobs) == 1
    assert deliver(marker, deps).status == "duplicate"
    assert reaction.run("data.arrival", letter.value["payload"], event_id=letter.value["event_id"], deps=deps,
                        replay=True).status == "duplicate"  # a second replay: already done
    assert [e.type for e in deps.publisher.sent] == ["Reflex.TrainingFailed", "Reflex.TrainingSubmitted"]


def test_transient_platform_error_is_retried_by_redelivery(lake: Lake, blob_state: StateStore,
                                                           fake_platform: FakePlatform, clock: Clock) -> None:
    from shared.core.errors import TransientError

    deps = deps_for(lake, blob_state, fake_platform, clock)
    fake_platform.inject("submit_training", TransientError("throttled", 5))
    deliver(lake.put("ds/b1/p.csv"), deps)
    marker = lake.put("ds/b1/_SUCCESS", b"")
    with pytest.raises(TransientError):
        deliver(marker, deps)
    assert deliver(marker, deps).status == "acted"  # the redelivery of the completing event finishes the job
    assert len(fake_platform.jobs) == 1 and fake_platform.calls["register_data"] == 2
    assert handle_blob(marker, deps).status == "duplicate"


def test_sweep_recovers_a_batch_whose_worker_crashed_mid_start(lake: Lake, blob_state: StateStore,
                                                               fake_platform: FakePlatform, clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock)
    deliver(lake.put("ds/b1/p.csv"), deps)
    key = arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv"))
    # simulate: a worker completed the batch and took the start lease, then died before submitting
    assert complete_batch(deps, key, parse_blob_path(lake.name, "ds/b1/x.csv"), clock(), event_id="ev",
                          kind=ArrivalRecord, purpose="training")
    blob_state.update(key, lambda v: {**v, "status": "starting", "lease": {"token": "dead", "until": clock() + 120}})
    assert reaction.run("data.sweep", {}, deps=deps).details["started"] == 0  # lease still held
    clock.advance(121)
    assert reaction.run("data.sweep", {}, deps=deps).details["started"] == 1
    record = blob_state.get(key)
    assert record and record.value["status"] == "submitted" and len(fake_platform.jobs) == 1


def test_function_metadata() -> None:
    import azure.functions as func

    app = func.FunctionApp()
    app.register_functions(data_arrival.bp)
    functions = {f.get_function_name(): f.get_bindings_dict()["bindings"] for f in app.get_functions()}
    [trigger] = functions["on_data_blob"]  # one Event Grid trigger, no blob binding: no content reaches us
    assert (trigger["type"], trigger["name"]) == ("eventGridTrigger", "event")
    [timer] = functions["sweep_batches"]
    assert (timer["type"], timer["schedule"], timer["runOnStartup"]) == ("timerTrigger", "%REFLEX_SWEEP_SCHEDULE%",
                                                                         False)


def test_automl_mode_carries_the_automl_settings(lake: Lake, blob_state: StateStore, fake_platform: FakePlatform,
                                                 clock: Clock) -> None:
    deps = deps_for(lake, blob_state, fake_platform, clock, REFLEX_TRAINING_MODE="automl", REFLEX_TASK="regression",
                    REFLEX_GATE_METRIC="r2_score",
                    REFLEX_LABEL_COLUMN="price", REFLEX_AUTOML_PRIMARY_METRIC="r2_score",
                    REFLEX_AUTOML_TIMEOUT_MINUTES="30", REFLEX_AUTOML_EARLY_STOPPING="false")
    for raw in [lake.put("houses/b1/p.parquet"), lake.put("houses/b1/_SUCCESS", b"")]:
        deliver(raw, deps)
    [request] = fake_platform.job_requests.values()
    assert (request.mode, request.task, request.label_column, request.primary_metric, request.timeout_minutes,
            request.early_stopping) == ("automl", "regression", "price", "r2_score", 30, False)
    assert (request.compute, request.environment) == ("cpu-cluster", "azureml:reflex-train:1")
    # the mltable asset's folder, the frozen copy (shared/batches/freeze.py), holds the documented MLTable file
    # listing the frozen manifest (shared/batches/mltable.py); nothing is written into the live batch folder
    [asset] = fake_platform.data.values()
    folder = asset.path.split("/paths/", 1)[1]
    assert folder.startswith(".reflex-frozen/houses/b1/")
    table = lake.container.download_blob(f"{folder}MLTable").readall().decode()
    assert mltable.parse(table) == (["./p.parquet"], "read_parquet")
    assert sorted(b.name for b in lake.container.list_blobs(name_starts_with="houses/")) == [
        "houses/b1/_SUCCESS", "houses/b1/p.parquet"]
    # its own BlobCreated is skipped as Reflex's frozen copy, and an MLTable in the live folder is skipped too:
    # neither is taken for a late data file
    frozen_table = lake.container.get_blob_client(f"{folder}MLTable")
    frozen = deliver(blob_created_event(frozen_table, frozen_table.get_blob_properties()), deps)
    assert frozen.status == "skipped" and "frozen copy" in frozen.reason
    again = deliver(lake.put("houses/b1/MLTable", table.encode()), deps)
    assert again.status == "skipped" and "MLTable" in again.reason
    record = blob_state.get(arrival_key(parse_blob_path(lake.container.container_name, "houses/b1/p.parquet")))
    assert "MLTable" not in (record.value.get("late_files") or {}) and "MLTable" not in files_of(deps, record)
