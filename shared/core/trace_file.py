"""Spans to a file as OTLP/JSON, one `ExportTraceServiceRequest` per line, and a reader for that file.

Why a file: the local stack has no collector and no Application Insights, yet the chain of an upload (the
reactions in the host, the training job in its own process, the rollout's ticks) must be visible where the time
went (`python -m reflex explain ID --timeline`). Every process of the stack appends to the same file
(`REFLEX_TRACE_FILE`, set by local/env.py `stack_settings` to `<run dir>/traces.jsonl`).

The format is exactly what the OpenTelemetry Collector's file exporter writes, so any OTLP tool reads it
(the Collector's `otlpjsonfile` receiver, a `jq` script):
- the file: JSON lines, UTF-8, `\\n`-separated, each line one `TracesData` / `ExportTraceServiceRequest`
  object (the two messages have the same single field `resource_spans = 1`): open-telemetry/
  opentelemetry-specification `specification/protocol/file-exporter.md` @1377f53b ("JSON lines file",
  "Only top-level objects, TracesData ...");
- each object: the proto3 JSON mapping of opentelemetry/proto/collector/trace/v1/trace_service.proto with
  OTLP's deviations: trace and span ids as hex strings (not base64), enums as integers, lowerCamelCase keys;
  64-bit integers (the `fixed64` times, `intValue`) as decimal strings: open-telemetry/opentelemetry-proto
  `docs/specification.md` "JSON Protobuf Encoding" @ac2c4b5d, field numbers and types in
  `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto` there;
- what the Collector leaves out and in which order it writes fields: open-telemetry/opentelemetry-collector
  `pdata/internal/generated_proto_span.go` and siblings (`resourcespans`, `scopespans`, `resource`,
  `instrumentationscope`, `keyvalue`, `anyvalue`, `status`, `spanlink`, `spanevent`) @934999fb: default values
  (empty strings, zero counts, no parent) are omitted, `resource`, `scope`, `status` and a KeyValue's `value`
  are always written, ids in lower-case hex (`traceid.go`: `hex.EncodeToString`), NaN and infinities as the
  strings "NaN", "Infinity", "-Infinity" (`json/stream.go` `WriteFloat64`), bytes as base64;
- how SDK spans map onto the proto (kind + 1, grouping by resource then scope, `flags` carrying whether the
  parent is remote): open-telemetry/opentelemetry-python `exporter/opentelemetry-exporter-otlp-proto-common/
  .../_internal/trace_encoder/__init__.py` @0a5d76b6 (`_encode_span`, `_span_flags`). Beyond that encoder,
  bits 0-7 of `flags` carry the W3C trace flags, as trace.proto defines them (`SPAN_FLAGS_TRACE_FLAGS_MASK`).
tests/test_trace_file.py parses every line back with protobuf's own `json_format` into the generated
`ExportTraceServiceRequest` (after turning the hex ids into the base64 the plain proto3 mapping expects).

Several processes append at once: each export is one `write()` of one whole line on a descriptor opened with
O_APPEND. POSIX makes the move to the end and the write one step ("no intervening file modification operation
shall occur between changing the file offset and the write operation": write(), pubs.opengroup.org/onlinepubs/
9799919799/functions/write.html), and Linux's local file systems write a regular file under its inode lock
(`generic_file_write_iter`, mm/filemap.c; ext4's own write path likewise), so a line is never split by another
writer's; tests/test_trace_file.py checks it with two processes writing 20 KB lines. Not on NFS, which emulates
O_APPEND (open(2)): keep the run folder on a local disk. `configure_file_tracing` sends spans through a
`SimpleSpanProcessor`, one
line as each span ends: a host killed with SIGKILL (tests/test_stack_e2e.py does) loses no span already ended,
and a local write is cheap. `read_spans` streams the file and skips a torn last line (a writer still writing,
or killed mid-write) and any damaged line, counting them in `SpanFileStats`.

Interface for shared/core/trace.py (issue #19.1): `configure_file_tracing(provider)` adds this exporter to the
app's TracerProvider when `REFLEX_TRACE_FILE` is set (or installs one when there is none yet); the W3C
`traceparent` Reflex puts on a job's tags is read from `TRACEPARENT_TAG` (also a plain `traceparent` key).
Importing this module loads the OpenTelemetry SDK: import it only when tracing is configured (cold start).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["TRACEPARENT_TAG", "TRACE_FILE_ENV", "OtlpJsonFileExporter", "SpanFileStats", "SpanRecord",
           "configure_file_tracing", "encode_spans", "parent_context", "read_spans", "trace_id_of"]

TRACE_FILE_ENV = "REFLEX_TRACE_FILE"
TRACEPARENT_TAG = "reflex.traceparent"

_log = logging.getLogger("reflex.trace_file")
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # trace.proto SpanFlags
_INT64 = (-(2**63), 2**63 - 1)
_configured: set[tuple[int, str]] = set()
_configure_lock = threading.Lock()


# ------------------------------------------------------------------------------------------------ encoding
def _any_value(value: Any) -> dict[str, Any]:
    """common.proto AnyValue as the Collector writes it (the Python encoder's `_encode_value` cases)."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        # int64 on the wire; a Python int beyond it keeps its digits as a string rather than fail the export
        return {"intValue": str(value)} if _INT64[0] <= value <= _INT64[1] else {"stringValue": str(value)}
    if isinstance(value, float):
        if math.isnan(value):
            return {"doubleValue": "NaN"}
        if math.isinf(value):
            return {"doubleValue": "Infinity" if value > 0 else "-Infinity"}
        return {"doubleValue": value}
    if isinstance(value, bytes | bytearray):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        values = [_key_value(str(k), v) for k, v in value.items()]
        return {"kvlistValue": {"values": values} if values else {}}
    if isinstance(value, Sequence):
        items = [_any_value(v) for v in value]
        return {"arrayValue": {"values": items} if items else {}}
    return {"stringValue": str(value)}


def _key_value(key: str, value: Any) -> dict[str, Any]:
    kv: dict[str, Any] = {"key": key} if key else {}
    kv["value"] = _any_value(value)
    return kv


def _attributes(target: dict[str, Any], attributes: Mapping[str, Any] | None, dropped: int = 0) -> None:
    if attributes:
        target["attributes"] = [_key_value(k, v) for k, v in attributes.items()]
    if dropped:
        target["droppedAttributesCount"] = dropped


def _flags(trace_flags: int, parent: trace.SpanContext | None) -> int:
    flags = (int(trace_flags) & 0xFF) | _HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _IS_REMOTE
    return flags


def _trace_state(state: trace.TraceState | None) -> str:
    return ",".join(f"{k}={v}" for k, v in state.items()) if state else ""


def _span(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None  # an SDK span always has one
    out: dict[str, Any] = {"traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}"}
    if state := _trace_state(ctx.trace_state):
        out["traceState"] = state
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    out["flags"] = _flags(ctx.trace_flags, span.parent)
    if span.name:
        out["name"] = span.name
    out["kind"] = span.kind.value + 1  # SpanKind.INTERNAL (0) is SPAN_KIND_INTERNAL (1), ... (the encoder's map)
    if span.start_time:
        out["startTimeUnixNano"] = str(span.start_time)
    if span.end_time:
        out["endTimeUnixNano"] = str(span.end_time)
    _attributes(out, span.attributes, span.dropped_attributes)
    if span.events:
        events = []
        for event in span.events:
            encoded: dict[str, Any] = {"timeUnixNano": str(event.timestamp)} if event.timestamp else {}
            if event.name:
                encoded["name"] = event.name
            _attributes(encoded, event.attributes, event.dropped_attributes)
            events.append(encoded)
        out["events"] = events
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        links = []
        for link in span.links:
            encoded = {"traceId": f"{link.context.trace_id:032x}", "spanId": f"{link.context.span_id:016x}"}
            if state := _trace_state(link.context.trace_state):
                encoded["traceState"] = state
            _attributes(encoded, link.attributes, link.dropped_attributes)
            encoded["flags"] = _flags(link.context.trace_flags, link.context)
            links.append(encoded)
        out["links"] = links
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    status: dict[str, Any] = {}
    if span.status.description:
        status["message"] = span.status.description
    if span.status.status_code.value:
        status["code"] = span.status.status_code.value  # UNSET 0, OK 1, ERROR 2: the same numbers in trace.proto
    out["status"] = status
    return out


def _scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if scope is not None:
        if scope.name:
            out["name"] = scope.name
        if scope.version:
            out["version"] = scope.version
        _attributes(out, scope.attributes)
    return out


def encode_spans(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The `ExportTraceServiceRequest` of `spans` in OTLP/JSON: ResourceSpans per resource, ScopeSpans per scope."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[dict[str, Any]]]] = {}
    for span in spans:
        grouped.setdefault(span.resource, {}).setdefault(span.instrumentation_scope, []).append(_span(span))
    resource_spans = []
    for resource, scopes in grouped.items():
        resource_out: dict[str, Any] = {}
        _attributes(resource_out, resource.attributes)
        entry: dict[str, Any] = {"resource": resource_out, "scopeSpans": []}
        for scope, encoded in scopes.items():
            scope_spans: dict[str, Any] = {"scope": _scope(scope), "spans": encoded}
            if scope is not None and scope.schema_url:
                scope_spans["schemaUrl"] = scope.schema_url
            entry["scopeSpans"].append(scope_spans)
        if resource.schema_url:
            entry["schemaUrl"] = resource.schema_url
        resource_spans.append(entry)
    return {"resourceSpans": resource_spans} if resource_spans else {}


def _line(spans: Sequence[ReadableSpan]) -> bytes:
    text = json.dumps(encode_spans(spans), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # a lone surrogate in an attribute cannot be UTF-8: replaced, so the line stays valid for every reader
    return text.encode("utf-8", "replace") + b"\n"


class OtlpJsonFileExporter(SpanExporter):
    """An OpenTelemetry SDK exporter appending one OTLP/JSON line per export to `path` (see the module doc)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            self._append(_line(spans))
        except (OSError, ValueError) as exc:  # a full disk or a removed run folder must not break a reaction
            _log.warning("could not write %d span(s) to %s: %s", len(spans), self.path, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _append(self, data: bytes) -> None:
        """One write() of the whole line on an O_APPEND descriptor (opened per export: a folder recreated or a
        file moved away is followed, and nothing stays open in a process that forks)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            written = os.write(fd, data)
            while written < len(data):  # only on a full disk or a signal; the reader skips a line torn that way
                written += os.write(fd, data[written:])
        finally:
            os.close(fd)

    def shutdown(self) -> None:
        self._shut = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is written before it returns


def configure_file_tracing(provider: TracerProvider | None = None, *, path: str | None = None,
                           service: str = "reflex") -> TracerProvider | None:
    """Record this process's spans to `path` (default `REFLEX_TRACE_FILE`); the provider, or None when unset.

    `provider`: the app's TracerProvider (shared/core/trace.py passes its own); without one the global provider
    is used when it is an SDK one (the Azure Monitor distro installs such), else one is created for `service`
    and installed. Idempotent per provider and file."""
    target = (path if path is not None else os.environ.get(TRACE_FILE_ENV, "")).strip()
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
        key = (id(provider), str(Path(target).resolve()))
        if key not in _configured:
            _configured.add(key)
            provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(target)))
    return provider


def parent_context(tags: Mapping[str, str]) -> Context | None:
    """The remote parent a job's tags carry (W3C `traceparent`, TRACEPARENT_TAG), or None without a valid one.

    Read with OpenTelemetry's own W3C propagator, which rejects malformed values (w3.org/TR/trace-context)."""
    value = tags.get(TRACEPARENT_TAG) or tags.get("traceparent")
    if not value:
        return None
    ctx = TraceContextTextMapPropagator().extract({"traceparent": str(value)})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def trace_id_of(value: Any) -> str | None:
    """The trace id (32 lower-case hex digits) of a W3C traceparent or a bare trace id; None for anything else."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    parts = text.split("-")
    candidate = parts[1] if len(parts) == 4 and len(parts[0]) == 2 else text
    if len(candidate) == 32 and all(c in "0123456789abcdef" for c in candidate) and candidate != "0" * 32:
        return candidate
    return None


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class SpanRecord:
    """One span as read back: ids in lower-case hex, times in ns since the epoch, attributes as Python values."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    status_code: int = 0
    status_message: str = ""
    links: tuple[tuple[str, str], ...] = ()
    events: tuple[tuple[str, int, Mapping[str, Any]], ...] = ()
    resource: Mapping[str, Any] = field(default_factory=dict)
    scope: str = ""

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


@dataclass
class SpanFileStats:
    """What a read saw: lines read, lines skipped as damaged, and whether the last line was torn."""

    lines: int = 0
    damaged: int = 0
    torn_tail: bool = False


def _value(any_value: Mapping[str, Any]) -> Any:
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "boolValue" in any_value:
        return bool(any_value["boolValue"])
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])  # float("NaN"), float("Infinity") read the special strings
    if "arrayValue" in any_value:
        return [_value(v) for v in (any_value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in any_value:
        return _attrs((any_value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in any_value:
        return base64.b64decode(any_value["bytesValue"])
    return None


def _attrs(key_values: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {str(kv.get("key", "")): _value(kv.get("value") or {}) for kv in key_values or ()}


def _records(request: Mapping[str, Any]) -> Iterator[SpanRecord]:
    for resource_spans in request.get("resourceSpans") or ():
        resource = _attrs((resource_spans.get("resource") or {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans") or ():
            scope = str((scope_spans.get("scope") or {}).get("name", ""))
            for s in scope_spans.get("spans") or ():
                status = s.get("status") or {}
                yield SpanRecord(
                    trace_id=str(s.get("traceId", "")).lower(), span_id=str(s.get("spanId", "")).lower(),
                    parent_id=str(s.get("parentSpanId", "")).lower(), name=str(s.get("name", "")),
                    kind=int(s.get("kind", 0)), start_ns=int(s.get("startTimeUnixNano", 0)),
                    end_ns=int(s.get("endTimeUnixNano", 0)), attributes=_attrs(s.get("attributes")),
                    status_code=int(status.get("code", 0)), status_message=str(status.get("message", "")),
                    links=tuple((str(link.get("traceId", "")).lower(), str(link.get("spanId", "")).lower())
                                for link in s.get("links") or ()),
                    events=tuple((str(e.get("name", "")), int(e.get("timeUnixNano", 0)), _attrs(e.get("attributes")))
                                 for e in s.get("events") or ()),
                    resource=resource, scope=scope)


def read_spans(path: str | os.PathLike[str], stats: SpanFileStats | None = None, *,
               only_if: Callable[[bytes], bool] | None = None) -> Iterator[SpanRecord]:
    """Every span in the file, streaming (one line in memory at a time), in file order.

    A last line without its newline that does not parse is a write in progress or a writer killed mid-line:
    skipped (`stats.torn_tail`). Any other line that does not parse is counted in `stats.damaged` and skipped,
    so one bad line never hides the rest. A missing file yields nothing. `only_if(line)`: decode only the lines
    it accepts (a cheap test on the raw bytes, such as "holds this trace id")."""
    stats = stats if stats is not None else SpanFileStats()
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; a generator must not hold it past its end
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            stats.lines += 1
            if not raw.strip() or (only_if is not None and not only_if(raw)):
                continue
            try:
                request = json.loads(raw)
                records = list(_records(request)) if isinstance(request, dict) else None
            except (ValueError, TypeError, AttributeError):
                records = None
            if records is None:
                if raw.endswith(b"\n"):
                    stats.damaged += 1
                else:
                    stats.torn_tail = True
                continue
            yield from records
