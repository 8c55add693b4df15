"""An OpenTelemetry span exporter to a local file: one OTLP/JSON `ExportTraceServiceRequest` per line.

Why a file: the local stack has no collector and no Application Insights, yet its runs must leave the same spans
a deployed app sends, for `python -m reflex explain --timeline` and the stack e2e test to read. The form is the one
the OpenTelemetry Collector's file exporter writes (one JSON object per line), in the OTLP/JSON encoding
(https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): `traceId` and `spanId` as hex strings, not
base64; enums (`kind`, `status.code`) as integers; 64-bit integers (times in nanoseconds) as decimal strings;
field names in lowerCamelCase, as in opentelemetry-proto `opentelemetry/proto/trace/v1/trace.proto`.

Each export call appends one line with a single write, so several processes (the local host, the CLI's replays)
can share one file; spans go through a `SimpleSpanProcessor`, one line as each span ends, so a host that is killed
loses no span that already ended. Loaded only when `REFLEX_TRACE_FILE` is set (shared/core/trace.py), never at
cold start.

This is the minimal exporter the trace branch needs, with the interface the timeline branch's fuller module has
(`OtlpJsonFileExporter(path)`, `configure_file_tracing(provider, path=...)`); the timeline branch owns this module.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

__all__ = ["OtlpJsonFileExporter", "configure_file_tracing", "request_of"]

_configured: set[tuple[int, str]] = set()
_configure_lock = threading.Lock()


def _value(value: Any) -> dict[str, Any]:
    """An OTLP `AnyValue` (common.proto): the one field its type selects."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in (attributes or {}).items()]


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    out: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}", "spanId": f"{context.span_id:016x}", "name": span.name,
        # SpanKind: INTERNAL=1 .. CONSUMER=5 in OTLP, the API's enum is 0-based in the same order
        "kind": span.kind.value + 1,
        "startTimeUnixNano": str(span.start_time or 0), "endTimeUnixNano": str(span.end_time or 0),
        "attributes": _attributes(span.attributes),
        "events": [{"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attributes(e.attributes)}
                   for e in span.events],
        "links": [{"traceId": f"{link.context.trace_id:032x}", "spanId": f"{link.context.span_id:016x}",
                   "attributes": _attributes(link.attributes)} for link in span.links],
        # StatusCode: UNSET=0, OK=1, ERROR=2 in both
        "status": {"code": span.status.status_code.value, **({"message": span.status.description}
                                                              if span.status.description else {})},
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if context.trace_state:
        out["traceState"] = context.trace_state.to_header()
    return out


def request_of(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The `ExportTraceServiceRequest` of `spans`: grouped by resource, then by instrumentation scope."""
    by_resource: dict[int, tuple[Any, dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for span in spans:
        scopes = by_resource.setdefault(id(span.resource), (span.resource, {}))[1]
        scope = span.instrumentation_scope
        scopes.setdefault((scope.name if scope else "", (scope.version or "") if scope else ""), []).append(
            _span(span))
    return {"resourceSpans": [
        {"resource": {"attributes": _attributes(resource.attributes)},
         "scopeSpans": [{"scope": {"name": name, "version": version}, "spans": found}
                        for (name, version), found in scopes.items()]}
        for resource, scopes in by_resource.values()]}


class OtlpJsonFileExporter(SpanExporter):
    """Appends each export as one OTLP/JSON line to `path` (its folder is created)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        line = json.dumps(request_of(spans), separators=(",", ":"), default=str) + "\n"
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as out:
                out.write(line)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def configure_file_tracing(provider: TracerProvider | None = None, *, path: str | None = None,
                           service: str = "reflex") -> TracerProvider | None:
    """Record this process's spans to `path` (default `REFLEX_TRACE_FILE`); the provider, or None when unset.

    `provider`: the app's TracerProvider; without one the global provider is used when it is an SDK one (the
    Azure Monitor distro installs such), else one is created for `service` and installed as the global one (which
    azure-core's spans use). Idempotent per provider and file."""
    target = (path if path is not None else os.environ.get("REFLEX_TRACE_FILE", "")).strip()
    if not target:
        return None
    with _configure_lock:
        if provider is None:
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):
                provider = current
            else:
                provider = TracerProvider(resource=Resource.create({"service.name": service}))
                trace.set_tracer_provider(provider)
        key = (id(provider), os.path.abspath(target))
        if key not in _configured:
            _configured.add(key)
            provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(target)))
    return provider
