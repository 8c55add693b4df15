"""Freeze bench: how long freezing a batch of N files takes, and in how many bounded passes.

Reflex's freeze (shared/batches/freeze.py: one listing, then server-side Copy Blob of each recorded version with
its source-ETag condition, PARALLEL in flight, passes of at most BUDGET_SECONDS) against real Azurite, side by
side with the baseline measured in the same run on the same files: a client-side copy (download each blob and
upload it under the frozen name, as a job runner without Copy Blob would). Also: the time of a pass that finds
everything frozen (a redelivery, a sweep after the last pass), which is one listing.

    python bench/freeze.py [--files 1000]

Needs Azurite on 127.0.0.1:10000 (`python -m local.azurite run -- python bench/freeze.py`).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.adapters.storage import blob_service  # noqa: E402
from shared.batches import freeze, manifest  # noqa: E402
from shared.batches.paths import BatchPath  # noqa: E402
from shared.batches.record import ArrivalRecord  # noqa: E402
from shared.core.deps import Deps  # noqa: E402
from shared.core.publish import Publisher  # noqa: E402
from shared.core.settings import load  # noqa: E402
from shared.core.state import MemoryStateStore  # noqa: E402

STORAGE = "UseDevelopmentStorage=true"
ROWS = b"a,label\n" + b"".join(f"{i},{i % 2}\n".encode() for i in range(200))


def batch_of(deps: Deps, container: str, n: int) -> ArrivalRecord:
    """Upload n files into one batch folder and complete its record from a listing, its manifest stored apart
    (as arrival does: shared/batches/intake.py `complete_batch`)."""
    client = deps.blobs.get_container_client(container)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.upload_blob(f"sales/b1/part-{i:05d}.csv", ROWS, overwrite=True), range(n)))
    path = BatchPath(container, "sales", "b1", "")
    frozen = manifest.freeze(manifest.list_batch(deps, path), purpose="training", folder="sales/b1/")
    ref, _ = manifest.store(deps, f"arrivals/{container}/sales/b1", frozen)
    new = ArrivalRecord.new(path, 0.0).completed(ref, frozen.rejected, 1.0, event_id="bench")
    assert new is not None and new.file_count == n
    return new


def reflex_freeze(deps: Deps, batch: ArrivalRecord) -> tuple[float, int]:
    start, passes = time.perf_counter(), 0
    while True:
        passes += 1
        progress = freeze.advance(deps, batch)
        if progress.done:
            return time.perf_counter() - start, passes
        if progress.lost:
            raise SystemExit(f"freeze lost files: {progress.reason}")


def client_copy(deps: Deps, batch: ArrivalRecord, container: str) -> float:
    client = deps.blobs.get_container_client(container)

    def copy(name: str) -> None:
        data = client.download_blob(f"{batch.folder}{name}").readall()
        client.upload_blob(f"client-copy/{batch.folder}{name}", data, overwrite=False)

    start = time.perf_counter()
    with ThreadPoolExecutor(freeze.PARALLEL) as pool:
        list(pool.map(copy, sorted(manifest.load(deps, batch).files)))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    settings = load({"AzureWebJobsStorage": STORAGE, "REFLEX_PLATFORM": "local",
                     "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    service = blob_service(settings)
    name = f"bench-freeze-{uuid.uuid4().hex[:12]}"
    service.create_container(name)
    deps: Any = Deps(settings=settings, state=MemoryStateStore(), publisher=Publisher(),
                     platform_factory=lambda: None, blob_factory=lambda: service)
    try:
        batch = batch_of(deps, name, args.files)
        seconds, passes = reflex_freeze(deps, batch)
        again_start = time.perf_counter()
        assert freeze.advance(deps, batch).done
        again = time.perf_counter() - again_start
        baseline = client_copy(deps, batch, name)
    finally:
        service.delete_container(name)
    print(f"files {args.files}: Reflex freeze {seconds:.2f} s in {passes} pass(es) of at most "
          f"{freeze.BUDGET_SECONDS:.0f} s; a pass over a frozen batch {again:.2f} s; client-side copy {baseline:.2f} s")
    print(f"RESULT freeze files={args.files} freeze_s={seconds:.2f} passes={passes} frozen_pass_s={again:.2f} "
          f"client_copy_s={baseline:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
