"""`reflex status` reads only what it shows (#17.5): open records, the live rollouts and the newest failures, chosen
from listings that carry each record's status; finished history costs a listing entry, never a read. On Azurite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from reflex import status
from shared.core.state import BlobStateStore
from tests.conftest import Clock, make_deps, make_settings

pytestmark = pytest.mark.azurite


class ReadCounting(BlobStateStore):
    """The Azurite store, remembering which records were read."""

    def __init__(self, container: Any) -> None:
        super().__init__(container)
        self.read: list[str] = []
        self._guard = threading.Lock()

    def _read(self, key: str) -> tuple[bytes, str] | None:
        with self._guard:
            self.read.append(key)
        return super()._read(key)


def _batch(store: BlobStateStore, i: int, state: str, now: float) -> str:
    key = f"arrivals/data/ds/b{i:04d}"
    store.create(key, {"container": "data", "dataset": "ds", "batch": f"b{i:04d}", "status": state,
                       "files": {"p.csv": {}}, "first_seen": now - 3600, "last_seen": now - 3500, "job": f"job-{i}",
                       "reason": f"job job-{i} failed: train.py: error: no label" if state == "failed" else "",
                       "history": [[now - 3600, "collecting", "first blob"], [now - 3000, state, "run completed"]]})
    return key


def test_status_reads_open_records_and_the_newest_failures_not_the_history(
        container_factory: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    store = ReadCounting(container_factory("state"))
    now = clock()
    failed = [_batch(store, i, "failed", now) for i in range(4)]  # oldest first: b0000 is the oldest failure
    for i in range(4, 64):
        _batch(store, i, "trained", now)
    open_ = [_batch(store, i, "collecting", now) for i in (64, 65)]
    store.create("rollouts/ep", {"endpoint": "ep", "model": "m", "version": "2", "status": "done",
                                 "history": [{"at": now - 100, "action": "Finish", "detail": "promoted"}]})
    store.create("rollouts/ep/archive", {"status": "done"})  # not a live rollout record
    legacy = "arrivals/data/ds/b9999"  # stored before records carried their status in the listing: read
    store._create(legacy, store._encode({"container": "data", "dataset": "ds", "batch": "b9999",
                                         "status": "collecting", "files": {}, "first_seen": now, "last_seen": now}))
    monkeypatch.setattr(status, "RECENT_FAILURES", 2)
    deps = make_deps(make_settings(REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1"), state=store, clock=clock)
    store.read.clear()
    result = status.gather(deps)
    read = set(store.read)
    assert {k for k in read if k.startswith("arrivals/")} == {*open_, legacy, *failed[-2:]}
    assert {k for k in read if k.startswith("rollouts/")} == {"rollouts/ep"}
    assert sorted(p["key"] for p in result["pending_batches"]) == sorted([*open_, legacy])
    assert sorted(f["record"] for f in result["failures"] if f.get("record", "").startswith("arrivals/")) \
        == sorted(failed[-2:])
    assert result["failures_total"] == 4
    text: list[str] = []

    class Out:
        def text(self, line: str = "") -> None:
            text.append(line)

        def table(self, rows: Any, headers: Any, *, indent: str = "  ") -> None:
            text.extend(" ".join(map(str, r)) for r in rows)

    status.render(result, Out())
    assert any("2 older failed batch(es) not read" in line for line in text)
