"""reflex/timeline.py and `explain --timeline`: a chain's spans in time order, nested, with the waits named.

The span set is built with the OpenTelemetry SDK at chosen times (a chain as the local stack records it: the
arrival reaction and its HTTP call, the training job as local/job_trace.py records it from its traceparent tag,
the registration, the rollout's reconcile steps), written through the real exporter, read back from the file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from local.job_trace import record_job_span
from reflex.cli import main
from reflex.timeline import chain_timeline, collect, gap_name, layout, render, time_spent
from shared.core.trace_file import TRACEPARENT_TAG, OtlpJsonFileExporter, SpanRecord, read_spans
from tests.conftest import Clock
from tests.real_chain import World, make_world

T0 = 1_700_000_000.0
BATCH, JOB = "reflex-data/heart/b1", "reflex-train-abc"
CREATING = "new deployment m-heart-v1-x is Creating: waiting until it is Succeeded, then continuing"
BAKING = "baking at 10% until 2023-11-14T22:14:16Z"


def ns(seconds: float) -> int:
    return int((T0 + seconds) * 1e9)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[TracerProvider]:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(tmp_path / "traces.jsonl")))
    yield made
    made.shutdown()


def _span(tracer: Any, name: str, start: float, end: float, parent: Any = None, **attributes: Any) -> Any:
    span = tracer.start_span(name, context=parent, start_time=ns(start), attributes=attributes,
                             kind=SpanKind.CLIENT if name.isupper() else SpanKind.INTERNAL)
    span.end(end_time=ns(end))
    return span


def _unrelated(tracer: Any, start: float) -> None:
    root = tracer.start_span("rollout.reconcile", context=trace.set_span_in_context(trace.INVALID_SPAN),
                             start_time=ns(start), attributes={"reflex.rollout": "other-ep/other:3"})
    _span(tracer, "GET", start + 0.1, start + 0.2, trace.set_span_in_context(root))
    root.end(end_time=ns(start + 0.3))


def write_chain(provider: TracerProvider, *, batch: str = BATCH, job: str = JOB) -> str:
    """The spans of one chain, in the order they end (as SimpleSpanProcessor writes them), other traces between.
    The chain's trace id."""
    tracer = provider.get_tracer("reflex")
    _unrelated(tracer, -5)
    arrival = tracer.start_span("data.arrival", context=trace.set_span_in_context(trace.INVALID_SPAN),
                                start_time=ns(0), attributes={"reflex.reaction": "data.arrival", "reflex.batch": batch,
                                                              "reflex.outcome": "acted"})
    inside = trace.set_span_in_context(arrival)
    _span(tracer, "PUT", 0.1, 0.3, inside, **{"http.request.method": "PUT", "url.full": "http://azurite/x"})
    sdk = provider.get_tracer("azure.core.tracing.ext.opentelemetry_span")  # azure-core's: a method, its request
    method = sdk.start_span("BlobClient.upload_blob", context=inside, start_time=ns(0.3))
    _span(sdk, "PUT", 0.32, 0.38, trace.set_span_in_context(method))
    method.end(end_time=ns(0.4))
    _unrelated(tracer, 0.35)
    arrival.end(end_time=ns(0.6))
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=inside)
    record_job_span({"job_name": job, "kind": "command", "run_id": "r1",
                     "tags": {TRACEPARENT_TAG: carrier["traceparent"], "reflex.batch": batch}},
                    created_ns=ns(0.5), running_ns=ns(2.5), end_ns=ns(32.5), status="Completed", provider=provider)
    _span(tracer, "registration.run_event", 34, 35, inside, **{"reflex.job": job, "reflex.model": "heart:1"})
    _span(tracer, "rollout.model_registered", 35.2, 35.5, inside, **{"reflex.model": "heart:1"})
    tick = tracer.start_span("timer reconcile", context=trace.set_span_in_context(trace.INVALID_SPAN),
                             start_time=ns(35.9), links=[Link(arrival.get_span_context())])
    tick.end(end_time=ns(36.6))
    _span(tracer, "rollout.reconcile", 36, 36.5, inside, **{"reflex.reason": CREATING})
    _unrelated(tracer, 40)
    _span(tracer, "rollout.reconcile", 46, 46.4, inside, **{"reflex.reason": BAKING})
    _span(tracer, "rollout.reconcile", 56, 56.5, inside, **{"reflex.reason": "Promote -> promoted"})
    return f"{arrival.get_span_context().trace_id:032x}"


def _names(rows: Any) -> list[tuple[int, str]]:
    return [(r.depth, f"[{r.name}]" if r.kind == "gap" else r.name) for r in rows]


