"""The ledger's index (shared/core/ledger_index.py) on Azurite: `explain`'s walk through it finds exactly the chain a
full scan finds, from every kind of id, across days and parts, including lines appended after the index was built
and while it was being built; a second reader reads the stored index, not the ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reflex.explain import detect_kinds, walk
from shared.core import reaction
from shared.core.ledger import BlobLedger, entry_from
from shared.core.ledger_index import (
    SEGMENTS_PREFIX,
    SHARDS_PREFIX,
    BlobEntrySource,
    LedgerIndexer,
    index_key,
    index_recent,
    source_for,
)
from tests.conftest import AZURITE, Clock

pytestmark = pytest.mark.azurite

DAY = 86_400
URL = "http://127.0.0.1:10000/devstoreaccount1/reflex-data/sales/{batch}/part-{i}.csv"
TAIL = 2048  # segments of a few lines, so the tests cross segment, part and day boundaries


def _chain(ledger: BlobLedger, clock: Clock, batch: str, *, blobs: int = 3, noise: int = 4) -> dict[str, str]:
    """One batch's lines, as the reactions write them: arrivals, the sweep, the gate, a rollout; with other
    batches' lines of the same tick (a sweep that started two) and unrelated lines in between."""
    urls = [URL.format(batch=batch, i=i) for i in range(blobs)]
    bid, job, model = f"reflex-data/sales/{batch}", f"job-{batch}", f"m:{batch.removeprefix('b')}"
    for i, url in enumerate(urls):
        ledger.append(entry_from("data.arrival", f"ev-{batch}-{i}", None, reaction.Outcome(
            "acted", "stored", {"blob": url, "batch": bid}), at=clock()))
        for n in range(noise):
            ledger.append(entry_from("health.check", f"tick-{batch}-{i}-{n}", None,
                                     reaction.Outcome("skipped", "healthy", {"endpoint": "other-ep"}), at=clock()))
    ledger.append(entry_from("arrival.sweep", f"sweep-{batch}", None, reaction.Outcome(
        "acted", "started 2", {"links": [{"batch": bid, "job": job, "data": f"sales:{batch}"},
                                         {"batch": f"{bid}-other", "job": f"{job}-other"}]}), at=clock()))
    clock.advance(60)
    ledger.append(entry_from("registration.run_event", f"run-{batch}", None, reaction.Outcome(
        "acted", "registered", {"job": job, "model": model}), at=clock()))
    ledger.append(entry_from("rollout.reconcile", f"rec-{batch}", None, reaction.Outcome(
        "acted", "advanced", {"links": [{"model": model, "rollout": f"ep/{model}", "endpoint": "ep"},
                                        {"model": "m:999", "rollout": "ep2/m:999", "endpoint": "ep2"}]}),
        at=clock()))
    return {"blob": urls[1], "tail": f"reflex-data/sales/{batch}/part-1.csv", "batch": bid, "job": job,
            "model": model, "event": f"ev-{batch}-0"}


def _same(ledger: BlobLedger, ids: dict[str, str], **source: Any) -> BlobEntrySource:
    """Walk from every id through the index and over the full scan: the same refs and the same lines."""
    index = source_for(ledger, days=7, tail_bytes=TAIL, **source)
    assert isinstance(index, BlobEntrySource)
    entries = list(ledger.entries(days=7))
    for kind, value in ids.items():
        kind = "blob" if kind == "tail" else kind
        scanned, indexed = walk(entries, kind, value), walk(index, kind, value)
        assert indexed.ordered_refs() == scanned.ordered_refs(), (kind, value)
        assert [e["event_id"] for e in indexed.entries] == [e["event_id"] for e in scanned.entries], (kind, value)
        assert scanned.entries, (kind, value)
        mentions = [e for _, e in index.find([value])[value]]
        assert detect_kinds(mentions, value) == detect_kinds(entries, value)
    return index


