"""Scale bench (#17.6): every figure of the issue's RESULT line, each beside its naive baseline in the same run.

- tick_requests_h10 / _h10000: storage requests of one sweep + health + reconcile tick with 1 active and H finished
  batches (`bench/ticks.py` `run_ticks(h)`, #17.2);
- blob_events_per_s, state_bytes_per_blob, jobs_10k: one batch of 10,000 blobs, each delivered 3x in shuffled order,
  on one worker (`bench/intake.py` `run_intake(n, deliveries, threads)`, #17.1), beside the single-record layout
  it replaces (`run_baseline`, at 500 blobs: it is O(N^2));
  (until those two modules exist their keys print `pending`: never a figure measured elsewhere)
- wait_tick_http, traffic_step_http (and promote_http, demote_http): Azure ML HTTP requests of a rollout tick, the
  real flows on the real azure-ai-ml SDK against the HTTP stand-in (testing/aml_service.py), the most any tick of
  that kind sent in the steady state (tests/rollout_requests.py: a second model version rolled out beside the
  first), against the naive SDK usage of bench/aml_calls.py (`naive`: the obvious reads, `.result()` on pollers);
- champion_http_1000: finding the champion of a model with 1,000 versions, the real azure-ai-ml SDK against the
  HTTP stand-in: the pointer (`shared.core.champion.find`: one `get_model`) against the listing it replaces
  (`find_champion`: every version, tags filtered). Requests, response bytes, seconds.
- explain_100k_s: `python -m reflex explain <job>` (the CLI itself, --json), the first read of a process, on a
  100,000-line ledger day on Azurite that the `ledger_index` timer indexed as it was written (shared/core/
  ledger_index.py `LedgerIndexer`), against the walk it replaces (every node of the chain scans the whole ledger
  read once) and a bare read of the same lines; beside it the same day never indexed, whose first reader builds
  the index (`explain_100k_unindexed_first_s`).
- status_1000_s: `reflex.status.gather` over 1,000 finished training batches (+ a few open and failed ones, scoring,
  rollouts, dead letters) on Azurite, against reading every record as `status` did.

Measured whole, in one run (session 7, this 2-core machine, quiet, 21 min): tick_requests 15 at H=10 and 15 at
H=10,000 (full scan 36 / 20,020); 10,000 blobs x3: 325.9 events/s (single record at N=500: 101.0), 299 state bytes
per delivery (80,495), 1 job after 18 sweeps froze the copies (227 s); Wait tick 2 HTTP requests (naive 6), traffic
step 3 (4), promote 4 (10); champion 1 request, 0.7 KiB (the listing: 695 KiB); explain's first read 0.30 s with the
timer's index (never indexed: 3.72 s; scan per node 1.85 s); status 0.135 s (every record read: 4.31 s).

Times are the best of a few rounds (the first explain aside). Run with Azurite on 127.0.0.1:10000:
`.venv/bin/python bench/scale.py [--quick]` (`--quick`: small sizes, for tests/test_scale_bench.py, which checks
only that the RESULT line is complete and well formed). Ends with one line
`RESULT scale tick_requests_h10=… tick_requests_h10000=… blob_events_per_s=… state_bytes_per_blob=… jobs_10k=…
wait_tick_http=… traffic_step_http=… champion_http_1000=… explain_100k_s=… status_1000_s=…`, each key followed by
its baselines, then the sizes measured (`size_*`: a quick run's figures are for those sizes, not the keys' names).
"""

from __future__ import annotations

import argparse
import importlib
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from azure.storage.blob import BlobServiceClient  # noqa: E402

from local.azurite import private_blob  # noqa: E402
from reflex import status  # noqa: E402
from reflex.cli import main as cli_main  # noqa: E402
from reflex.records import KINDS  # noqa: E402
from shared.core import champion as champions  # noqa: E402
from shared.core.ledger import REF_KINDS, BlobLedger, entry_from, group_matches, ref_groups  # noqa: E402
from shared.core.platform import CHAMPION_TAG, REFLEX_TAG  # noqa: E402
from shared.core.reaction import Outcome  # noqa: E402
from shared.core.state import BlobStateStore, MemoryStateStore  # noqa: E402
from tests.conftest import Clock, make_deps, make_settings  # noqa: E402

ROUNDS = 3
NOW = 1_700_000_000.0
DAY = datetime.fromtimestamp(NOW, UTC).date().isoformat()
URL = "http://127.0.0.1:10000/devstoreaccount1/reflex-data/sales/{batch}/part-{i}.csv"


def best(fn: Callable[[], Any], rounds: int | None = None) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(rounds or ROUNDS):
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


