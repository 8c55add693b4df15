"""`explain --timeline` on a large span file: one streaming pass against loading every span first.

A span file of `--spans` spans (default 100,000: hours of a busy local stack, timer ticks and their HTTP calls)
holds one chain of 60 spans spread through it. Side by side, in this one run, on the same file:
- `known`: `reflex.timeline.collect` with the chain's trace id (what the records give), one pass;
- `by id`: the same with no trace id, finding the chain by an id in its spans' attributes, one pass;
- `baseline`: every span read into a list, then filtered (what a reader without streaming does).
Wall time and peak Python heap (tracemalloc) of each. Ends with one line `RESULT timeline key=value ...`.

    python bench/timeline.py [--spans N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402

from reflex.timeline import collect  # noqa: E402
from shared.core.trace_file import OtlpJsonFileExporter, read_spans  # noqa: E402

CHAIN = 60
BATCH, ROLLOUT = "reflex-data/heart/bench", "heart-ep/heart:9"


def write_file(path: Path, spans: int) -> str:
    """`spans` spans: ticks of 3 (a tick and two HTTP calls) and, spread evenly among them, the chain's 60 (its
    arrival, then its rollout's steps, each naming the rollout as trace.py's spans do); the chain's trace id."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(path)))
    tracer = provider.get_tracer("bench")
    root = tracer.start_span("data.arrival", context=trace.set_span_in_context(trace.INVALID_SPAN),
                             attributes={"reflex.batch": BATCH})
    root.end()
    chain_ctx = trace.set_span_in_context(root)
    ticks = (spans - CHAIN) // 3
    every, steps = max(1, ticks // (CHAIN - 1)), 0
    for i in range(ticks):
        tick = tracer.start_span("rollout.reconcile", context=trace.set_span_in_context(trace.INVALID_SPAN),
                                 attributes={"reflex.rollout": f"ep-{i % 7}/m:{i}", "reflex.outcome": "skipped"})
        inside = trace.set_span_in_context(tick)
        for name in ("GET", "PUT"):
            tracer.start_span(name, context=inside, attributes={"http.request.method": name}).end()
        tick.end()
        if i % every == every - 1 and steps < CHAIN - 1:
            tracer.start_span("rollout.reconcile", context=chain_ctx,
                              attributes={"reflex.rollout": ROLLOUT, "reflex.reason": "baking"}).end()
            steps += 1
    for _ in range(steps, CHAIN - 1):
        tracer.start_span("rollout.reconcile", context=chain_ctx, attributes={"reflex.rollout": ROLLOUT}).end()
    provider.shutdown()
    return f"{root.get_span_context().trace_id:032x}"


def measure(run: Callable[[], int]) -> tuple[float, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    found = run()
    took = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return took, peak / 2**20, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "traces.jsonl"
        trace_id = write_file(path, args.spans)
        total = sum(1 for _ in read_spans(path))
        size = path.stat().st_size / 2**20

        def baseline() -> int:
            everything: list[Any] = list(read_spans(path))
            return len([s for s in everything if s.trace_id == trace_id])

        results = {
            "known": measure(lambda: len(collect(path, [trace_id], []).spans)),
            "by_id": measure(lambda: len(collect(path, [], [BATCH, ROLLOUT]).spans)),
            "baseline": measure(baseline),
        }
    print(f"span file: {total} spans, {size:.1f} MiB")
    for name, (took, peak, found) in results.items():
        print(f"  {name:9} {took:7.2f} s  peak heap {peak:8.1f} MiB  chain spans found {found}")
    assert len({found for _, _, found in results.values()}) == 1, "the three ways must find the same spans"
    k, b, i = results["known"], results["baseline"], results["by_id"]
    print(f"RESULT timeline spans={total} file_mib={size:.1f} chain_spans={k[2]} known_s={k[0]:.2f} "
          f"known_peak_mib={k[1]:.1f} by_id_s={i[0]:.2f} by_id_peak_mib={i[1]:.1f} baseline_s={b[0]:.2f} "
          f"baseline_peak_mib={b[1]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
