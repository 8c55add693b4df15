"""CAS under contention (#18: 16-32 writers on one record, 65 of 2,080 updates gave up with `Conflict`): the same
writers on the same Azurite record, with the retry policy `StateStore.update` had before (8 attempts, sleeps
0.05·2^n capped at 0.5 s, ×0.5-1.5) beside the current one (`cas_attempts`, equal-jitter doubling from
`cas_base_delay` to `cas_max_delay`), in one run.

Each writer appends its own counter to one record, `updates` times, all writers released together. Counted:
updates that gave up (`Conflict`), updates that landed (the record's counters are checked to be exactly the
landed ones: no lost write), compare-and-swap attempts, and wall time.
Run: `.venv/bin/python bench/cas_contention.py [writers] [updates]` (Azurite running). Ends with one
`RESULT cas_contention ...` line.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from azure.storage.blob import BlobServiceClient  # noqa: E402

from shared.core.state import BlobStateStore, Conflict  # noqa: E402
from tests.conftest import AZURITE  # noqa: E402


class Before(BlobStateStore):
    """The retry policy `update` had before #18: 8 attempts, 0.05·2^n s capped at 0.5 s, times 0.5-1.5."""

    cas_attempts = 8

    def backoff(self, attempt: int) -> float:
        return min(0.05 * (2**attempt), 0.5) * (0.5 + uuid.uuid4().int % 100 / 100)


class Counting:
    """Counts compare-and-swap attempts (reads of the record) of one store."""

    def __init__(self, store: BlobStateStore) -> None:
        self.attempts = 0
        self._lock = threading.Lock()
        original = store._read

        def read(key: str) -> Any:
            with self._lock:
                self.attempts += 1
            return original(key)

        store._read = read  # type: ignore[method-assign]


def run(store: BlobStateStore, writers: int, updates: int) -> dict[str, float]:
    counting = Counting(store)
    key = f"bench/contended-{uuid.uuid4().hex[:8]}"
    store.create(key, {"counts": {}})
    gave_up = [0] * writers
    start = threading.Barrier(writers + 1)

    def writer(i: int) -> None:
        start.wait()
        for _ in range(updates):
            try:
                store.update(key, lambda v: {"counts": {**v["counts"], str(i): v["counts"].get(str(i), 0) + 1}})
            except Conflict:
                gave_up[i] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    final = store.get(key)
    landed = sum((final.value["counts"] if final else {}).values())
    expected = writers * updates - sum(gave_up)
    assert landed == expected, f"lost writes: {landed} landed, {expected} reported landed"
    return {"conflicts": sum(gave_up), "landed": landed, "attempts": counting.attempts, "seconds": seconds}


def main() -> None:
    writers = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    updates = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    service = BlobServiceClient.from_connection_string(AZURITE)
    container = service.get_container_client(f"bench-cas-{uuid.uuid4().hex[:10]}")
    container.create_container()
    try:
        before = run(Before(container), writers, updates)
        now = run(BlobStateStore(container), writers, updates)
    finally:
        container.delete_container()
    for name, r in (("before", before), ("now", now)):
        print(f"{name:>6}: {writers} writers x {updates} updates: {r['conflicts']:.0f} gave up, {r['landed']:.0f} "
              f"landed, {r['attempts']:.0f} CAS attempts, {r['seconds']:.1f} s")
    print(f"RESULT cas_contention writers={writers} updates={writers * updates} "
          f"conflicts_before={before['conflicts']:.0f} conflicts_now={now['conflicts']:.0f} "
          f"attempts_before={before['attempts']:.0f} attempts_now={now['attempts']:.0f} "
          f"seconds_before={before['seconds']:.1f} seconds_now={now['seconds']:.1f}")


if __name__ == "__main__":
    main()