def _write_day_ticking(container: Any, lines: Sequence[bytes], step: int) -> dict[str, float]:
    """The day's append blob written `step` bytes at a time with a `ledger_index` tick after each, as the timer
    runs in a deployment (every 5 minutes; a 100k-line day is 70 KiB per tick, so it indexes once a tail reaches
    `step`: ticking at each `step` builds the same segments, minus the idle ticks). The ticks' times."""
    from datetime import date

    from shared.core.ledger_index import LedgerIndexer

    blob = container.get_blob_client(f"ledger/{DAY}.jsonl")
    blob.create_append_blob()
    ticks: list[float] = []
    merged = 0
    block: list[bytes] = []
    size = 0

    def tick() -> None:
        nonlocal merged
        started = time.perf_counter()
        merged += LedgerIndexer(container, today=date.fromisoformat(DAY), now=datetime.now(UTC)).run()["merged"]
        ticks.append(time.perf_counter() - started)

    for line in lines:
        block.append(line)
        size += len(line)
        if size >= step:
            blob.append_block(b"".join(block))
            block, size = [], 0
            tick()
    if block:
        blob.append_block(b"".join(block))
    return {"ticks": len(ticks), "merges": merged, "tick_max_s": round(max(ticks, default=0.0), 2),
            "tick_total_s": round(sum(ticks), 2)}


def explain_bench(service: BlobServiceClient, lines: int) -> dict[str, float]:
    """Two days of the same lines: one indexed by the `ledger_index` timer as it was written (what a deployment
    has), one never indexed (the first reader builds its index: the cost when the timer has not run)."""
    from shared.core.ledger_index import TAIL_BYTES

    body, job = _ledger_lines(lines)
    figures: dict[str, Any] = {}
    for case in ("timer", "cold"):
        container = service.get_container_client(f"bench-scale-{uuid.uuid4().hex[:12]}")
        container.create_container()
        try:
            if case == "timer":
                figures["index"] = _write_day_ticking(container, body, TAIL_BYTES)
            else:
                _write_day(container, body)
            clock = Clock(NOW)
            ledger = BlobLedger(container, clock)
            deps = make_deps(make_settings(REFLEX_STATE_CONTAINER=container.container_name),
                             state=BlobStateStore(container), clock=clock, ledger=ledger)

            def explain(deps: Any = deps) -> dict[str, Any]:
                out = io.StringIO()
                assert cli_main(["--json", "explain", job], deps=deps, stdout=out) == 0
                return json.loads(out.getvalue())

            figures[f"{case}_first_s"], first = best(explain, rounds=1)  # this process has read nothing yet
            figures[f"{case}_s"], result = best(explain)
            assert result["lineage"] == first["lineage"] and len(result["lineage"]["blob"]) == 5
            if case == "cold":
                bare_s, entries = best(lambda ledger=ledger: list(ledger.entries(days=7)), rounds=1)
                start = time.perf_counter()
                reached = _scan_walk(entries, "job", job)
                scan_s = bare_s + time.perf_counter() - start
                assert {(k, v) for k, vs in result["lineage"].items() for v in vs} <= reached | {("endpoint", "ep")}
                figures["lines"] = len(result["entries"])
        finally:
            container.delete_container()
    index = figures["index"]
    print(f"explain {job} on a {lines}-line ledger day (Azurite, the CLI with --json, {figures['lines']} lines "
          "in the chain):")
    print(f"  indexed by the ledger_index timer as the day was written ({index['ticks']} ticks, each at most "
          f"{index['tick_max_s']:.2f} s, {index['tick_total_s']:.1f} s in all, {index['merges']} merges): "
          f"first read {figures['timer_first_s']:.2f} s, then {figures['timer_s']:.2f} s")
    print(f"  never indexed: the first read builds the index, {figures['cold_first_s']:.2f} s; then "
          f"{figures['cold_s']:.2f} s")
    print(f"  baseline, a scan per node: {scan_s:.2f} s; a bare read of every line: {bare_s:.2f} s")
    return {"explain_100k_s": round(figures["timer_first_s"], 3), "explain_100k_baseline_s": round(scan_s, 2),
            "explain_100k_warm_s": round(figures["timer_s"], 3),
            "explain_100k_unindexed_first_s": round(figures["cold_first_s"], 2),
            "explain_100k_bare_read_s": round(bare_s, 2), "ledger_index_tick_max_s": index["tick_max_s"],
            "ledger_index_ticks": index["ticks"]}


