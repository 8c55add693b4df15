"""Recording the spans a test's reactions make, with the OpenTelemetry SDK's own in-memory exporter.

One SDK `TracerProvider` per test process, installed as the global provider once (OpenTelemetry allows setting it
only once per process), so azure-core's HTTP spans (which use the global provider) land in the same exporter as
Reflex's. Reflex records only between `shared.core.trace.activate` and `deactivate`, which the `spans` fixture
calls around one test: every other test runs on the no-op API, as the app does without a connection string or a
trace file, so no span, tag or `traceparent` leaks into tests that assert exact requests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from opentelemetry import trace as otel
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.core import trace

__all__ = ["hex_ids", "recording", "spans_named", "traceparent_of"]

_EXPORTER = InMemorySpanExporter()
_PROVIDER: TracerProvider | None = None


def _provider() -> TracerProvider:
    global _PROVIDER
    if _PROVIDER is None:
        current = otel.get_tracer_provider()
        if isinstance(current, TracerProvider):  # something in this process set an SDK provider first: use it
            _PROVIDER = current
        else:
            _PROVIDER = TracerProvider()
            otel.set_tracer_provider(_PROVIDER)
        _PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    return _PROVIDER


def recording() -> Iterator[InMemorySpanExporter]:
    """Reflex's and azure-core's spans recorded into the returned exporter until the generator is closed."""
    _EXPORTER.clear()
    trace.activate(_provider())
    try:
        yield _EXPORTER
    finally:
        trace.deactivate()
        _EXPORTER.clear()


def spans_named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of `span` as the W3C traceparent spells them."""
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def traceparent_of(span: ReadableSpan) -> str:
    """The W3C traceparent naming `span` (version 00; its flags: sampled, and random as SDK 1.45 sets it)."""
    trace_id, span_id = hex_ids(span)
    assert span.context is not None
    return f"00-{trace_id}-{span_id}-{int(span.context.trace_flags):02x}"
