"""Ledger bench: what does rolling a day's append blob over into parts cost, writing and reading?

The lineage ledger (shared/core/ledger.py) on Azurite, side by side with a baseline measured in the same run:
- appends/s: `BlobLedger.append` (one `append_block` per line; parts of `--limit` blocks, so it rolls over
  several times) against a bare `append_block` loop on one pre-created append blob, the same lines; once from
  one thread, once from `--threads` threads (each its own BlobLedger, like separate workers). Every line is
  read back: none lost, none twice.
- lines/s read: `entries()` over `--read-lines` lines in `--read-parts` parts of one day, against a bare
  download + parse of one blob holding the same lines.
- `--server-limit` (slow: fills one real append blob to Azure's 50,000 blocks): a writer whose remembered part
  is refused with `BlockCountExceedsLimit` by the service retries the line on the next part.

    python bench/ledger.py [--appends 2000] [--threads 8] [--limit 500] [--read-lines 20000] [--read-parts 4]

Needs Azurite on 127.0.0.1:10000 (`python -m local.azurite run -- python bench/ledger.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.core.ledger import MAX_BLOCKS, BlobLedger  # noqa: E402

STORAGE = "UseDevelopmentStorage=true"
NOW = 1_700_000_000.0  # 2023-11-14
DAY = datetime.fromtimestamp(NOW, UTC).date().isoformat()


def entry(i: int) -> dict[str, Any]:
    """A typical line (~400 bytes): a data arrival that started a job."""
    return {"at": f"{DAY}T00:00:00.000Z", "reaction": "data.arrival", "event_id": f"e-{i:07d}",
            "event_type": "Microsoft.Storage.BlobCreated", "status": "acted", "reason": "batch complete",
            "refs": {"blob": [f"http://127.0.0.1:10000/devstoreaccount1/reflex-data/sales/b/part-{i:05d}.csv"],
                     "batch": ["reflex-data/sales/b"], "job": [f"job-{i:07d}"]},
            "decision": {"files": 3, "bytes": 1234, "complete": True}}


def line(i: int) -> bytes:
    return (json.dumps(entry(i), sort_keys=True, separators=(",", ":")) + "\n").encode()


def run(threads: int, n: int, work: Any) -> float:
    start = time.perf_counter()
    if threads == 1:
        for i in range(n):
            work(0, i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: work(i % threads, i), range(n)))
    return time.perf_counter() - start


def write_bench(service: Any, threads: int, n: int, limit: int) -> dict[str, Any]:
    ledger_box = service.get_container_client(f"bench-ledger-{uuid.uuid4().hex[:16]}")
    bare_box = service.get_container_client(f"bench-bare-{uuid.uuid4().hex[:16]}")
    ledger_box.create_container()
    bare_box.create_container()
    try:
        writers = [BlobLedger(ledger_box, lambda: NOW, max_blocks=limit) for _ in range(threads)]
        seconds = run(threads, n, lambda w, i: writers[w].append(entry(i)))
        bare = bare_box.get_blob_client("one.jsonl")
        bare.create_append_blob()
        bare_seconds = run(threads, n, lambda w, i: bare.append_block(line(i)))
        ids = [e["event_id"] for e in writers[0].entries(days=1)]
        counts = [ledger_box.get_blob_client(b.name).get_blob_properties().append_blob_committed_block_count
                  for b in ledger_box.list_blobs(name_starts_with="ledger/")]
    finally:
        ledger_box.delete_container()
        bare_box.delete_container()
    return {"aps": n / seconds, "bare_aps": n / bare_seconds, "parts": len(counts), "fullest": max(counts),
            "lost": n - len(set(ids)), "twice": len(ids) - len(set(ids))}


def read_bench(service: Any, n: int, parts: int) -> dict[str, Any]:
    box = service.get_container_client(f"bench-read-{uuid.uuid4().hex[:16]}")
    box.create_container()
    try:
        per_part, chunk = -(-n // parts), 500  # setup writes 500 lines per block: the reader does not care
        for p in range(parts):
            blob = box.get_blob_client(f"ledger/{DAY}.jsonl" if p == 0 else f"ledger/{DAY}.{p}.jsonl")
            blob.create_append_blob()
            rows = range(p * per_part, min(n, (p + 1) * per_part))
            for start in range(rows.start, rows.stop, chunk):
                blob.append_block(b"".join(line(i) for i in range(start, min(rows.stop, start + chunk))))
        one = box.get_blob_client("bare/one.jsonl")
        one.upload_blob(b"".join(line(i) for i in range(n)))
        ledger = BlobLedger(box, lambda: NOW)
        start = time.perf_counter()
        got = list(ledger.entries(days=1))
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        bare = [json.loads(s) for s in reversed(one.download_blob().readall().decode().splitlines())]
        bare_seconds = time.perf_counter() - start
    finally:
        box.delete_container()
    newest_first = [e["event_id"] for e in got] == [f"e-{i:07d}" for i in reversed(range(n))]
    return {"lps": len(got) / seconds, "bare_lps": len(bare) / bare_seconds, "lines": len(got),
            "newest_first": newest_first}


def server_limit(service: Any) -> bool:
    """Fill part 0 to Azure's limit behind a writer's back; its next line must land, once, in part 1."""
    box = service.get_container_client(f"bench-full-{uuid.uuid4().hex[:16]}")
    box.create_container()
    try:
        writer = BlobLedger(box, lambda: NOW)
        writer.append(entry(0))  # the writer now remembers part 0 (1 block of 50,000)
        part0 = box.get_blob_client(f"ledger/{DAY}.jsonl")
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: part0.append_block(b"\n"), range(MAX_BLOCKS - 1)))
        writer.append(entry(1))  # refused by the service on part 0 -> retried on part 1
        part1 = box.get_blob_client(f"ledger/{DAY}.1.jsonl").download_blob().readall()
        # (not read back through entries(): Azurite answers 500 to a download of a 50,000-block blob)
        full = part0.get_blob_properties().append_blob_committed_block_count
        return part1 == line(1) and full == MAX_BLOCKS
    finally:
        box.delete_container()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--limit", type=int, default=500, help="blocks per part (Azure's is 50,000)")
    parser.add_argument("--read-lines", type=int, default=20_000)
    parser.add_argument("--read-parts", type=int, default=4)
    parser.add_argument("--server-limit", action="store_true", help="also fill a real 50,000-block blob (slow)")
    args = parser.parse_args()
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(STORAGE, retry_total=0)
    try:
        service.get_service_properties(timeout=5)
    except Exception as exc:
        raise SystemExit(f"Azurite is not reachable on 127.0.0.1:10000 ({type(exc).__name__})") from None
    seq = write_bench(service, 1, args.appends, args.limit)
    par = write_bench(service, args.threads, args.appends, args.limit)
    read = read_bench(service, args.read_lines, args.read_parts)
    print(f"{'writes':>12} {'appends':>7} | {'ledger/s':>8} {'parts':>5} {'fullest':>7} {'lost':>4} {'twice':>5} | "
          f"{'bare append_block/s':>19}")
    for name, r in (("1 thread", seq), (f"{args.threads} threads", par)):
        print(f"{name:>12} {args.appends:>7} | {r['aps']:>8.0f} {r['parts']:>5} {r['fullest']:>7} {r['lost']:>4} "
              f"{r['twice']:>5} | {r['bare_aps']:>19.0f}")
    print(f"reads: entries() {read['lps']:.0f} lines/s over {read['lines']} lines in {args.read_parts} parts "
          f"(newest first: {read['newest_first']}) | bare download+parse of one blob {read['bare_lps']:.0f} lines/s")
    result = {"appends": args.appends, "limit": args.limit, "seq_appends_per_s": f"{seq['aps']:.0f}",
              "bare_seq_appends_per_s": f"{seq['bare_aps']:.0f}", "threads": args.threads,
              "conc_appends_per_s": f"{par['aps']:.0f}", "bare_conc_appends_per_s": f"{par['bare_aps']:.0f}",
              "parts": par["parts"], "fullest_part": par["fullest"], "lost": seq["lost"] + par["lost"],
              "duplicated": seq["twice"] + par["twice"], "read_lines": read["lines"],
              "read_lines_per_s": f"{read['lps']:.0f}", "bare_read_lines_per_s": f"{read['bare_lps']:.0f}",
              "newest_first": str(read["newest_first"]).lower()}
    if args.server_limit:
        ok = server_limit(service)
        print(f"server limit: a line refused with BlockCountExceedsLimit at {MAX_BLOCKS} blocks landed in part 1: {ok}")
        result["server_limit_rollover"] = "ok" if ok else "failed"
    print("RESULT ledger " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
