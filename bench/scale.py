"""Scale bench (#17.6), the reads of #17.4 and #17.5, each beside its naive baseline in the same run:

- champion_http_1000: finding the champion of a model with 1,000 versions, the real azure-ai-ml SDK against the
  HTTP stand-in (testing/aml_service.py): the pointer (`shared.core.champion.find`: one `get_model`) against the
  listing it replaces (`find_champion`: every version, tags filtered). Requests, response bytes, seconds.
- explain_100k_s: `python -m reflex explain <job>` (the CLI itself, --json) on a 100,000-line ledger day on Azurite,
  through the ledger index (shared/core/ledger_index.py; its first read, which builds the index, timed apart),
  against the walk it replaces (every node of the chain scans the whole ledger read once) and a bare read of the
  same lines.
- status_1000_s: `reflex.status.gather` over 1,000 finished training batches (+ a few open and failed ones, scoring,
  rollouts, dead letters) on Azurite, against reading every record as `status` did.

Times are the best of a few rounds (the first explain aside). Run with Azurite on 127.0.0.1:10000:
`.venv/bin/python bench/scale.py [--lines 100000] [--batches 1000] [--versions 1000]`. Ends with one line
`RESULT scale champion_http_1000=… explain_100k_s=… status_1000_s=…` (with the baselines beside them); the other
keys of #17.6 measure work that is not part of this change and are not printed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from azure.storage.blob import BlobServiceClient  # noqa: E402

from reflex import status  # noqa: E402
from reflex.cli import main as cli_main  # noqa: E402
from reflex.records import KINDS  # noqa: E402
from shared.core import champion as champions  # noqa: E402
from shared.core.ledger import REF_KINDS, BlobLedger, entry_from, group_matches, ref_groups  # noqa: E402
from shared.core.platform import CHAMPION_TAG, REFLEX_TAG  # noqa: E402
from shared.core.reaction import Outcome  # noqa: E402
from shared.core.state import BlobStateStore, MemoryStateStore  # noqa: E402
from tests.conftest import AZURITE, Clock, make_deps, make_settings  # noqa: E402

ROUNDS = 3
NOW = 1_700_000_000.0
DAY = datetime.fromtimestamp(NOW, UTC).date().isoformat()
URL = "http://127.0.0.1:10000/devstoreaccount1/reflex-data/sales/{batch}/part-{i}.csv"


def best(fn: Callable[[], Any], rounds: int = ROUNDS) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


# ------------------------------------------------------------------------------------------------ champion
def champion_bench(versions: int) -> dict[str, float]:
    from aml_harness import azure_platform

    from testing.aml_service import AmlService

    class Sized(AmlService):
        """The stand-in, adding up the bytes of its answers."""

        answered = 0

        def _handle(self, request: Any) -> tuple[int, dict[str, str], str]:
            code, headers, body = super()._handle(request)
            self.answered += len(body.encode()) if isinstance(body, str) else 0
            return code, headers, body

    svc = Sized()
    champion = versions * 2 // 3
    for v in range(1, versions + 1):
        tags = {REFLEX_TAG: "true", **({CHAMPION_TAG: "true"} if v == champion else {})}
        svc.seed_model_version("churn", str(v), tags)
    with azure_platform(svc) as p:
        deps = make_deps(make_settings(), state=MemoryStateStore())
        deps.platform = p  # type: ignore[misc]

        def measured(fn: Callable[[], Any]) -> tuple[int, int, float]:
            n, size = len(svc.requests), svc.answered
            seconds, found = best(fn)
            assert found is not None and found.version == str(champion)
            return (len(svc.requests) - n) // ROUNDS, (svc.answered - size) // ROUNDS, seconds

        naive = measured(lambda: p.find_champion("churn"))
        champions.find(deps, "churn")  # the pointer is repaired once (one listing), then:
        pointer = measured(lambda: champions.find(deps, "churn"))
    print(f"champion of {versions} versions (real SDK, HTTP stand-in):")
    for what, (n, size, seconds) in (("listing (find_champion)", naive), ("pointer (champion.find)", pointer)):
        print(f"  {what}: {n} request(s), {size / 1024:.1f} KiB, {seconds * 1000:.0f} ms")
    return {"champion_http_1000": pointer[0], "champion_http_1000_baseline": naive[0],
            "champion_kib_1000": round(pointer[1] / 1024, 1), "champion_kib_1000_baseline": round(naive[1] / 1024),
            "champion_ms_1000": round(pointer[2] * 1000, 1), "champion_ms_1000_baseline": round(naive[2] * 1000)}


# ------------------------------------------------------------------------------------------------ explain
def _ledger_lines(lines: int) -> tuple[list[bytes], str]:
    """A day of `lines` lines: batches of 5 blobs through arrival, sweep, gate and rollout, amid timer ticks."""
    out: list[bytes] = []
    batch = 0
    while len(out) < lines:
        b = f"b{batch:05d}"
        bid, job, model = f"reflex-data/sales/{b}", f"job-{b}", f"m:{batch + 1}"
        rows: list[tuple[str, str, Outcome]] = []
        for i in range(5):
            rows.append(("data.arrival", f"ev-{b}-{i}", Outcome("acted", "stored", {"blob": URL.format(batch=b, i=i),
                                                                                     "batch": bid})))
        rows.append(("arrival.sweep", f"sweep-{b}", Outcome("acted", "started", {
            "links": [{"batch": bid, "job": job, "data": f"sales:{b}"}]})))
        rows.append(("registration.run_event", f"run-{b}", Outcome("acted", "registered",
                                                                  {"job": job, "model": model})))
        rows.append(("rollout.reconcile", f"rec-{b}", Outcome("acted", "advanced", {
            "links": [{"model": model, "rollout": f"ep/{model}", "endpoint": "ep"}]})))
        for n in range(20):
            rows.append(("health.check", f"tick-{b}-{n}", Outcome("skipped", "healthy", {"endpoint": "other-ep"})))
        for reaction_name, event_id, outcome in rows:
            entry = entry_from(reaction_name, event_id, None, outcome, at=NOW)
            out.append((json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode())
        batch += 1
    return out[:lines], f"job-b{batch // 2:05d}"


def _write_day(container: Any, lines: Sequence[bytes]) -> None:
    """The day's append blob, in 4 MiB blocks (readers see lines; how they were appended does not matter)."""
    blob = container.get_blob_client(f"ledger/{DAY}.jsonl")
    blob.create_append_blob()
    block: list[bytes] = []
    size = 0
    for line in lines:
        if size + len(line) > 4 * 1024 * 1024:
            blob.append_block(b"".join(block))
            block, size = [], 0
        block.append(line)
        size += len(line)
    if block:
        blob.append_block(b"".join(block))