# ------------------------------------------------------------------------------------------------ status
def _fill(store: BlobStateStore, batches: int, now: float) -> None:
    """The records status reads, written from 8 threads (setting up is not what is measured)."""
    from concurrent.futures import ThreadPoolExecutor

    history = [[now - 3600, "collecting", "first blob"], [now - 3000, "trained", "run completed"]]
    writes: list[Callable[[], Any]] = []
    for i in range(batches + 10):
        state = "trained" if i < batches else "failed" if i % 2 else "collecting"
        writes.append(lambda i=i, state=state: store.create(f"arrivals/data/ds/b{i:05d}", {
            "container": "data", "dataset": "ds", "batch": f"b{i:05d}", "status": state, "files": {"p.csv": {}},
            "first_seen": now - 3600, "last_seen": now - 3500, "job": f"job-{i}",
            "reason": "job failed: train.py: error: label column 'y' not found" if state == "failed" else "",
            "history": history}))
    for i in range(batches // 10):
        writes.append(lambda i=i: store.create(f"scoring/score/ds/s{i:04d}", {
            "container": "score", "dataset": "ds", "batch": f"s{i:04d}", "files": {"p.csv": {}},
            "status": "completed", "history": history}))
    for e in range(3):
        writes.append(lambda e=e: store.create(f"rollouts/ep{e}", {
            "endpoint": f"ep{e}", "model": "m", "version": str(e), "status": "done",
            "history": [{"at": now - 100, "action": "Finish", "detail": "promoted"}]}))
    for i in range(20):
        writes.append(lambda i=i: store.dead_letter("t.x", {}, "boom", event_id=f"ev{i}"))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda write: write(), writes))


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


# ------------------------------------------------------------------------------------------------ rollout ticks
def rollout_bench() -> dict[str, int]:
    """Azure ML requests per rollout tick, Reflex's flows beside naive SDK usage (both the real SDK, one stand-in)."""
    from aml_calls import _data_list_route, _prepare, naive
    from aml_harness import azure_platform
    from rollout_requests import two_rollouts

    from testing.aml_service import AmlService

    seen = two_rollouts()
    assert seen.statuses == ("done", "done"), seen.statuses
    svc = AmlService()
    _data_list_route(svc)
    with azure_platform(svc, polling_interval=0.0) as p:
        _prepare(svc, p)
        base = naive(svc, p)
    ours = {"wait": seen.most("Wait"), "traffic": seen.most("SetTraffic"), "promote": seen.most("Promote"),
            "demote": seen.most("Demote")}
    print("Azure ML requests per rollout tick (real SDK, HTTP stand-in; the most of any tick of that kind):")
    print(f"  Wait {ours['wait']} (naive {base['wait_tick']}), traffic step {ours['traffic']} (naive read-modify-"
          f"write {base['traffic_step']}), promote {ours['promote']} (naive {base['promote_tick']}), the former "
          f"champion's untag on the next tick {ours['demote']}")
    return {"wait_tick_http": ours["wait"], "wait_tick_http_naive": base["wait_tick"],
            "traffic_step_http": ours["traffic"], "traffic_step_http_naive": base["traffic_step"],
            "promote_http": ours["promote"], "promote_http_naive": base["promote_tick"],
            "demote_http": ours["demote"]}


# ------------------------------------------------------------------------------------------------ the others' parts
def _measure(module: str, function: str) -> Callable[..., Mapping[str, Any]] | None:
    """`bench/<module>.py`'s measuring function, or None while that module (or the function) is not there."""
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None
    fn = getattr(found, function, None)
    return fn if callable(fn) else None


def _section(name: str, keys: Sequence[str], run: Callable[[Callable[..., Mapping[str, Any]]], dict[str, Any]],
             module: str, function: str) -> dict[str, Any]:
    """`run(fn)` with the measuring function, checked to give `keys`; each key `pending` while it is not there."""
    fn = _measure(module, function)
    if fn is None:
        print(f"{name}: bench/{module}.py {function} is not there yet: {', '.join(keys)} pending")
        return dict.fromkeys(keys, "pending")
    results = run(fn)
    missing = [k for k in keys if k not in results]
    if missing:
        raise SystemExit(f"bench/{module}.py {function} gave {sorted(results)}, without {missing}")
    return results


def ticks_section(sizes: Mapping[str, int]) -> dict[str, Any]:
    def run(fn: Callable[..., Mapping[str, Any]]) -> dict[str, Any]:
        return {**fn(sizes["h_small"]), **fn(sizes["h_large"])}

    return _section("timer ticks", ("tick_requests_h10", "tick_requests_h10000"), run, "ticks", "run_ticks")


