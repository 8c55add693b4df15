"""Timer ticks against history (#17.2): storage requests of one sweep + health + reconcile tick with 1 unfinished
training batch and H finished ones, beside the naive full scan in the same run.

Both sides run the very timer code (`shared.arrival.flow.sweep`, the health timer with the rollout's check,
`rollout.reconcile`) over the same state container on Azurite; the baseline's store answers `active(prefix)` with
the full scan (`records(prefix)`: one listing and one read per record ever stored), which is what every timer did
before. Requests are counted on the wire, by a counting transport on the BlobServiceClient (azure-storage-blob
`_shared/base_client.py` `_create_pipeline` builds its pipeline over `kwargs.get("transport")` and takes no
azure-core `per_call_policies`, so a per-call policy would count nothing). The H finished records are written
directly, in parallel, as their writers leave them (the record and its finished-index entry). The platform is the
in-memory fake, with the one unfinished batch's job running.

`run_ticks(h)` is importable (bench/scale.py prints it among the #17.6 figures). Run alone:
`.venv/bin/python bench/ticks.py [H]` (Azurite running; default 10000). Ends with one line
`RESULT ticks tick_requests_h10=… tick_requests_h<H>=… baseline_h10=… baseline_h<H>=…`.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from azure.core.pipeline.transport import RequestsTransport  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402

import shared.handlers  # noqa: E402
from shared.arrival import flow as arrival  # noqa: E402
from shared.core.platform import REFLEX_TAG, TrainingRequest  # noqa: E402
from shared.core.state import BlobStateStore, Record  # noqa: E402
from testing.fake_platform import FakePlatform  # noqa: E402
from tests.conftest import AZURITE, Clock, make_deps, make_settings  # noqa: E402

__all__ = ["Counting", "run_ticks"]

DATA = "reflex-data"
WRITERS = 16


class Counting(RequestsTransport):
    """The client's HTTP transport, counting the requests the code makes: a call the retry policy sends again
    (Azurite answering slowly on a busy machine) counts once, in `requests`, and each extra attempt in `retries`.
    A retry resends the very request object (azure-core `RetryPolicy.send` loops over `self.next.send(request)`),
    so the first attempt marks it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests = 0
        self.retries = 0
        self._lock = threading.Lock()

    def send(self, request: Any, **kwargs: Any) -> Any:
        with self._lock:
            if getattr(request, "_reflex_counted", False):
                self.retries += 1
            else:
                request._reflex_counted = True
                self.requests += 1
        return super().send(request, **kwargs)


class FullScan(BlobStateStore):
    """The baseline: every timer's scan lists and reads every record under its prefix, as before #17.2."""

    def active(self, prefix: str) -> Iterator[Record]:
        return self.records(prefix)


def _batch(i: int, status: str, now: float) -> tuple[str, dict[str, Any]]:
    name = f"b{i:06d}"
    return f"arrivals/{DATA}/ds/{name}", {
        "container": DATA, "dataset": "ds", "batch": name, "status": status,
        "files": {"part.csv": {"url": f"http://127.0.0.1:10000/devstoreaccount1/{DATA}/ds/{name}/part.csv",
                               "etag": "0x1", "size": 100}},
        "first_seen": now - 3600, "last_seen": now - 3500, "completed_at": now - 3400,
        "job": f"reflex-train-{name}", "submitted_at": now - 3300,
        "history": [[now - 3600, "collecting", "first blob"], [now - 3300, "submitted", "job submitted"],
                    *([[now - 3000, status, "run completed"]] if status != "submitted" else [])]}


def _fill(store: BlobStateStore, platform: FakePlatform, h: int, now: float) -> None:
    """1 unfinished batch (submitted, its job running) and `h` trained ones, written in parallel."""
    key, value = _batch(h, "submitted", now)
    platform.register_data(name="ds", version="1", path="azureml://datastores/x/paths/ds/1/", tags={})
    platform.submit_training(TrainingRequest(job_name=value["job"], experiment_name="reflex", data_name="ds",
                                             data_version="1", mode="command", task="classification",
                                             label_column="y", compute="c", environment="azureml:e:1",
                                             tags={REFLEX_TAG: "true"}))
    store.create(key, value)
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda i: store.create(*_batch(i, "trained", now)), range(h)))


def _tick(deps: Any) -> None:
    arrival.sweep(deps)
    shared.handlers.monitoring_health(deps)
    shared.handlers.rollout_reconcile({}, deps)


def _measure(h: int) -> tuple[int, int]:
    """(requests of one tick, requests of the same tick with the full scan) with 1 unfinished and `h` finished."""
    counting = Counting()
    service = BlobServiceClient.from_connection_string(AZURITE, transport=counting)
    name = f"bench-ticks-{uuid.uuid4().hex[:12]}"
    container = service.get_container_client(name)
    container.create_container()
    try:
        clock = Clock()
        platform = FakePlatform(clock=clock)
        store = BlobStateStore(container)
        list(store.active("arrivals/"))  # the indexes built on the empty store, as a deployment's first tick does
        _fill(store, platform, h, clock())
        print(f"  H={h}: {counting.requests} requests to write the records", flush=True)
        results = []
        for side in (store, FullScan(container)):
            deps = make_deps(make_settings(REFLEX_STATE_CONTAINER=name), state=side, platform=platform,
                             clock=clock)
            if side is store:
                _tick(deps)  # warm: the first tick of a store checks the index marker once
            before = counting.requests
            _tick(deps)
            results.append(counting.requests - before)
            print(f"  H={h}: {type(side).__name__}: {results[-1]} requests", flush=True)
    finally:
        container.delete_container()
    return results[0], results[1]


def run_ticks(h: int = 10_000) -> dict[str, int]:
    """Storage requests of one sweep + health + reconcile tick at H = 10 and H = `h` finished batches, with the
    full-scan baseline beside each."""
    small, small_base = _measure(10)
    large, large_base = _measure(h)
    return {"tick_requests_h10": small, f"tick_requests_h{h}": large, "baseline_h10": small_base,
            f"baseline_h{h}": large_base}


def main() -> None:
    h = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    found = run_ticks(h)
    print("one sweep + health + reconcile tick, 1 unfinished and H finished training batches (Azurite):")
    print(f"  H=10: {found['tick_requests_h10']} requests (full scan: {found['baseline_h10']})")
    print(f"  H={h}: {found[f'tick_requests_h{h}']} requests (full scan: {found[f'baseline_h{h}']})")
    print("RESULT ticks " + " ".join(f"{k}={v}" for k, v in found.items()))


if __name__ == "__main__":
    main()
