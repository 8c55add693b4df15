"""The span of one local job, so a chain's timeline shows where the job's time went (queued, then running).

Azure ML records a job's creation, start and end; the local job runner is the stand-in for its runtime, so it
records the same three times as one span `job <name>` with two children, `queued` (created -> the runner began)
and the work itself (`training`, `scoring` or `evaluation`: began -> ended). The span's parent is the W3C
`traceparent` Reflex put on the job's tags when it submitted it (shared/core/trace_file.py `parent_context`),
so the job sits in the upload's trace between the arrival reaction that submitted it and the registration its
run event starts. Without such a tag the job is a trace of its own, still found by its `reflex.job` attribute.
The spans go where every process of the stack writes (`REFLEX_TRACE_FILE`); nothing is recorded without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["PHASE_ATTRIBUTE", "WORK_NAMES", "record_job_span"]

PHASE_ATTRIBUTE = "reflex.phase"  # "queued" | "running": how reflex/timeline.py names the job's time
WORK_NAMES = {"command": "training", "automl": "training", "batch": "scoring", "evaluate": "evaluation"}


def record_job_span(spec: Mapping[str, Any], *, created_ns: int, running_ns: int, end_ns: int, status: str,
                    error: str = "", provider: Any = None) -> bool:
    """Write the job's span (and its two phases); False when no trace file is configured.

    `provider`: an SDK TracerProvider to record with (tests); by default the process's, writing to
    `REFLEX_TRACE_FILE` (shared/core/trace_file.py `configure_file_tracing`)."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from shared.core.trace_file import TRACEPARENT_TAG, configure_file_tracing, parent_context

    if provider is None:
        provider = configure_file_tracing(path=os.environ.get("REFLEX_TRACE_FILE", ""), service="reflex-jobrunner")
    if provider is None:
        return False
    tags = {str(k): str(v) for k, v in (spec.get("tags") or {}).items()}
    kind = str(spec.get("kind", ""))
    running_ns = min(max(running_ns, created_ns), end_ns)
    attributes: dict[str, Any] = {"reflex.job": str(spec.get("job_name", "")), "reflex.job.kind": kind,
                                  "reflex.job.status": status,
                                  "reflex.job.queued_seconds": round((running_ns - created_ns) / 1e9, 3),
                                  "reflex.job.running_seconds": round((end_ns - running_ns) / 1e9, 3)}
    # the lineage tags (reflex.batch, reflex.data_asset, ...) make the job findable by the chain's ids
    attributes.update({k: v for k, v in tags.items() if k.startswith("reflex.") and k != TRACEPARENT_TAG})
    if spec.get("run_id"):
        attributes["mlflow.run_id"] = str(spec["run_id"])
    tracer = provider.get_tracer("reflex.jobrunner")
    failed = Status(StatusCode.ERROR, error[:1000]) if status != "Completed" else None
    job = tracer.start_span(f"job {spec.get('job_name', '')}", context=parent_context(tags), kind=SpanKind.CONSUMER,
                            attributes=attributes, start_time=created_ns)
    job_ctx = _context_of(job)
    queued = tracer.start_span("queued", context=job_ctx, attributes={PHASE_ATTRIBUTE: "queued"},
                               start_time=created_ns)
    queued.end(end_time=running_ns)
    work = tracer.start_span(WORK_NAMES.get(kind, "running"), context=job_ctx,
                             attributes={PHASE_ATTRIBUTE: "running", "reflex.job.kind": kind}, start_time=running_ns)
    if failed is not None:
        work.set_status(failed)
        job.set_status(failed)
    work.end(end_time=end_ns)
    job.end(end_time=end_ns)
    return True


def _context_of(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)