def intake_section(sizes: Mapping[str, int]) -> dict[str, Any]:
    """bench/intake.py: `run_intake` (this version, N blobs and the marker, each delivered 3x, shuffled) beside
    `run_baseline` (the single-record layout it replaces, at a smaller N: it is O(N^2) and never completes), both on
    one worker's thread pool of INTAKE_THREADS, as that bench runs them."""
    import logging

    def run(fn: Callable[..., Mapping[str, Any]]) -> dict[str, Any]:
        baseline = _measure("intake", "run_baseline")
        logging.disable(logging.INFO)   # one log line per delivery would be the bench (bench/intake.py does so too)
        try:
            with private_blob() as data, private_blob() as state:  # see main(): Azurite's cost per blob it holds
                new = fn(sizes["blobs"], sizes["deliveries"], INTAKE_THREADS, sweeps=INTAKE_SWEEPS,
                         data_storage=data, state_storage=state)
                old = (baseline(sizes["baseline_blobs"], sizes["deliveries"], INTAKE_THREADS, data_storage=data,
                                state_storage=state) if baseline else None)
        finally:
            logging.disable(logging.NOTSET)
        print(f"intake of {new['n']} blobs x{sizes['deliveries']} ({INTAKE_THREADS} threads, Azurite): {new}")
        if old is not None:
            print(f"  baseline, the single-record layout at N={old['n']}: {old}")
        pending = "pending"
        return {"blob_events_per_s": new["blob_events_per_s"],
                "blob_events_per_s_baseline": old["blob_events_per_s"] if old else pending,
                "state_bytes_per_blob": new["state_bytes_per_blob"],
                "state_bytes_per_blob_baseline": old["state_bytes_per_blob"] if old else pending,
                "jobs_10k": new["jobs"],
                "state_bytes_per_delivery": new["state_bytes_per_delivery"],
                "state_bytes_per_delivery_baseline": old["state_bytes_per_delivery"] if old else pending,
                "max_file_delivery_bytes": new["max_file_delivery_bytes"], "intake_gave_up": new["gave_up"],
                "intake_baseline_n": old["n"] if old else pending, "intake_threads": INTAKE_THREADS,
                "intake_sweeps": new["sweeps"], "intake_sweep_s": new["sweep_s"]}

    return _section("blob intake", ("blob_events_per_s", "state_bytes_per_blob", "jobs_10k"), run, "intake",
                    "run_intake")


INTAKE_THREADS = 16   # one worker's thread pool (bench/intake.py's default)
# sweeps after the deliveries, at most, until the job starts: each freezes what a 12 s pass can (about 1,100 copies
# on Azurite), so a 10,000-file batch needs about 9; a run of 3 once reported jobs_10k=0 with the batch freezing
INTAKE_SWEEPS = 60
FULL = {"h_small": 10, "h_large": 10_000, "blobs": 10_000, "baseline_blobs": 500, "deliveries": 3,
        "versions": 1_000, "lines": 100_000, "batches": 1_000}
QUICK = {"h_small": 10, "h_large": 100, "blobs": 200, "baseline_blobs": 100, "deliveries": 3, "versions": 50,
         "lines": 3_000, "batches": 20}
KEYS = ("tick_requests_h10", "tick_requests_h10000", "blob_events_per_s", "state_bytes_per_blob", "jobs_10k",
        "wait_tick_http", "traffic_step_http", "champion_http_1000", "explain_100k_s", "status_1000_s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (the RESULT line's form, not figures)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    global ROUNDS
    ROUNDS = 1 if args.quick else ROUNDS
    results: dict[str, Any] = {}

    def on_private(bench: Callable[[BlobServiceClient, int], dict[str, Any]], size: int) -> dict[str, Any]:
        # timed sections run on an Azurite of their own: Azurite finds a blob by scanning every blob the instance
        # holds (local/azurite.py `private_blob`), so on a shared one a section would pay for others' blobs
        with private_blob() as storage:
            return bench(BlobServiceClient.from_connection_string(storage), size)

    for name, part in (("ticks", lambda: ticks_section(sizes)), ("intake", lambda: intake_section(sizes)),
                       ("rollout", rollout_bench), ("champion", lambda: champion_bench(sizes["versions"])),
                       ("explain", lambda: on_private(explain_bench, sizes["lines"])),
                       ("status", lambda: on_private(status_bench, sizes["batches"]))):
        started = time.perf_counter()
        results.update(part())
        print(f"  ({name}: {time.perf_counter() - started:.1f} s)")
    assert all(k in results for k in KEYS), [k for k in KEYS if k not in results]
    results.update({f"size_{k}": v for k, v in sizes.items()})
    print("RESULT scale " + " ".join(f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
