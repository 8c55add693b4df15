"""Intake bench (#17.1): one batch of N blobs, each delivered 3x in shuffled order, on one worker, against Azurite.

What it measures, for the intake of this version and beside it the single-record layout it replaces (#17: one
CAS record holding the whole manifest, rewritten for every new file; the baseline below is that transition as
shared/batches/record.py `with_blob` and shared/arrival/flow.py `handle_blob` did it at commit 9da9fdc, on the
same real `BlobStateStore`):

- blob_events_per_s: deliveries handled per second by one worker, a thread pool of `threads` (the Functions host
  runs concurrent invocations of one worker on a thread pool); each delivery goes through `reaction.run`, as the
  trigger calls it (the ledger is left out: its one append per run is the same for both layouts);
- state_bytes_per_delivery: bytes of state bodies read and written (Get Blob / Put Blob payloads, counted by
  testing/counting_state.py), all deliveries of the run (the completion, its manifest and the job's start
  included) over the number of deliveries; max_file_delivery_bytes the largest one file delivery moved;
- jobs: training jobs started (the behavioural fake platform): exactly one per batch.

The new layout's stream holds the batch's marker (`_SUCCESS`) too, three times, shuffled in with the files, so
the batch completes somewhere in the middle and the deliveries after it take the complete batch's path. The
baseline delivers the files only (its O(N^2) is there; it never completes): at N = 10,000 it would not finish in
this bench's time (#17 measured 21.8 events/s, falling, stopped after 9 minutes), so it runs at `baseline_n`
(default 500) and says so; its cost per delivery grows with N, so the figures at 10,000 would be worse.

Run with Azurite on 127.0.0.1:10000: `.venv/bin/python bench/intake.py [--n 10000] [--baseline-n 500]
[--threads 16]`; `REFLEX_TEST_STORAGE=<connection string>` points it (as the tests) at another Azurite, e.g. a
private `azurite-blob --inMemoryPersistence` when the shared one is busy with others' data.
Ends with `RESULT intake blob_events_per_s=… state_bytes_per_blob=… jobs_10k=… …`.
`run_intake(n, deliveries, threads)` returns the same figures as a dict (bench/scale.py may import it).

Measured (session 6, this 2-core machine, quiet; data and state each on a private in-memory Azurite, 16
threads): N = 10,000: 302.1 events/s, 297 state bytes per delivery (892 per blob), 0.69 state requests per delivery,
at most 520 bytes for one file delivery, 1 completion, 1 job (after 232 s of sweeps freezing the 10,000 copies,
~26 copies/s on Azurite), 0 given up; the same run on ONE Azurite instance holding data and state: 101.1 events/s
(Azurite looks a blob up by scanning every blob the instance holds, local/azurite.py `private_blob`: 52% of its CPU
at 14,000 blobs in a profile; Reflex's requests per delivery are the same, 0.71); the baseline at N = 500: 85.9
events/s, 87,174 bytes per delivery. Session 5, at load 5-8 on one instance: 53.6 events/s at N = 10,000.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from azure.storage.blob import BlobServiceClient  # noqa: E402

import functions.data_arrival  # noqa: E402,F401  (registers the data.arrival reaction)
from local.azurite import private_blob  # noqa: E402
from shared.arrival.flow import arrival_key, sweep  # noqa: E402
from shared.batches.intake import locate_blob  # noqa: E402
from shared.batches.paths import file_problem  # noqa: E402
from shared.core import reaction  # noqa: E402
from shared.core.state import Conflict  # noqa: E402
from testing.counting_state import CountingStore  # noqa: E402
from testing.fake_platform import FakePlatform  # noqa: E402
from tests.conftest import AZURITE, make_deps, make_settings  # noqa: E402
from tests.timers_support import upload  # noqa: E402

ROWS = b"a,label\n1,0\n"


def _containers(data: str, state: str) -> tuple[Any, Any]:
    """A fresh data container in the account at connection string `data`, a state container in `state`'s."""
    made = []
    for prefix, where in (("bench-data", data), ("bench-state", state)):
        service = BlobServiceClient.from_connection_string(where)
        container = service.get_container_client(f"{prefix}-{uuid.uuid4().hex[:16]}")
        container.create_container()
        made.append(container)
    return made[0], made[1]


