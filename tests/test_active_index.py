"""Timers read only what is active (#17.2): the active and finished indexes of shared/core/state.py, on Azurite and
in memory, and what the timers do with them: a finished record leaves the scanned set but stays readable until
retention deletes it by day; a crash between a record's write and its index write is repaired by the next scan;
a tick's storage requests are the same with 5 and with 60 finished batches (counted on the wire); health never
asks the platform again about a failure it has reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

import shared.handlers
from bench.ticks import Counting, _batch, _fill, _tick
from shared.arrival import flow as arrival
from shared.batches import training
from shared.core.state import (
    ACTIVE_PREFIX,
    DAY_SECONDS,
    FINISHED_PREFIX,
    INDEX_MARKER,
    LIFECYCLES,
    BlobStateStore,
    MemoryStateStore,
    StateStore,
    recent_day,
)
from shared.monitoring import health
from testing.fake_platform import FakePlatform
from tests.conftest import AZURITE, Clock, make_deps, make_settings
from tests.test_health import _submitted_job

KEY = "arrivals/reflex-data/ds/b1"


@pytest.fixture(params=["azurite", "memory"])
def store(request: pytest.FixtureRequest) -> StateStore:
    if request.param == "memory":
        return MemoryStateStore()
    return request.getfixturevalue("blob_state")


def _value(status: str, **more: Any) -> dict[str, Any]:
    return {"container": "reflex-data", "dataset": "ds", "batch": "b1", "status": status, **more}


def _active(store: StateStore, prefix: str = "arrivals/") -> list[str]:
    return [r.key for r in store.active(prefix)]


def _today(store: StateStore) -> str:
    return recent_day(store.clock(), 1)


def test_the_table_names_every_status_the_record_types_document() -> None:
    """The one table of finished statuses agrees with the record types' documented statuses (record.py)."""
    from shared.batches import record

    doc = record.__doc__ or ""
    for prefix, lifecycle in LIFECYCLES.items():
        for status in lifecycle.finished:
            assert f'"{status}"' in doc, f"{prefix}: {status} is not a status record.py documents"
    assert LIFECYCLES["arrivals/"].held <= LIFECYCLES["arrivals/"].finished


def test_a_finished_record_leaves_the_scanned_set_but_stays_readable(store: StateStore) -> None:
    store.update(KEY, lambda v: _value("collecting"))
    store.create("arrivals/reflex-data/ds/b0", _value("trained"))  # finished from the start: never scanned
    assert _active(store) == [KEY]
    store.update(KEY, lambda v: {**(v or {}), "status": "submitted", "job": "j1"})
    assert _active(store) == [KEY]
    store.update(KEY, lambda v: {**(v or {}), "status": "trained"})
    assert _active(store) == []
    assert store.get(KEY).value["status"] == "trained"  # type: ignore[union-attr]  still readable
    finished = {item.key: item.status for item in store.finished_on(_today(store), "arrivals/")}
    assert finished == {KEY: "trained", "arrivals/reflex-data/ds/b0": "trained"}
    assert store.keys(ACTIVE_PREFIX) == []
    # reopened (an operator's `reflex train`): scanned again
    store.update(KEY, lambda v: {**(v or {}), "status": "complete"})
    assert _active(store) == [KEY]


def test_a_failed_record_is_held_for_its_watcher_until_settled(store: StateStore) -> None:
    store.create(KEY, _value("submitted", job="j1"))
    store.update(KEY, lambda v: {**(v or {}), "status": "failed"})
    assert _active(store) == [KEY]  # health still has to learn whether the failure was reported
    assert [i.status for i in store.finished_on(_today(store), "arrivals/")] == ["failed"]
    assert store.settle(KEY) is True
    assert _active(store) == []
    store.update(KEY, lambda v: {**(v or {}), "status": "complete"})
    assert store.settle(KEY) is False  # unfinished again: it stays
    assert _active(store) == [KEY]


