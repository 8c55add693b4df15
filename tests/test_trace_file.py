"""shared/core/trace_file.py: OTLP/JSON lines exactly as the proto defines them, safe with several writers.

Exactness is judged by protobuf itself: every line is parsed with `google.protobuf.json_format` into the
generated `ExportTraceServiceRequest` of opentelemetry-proto (strictly: an unknown field fails), compared with
the SDK spans, and printed back by `json_format.MessageToDict`, which must give the very same object. The only
rewrite is OTLP's documented deviation (open-telemetry/opentelemetry-proto docs/specification.md "JSON Protobuf
Encoding"): trace and span ids are hex in OTLP/JSON and base64 in protobuf's plain mapping.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from shared.core.trace_file import (
    TRACEPARENT_TAG,
    OtlpJsonFileExporter,
    SpanFileStats,
    configure_file_tracing,
    parent_context,
    read_spans,
    trace_id_of,
)

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
ROOT = Path(__file__).resolve().parent.parent
_IDS = ("traceId", "spanId", "parentSpanId")


def _ids(value: Any, convert: Any) -> Any:
    if isinstance(value, dict):
        return {k: convert(v) if k in _IDS else _ids(v, convert) for k, v in value.items()}
    if isinstance(value, list):
        return [_ids(v, convert) for v in value]
    return value


def _hex_to_b64(text: str) -> str:
    return base64.b64encode(bytes.fromhex(text)).decode()


def _b64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()


def to_proto(line: str) -> ExportTraceServiceRequest:
    """One OTLP/JSON line into the generated message, strictly (unknown fields fail)."""
    return json_format.Parse(json.dumps(_ids(json.loads(line), _hex_to_b64)), ExportTraceServiceRequest(),
                             ignore_unknown_fields=False)


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[TracerProvider, Path, InMemorySpanExporter]]:
    """A provider writing to a file through the exporter and, beside it, keeping the SDK spans in memory."""
    path = tmp_path / "traces.jsonl"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "reflex-test"}))
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(path)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, path, memory
    provider.shutdown()


def _a_chain(provider: TracerProvider) -> None:
    """Spans using every part of the mapping: a remote parent, nesting, events, links, every attribute type,
    an error status, a span kind other than internal, the NaN and infinities the JSON mapping spells out."""
    tracer = provider.get_tracer("reflex.test", "1.2.3")
    remote = parent_context({TRACEPARENT_TAG: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    with tracer.start_as_current_span("data.arrival", context=remote, kind=SpanKind.CONSUMER, attributes={
            "reflex.batch": "reflex-data/heart/b1", "reflex.files": 3, "reflex.ratio": 0.25, "reflex.ok": True,
            "reflex.blobs": ["a.csv", "b.csv"], "reflex.counts": [1, 2], "reflex.nan": float("nan"),
            "reflex.inf": float("inf"), "reflex.ninf": float("-inf"), "reflex.big": 2**62,
            "reflex.text": "ünïcode ✓"}) as root:
        root.add_event("claimed", {"reflex.key": "arrivals/heart/b1"})
        with tracer.start_as_current_span("PUT", kind=SpanKind.CLIENT,
                                          attributes={"http.request.method": "PUT"}) as child:
            child.set_status(Status(StatusCode.ERROR, "409 Conflict"))
    other = root.get_span_context()
    with tracer.start_as_current_span("rollout.reconcile", context=trace.set_span_in_context(trace.INVALID_SPAN),
                                      links=[Link(other, {"reflex.why": "advances"})]) as tick:
        tick.set_status(Status(StatusCode.OK))


def test_every_line_is_the_proto_json_mapping_of_the_sdk_spans(recorded: Any) -> None:
    provider, path, memory = recorded
    _a_chain(provider)
    sdk: dict[str, ReadableSpan] = {s.name: s for s in memory.get_finished_spans()}
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3  # one ExportTraceServiceRequest per export, one export per ended span
    spans = {}
    for line in lines:
        message = to_proto(line)
        # printed back by protobuf: exactly our line (ids hex, 64-bit integers as strings, enums as integers)
        back = json_format.MessageToDict(message, use_integers_for_enums=True)
        assert _ids(back, _b64_to_hex) == json.loads(line)
        (resource_spans,) = message.resource_spans
        attrs = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
        assert attrs["service.name"] == "reflex-test"
        (scope_spans,) = resource_spans.scope_spans
        assert (scope_spans.scope.name, scope_spans.scope.version) == ("reflex.test", "1.2.3")
        for span in scope_spans.spans:
            spans[span.name] = span
    for name, span in spans.items():
        ctx = sdk[name].get_span_context()
        assert ctx is not None
        assert span.trace_id == ctx.trace_id.to_bytes(16, "big") and span.span_id == ctx.span_id.to_bytes(8, "big")
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (sdk[name].start_time, sdk[name].end_time)
    root, child, tick = spans["data.arrival"], spans["PUT"], spans["rollout.reconcile"]
    # the remote parent from the traceparent: its trace, its span id as parent, flagged remote (trace.proto)
    assert root.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c" and root.parent_span_id.hex() == "b7ad6b7169203331"
    assert root.flags & 0x100 and root.flags & 0x200 and root.flags & 0xFF == 1
    assert child.parent_span_id == root.span_id and child.flags & 0x200 == 0
    assert not tick.parent_span_id and tick.trace_id != root.trace_id
    assert (root.kind, child.kind, tick.kind) == (5, 3, 1)  # CONSUMER, CLIENT, INTERNAL in trace.proto's numbers
    value = {kv.key: kv.value for kv in root.attributes}
    assert value["reflex.files"].int_value == 3 and value["reflex.ratio"].double_value == 0.25
    assert value["reflex.ok"].bool_value is True and value["reflex.big"].int_value == 2**62
    assert [v.string_value for v in value["reflex.blobs"].array_value.values] == ["a.csv", "b.csv"]
    assert [v.int_value for v in value["reflex.counts"].array_value.values] == [1, 2]
    assert value["reflex.inf"].double_value == float("inf") and value["reflex.ninf"].double_value == float("-inf")
    assert value["reflex.nan"].double_value != value["reflex.nan"].double_value  # NaN
    assert value["reflex.text"].string_value == "ünïcode ✓"
    (event,) = root.events
    assert event.name == "claimed" and event.attributes[0].value.string_value == "arrivals/heart/b1"
    assert (child.status.code, child.status.message) == (2, "409 Conflict") and tick.status.code == 1
    (link,) = tick.links
    assert link.trace_id == root.trace_id and link.span_id == root.span_id
    assert link.attributes[0].key == "reflex.why"
    # what the Collector writes as it is: lower-case hex, times as strings, defaults left out, status always
    raw = json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert raw["traceId"] == raw["traceId"].lower() and isinstance(raw["startTimeUnixNano"], str)
    assert "traceState" not in raw and "droppedAttributesCount" not in raw and "status" in raw


def test_read_spans_gives_back_what_was_written(recorded: Any) -> None:
    provider, path, memory = recorded
    _a_chain(provider)
    read = {s.name: s for s in read_spans(path)}
    sdk = {s.name: s for s in memory.get_finished_spans()}
    assert set(read) == set(sdk)
    root = read["data.arrival"]
    assert root.trace_id == f"{sdk['data.arrival'].context.trace_id:032x}"
    assert root.parent_id == "b7ad6b7169203331" and read["PUT"].parent_id == root.span_id
    assert root.attributes["reflex.blobs"] == ["a.csv", "b.csv"] and root.attributes["reflex.big"] == 2**62
    assert root.attributes["reflex.inf"] == float("inf") and root.resource["service.name"] == "reflex-test"
    assert read["PUT"].status_code == 2 and read["PUT"].status_message == "409 Conflict"
    assert read["rollout.reconcile"].links == ((root.trace_id, root.span_id),)
    assert root.events[0][0] == "claimed" and root.duration_ns == sdk["data.arrival"].end_time - sdk[
        "data.arrival"].start_time


def test_the_projects_own_examples_parse_and_read(tmp_path: Path) -> None:
    """The OTLP example of opentelemetry-proto and the file-exporter lines of the specification (fixtures)."""
    example = (FIXTURES / "trace.json").read_text()
    message = to_proto(example)
    assert message.resource_spans[0].scope_spans[0].spans[0].name == "I'm a server span"
    one_line = tmp_path / "trace.jsonl"
    one_line.write_text(json.dumps(json.loads(example)) + "\n")
    (span,) = read_spans(one_line)
    assert (span.trace_id, span.span_id, span.parent_id) == ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174",
                                                             "eee19b7ec3c1b173")  # hex is case-insensitive
    assert (span.kind, span.start_ns, span.end_ns) == (2, 1544712660000000000, 1544712661000000000)
    assert span.attributes == {"my.span.attr": "some value"} and span.scope == "my.library"
    stats = SpanFileStats()
    spans = list(read_spans(FIXTURES / "file-exporter-traces.jsonl", stats))
    assert stats.lines == 4 and not stats.damaged and not stats.torn_tail
    assert [s.name for s in spans] == ["operationA", "operationB"] * 4
    assert spans[0].status_code == 2 and spans[0].status_message == "status-cancelled"
    assert spans[0].events[0][2] == {"span-event-attr": "span-event-attr-val"} and len(spans[1].links) == 2


def test_a_torn_last_line_and_a_damaged_line_are_skipped_not_fatal(recorded: Any) -> None:
    provider, path, _ = recorded
    _a_chain(provider)
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    path.write_bytes(lines[0] + b'{"resourceSpans":[{"resou\n' + b"".join(lines[1:]) + lines[0][: len(lines[0]) // 2])
    stats = SpanFileStats()
    names = [s.name for s in read_spans(path, stats)]
    assert names == ["PUT", "data.arrival", "rollout.reconcile"]  # every whole line, in file order
    assert stats.damaged == 1 and stats.torn_tail and stats.lines == 5
    assert list(read_spans(path.parent / "absent.jsonl")) == []


_WRITER = """
import sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from shared.core.trace_file import OtlpJsonFileExporter
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(sys.argv[1])))
tracer = provider.get_tracer("writer")
for i in range(int(sys.argv[3])):
    with tracer.start_as_current_span(f"{sys.argv[2]}-{i}", attributes={"pad": sys.argv[2] * 20000}):
        pass
