"""The stack e2e's trace assertion (issue #19.5): one trace from the upload to the promotion, and its timeline.

Read only from outside, as an operator would: the span file every process of the stack appends to
(`REFLEX_TRACE_FILE`, shared/core/trace_file.py), the `Reflex.*` events the app published (each carries the W3C
`traceparent` of the span that published it in `data.traceparent`, shared/core/publish.py), the rollout record
(`trace`), and `python -m reflex explain MODEL:VERSION --timeline`.
"""

from __future__ import annotations

import io
import json
from typing import Any

from reflex.cli import main as cli
from shared.core.trace_file import SpanRecord, read_spans, trace_id_of
from tests.stack_support import LiveStack, wait_for

__all__ = ["assert_one_trace_covers_the_chain"]

CHAIN_EVENTS = {"TrainingSubmitted", "ModelRegistered", "RolloutStarted", "RolloutStepCompleted", "RolloutPromoted"}


def _names(span: SpanRecord, text: str) -> bool:
    values = [v for value in span.attributes.values() for v in (value if isinstance(value, list) else [value])]
    return any(isinstance(v, str) and text in v for v in values)


def _traceparent(event: dict[str, Any]) -> tuple[str, str]:
    value = str((event.get("data") or {}).get("traceparent") or "")
    parts = value.split("-")
    assert len(parts) == 4 and trace_id_of(value), f"{event['eventType']} {event['subject']}: no traceparent: {value!r}"
    return parts[1], parts[2]


def assert_one_trace_covers_the_chain(live: LiveStack, *, batch: str, model: str, version: str, endpoint: str,
                                      steps: int) -> str:
    """The upload of `batch`, its training job, the registration of `model:version`, each of its `steps` traffic
    steps and the promotion are one trace, whose spans are in the stack's span file; `explain --timeline` prints
    it. The trace id."""
    from shared.rollout.flow import rollout_key

    path = live.env["REFLEX_TRACE_FILE"]
    ref = f"{model}:{version}"
    registered = live.deps.platform.get_model(model, version)
    assert registered is not None and registered.job_name, ref
    job = registered.job_name
    # the job's own span, written by its runner process (local/job_trace.py): queued, then training
    (job_span,) = [s for s in read_spans(path) if s.name == f"job {job}"]
    phases = {s.name: s for s in read_spans(path) if s.parent_id == job_span.span_id}
    assert set(phases) == {"queued", "training"}, phases
    assert phases["queued"].start_ns == job_span.start_ns and phases["queued"].end_ns == phases["training"].start_ns
    assert phases["training"].end_ns == job_span.end_ns and phases["training"].duration_ns > 0
    text = io.StringIO()
    assert cli(["explain", ref, "--timeline"], deps=live.deps, stdout=text) == 0, text.getvalue()
    assert f"job {job}" in text.getvalue() and "where the time went:" in text.getvalue(), text.getvalue()

    # one trace: every event of the chain carries it (data.traceparent), and each event's span is in the file
    events = [e for e in live.published() if e["eventType"].startswith(("Reflex.Training", "Reflex.Model",
                                                                         "Reflex.Rollout"))
              and (batch in e["subject"] or e["subject"].endswith(ref))]
    kinds = [e["eventType"].removeprefix("Reflex.") for e in events]
    assert set(kinds) >= CHAIN_EVENTS and kinds.count("RolloutStepCompleted") >= steps, kinds
    carried = [(f"{e['eventType']} {e['subject']} {e['id']}", *_traceparent(e)) for e in events]
    traces = {t for _, t, _ in carried}
    assert len(traces) == 1, f"the chain's events carry {len(traces)} traces: {carried}"
    (trace_id,) = traces
    assert job_span.trace_id == trace_id, (job_span, trace_id)  # parented from the job's traceparent tag

    def spans_now() -> dict[str, SpanRecord] | None:
        spans = {s.span_id: s for s in read_spans(path) if s.trace_id == trace_id}
        return spans if all(span_id in spans for _, _, span_id in carried) else None

    spans = wait_for(f"the span of every chain event in trace {trace_id} in {path}", spans_now, timeout=60)
    upload = spans.get(job_span.parent_id)  # the reaction that submitted the job: the batch's arrival
    assert upload is not None and _names(upload, batch), (job_span, upload)
    # every traffic step is a span of its own in the trace
    step_spans = {span_id for what, _, span_id in carried if what.startswith("Reflex.RolloutStepCompleted")}
    assert len(step_spans) >= steps, carried
    record = live.deps.state.get(rollout_key(endpoint))  # the rollout carries the trace it was recorded in
    assert record is not None and trace_id_of(record.value.get("trace")) == trace_id, record
    out = io.StringIO()
    assert cli(["--json", "explain", ref, "--timeline"], deps=live.deps, stdout=out) == 0
    timeline = json.loads(out.getvalue())["timeline"]
    assert trace_id in timeline["trace_ids"], timeline["trace_ids"]
    outside = [r for r in timeline["rows"] if r["kind"] == "span" and r["trace_id"] != trace_id]
    assert len(outside) == timeline["linked"], outside  # only the ticks that link to the chain
    assert timeline["spans"] >= len(carried) + 3 and timeline["time_spent"].get("training", 0) > 0
    (header,) = [line for line in text.getvalue().splitlines() if line.startswith("timeline (trace ")]
    assert trace_id in header, header
    return trace_id