def test_a_chain_laid_out_in_time_nested_with_its_waits_named(provider: TracerProvider, tmp_path: Path) -> None:
    trace_id = write_chain(provider)
    found = collect(tmp_path / "traces.jsonl", [trace_id], [])
    assert {s.trace_id for s in found.spans if s.name != "timer reconcile"} == {trace_id}
    assert found.linked == 1 and not found.by_attribute  # the tick links to the chain; other traces stay out
    rows = layout(found.spans)
    assert _names(rows) == [
        (0, "data.arrival"), (1, "PUT"), (1, "BlobClient.upload_blob"), (2, "PUT"), (1, f"job {JOB}"),
        (2, "queued"), (2, "training"),
        (1, "[run event delivery]"), (1, "registration.run_event"), (1, "rollout.model_registered"),
        (0, "timer reconcile"), (1, "rollout.reconcile"), (1, "[provisioning]"), (1, "rollout.reconcile"),
        (1, "[bake]"), (1, "rollout.reconcile")]
    spent = time_spent(rows)
    assert spent["queueing"] == 2.0 and spent["training"] == 30.0
    assert spent["run event delivery"] == 1.5 and spent["provisioning"] == 9.4 and spent["bake"] == 9.6
    assert sum(spent.values()) == pytest.approx(56.5)  # every instant once, from the first span to the last
    job = next(r for r in rows if r.name == f"job {JOB}")
    assert "job=reflex-train-abc" in job.detail and "batch=reflex-data/heart/b1" in job.detail
    assert "PUT http://azurite/x" in next(r for r in rows if r.name == "PUT").detail
    lines = render(rows)
    assert lines[0] == "from 2023-11-14 22:13:20 UTC, 56.5 s in all"
    # the arrival's calls (its HTTP request, the SDK method with its own) are counted on its line, each once
    assert "2 call(s) 0.300s" in lines[1] and not any(" PUT" in line or "upload_blob" in line for line in lines)
    assert sum(" PUT" in line for line in render(rows, calls=True)) == 2
    assert any(line.split()[:3] == ["+36.600s", "9.400s", "[provisioning]"] for line in lines), lines


def test_the_chain_is_found_by_its_ids_when_no_record_names_its_trace(provider: TracerProvider,
                                                                      tmp_path: Path) -> None:
    trace_id = write_chain(provider)
    found = collect(tmp_path / "traces.jsonl", [], ["other", BATCH])
    assert found.by_attribute == [trace_id]
    names = [s.name for s in found.spans]
    assert "PUT" in names  # written before the span that names the batch: held, then taken along
    assert names.count("rollout.reconcile") == 3 and "GET" not in names
    # the window is bounded: with room for one pending span, the call that ended first is gone
    small = collect(tmp_path / "traces.jsonl", [], [BATCH], pending_limit=1)
    assert small.evicted >= 1 and "PUT" not in [s.name for s in small.spans]


def test_gaps_are_named_from_the_ledger_reason_or_the_span_before() -> None:
    def span(name: str, **attributes: Any) -> SpanRecord:
        return SpanRecord("t", name, "", name, 1, 1, 2, attributes)

    reconcile = span("rollout.reconcile")
    assert gap_name(reconcile, reconcile, "Wait -> baking: baking at 50% until 12:00") == "bake"
    assert gap_name(reconcile, reconcile, "at mirror: ...") == "bake"
    assert gap_name(span("r", **{"reflex.reason": CREATING}), reconcile) == "provisioning"
    assert gap_name(reconcile, reconcile, "at 10%: 1 of 10 requests served, waiting for the rest") \
        == "waiting for canary requests"
    assert gap_name(span("data.arrival"), span("data.arrival"), "waiting for _SUCCESS since 12:03 UTC") \
        == "batch completing"
    assert gap_name(span("training", **{"reflex.phase": "running"}), span("registration.run_event")) \
        == "run event delivery"
    assert gap_name(reconcile, reconcile, "") == "waiting"


@pytest.fixture
def world(container_factory: Callable[[str], Any], clock: Clock) -> World:
    return make_world(container_factory, clock, REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1")


def test_explain_timeline_prints_the_chain_of_a_real_ledger(world: World, provider: TracerProvider,
                                                            tmp_path: Path) -> None:
    """The real reactions write the ledger; the spans name the chain's batch and job; `explain BATCH
    --timeline` finds them and prints the timeline (and says so when the file has none)."""
    chain = world.chain("heart/b1")
    path = tmp_path / "traces.jsonl"
    out = io.StringIO()
    assert main(["explain", chain.batch, "--timeline", "--trace-file", str(path)], deps=world.deps, stdout=out) == 1
    assert "timeline: no span of this chain in" in out.getvalue()
    trace_id = write_chain(provider, batch=chain.batch, job=chain.job)
    out = io.StringIO()
    assert main(["--json", "explain", chain.batch, "--timeline", "--trace-file", str(path)], deps=world.deps,
                stdout=out) == 0
    timeline = json.loads(out.getvalue())["timeline"]
    assert timeline["trace_ids"][0] == trace_id and timeline["spans"] == 13
    assert [r["name"] for r in timeline["rows"] if r["kind"] == "gap"] == ["run event delivery", "provisioning",
                                                                            "bake"]
    assert timeline["time_spent"]["training"] == 30.0
    out = io.StringIO()
    assert main(["explain", chain.job, "--timeline", "--trace-file", str(path)], deps=world.deps, stdout=out) == 0
    text = out.getvalue()
    assert f"timeline (trace {trace_id}" in text and "where the time went:" in text
    assert "[bake]" in text and f"job {chain.job}" in text


def test_the_timeline_reads_the_file_once_in_one_pass(provider: TracerProvider, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded cost: `chain_timeline` streams the span file once, whatever it must find."""
    import reflex.timeline as timeline

    write_chain(provider)
    reads: list[str] = []

    def counted(path: Any, stats: Any = None, **options: Any) -> Iterator[SpanRecord]:
        reads.append(str(path))
        yield from read_spans(path, stats, **options)

    monkeypatch.setattr(timeline, "read_spans", counted)
    result = chain_timeline(tmp_path / "traces.jsonl", refs={"batch": [BATCH], "endpoint": ["heart-ep"]},
                            entries=[{"at": "2023-11-14T22:13:20.000Z", "reason": "started"}])
    assert len(reads) == 1 and result["spans"] == 13 and result["read"]["lines"] == 19