"""


def test_two_processes_appending_at_once_leave_only_whole_lines(tmp_path: Path) -> None:
    """Lines of ~20 KB, far above PIPE_BUF, from two processes at once: O_APPEND + one write() per line."""
    path = tmp_path / "traces.jsonl"
    count = 150
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, str(count)], cwd=ROOT)
               for name in ("a", "b")]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    stats = SpanFileStats()
    spans = list(read_spans(path, stats))
    assert not stats.damaged and not stats.torn_tail and stats.lines == 2 * count
    assert sorted(s.name for s in spans) == sorted(f"{n}-{i}" for n in "ab" for i in range(count))
    assert all(s.attributes["pad"] == s.name[0] * 20000 for s in spans)


def test_configure_file_tracing_adds_the_exporter_once_and_only_when_set(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    monkeypatch.delenv("REFLEX_TRACE_FILE", raising=False)
    assert configure_file_tracing(provider) is None
    path = tmp_path / "run" / "traces.jsonl"
    monkeypatch.setenv("REFLEX_TRACE_FILE", str(path))
    assert configure_file_tracing(provider) is provider
    assert configure_file_tracing(provider) is provider  # the same file again: not a second exporter
    with provider.get_tracer("t").start_as_current_span("once"):
        pass
    assert [s.name for s in read_spans(path)] == ["once"]
    provider.shutdown()


def test_traceparent_values() -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert trace_id_of(good) == trace_id_of("0AF7651916CD43DD8448EB211C80319C") == "0af7651916cd43dd8448eb211c80319c"
    assert trace_id_of("0" * 32) is None and trace_id_of("job-1") is None and trace_id_of(7) is None
    assert parent_context({"traceparent": good}) is not None
    for bad in ("", "00-xyz-b7ad6b7169203331-01", "00-00000000000000000000000000000000-b7ad6b7169203331-01"):
        assert parent_context({TRACEPARENT_TAG: bad}) is None
    assert parent_context({}) is None