def _upload_batch(data: Any, n: int, batch: str, *, marker: bool) -> list[dict[str, Any]]:
    """The batch's blobs stored for real (completion lists them), with the BlobCreated event of each."""
    names = [f"ds/{batch}/part-{i:05d}.csv" for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        events = list(pool.map(lambda name: upload(data, name, ROWS), names))
    return [*events, upload(data, f"ds/{batch}/_SUCCESS", b"")] if marker else events


def _drive(stream: list[dict[str, Any]], deliver: Callable[[dict[str, Any]], None], threads: int) -> dict[str, Any]:
    errors: list[str] = []
    lock = threading.Lock()

    def one(raw: dict[str, Any]) -> None:
        try:
            deliver(raw)
        except Conflict as exc:  # a CAS given up: the trigger would redeliver it
            with lock:
                errors.append(str(exc))

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, stream))
    return {"seconds": time.perf_counter() - start, "gave_up": len(errors)}


def run_intake(n: int = 10_000, deliveries: int = 3, threads: int = 16, *, sweeps: int = 60,
               data_storage: str = AZURITE, state_storage: str = "") -> dict[str, Any]:
    """This version's intake: N blobs and the marker, each delivered `deliveries` times, shuffled; the figures.
    `data_storage` / `state_storage`: connection strings of the data's and Reflex's state's storage (the state
    beside the data when empty). Then at most `sweeps` arrival sweeps (each a freezing pass, then the job's
    start, as the timer runs them), timed apart: `jobs` is 1 only once the batch is frozen within them."""
    data, state_container = _containers(data_storage, state_storage or data_storage)
    try:
        state = CountingStore(state_container)
        platform = FakePlatform()
        deps = make_deps(make_settings(REFLEX_DATA_CONTAINER=data.container_name, AzureWebJobsStorage=data_storage),
                         state=state, platform=platform, clock=time.time)
        events = _upload_batch(data, n, "b1", marker=True)
        stream = events * deliveries
        random.Random(17).shuffle(stream)

        def deliver(raw: dict[str, Any]) -> None:
            outcome = reaction.run("data.arrival", raw, event_id=raw["id"], deps=deps)
            if outcome.status == "dead-lettered":
                raise RuntimeError(outcome.reason)

        before, asked = state.moved, state.requests
        timing = _drive(stream, deliver, threads)
        # the completing delivery froze what one bounded pass could (shared/batches/freeze.py, 12 s); the sweep's
        # passes copy the rest and submit, as the timer does every minute: timed apart, it is not intake
        started = time.perf_counter()
        swept = 0
        while swept < sweeps and not platform.jobs:
            sweep(deps)
            swept += 1
        freeze_s = time.perf_counter() - started
        batch = state.get(next(iter(state.keys("arrivals/"))))
        history = batch.value["history"] if batch else []
        moved, asked = state.moved - before, state.requests - asked
        # the largest single file delivery, measured apart (one at a time, so no other delivery's bytes count)
        largest = _largest_file_delivery(deps, state, data, min(n, 200))
        return {"n": n, "deliveries": len(stream), "threads": threads, "seconds": round(timing["seconds"], 2),
                "blob_events_per_s": round(len(stream) / timing["seconds"], 1),
                "state_bytes_per_delivery": round(moved / len(stream)), "state_bytes_per_blob": round(moved / n),
                "state_requests_per_delivery": round(asked / len(stream), 2),
                "max_file_delivery_bytes": largest, "gave_up": timing["gave_up"],
                "sweep_s": round(freeze_s, 1), "sweeps": swept,
                "completions": sum(1 for entry in history if entry[1] == "complete"),
                "status": history[-1][1] if history else "", "status_reason": history[-1][2] if history else "",
                "jobs": len(platform.jobs)}
    finally:
        data.delete_container()
        state_container.delete_container()


def _largest_file_delivery(deps: Any, state: CountingStore, data: Any, n: int) -> int:
    events = _upload_batch(data, n, "probe", marker=False)
    largest = 0
    for raw in events * 2:
        before = state.moved
        reaction.run("data.arrival", raw, event_id=raw["id"], deps=deps)
        largest = max(largest, state.moved - before)
    return largest