def _scan_walk(entries: Sequence[Mapping[str, Any]], kind: str, value: str) -> set[tuple[str, str]]:
    """The baseline: the walk `explain` had, every node of the chain a pass over every entry read."""
    reached: set[tuple[str, str]] = set()
    for direction in (-1, 1):
        queue, seen = [(kind, value)], set()
        while queue:
            k, v = queue.pop()
            if (k, v) in seen or (k == "endpoint" and (k, v) != (kind, value)):
                continue
            seen.add((k, v))
            for entry in entries:
                for group in ref_groups(entry):
                    if group_matches(group, k, v):
                        for k2, values in group.items():
                            if k2 in REF_KINDS and (REF_KINDS.index(k2) - REF_KINDS.index(k)) * direction > 0:
                                queue.extend((k2, v2) for v2 in values)
        reached |= seen
    return reached


def explain_bench(service: BlobServiceClient, lines: int) -> dict[str, float]:
    container = service.get_container_client(f"bench-scale-{uuid.uuid4().hex[:12]}")
    container.create_container()
    try:
        body, job = _ledger_lines(lines)
        _write_day(container, body)
        clock = Clock(NOW)
        ledger = BlobLedger(container, clock)
        deps = make_deps(make_settings(REFLEX_STATE_CONTAINER=container.container_name),
                         state=BlobStateStore(container), clock=clock, ledger=ledger)

        def explain() -> dict[str, Any]:
            out = io.StringIO()
            assert cli_main(["--json", "explain", job], deps=deps, stdout=out) == 0
            return json.loads(out.getvalue())

        first_s, first = best(explain, rounds=1)  # builds the index of the day
        indexed_s, result = best(explain)
        bare_s, entries = best(lambda: list(ledger.entries(days=7)), rounds=1)
        start = time.perf_counter()
        reached = _scan_walk(entries, "job", job)
        scan_s = bare_s + time.perf_counter() - start
        assert result["lineage"] == first["lineage"] and len(result["lineage"]["blob"]) == 5
        assert {(k, v) for k, vs in result["lineage"].items() for v in vs} <= reached | {("endpoint", "ep")}
    finally:
        container.delete_container()
    print(f"explain {job} on a {lines}-line ledger day (Azurite, the CLI with --json):")
    print(f"  indexed: {indexed_s:.2f} s ({len(result['entries'])} lines of the chain); its first read, "
          f"building the index: {first_s:.2f} s")
    print(f"  baseline, a scan per node: {scan_s:.2f} s; a bare read of every line: {bare_s:.2f} s")
    return {"explain_100k_s": round(indexed_s, 3), "explain_100k_first_s": round(first_s, 2),
            "explain_100k_baseline_s": round(scan_s, 2), "explain_100k_bare_read_s": round(bare_s, 2)}