def test_a_crash_before_the_record_is_written_leaves_an_entry_the_next_scan_drops(store: StateStore) -> None:
    class Crash(Exception):
        pass

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    original = store._create
    store._create = crash  # type: ignore[method-assign]  the record's own write never lands
    with pytest.raises(Crash):
        store.create(KEY, _value("collecting"))
    store._create = original  # type: ignore[method-assign]
    assert store.keys(ACTIVE_PREFIX) == [ACTIVE_PREFIX + KEY]  # written before the record, as it must be
    assert _active(store) == []
    assert store.keys(ACTIVE_PREFIX) == []  # repaired


def test_a_crash_after_a_record_finished_is_repaired_by_the_next_scan(store: StateStore) -> None:
    store.create(KEY, _value("submitted", job="j1"))

    class Crash(Exception):
        pass

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    store._put = crash  # type: ignore[method-assign]  the finished entry and everything after it never land
    with pytest.raises(Crash):
        store.update(KEY, lambda v: {**(v or {}), "status": "trained"})
    del store._put  # type: ignore[attr-defined]  back to the class's hook
    assert store.get(KEY).value["status"] == "trained"  # type: ignore[union-attr]  the record was written
    assert store.keys(ACTIVE_PREFIX) == [ACTIVE_PREFIX + KEY]  # but is still indexed as active
    assert _active(store) == []  # the scan skips it...
    assert store.keys(ACTIVE_PREFIX) == []  # ...drops its entry
    assert [i.key for i in store.finished_on(_today(store), "arrivals/")] == [KEY]  # and writes the finished one


def test_a_reopen_racing_the_retire_keeps_the_record_scanned(store: StateStore) -> None:
    """A worker retires a finished record's entry while another reopens it: the entry must survive."""
    store.create(KEY, _value("submitted", job="j1"))
    original = store._delete
    reopened: list[bool] = []

    def delete_then_reopen(key: str, etag: str | None) -> bool:
        done = original(key, etag)
        if key == ACTIVE_PREFIX + KEY and not reopened:  # the reopen lands between the delete and the re-read
            reopened.append(True)
            store.update(KEY, lambda v: {**(v or {}), "status": "complete"})
        return done

    store._delete = delete_then_reopen  # type: ignore[method-assign]
    store.update(KEY, lambda v: {**(v or {}), "status": "trained"}, attempts=1)
    del store._delete  # type: ignore[attr-defined]
    assert reopened and store.get(KEY).value["status"] == "complete"  # type: ignore[union-attr]
    assert _active(store) == [KEY]


def test_records_stored_before_the_index_are_indexed_once(store: StateStore) -> None:
    # written as an older Reflex wrote them: the record alone (with its status in the listing, or without)
    store._create(KEY, store._encode(_value("collecting")), meta={"reflexstatus": "collecting"})
    store._create("arrivals/reflex-data/ds/b0", store._encode(_value("trained")))
    assert _active(store) == [KEY]
    assert store.get(INDEX_MARKER) is not None
    assert [i.key for i in store.finished_on(store.finished_days()[-1], "arrivals/")] == ["arrivals/reflex-data/ds/b0"]


def test_purge_deletes_by_day_after_the_retention_and_keeps_what_changed_or_is_kept(store: StateStore) -> None:
    real = time.time()
    old = real - 40 * DAY_SECONDS
    keys = [f"arrivals/reflex-data/ds/b{i}" for i in range(4)]
    assert _active(store) == []  # the indexes are built (a deployment's first tick does it)
    store.clock = lambda: old  # type: ignore[method-assign]  they finished 40 days ago (by the index)
    for key in keys:
        store.create(key, _value("submitted"))
        store.update(key, lambda v: {**(v or {}), "status": "trained"})
    store.update(keys[3], lambda v: {**(v or {}), "status": "complete"})  # reopened since: not finished now
    store.clock = lambda: real  # type: ignore[method-assign]
    assert store.purge(30) == 0  # the records themselves changed just now (their blobs say so): not deleted
    assert store.finished_days() == [_today(store)]  # their entries moved to the day of that change
    store.clock = lambda: real + 31 * DAY_SECONDS  # type: ignore[method-assign]
    asked: list[bool] = []

    def keep() -> list[str]:
        asked.append(True)
        return [keys[0]]

    assert store.purge(30, keep=keep) == 2
    assert asked == [True]
    assert store.get(keys[0]) is not None and store.get(keys[1]) is None and store.get(keys[2]) is None
    assert store.get(keys[3]) is not None  # unfinished: never purged
    assert [i.key for i in store.finished_on(store.finished_days()[-1], "")] == [keys[0]]  # kept, re-dated
    assert _active(store) == [keys[3]]
    asked.clear()
    assert store.purge(30, keep=keep) == 0 and asked == []  # nothing expired: one listing, keep() not asked


