"""What tracing costs a reaction: the first span in a worker (the OpenTelemetry API's import) and each span after.

In fresh processes that have imported `function_app` (as the worker has before the first invocation), median of
5 each: the first `shared.core.trace.reaction_span` with a carried traceparent (no provider: the no-op API, the
app without APPLICATIONINSIGHTS_CONNECTION_STRING or REFLEX_TRACE_FILE), then 2,000 spans with the no-op API and
2,000 recorded by an SDK provider into the SDK's in-memory exporter, beside the baseline of the same loop with
no span at all. Ends with one line `RESULT trace_overhead key=value ...`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
PROBE = """
import json, time, contextlib
import function_app
CARRIED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
N = 2000
t = time.perf_counter()
from shared.core import trace
with trace.reaction_span("data.arrival", CARRIED, "ev"):
    trace.traceparent()
first = time.perf_counter() - t

def loop(make):
    t = time.perf_counter()
    for _ in range(N):
        with make():
            trace.traceparent()
    return (time.perf_counter() - t) / N

baseline = loop(contextlib.nullcontext)
noop = loop(lambda: trace.reaction_span("data.arrival", CARRIED, "ev"))
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
trace.activate(provider)
recorded = loop(lambda: trace.reaction_span("data.arrival", CARRIED, "ev"))
trace.deactivate()
print(json.dumps({"first_ms": first * 1e3, "baseline_us": baseline * 1e6, "noop_us": noop * 1e6,
                  "recorded_us": recorded * 1e6}))
"""


def main() -> None:
    runs = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True,
                             timeout=300)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"{'first span in a worker (API import)':40} {median['first_ms']:8.1f} ms")
    for key, label in (("baseline_us", "loop without a span"), ("noop_us", "no-op API span"),
                       ("recorded_us", "recorded span (SDK, in memory)")):
        print(f"{label:40} {median[key]:8.1f} us")
    print("RESULT trace_overhead " + " ".join(f"{k}={v:.1f}" for k, v in median.items()))


if __name__ == "__main__":
    main()