# ------------------------------------------------------------------------------------------------ baseline
def _old_transition(path: Any, blob: Any, now: float) -> Callable[[dict[str, Any] | None], dict[str, Any] | None]:
    """The pre-#17 `add_blob`: the batch record holds `files`, `rejected` and `late_files`, rewritten per file."""

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        record = current or {"container": path.container, "dataset": path.dataset, "batch": path.batch,
                             "status": "collecting", "files": {}, "rejected": {}, "late_files": {}, "marker": None,
                             "first_seen": now, "last_seen": now, "completed_at": None, "completing_event": "",
                             "data": None, "job": "", "reason": "", "history": [[now, "collecting", "first blob"]]}
        entry = {"url": blob.url, "etag": blob.etag, "size": blob.size}
        if any(record[s].get(blob.file, {}).get("etag") == blob.etag for s in ("files", "rejected", "late_files")):
            return None
        record = dict(record)
        if record["status"] != "collecting":
            record["late_files"] = {**record["late_files"], blob.file: {**entry, "at": now}}
            return record
        problem = file_problem(blob.file, blob.size, purpose="training", folder=f"{path.dataset}/{path.batch}/")
        files, rejected = dict(record["files"]), dict(record["rejected"])
        files.pop(blob.file, None)
        rejected.pop(blob.file, None)
        (rejected if problem else files)[blob.file] = {**entry, "reason": problem} if problem else entry
        return {**record, "files": files, "rejected": rejected, "last_seen": now}

    return change


def run_baseline(n: int = 1_000, deliveries: int = 3, threads: int = 16, *,
                 data_storage: str = AZURITE, state_storage: str = "") -> dict[str, Any]:
    """The single-record layout: each file delivery one CAS of the record holding the whole manifest (with the
    worker's cache of recorded versions that answered redeliveries, as handle_blob had it)."""
    data, state_container = _containers(data_storage, state_storage or data_storage)
    try:
        state = CountingStore(state_container)
        settings = make_settings(REFLEX_DATA_CONTAINER=data.container_name)
        known: set[str] = set()
        stream = _upload_batch(data, n, "b1", marker=False) * deliveries
        random.Random(17).shuffle(stream)

        def deliver(raw: dict[str, Any]) -> None:
            located = locate_blob(raw, settings.data_container, "data")
            if isinstance(located, reaction.Outcome):
                raise RuntimeError(located.reason)
            blob, path, version = located
            if blob.key in known:
                return
            stored = state.update(arrival_key(path), _old_transition(path, version, time.time()))
            if stored and stored.value["files"].get(path.file, {}).get("etag") == blob.etag:
                known.add(blob.key)

        timing = _drive(stream, deliver, threads)
        return {"n": n, "deliveries": len(stream), "seconds": round(timing["seconds"], 2),
                "blob_events_per_s": round(len(stream) / timing["seconds"], 1),
                "state_bytes_per_delivery": round(state.moved / len(stream)),
                "state_requests_per_delivery": round(state.requests / len(stream), 2),
                "state_bytes_per_blob": round(state.moved / n), "gave_up": timing["gave_up"]}
    finally:
        data.delete_container()
        state_container.delete_container()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--baseline-n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--sweeps", type=int, default=60, help="arrival sweeps after the deliveries, at most")
    parser.add_argument("--shared", action="store_true",
                        help="all on the Azurite at REFLEX_TEST_STORAGE or 127.0.0.1:10000 (default: private ones)")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # one log line per delivery would be the bench
    with ExitStack() as stack:
        data, state, together = ((AZURITE, AZURITE, AZURITE) if args.shared else
                                 tuple(stack.enter_context(private_blob()) for _ in range(3)))
        new = run_intake(args.n, 3, args.threads, sweeps=args.sweeps, data_storage=data, state_storage=state)
        print("intake (this version; data and state on two Azurite instances):", new)
        one = run_intake(args.n, 3, args.threads, sweeps=0, data_storage=together)
        print("intake (this version; data and state on one Azurite instance):", one)
        old = run_baseline(args.baseline_n, 3, args.threads, data_storage=data, state_storage=state)
        print(f"baseline (single record, N={args.baseline_n}):", old)
    print("RESULT intake " + " ".join([
        f"blob_events_per_s={new['blob_events_per_s']}", f"state_bytes_per_blob={new['state_bytes_per_blob']}",
        f"state_bytes_per_delivery={new['state_bytes_per_delivery']}",
        f"state_requests_per_delivery={new['state_requests_per_delivery']}",
        f"max_file_delivery_bytes={new['max_file_delivery_bytes']}", f"jobs_10k={new['jobs']}",
        f"gave_up={new['gave_up']}", f"n={new['n']}", f"completions={new['completions']}", f"sweep_s={new['sweep_s']}",
        f"one_instance_blob_events_per_s={one['blob_events_per_s']}", f"one_instance_jobs={one['jobs']}",
        f"baseline_n={old['n']}", f"baseline_blob_events_per_s={old['blob_events_per_s']}",
        f"baseline_state_bytes_per_blob={old['state_bytes_per_blob']}",
        f"baseline_state_bytes_per_delivery={old['state_bytes_per_delivery']}",
        f"baseline_gave_up={old['gave_up']}"]))

if __name__ == "__main__":
    main()