# ------------------------------------------------------------------------------------------------ status
def _fill(store: BlobStateStore, batches: int, now: float) -> None:
    history = [[now - 3600, "collecting", "first blob"], [now - 3000, "trained", "run completed"]]
    for i in range(batches + 10):
        state = "trained" if i < batches else "failed" if i % 2 else "collecting"
        store.create(f"arrivals/data/ds/b{i:05d}", {
            "container": "data", "dataset": "ds", "batch": f"b{i:05d}", "status": state, "files": {"p.csv": {}},
            "first_seen": now - 3600, "last_seen": now - 3500, "job": f"job-{i}",
            "reason": "job failed: train.py: error: label column 'y' not found" if state == "failed" else "",
            "history": history})
    for i in range(batches // 10):
        store.create(f"scoring/score/ds/s{i:04d}", {"container": "score", "dataset": "ds", "batch": f"s{i:04d}",
                                                     "files": {"p.csv": {}}, "status": "completed", "history": history})
    for e in range(3):
        store.create(f"rollouts/ep{e}", {"endpoint": f"ep{e}", "model": "m", "version": str(e), "status": "done",
                                         "history": [{"at": now - 100, "action": "Finish", "detail": "promoted"}]})
    for i in range(20):
        store.dead_letter("t.x", {}, "boom", event_id=f"ev{i}")


def status_bench(service: BlobServiceClient, batches: int) -> dict[str, float]:
    container = service.get_container_client(f"bench-scale-{uuid.uuid4().hex[:12]}")
    container.create_container()
    try:
        clock = Clock(NOW)
        store = BlobStateStore(container)
        _fill(store, batches, clock())
        deps = make_deps(make_settings(REFLEX_STATE_CONTAINER=container.container_name,
                                       REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1"), state=store, clock=clock)
        from reflex.records import read

        baseline_s, _ = best(lambda: read(store, [*KINDS, "deadletters/", "held/"],
                                          newest={"deadletters/": status.SHOWN_FAILURES, "held/": 0}))
        new_s, result = best(lambda: status.gather(deps))
        listing_s, _ = best(lambda: store.keys("arrivals/"))  # what one listing of the history costs by itself
        assert len(result["pending_batches"]) == 5 and result["failures_total"] == 5
    finally:
        container.delete_container()
    print(f"status over {batches} finished training batches (+10 open or failed, {batches // 10} scoring, 3 rollouts, "
          f"20 dead letters; Azurite):")
    print(f"  open records and newest failures, from listings: {new_s:.2f} s; every record read (the baseline, "
          f"records read in parallel as before): {baseline_s:.2f} s")
    print(f"  of which the listing of the {batches + 10} training records' names alone: {listing_s:.2f} s")
    return {"status_1000_s": round(new_s, 3), "status_1000_baseline_s": round(baseline_s, 3),
            "status_1000_listing_s": round(listing_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=1_000)
    parser.add_argument("--versions", type=int, default=1_000)
    args = parser.parse_args()
    service = BlobServiceClient.from_connection_string(AZURITE)
    results = {**champion_bench(args.versions), **explain_bench(service, args.lines),
               **status_bench(service, args.batches)}
    print("RESULT scale " + " ".join(f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
