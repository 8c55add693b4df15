"""Coalescing bench: a burst of N blobs (each event delivered 3 times, shuffled) -> how many jobs and Azure ML calls?

Reflex's data arrival (shared/arrival/flow.py) against real Azurite state and a real data container, with the
behavioural fake platform counting every platform call, side by side with the naive baseline measured in the
same run on the same deliveries (BlobCreated events as the local host builds them, in Microsoft's documented
shape): a plain function that registers data and submits one job per blob event. Reflex should submit 1 job
with a constant number of platform calls whatever N is.

    python bench/coalescing.py [--sizes 10,100,1000] [--copies 3]

Needs Azurite on 127.0.0.1:10000 (`python -m local.azurite run -- python bench/coalescing.py`).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local.host.blobs import blob_created_event  # noqa: E402
from shared.adapters.storage import blob_service  # noqa: E402
from shared.core import reaction  # noqa: E402
from shared.core.deps import Deps  # noqa: E402
from shared.core.platform import TrainingRequest  # noqa: E402
from shared.core.publish import Publisher  # noqa: E402
from shared.core.settings import load  # noqa: E402
from shared.core.state import BlobStateStore  # noqa: E402
from testing.fake_platform import FakePlatform  # noqa: E402

STORAGE = "UseDevelopmentStorage=true"


def upload(container: Any, n: int) -> list[dict[str, Any]]:
    def put(blob: str, data: bytes = b"a,label\n1,0\n") -> dict[str, Any]:
        client = container.get_blob_client(blob)
        client.upload_blob(data, overwrite=True)
        return blob_created_event(client, client.get_blob_properties())

    with ThreadPoolExecutor(8) as pool:
        files = list(pool.map(put, [f"sales/batch-{n}/part-{i:05d}.csv" for i in range(n)]))
    return [*files, put(f"sales/batch-{n}/_SUCCESS", b"")]


def reflex_run(stream: list[dict[str, Any]], deps: Deps) -> float:
    import functions.data_arrival  # noqa: F401  (registers the handler)

    start = time.perf_counter()
    for raw in stream:
        reaction.run("data.arrival", raw, event_id=raw["id"], deps=deps)
    return time.perf_counter() - start


def naive_run(stream: list[dict[str, Any]], platform: FakePlatform) -> float:
    """What a plain blob-event function does: each event registers its blob and submits a job for it."""
    start = time.perf_counter()
    for raw in stream:
        event_id = raw["id"]
        platform.register_data(name="sales", version=event_id[-12:], path=raw["data"]["url"], tags={})
        platform.submit_training(TrainingRequest(
            job_name=f"naive-{uuid.uuid4().hex}", experiment_name="reflex", data_name="sales",
            data_version=event_id[-12:], mode="command", task="classification", label_column="label",
            compute="cpu-cluster", environment="azureml:reflex-train:1"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--copies", type=int, default=3, help="deliveries of each event")
    args = parser.parse_args()
    from azure.storage.blob import BlobServiceClient

    from shared.core.log import configure

    configure()
    logging.getLogger("reflex").setLevel(logging.WARNING)
    service = BlobServiceClient.from_connection_string(STORAGE, retry_total=0)
    try:
        service.get_service_properties(timeout=5)
    except Exception as exc:
        raise SystemExit(f"Azurite is not reachable on 127.0.0.1:10000 ({type(exc).__name__})") from None
    rng = random.Random(42)
    rows, result = [], {}
    for n in (int(x) for x in args.sizes.split(",")):
        suffix = uuid.uuid4().hex[:16]
        data = service.get_container_client(f"bench-data-{suffix}")
        state = service.get_container_client(f"bench-state-{suffix}")
        data.create_container()
        state.create_container()
        try:
            stream = upload(data, n) * args.copies
            rng.shuffle(stream)
            platform = FakePlatform()
            settings = load({"AzureWebJobsStorage": STORAGE, "REFLEX_PLATFORM": "local",
                             "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
                             "REFLEX_DATA_CONTAINER": data.container_name})
            deps = Deps(settings=settings, state=BlobStateStore(state), publisher=Publisher(),
                        platform_factory=lambda p=platform: p, blob_factory=lambda s=settings: blob_service(s))
            seconds = reflex_run(stream, deps)
            naive = FakePlatform()
            naive_seconds = naive_run(stream, naive)
        finally:
            data.delete_container()
            state.delete_container()
        row = {"n": n, "events": len(stream), "jobs": len(platform.jobs), "calls": sum(platform.calls.values()),
               "eps": len(stream) / seconds, "naive_jobs": len(naive.jobs), "naive_calls": sum(naive.calls.values()),
               "naive_eps": len(stream) / naive_seconds}
        rows.append(row)
        result.update({f"n{n}_jobs": row["jobs"], f"n{n}_aml_calls": row["calls"],
                       f"n{n}_events_per_s": f"{row['eps']:.0f}", f"n{n}_naive_jobs": row["naive_jobs"],
                       f"n{n}_naive_aml_calls": row["naive_calls"]})
    print(f"{'N blobs':>8} {'events':>7} | {'reflex jobs':>11} {'AML calls':>9} {'events/s':>9} | "
          f"{'naive jobs':>10} {'AML calls':>9} {'events/s':>9}")
    for r in rows:
        print(f"{r['n']:>8} {r['events']:>7} | {r['jobs']:>11} {r['calls']:>9} {r['eps']:>9.0f} | "
              f"{r['naive_jobs']:>10} {r['naive_calls']:>9} {r['naive_eps']:>9.0f}")
    print("reflex: Azurite-backed arrival records (one CAS per new blob, one read per redelivery); naive: one "
          "register + submit per event, no state (its events/s excludes any storage I/O)")
    constant = len({r["calls"] for r in rows}) == 1 and all(r["jobs"] == 1 for r in rows)
    result["constant_calls"] = str(constant).lower()
    print("RESULT coalescing " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