def test_the_indexed_walk_finds_what_the_full_scan_finds_across_days_and_parts(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    container = container_factory("ledger")
    ledger = BlobLedger(container, clock, max_blocks=15)  # parts of 15 lines
    first = _chain(ledger, clock, "b1")
    clock.advance(DAY)
    second = _chain(ledger, clock, "b2", blobs=5)
    for ids in (first, second):
        _same(ledger, ids)
    markers = [b.name for b in container.list_blobs(name_starts_with=SEGMENTS_PREFIX)]
    shards = [b.name for b in container.list_blobs(name_starts_with=SHARDS_PREFIX)]
    assert markers and shards and all(n.endswith(".json") for n in shards)  # segments were stored
    again = _same(ledger, second)  # a second reader: the stored segments cover all but a short tail
    assert all(p.size - p.covered < TAIL for p in again._parts) and any(p.segments for p in again._parts)


def test_lines_appended_after_the_index_are_found_in_the_tail(container_factory: Callable[[str], Any],
                                                              clock: Clock) -> None:
    ledger = BlobLedger(container_factory("ledger"), clock)
    ids = _chain(ledger, clock, "b1", blobs=4)
    _same(ledger, ids)  # indexed
    ledger.append(entry_from("rollout.reconcile", "late", None, reaction.Outcome(
        "acted", "promoted", {"model": ids["model"], "rollout": f"ep/{ids['model']}", "endpoint": "ep"}),
        at=clock()))
    index = _same(ledger, ids)
    assert "late" in [e["event_id"] for e in walk(index, "blob", ids["blob"]).entries]
    assert any(p.tail for p in index._parts)  # short: not worth a segment, read in memory


def test_lines_appended_while_the_index_is_built_are_never_lost(container_factory: Callable[[str], Any],
                                                                clock: Clock) -> None:
    ledger = BlobLedger(container_factory("ledger"), clock)
    ids = _chain(ledger, clock, "b1", blobs=6)
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        other = BlobLedger(ledger._container, clock)  # another worker, same blobs
        n = 0
        while not stop.is_set():
            eid = f"during-{n}"
            other.append(entry_from("registration.run_event", eid, None, reaction.Outcome(
                "acted", "noted", {"job": ids["job"], "blob": URL.format(batch="b1", i=1)}), at=clock()))
            written.append(eid)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            during = source_for(ledger, days=7, tail_bytes=TAIL)  # built while lines land
            assert {e["event_id"] for e in walk(during, "job", ids["job"]).entries} >= {f"run-{'b1'}", "sweep-b1"}
    finally:
        stop.set()
        thread.join()
    assert written  # lines did land while the readers indexed
    index = _same(ledger, ids)
    found = {e["event_id"] for e in walk(index, "job", ids["job"]).entries}
    assert set(written) <= found


def test_index_keys_match_what_the_ledger_matches() -> None:
    assert index_key(URL.format(batch="b1", i=0)) == index_key("reflex-data/sales/b1/part-0.csv") == "b1/part-0.csv"
    assert index_key("reflex-data/sales/b1/") == "sales/b1"
    assert index_key("job-1") == "job-1" and index_key("m:3") == "m:3"


# ------------------------------------------------------------------------------------------------ the timer
def _markers(container: Any) -> list[str]:
    return sorted(b.name for b in container.list_blobs(name_starts_with=SEGMENTS_PREFIX))


def _tick(ledger: BlobLedger, clock: Clock, *, now: datetime | None = None, **kw: Any) -> dict[str, int]:
    today = datetime.fromtimestamp(clock(), UTC).date()
    return LedgerIndexer(ledger._container, today=today, now=now or datetime.now(UTC), tail_bytes=TAIL,
                         **kw).run()


def test_the_timer_indexes_the_tail_so_the_first_reader_reads_only_a_short_one(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    ledger = BlobLedger(container_factory("ledger"), clock)
    ids = _chain(ledger, clock, "b1", blobs=6)
    done = _tick(ledger, clock)
    assert done["built"] == 1 and done["parts"] == 1
    stored = _markers(ledger._container)
    reader = _same(ledger, ids)  # the walk through the timer's index finds what the scan finds
    assert all(p.size == p.covered for p in reader._parts)  # nothing left for the reader to read in full
    assert _markers(ledger._container) == stored  # and it built nothing itself


def test_a_short_tail_waits_for_a_later_tick_unless_its_day_is_over(container_factory: Callable[[str], Any],
                                                                   clock: Clock) -> None:
    ledger = BlobLedger(container_factory("ledger"), clock)
    ids = _chain(ledger, clock, "b1", blobs=2, noise=0)
    size = next(iter(ledger._container.list_blobs(name_starts_with="ledger/"))).size
    assert size < TAIL
    assert _tick(ledger, clock)["built"] == 0 and _markers(ledger._container) == []  # today's: not yet
    clock.advance(DAY)  # the day is over: its tail will not grow, and each reader of the window would read it
    assert _tick(ledger, clock)["built"] == 1
    clock.advance(DAY)
    assert _tick(ledger, clock)["parts"] == 0  # out of the timer's two days: no listing of older days
    clock.advance(-2 * DAY)
    _same(ledger, ids)


def test_a_long_chain_is_merged_into_one_segment_that_answers_the_same(container_factory: Callable[[str], Any],
                                                                       clock: Clock) -> None:
    ledger = BlobLedger(container_factory("ledger"), clock)
    chains = []
    for n in range(4):  # a tick after each batch: a chain of four segments
        chains.append(_chain(ledger, clock, f"b{n}", blobs=6))
        assert _tick(ledger, clock, max_chain=8)["built"] == 1
    before = BlobEntrySource(ledger._container, days=7, today=datetime.fromtimestamp(clock(), UTC).date(),
                             tail_bytes=TAIL)
    assert len(before._parts[0].segments) == 4
    done = _tick(ledger, clock, max_chain=3)
    assert done["merged"] == 1 and done["removed"] == 0  # the chain it superseded is kept for now
    for ids in chains:
        after = _same(ledger, ids)
        assert after._parts[0].segments == [(0, after._parts[0].size, after._parts[0].segments[0][2])]


def test_superseded_segments_are_deleted_only_once_the_merged_one_is_old(container_factory: Callable[[str], Any],
                                                                        clock: Clock) -> None:
    ledger = BlobLedger(container_factory("ledger"), clock)
    ids = _chain(ledger, clock, "b1", blobs=6)
    _tick(ledger, clock)
    ids = _chain(ledger, clock, "b1", blobs=6)
    _tick(ledger, clock)
    assert _tick(ledger, clock, max_chain=1)["merged"] == 1
    old_markers = _markers(ledger._container)
    assert len(old_markers) == 3  # two segments and the merged one
    written = {b.name: b.last_modified for b in ledger._container.list_blobs(name_starts_with=SEGMENTS_PREFIX)}
    merged_at = max(written.values())  # the merged marker, written last (by the storage service's clock)
    assert _tick(ledger, clock, max_chain=1, now=merged_at + timedelta(minutes=14))["removed"] == 0  # a reader may
    assert _tick(ledger, clock, max_chain=1, now=merged_at + timedelta(minutes=16))["removed"] == 2  # be reading
    left = _markers(ledger._container)
    assert len(left) == 1 and left[0].rpartition("/")[2].startswith("0-")
    shards = {b.name.rsplit("/", 2)[1] for b in ledger._container.list_blobs(name_starts_with=SHARDS_PREFIX)}
    assert shards == {left[0].rpartition("/")[2].partition(".")[0]}  # the superseded shards went with them
    _same(ledger, ids)


def test_an_idle_tick_is_four_listings_whatever_the_history(container_factory: Callable[[str], Any],
                                                            clock: Clock) -> None:
    """Today's and yesterday's parts and markers, each under its day's prefix: older days are not listed."""
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient

    sent: list[str] = []

    class Counting(RequestsTransport):
        def send(self, request: Any, **kwargs: Any) -> Any:
            sent.append(f"{request.method} {request.url}")
            return super().send(request, **kwargs)

    ledger = BlobLedger(container_factory("ledger"), clock)
    for day in range(5):
        _chain(ledger, clock, f"b{day}", blobs=6)
        _tick(ledger, clock)
        clock.advance(DAY)
    _chain(ledger, clock, "today", blobs=2, noise=0)  # a short tail: nothing to do
    counted = BlobServiceClient.from_connection_string(AZURITE, transport=Counting())
    container = counted.get_container_client(ledger._container.container_name)
    today = datetime.fromtimestamp(clock(), UTC).date()
    _tick(ledger, clock, max_chain=8)  # yesterday's tail indexed: what is left is idle
    sent.clear()
    done = LedgerIndexer(container, today=today, now=datetime.now(UTC), tail_bytes=TAIL).run()  # nothing to age
    assert done == {"parts": 2, "built": 0, "merged": 0, "removed": 0}
    assert len(sent) == 4 and all("comp=list" in s for s in sent), sent


def test_the_handler_reports_what_the_tick_did(container_factory: Callable[[str], Any], clock: Clock) -> None:
    ledger = BlobLedger(container_factory("ledger"), clock)
    _chain(ledger, clock, "b1", blobs=6)
    assert index_recent(ledger) is not None  # lines of 1 MiB or more: not these
    assert _markers(ledger._container) == []
    clock.advance(DAY)
    assert index_recent(ledger) == {"parts": 1, "built": 1, "merged": 0, "removed": 0}  # yesterday's, finished


def test_a_chain_with_a_shard_that_cannot_be_read_is_not_merged(container_factory: Callable[[str], Any],
                                                                clock: Clock) -> None:
    """A merged segment supersedes the chain: made without one of its shards, it would hide that shard's lines."""
    ledger = BlobLedger(container_factory("ledger"), clock)
    _chain(ledger, clock, "b1", blobs=6)
    _tick(ledger, clock)
    _chain(ledger, clock, "b2", blobs=6)
    _tick(ledger, clock)
    shards = sorted(b.name for b in ledger._container.list_blobs(name_starts_with=SHARDS_PREFIX))
    ledger._container.delete_blob(shards[0])
    assert _tick(ledger, clock, max_chain=1)["merged"] == 0
    assert len(_markers(ledger._container)) == 2  # the chain as it was
