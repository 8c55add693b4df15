"""Batch intake costs the same per blob whatever the batch size (#17.1), on real Azurite state and data.

The state store is the real `BlobStateStore`, wrapped only to count the bytes its storage hooks move and the
writes that land on each key. Assertions are on bytes, write counts, outcomes and what the platform holds, never
on timings. Before #17 a delivery read and rewrote a record holding the whole manifest: at 200 files each of
them moved tens of KiB, and the batch record was written once per file.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.arrival.flow import arrival_key, handle_blob
from shared.batches import entries, freeze, manifest
from shared.batches.paths import parse_blob_path
from shared.batches.record import ArrivalRecord, last_seen_slack
from shared.core import reaction
from shared.core.deps import Deps
from testing.counting_state import CountingStore
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.real_chain import Lake

PER_DELIVERY_BYTES = 8 * 1024  # #17's bound on state I/O per delivery


@pytest.fixture
def lake(container_factory: Callable[[str], Any]) -> Lake:
    return Lake(container_factory("data"))


def _deps(lake: Lake, state: CountingStore, platform: FakePlatform, clock: Callable[[], float], **env: str) -> Deps:
    return make_deps(make_settings(REFLEX_DATA_CONTAINER=lake.name, **env), state=state, platform=platform,
                     clock=clock)


def _deliver(raw: dict[str, Any], deps: Deps) -> reaction.Outcome:
    return reaction.run("data.arrival", raw, event_id=raw["id"], deps=deps)


def _per_delivery_bytes(lake: Lake, state: CountingStore, deps: Deps, batch: str, n: int) -> list[int]:
    """Each file of a batch of `n` delivered three times in shuffled order: the state bytes of every delivery."""
    stream = lake.put_many([f"ds/{batch}/p{i:04d}.csv" for i in range(n)]) * 3
    random.Random(n).shuffle(stream)
    moved = []
    for raw in stream:
        before = state.moved
        assert _deliver(raw, deps).status in ("acted", "duplicate")
        moved.append(state.moved - before)
    return moved


def test_a_delivery_moves_the_same_few_bytes_at_20_and_at_200_files(
        lake: Lake, container_factory: Callable[[str], Any], fake_platform: FakePlatform, clock: Clock) -> None:
    state = CountingStore(container_factory("state"))
    deps = _deps(lake, state, fake_platform, clock)
    small = _per_delivery_bytes(lake, state, deps, "small", 20)
    large = _per_delivery_bytes(lake, state, deps, "large", 200)
    assert max(large) <= PER_DELIVERY_BYTES, max(large)
    # independent of N: the largest delivery of the 200-file batch is no larger than one of the 20-file batch's
    # but for the longer names of its keys and values (a few bytes), and so is the mean
    assert max(large) <= max(small) + 64 and sum(large) / len(large) <= sum(small) / len(small) + 64
    key = arrival_key(parse_blob_path(lake.name, "ds/large/x.csv"))
    assert state.writes[key] == 1  # the summary was created, and no file rewrote it (the clock stood still)
    assert sum(1 for k in state.writes if k.startswith(f"{entries.PREFIX}{key}/")) == 200  # one entry per file
    # completion writes the 200-file manifest once, apart from the summary, and the job trains on all of it
    assert _deliver(lake.put("ds/large/_SUCCESS", b""), deps).status == "acted"
    record = state.get(key)
    assert record is not None and record.value["status"] == "submitted" and "files" not in record.value
    batch = ArrivalRecord.from_dict(record.value)
    assert batch.manifest is not None and state.writes[batch.manifest.key] == 1
    assert len(manifest.load(deps, batch).files) == batch.file_count == 200
    assert len(record.value["history"]) <= 5 and len(state._encode(record.value)) < 3 * 1024


def test_sixteen_workers_delivering_one_batch_three_times_give_one_completion_and_one_job(
        lake: Lake, container_factory: Callable[[str], Any], fake_platform: FakePlatform, clock: Clock) -> None:
    state = CountingStore(container_factory("state"))
    deps = _deps(lake, state, fake_platform, clock)
    n = 150
    files = lake.put_many([f"ds/b1/p{i:04d}.csv" for i in range(n)])
    marker = lake.put("ds/b1/_SUCCESS", b"")
    stream = [*files, *files, *files, marker, marker, marker]
    random.Random(16).shuffle(stream)
    outcomes: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(raw: dict[str, Any]) -> None:
        try:
            status = _deliver(raw, deps).status
        except BaseException as exc:  # a Conflict (CAS given up) would surface here
            with lock:
                errors.append(exc)
            return
        with lock:
            outcomes.append(status)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, stream))
    assert errors == [] and len(outcomes) == len(stream) and "dead-lettered" not in outcomes
    assert fake_platform.calls["submit_training"] == 1 and len(fake_platform.jobs) == 1
    key = arrival_key(parse_blob_path(lake.name, "ds/b1/x.csv"))
    record = state.get(key)
    assert record is not None and record.value["status"] == "submitted"
    completions = [h for h in record.value["history"] if h[1] == "complete"]
    assert len(completions) == 1
    batch = ArrivalRecord.from_dict(record.value)
    assert manifest.load(deps, batch).files.keys() == {f"p{i:04d}.csv" for i in range(n)}
    # the summary is written a handful of times (create, complete, start lease, submitted), never per file
    assert state.writes[key] <= 6, state.writes[key]
    stored = [k for k in state.writes if k.startswith(manifest.PREFIX) and not k.endswith(freeze.STARTED_SUFFIX)]
    assert len(stored) == 1  # one manifest stored (beside it, freezing's count of copies started)


def test_sixteen_workers_on_a_quiet_window_batch_keep_last_seen_fresh_without_giving_up(
        lake: Lake, container_factory: Callable[[str], Any], fake_platform: FakePlatform) -> None:
    """With a clock that moves, `last_seen` is refreshed once it lags by more than its slack: racing workers
    never give up, it never lags more than that, and the quiet window completes the batch once."""
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    state = CountingStore(container_factory("state"))
    deps = _deps(lake, state, fake_platform, clock, REFLEX_COMPLETION_MARKER="", REFLEX_QUIET_SECONDS="10")
    n = 120
    stream = lake.put_many([f"ds/q/p{i:04d}.csv" for i in range(n)]) * 3
    random.Random(3).shuffle(stream)
    errors: list[BaseException] = []

    def work(raw: dict[str, Any]) -> None:
        try:
            _deliver(raw, deps)
        except BaseException as exc:
            errors.append(exc)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, stream))
    assert errors == []
    key = arrival_key(parse_blob_path(lake.name, "ds/q/x.csv"))
    record = state.get(key)
    assert record is not None and record.value["status"] == "collecting"
    newest = max(float(e.value["at"]) for e in state.records(f"{entries.PREFIX}{key}/"))
    assert float(record.value["last_seen"]) >= newest - last_seen_slack(10)
    assert reaction.run("data.sweep", {}, deps=deps).details["completed"] == 0  # not quiet yet
    offset[0] += 10 + last_seen_slack(10) + 1
    swept = reaction.run("data.sweep", {}, deps=deps)
    assert swept.details["completed"] == 1 and len(fake_platform.jobs) == 1
    assert ArrivalRecord.from_dict(state.get(key).value).file_count == n  # type: ignore[union-attr]


def test_late_and_rejected_files_and_a_record_written_before_17(
        lake: Lake, container_factory: Callable[[str], Any], fake_platform: FakePlatform, clock: Clock) -> None:
    state = CountingStore(container_factory("state"))
    deps = _deps(lake, state, fake_platform, clock)
    # a batch collecting in the old form when this version was deployed: completes into the new one
    lake.put("ds/old/a.csv")
    key = arrival_key(parse_blob_path(lake.name, "ds/old/x.csv"))
    state.create(key, {"container": lake.name, "dataset": "ds", "batch": "old", "status": "collecting",
                       "files": {"a.csv": {"url": "u", "etag": "e", "size": 12}}, "rejected": {}, "late_files": {},
                       "first_seen": clock(), "last_seen": clock(), "history": [[clock(), "collecting", "first"]]})
    assert _deliver(lake.put("ds/old/b.csv"), deps).status == "acted"
    assert _deliver(lake.put("ds/old/_SUCCESS", b""), deps).status == "acted"
    record = state.get(key)
    assert record is not None and "files" not in record.value and record.value["status"] == "submitted"
    assert sorted(manifest.load(deps, ArrivalRecord.from_dict(record.value)).files) == ["a.csv", "b.csv"]
    # a rejected file is refused with its reason once, its redelivery is a duplicate that links no lineage
    empty = lake.put("ds/new/empty.csv", b"")
    first, again = _deliver(empty, deps), handle_blob(empty, deps)
    assert first.status == "skipped" and "zero bytes" in first.reason and "batch" not in first.details
    assert again.status == "duplicate" and "batch" not in again.details
    # a late file: recorded (its entry and late_files), reported, never trained on, its redelivery a duplicate
    late = lake.put("ds/old/c.csv")
    outcome = _deliver(late, deps)
    assert outcome.status == "skipped" and "late file" in outcome.reason and "batch" not in outcome.details
    assert handle_blob(late, deps).status == "duplicate"
    record = state.get(key)
    assert record is not None and list(record.value["late_files"]) == ["c.csv"] and len(fake_platform.jobs) == 1
    assert entries.read(deps, key, "c.csv", late["data"]["eTag"].strip('"')) is not None
