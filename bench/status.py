"""What `python -m reflex status` costs in storage: the records it reads, beside the reads it made before, in one run.

Both sides read the same state container on Azurite, filled with a history of work: training batches (most of
them trained, a few failed or still collecting), scoring batches, retrainings, rollouts with archives, dead
letters. The baseline is the read pattern `status` had before it listed scoring and rollout failures and waits:
the records under `rollouts/` and `arrivals/` and the dead letters, one after the other, and the held keys. The
new side is `reflex.status.gather` (the platform is the in-memory fake, so only storage is measured). Counted:
storage requests (listings and reads, by a counting store wrapper) and wall time, best of a few rounds.
Run: `.venv/bin/python bench/status.py [records]` (Azurite running). Ends with one `RESULT status ...` line.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from azure.storage.blob import BlobServiceClient  # noqa: E402

from reflex import status  # noqa: E402
from shared.core.state import BlobStateStore  # noqa: E402
from tests.conftest import AZURITE, Clock, make_deps, make_settings  # noqa: E402

ROUNDS = 5


class Counting(BlobStateStore):
    """The blob state store, counting its storage requests."""

    def __init__(self, container: Any) -> None:
        super().__init__(container)
        self.requests = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    def _read(self, key: str) -> tuple[bytes, str] | None:
        self._count()
        return super()._read(key)

    def _keys(self, prefix: str) -> Iterator[str]:
        self._count()
        return super()._keys(prefix)


def _fill(store: BlobStateStore, n: int, now: float) -> None:
    history = [[now - 3600, "collecting", "first blob"], [now - 3000, "trained", "run completed"]]
    for i in range(n):
        status_ = "failed" if i % 10 == 0 else "collecting" if i % 25 == 1 else "trained"
        store.create(f"arrivals/data/ds/b{i:04d}", {
            "container": "data", "dataset": "ds", "batch": f"b{i:04d}", "status": status_, "files": {"p.csv": {}},
            "first_seen": now - 3600, "last_seen": now - 3500, "job": f"job-{i}",
            "reason": "job failed: train.py: error: label column 'y' not found", "history": history})
    for i in range(n // 4):
        store.create(f"scoring/score/ds/s{i:04d}", {
            "container": "score", "dataset": "ds", "batch": f"s{i:04d}", "files": {"p.csv": {}}, "job": f"sj-{i}",
            "status": "failed" if i % 10 == 0 else "completed", "reason": "batch job Failed", "history": history})
    for i in range(n // 20):
        store.create(f"retrains/m/2026112{i % 10}T0000Z-{i}", {"status": "submitted", "batch": "arrivals/data/ds/b0",
                                                                "job": f"rj-{i}", "history": history})
    for e in range(3):
        store.create(f"rollouts/ep{e}", {"endpoint": f"ep{e}", "model": "m", "version": str(e), "deployment": f"m-v{e}",
                                         "status": "done",
                                         "history": [{"at": now - 100, "action": "Finish", "detail": "promoted"}]})
        for a in range(n // 20):
            store.create(f"rollout-history/ep{e}/m/{a}-1", {"status": "done"})
    for i in range(n // 4):
        store.dead_letter("t.x", {}, "boom", event_id=f"ev{i}")


def _baseline(store: BlobStateStore) -> None:
    """The reads `status` made before this change (endpoints aside: both sides ask the platform the same)."""
    list(store.records("rollouts/"))
    list(store.records("arrivals/"))
    store.dead_letters()
    store.keys("held/")


def _measure(fn: Any, store: Counting) -> tuple[int, float]:
    best = float("inf")
    for _ in range(ROUNDS):
        store.requests = 0
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return store.requests, best


def main(n: int) -> None:
    service = BlobServiceClient.from_connection_string(AZURITE)
    container = service.get_container_client(f"bench-status-{uuid.uuid4().hex[:12]}")
    container.create_container()
    try:
        clock = Clock()
        store = Counting(container)
        _fill(store, n, clock())
        deps = make_deps(make_settings(REFLEX_STATE_CONTAINER=container.container_name,
                                       REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1"), state=store, clock=clock)
        old_requests, old_s = _measure(lambda: _baseline(store), store)
        new_requests, new_s = _measure(lambda: status.gather(deps), store)
        result = status.gather(deps)
        print(f"records: {n} training batches, {n // 4} scoring, {n // 20} retrainings, 3 rollouts "
              f"(+{3 * (n // 20)} archived), {n // 4} dead letters")
        print(f"baseline (rollouts, arrivals, dead letters in turn): {old_requests} requests, {old_s:.2f} s")
        print(f"status now (+ scoring, retrainings; reads in parallel): {new_requests} requests, {new_s:.2f} s; "
              f"{len(result['failures'])} failures, {len(result['pending_batches'])} unfinished batches shown")
        print(f"RESULT status records={n} baseline_requests={old_requests} requests={new_requests} "
              f"baseline_s={old_s:.3f} s={new_s:.3f}")
    finally:
        container.delete_container()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
