"""The ledger's index (shared/core/ledger_index.py) on Azurite: `explain`'s walk through it finds exactly the chain a
full scan finds, from every kind of id, across days and parts, including lines appended after the index was built
and while it was being built; a second reader reads the stored index, not the ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from reflex.explain import detect_kinds, walk
from shared.core import reaction
from shared.core.ledger import BlobLedger, entry_from
from shared.core.ledger_index import SEGMENTS_PREFIX, SHARDS_PREFIX, BlobEntrySource, index_key, source_for
from tests.conftest import Clock

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