def test_health_purges_after_the_retention_and_keeps_the_batch_retraining_needs(
        blob_state: BlobStateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    real = time.time()
    blob_state.clock = lambda: real - 40 * DAY_SECONDS  # type: ignore[method-assign]
    for i in range(3):
        blob_state.create(*_batch(i, "trained", clock()))
    blob_state.clock = lambda: real + 40 * DAY_SECONDS  # type: ignore[method-assign]
    deps = make_deps(make_settings(REFLEX_RETENTION_DAYS="30"), state=blob_state, platform=fake_platform,
                     clock=clock)
    newest = training.latest_batch(deps)
    assert newest is not None
    outcome = health.check(deps)
    assert outcome.details["purged"] == 2
    assert [k for k in blob_state.keys("arrivals/")] == [newest[0]]
    assert training.latest_batch(deps) == newest  # still found: retraining keeps working after retention


def test_tick_requests_do_not_grow_with_finished_history(container_factory: Callable[[str], Any]) -> None:
    """One sweep + health + reconcile tick with 1 unfinished batch: the same storage requests (counted on the
    wire) over 5 and over 60 finished batches, where the full scan grows with them."""
    counted = []
    for h in (5, 60):
        counting = Counting()
        service = BlobServiceClient.from_connection_string(AZURITE, transport=counting)
        name = container_factory("ticks").container_name
        clock = Clock()
        platform = FakePlatform(clock=clock)
        store = BlobStateStore(service.get_container_client(name))
        assert list(store.active("arrivals/")) == []  # the indexes built, as a deployment's first tick does
        _fill(store, platform, h, clock())
        deps = make_deps(make_settings(REFLEX_STATE_CONTAINER=name), state=store, platform=platform, clock=clock)
        _tick(deps)
        before = counting.requests
        _tick(deps)
        counted.append(counting.requests - before)
        full = counting.requests
        list(store.records("arrivals/"))
        assert counting.requests - full > h  # the scan the timers no longer make
    assert counted[0] == counted[1]


def _submitted(platform: FakePlatform, state: MemoryStateStore, clock: Clock, name: str) -> str:
    _submitted_job(platform, state, clock, name)  # the submitted arrival record health's own tests use
    return f"arrivals/reflex-data/d/{name}"


@pytest.mark.parametrize("closed", [False, True], ids=["still-submitted", "closed-as-failed"])
def test_health_never_asks_again_about_a_failure_it_reported(fake_platform: FakePlatform, clock: Clock,
                                                             closed: bool) -> None:
    state = MemoryStateStore()
    deps = make_deps(make_settings(), state=state, platform=fake_platform, clock=clock)
    key = _submitted(fake_platform, state, clock, "job-a")
    fake_platform.finish_job("job-a", "Failed", error="bad data")
    if closed:  # the sweep closed it without a TrainingFailed (an earlier version's sweep did that)
        training.mark_job_finished(deps, "job-a", key, "failed", "job Failed (sweep)")
    health.check(deps)
    clock.advance(700)
    health.check(deps)
    (finding,) = [e for e in deps.publisher.sent if e.type == "Reflex.HealthCheckFailed"]
    assert finding.data["evidence"]["job"] == "job-a"
    asked = fake_platform.calls["get_job"]
    for _ in range(3):
        clock.advance(600)
        health.check(deps)
    assert fake_platform.calls["get_job"] == asked  # reported: its outcome is known, never asked again
    assert len([e for e in deps.publisher.sent if e.type == "Reflex.HealthCheckFailed"]) == 1
    assert _active(state) == ([] if closed else [key])  # a held failed record left the scanned set
    assert state.keys("health/ended/") == ([] if closed else ["health/ended/job-a"])


def test_a_failure_reported_by_its_reaction_is_settled_without_asking_the_platform(
        fake_platform: FakePlatform, clock: Clock) -> None:
    state = MemoryStateStore()
    deps = make_deps(make_settings(), state=state, platform=fake_platform, clock=clock)
    key = _submitted(fake_platform, state, clock, "job-b")
    fake_platform.finish_job("job-b", "Failed", error="bad data")
    state.claim("claims/training-failed/job-b")  # TrainingFailed went out
    training.mark_job_finished(deps, "job-b", key, "failed", "job Failed")
    asked = fake_platform.calls["get_job"]
    health.check(deps)
    assert fake_platform.calls["get_job"] == asked and _active(state) == []


def test_the_sweep_and_the_scoring_tracker_scan_only_unfinished_records(fake_platform: FakePlatform,
                                                                        clock: Clock) -> None:
    class Reads(MemoryStateStore):
        def __init__(self) -> None:
            super().__init__()
            self.read: list[str] = []

        def _read(self, key: str) -> tuple[bytes, str] | None:
            self.read.append(key)
            return super()._read(key)

    state = Reads()
    for i in range(20):
        state.create(*_batch(i, "trained", clock()))
        state.create(f"scoring/reflex-scoring/ds/s{i}", {"container": "reflex-scoring", "dataset": "ds",
                                                         "batch": f"s{i}", "status": "completed"})
        state.create(f"retrains/m/w{i}", {"model": "m", "window": f"w{i}", "status": "trained"})
    deps = make_deps(make_settings(), state=state, platform=fake_platform, clock=clock)
    arrival.sweep(deps)
    shared.handlers.monitoring_health(deps)
    from shared.monitoring import retrain
    from shared.scoring import flow as scoring

    scoring.track(deps)
    retrain.resume_retrains(deps)
    assert not [k for k in state.read if k.startswith(("arrivals/", "scoring/", "retrains/"))]


def test_status_reads_only_recent_failures_and_all_with_the_flag(blob_state: BlobStateStore) -> None:
    from reflex import status

    real = time.time()
    assert _active(blob_state) == []  # the indexes are built (a deployment's first tick does it)
    blob_state.clock = lambda: real - 10 * DAY_SECONDS  # type: ignore[method-assign]
    blob_state.create("arrivals/reflex-data/ds/old", _value("failed", reason="old failure",
                                                            history=[[real - 10 * DAY_SECONDS, "failed", "x"]]))
    blob_state.settle("arrivals/reflex-data/ds/old")
    blob_state.clock = lambda: real  # type: ignore[method-assign]
    blob_state.create("arrivals/reflex-data/ds/new", _value("failed", reason="new failure",
                                                            history=[[real, "failed", "x"]]))
    blob_state.create("arrivals/reflex-data/ds/open", _value("collecting", files={}, first_seen=real,
                                                             last_seen=real))
    deps = make_deps(make_settings(REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1"), state=blob_state, clock=Clock(real))
    recent = status.gather(deps)
    assert [f["record"] for f in recent["failures"] if f.get("record", "").startswith("arrivals/")] == \
        ["arrivals/reflex-data/ds/new"]
    assert [p["key"] for p in recent["pending_batches"]] == ["arrivals/reflex-data/ds/open"]
    everything = status.gather(deps, everything=True)
    assert sorted(f["record"] for f in everything["failures"] if f.get("record", "").startswith("arrivals/")) == \
        ["arrivals/reflex-data/ds/new", "arrivals/reflex-data/ds/old"]


def test_active_refuses_a_prefix_without_an_index() -> None:
    with pytest.raises(ValueError, match="rollouts/"):
        list(MemoryStateStore().active("rollouts/"))


def test_finished_entries_live_under_their_day(store: StateStore) -> None:
    store.create(KEY, _value("skipped"))
    assert store.keys(FINISHED_PREFIX) == [f"{FINISHED_PREFIX}{_today(store)}/skipped/{KEY}"]
    assert store.finished_on(_today(store), "arrivals/", {"failed"}) == []
    assert [i.key for i in store.finished_on(_today(store), "arrivals/", {"skipped"})] == [KEY]
