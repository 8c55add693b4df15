"""One trace per chain: every reaction runs in an OpenTelemetry span, and the W3C trace context travels with the work.

Why: a blob upload, the training job it caused, the registration, the rollout's steps and the promotion are separate
invocations, hours apart, in different workers. Application Insights (or any OpenTelemetry backend) can show them as
one trace only if each invocation continues the context the previous one left on the work itself. Where it rides:

* Azure ML jobs and models: Reflex's tag `reflex.traceparent` (`TAG`; shared/batches/training.py `training_request`,
  the gate's registration in shared/registration/flow.py, evaluation jobs). Azure ML keeps tags and hands them back
  in its events (`data.runTags`, `data.modelTags`: MicrosoftDocs/azure-docs
  articles/event-grid/event-schema-machine-learning.md; tests/events/), so the reaction to RunCompleted or
  ModelRegistered continues the trace of the reaction that submitted the job or registered the model;
* `Reflex.*` events: `data.traceparent` (`TRACEPARENT`, shared/core/publish.py). The name is the CloudEvents
  distributed-tracing extension's attribute (cloudevents/spec cloudevents/extensions/distributed-tracing.md: a W3C
  `traceparent`, https://www.w3.org/TR/trace-context/#traceparent-header); Reflex publishes in the Event Grid
  schema, which is not extensible (https://learn.microsoft.com/azure/event-grid/event-schema: "a proprietary,
  nonextensible ... event format"), so the attribute goes in `data`. A CloudEvents-schema delivery that carries the
  extension attribute at the top level is read too (shared/core/events.py `trace_carrier`);
* the rollout record: its `trace` field (shared/rollout/machine.py), written by the reaction that recorded the
  rollout; every reconcile step of that rollout is a span parented to it (`chain_step`), and the timer tick's own
  span links to each chain it advanced (span links, not parenthood: a tick serves many chains).

A carried value that is not a valid traceparent (wrong form, all-zero ids, a non-string, too long) is ignored: the
reaction starts a new root, and nothing about tracing can fail a reaction (`context_of` never raises).

Where spans go (`configure`, once per process, on the first reaction): with `APPLICATIONINSIGHTS_CONNECTION_STRING`
set, shared/core/log.py has loaded the Azure Monitor distro, whose tracer provider exports to Application Insights;
with `REFLEX_TRACE_FILE` set (the local stack), an SDK provider writes OTLP/JSON lines to that file
(shared/core/trace_file.py `configure_file_tracing`, one line as each span ends); with neither, only the
OpenTelemetry API's no-op tracer runs: no span is recorded, but a context that arrived is still handed on
unchanged (the no-op tracer keeps the parent's span context). When a provider is active, azure-core's own spans
(every Storage and Azure ML request) are switched on by setting
`azure.core.settings.settings.tracing_implementation = "opentelemetry"` (azure-core-tracing-opentelemetry's
`OpenTelemetrySpan`: Azure/azure-sdk-for-python sdk/core/azure-core-tracing-opentelemetry README; azure-core
`settings.py` `_tracing_implementation_dict`), and they nest under the reaction span because they start in its
context. Cold start: nothing here imports OpenTelemetry at module level; the SDK loads only for the trace file
(the distro loads it for Application Insights), the light API on the first reaction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from shared.core.settings import Settings

__all__ = ["TAG", "TRACEPARENT", "activate", "active", "annotate", "chain_step", "configure", "context_of",
           "deactivate", "failed", "reaction_span", "tags", "traceparent"]

log = logging.getLogger("reflex.trace")

TRACEPARENT = "traceparent"   # the key in a Reflex.* event's data (the CloudEvents extension attribute's name)
TAG = "reflex.traceparent"    # the tag on Azure ML jobs and models
_SCOPE = "reflex"
_MAX_CARRIED = 512            # a traceparent is 55 characters (version 00); anything this long is not one
_MAX_TEXT = 1024              # an attribute string (a reason) kept on a span
_MAX_IDS = 20                 # ids of one ref kind kept as a span attribute
_APPINSIGHTS = "APPLICATIONINSIGHTS_CONNECTION_STRING"


class _State:
    provider: TracerProvider | None = None
    configured = False
    azure_core = False


_state = _State()


def configure(settings: Settings | None = None) -> None:
    """Start recording once per process: Application Insights (the distro's provider), the trace file (added to the
    distro's provider when both are set), else the no-op API.

    `settings.trace_file` is REFLEX_TRACE_FILE; the Application Insights check reads the same environment variable
    shared/core/log.py `configure` read to load the distro (it runs first, in `reaction.run`).
    """
    if _state.configured or _state.provider is not None:
        return
    _state.configured = True
    path = settings.trace_file if settings is not None else os.environ.get("REFLEX_TRACE_FILE", "")
    try:
        provider: TracerProvider | None = None
        if os.environ.get(_APPINSIGHTS):
            from opentelemetry import trace

            provider = trace.get_tracer_provider()
        if path:  # the file too (beside Application Insights when both are set)
            from shared.core.trace_file import configure_file_tracing

            provider = configure_file_tracing(_sdk(provider), path=path) or provider
        if provider is not None:
            activate(provider)
    except Exception:  # tracing is an aid: a broken exporter must not stop the reactions
        log.exception("tracing could not be configured; reactions run without spans")


def _sdk(provider: TracerProvider | None) -> Any:
    """`provider` when it is an SDK provider a span processor can be added to (the distro's), else None."""
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    return provider if isinstance(provider, SdkTracerProvider) else None


def activate(provider: TracerProvider) -> None:
    """Record Reflex's spans with `provider` and switch azure-core's HTTP spans on (they use the global provider)."""
    from azure.core.settings import settings

    _state.provider = provider
    if settings.tracing_implementation() is None:
        settings.tracing_implementation = "opentelemetry"
        _state.azure_core = True


def deactivate() -> None:
    """Back to the no-op API (tests end their recording with it); azure-core's tracing off if Reflex turned it on."""
    _state.provider = None
    if _state.azure_core:
        from azure.core.settings import settings

        settings.tracing_implementation.unset_value()
        _state.azure_core = False


def active() -> bool:
    return _state.provider is not None


def _tracer() -> Tracer:
    from opentelemetry import trace

    return _state.provider.get_tracer(_SCOPE) if _state.provider is not None else trace.NoOpTracer()


def context_of(carried: Any) -> Context | None:
    """The context a carried traceparent names, or None when it is missing or not a valid W3C traceparent.

    Parsed by OpenTelemetry's own W3C propagator (`TraceContextTextMapPropagator`, which refuses a malformed
    header, version ff and all-zero ids); never raises, whatever `carried` is.
    """
    if not isinstance(carried, str) or not carried.strip() or len(carried) > _MAX_CARRIED:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract({TRACEPARENT: carried.strip()})
        return context if trace.get_current_span(context).get_span_context().is_valid else None
    except Exception:
        return None


def traceparent() -> str:
    """The W3C traceparent of the current span (to put on the work this span hands on), or "" when there is none."""
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return ""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def tags() -> dict[str, str]:
    """`{TAG: traceparent}` for an Azure ML job or model created in the current span, or {} outside any span."""
    current = traceparent()
    return {TAG: current} if current else {}


def _continued(carried: Any) -> Context | None:
    """The chain's context from `carried`; the span running now (a timer tick, a sweep) links to that chain."""
    parent = context_of(carried)
    if parent is not None:
        from opentelemetry import trace

        chain = trace.get_current_span(parent).get_span_context()
        outer = trace.get_current_span()
        if outer.get_span_context().is_valid and outer.get_span_context().trace_id != chain.trace_id:
            outer.add_link(chain, {"reflex.link": "advances"})
    return parent


@contextmanager
def reaction_span(name: str, carried: Any, event_id: str) -> Iterator[Span]:
    """The span a reaction runs in: `reflex.<name>`, continuing the chain `carried` names (else a new root, or a
    child of the reaction running now). An exception leaving the block is recorded on it and sets its status to ERROR.

    It is the incoming side of a function invocation, so its kind is CONSUMER for an event and SERVER for a timer
    tick, with `faas.trigger` "pubsub" or "timer" (OpenTelemetry semantic conventions, FaaS spans:
    https://opentelemetry.io/docs/specs/semconv/faas/faas-spans/, "for the server/consumer span on the incoming side,
    faas.trigger MUST be set"); the Azure Monitor exporter writes both kinds as `requests` rows, the others as
    dependencies (azure-monitor-opentelemetry-exporter export/trace/_exporter.py `_convert_span_to_envelope`).
    """
    from opentelemetry.trace import SpanKind

    parent = _continued(carried)
    with _tracer().start_as_current_span(
            f"reflex.{name}", context=parent, kind=SpanKind.CONSUMER if event_id else SpanKind.SERVER,
            attributes={"reflex.reaction": name, "reflex.event_id": event_id or "-",
                        "faas.trigger": "pubsub" if event_id else "timer"}) as span:
        yield span


@contextmanager
def chain_step(name: str, carried: Any, **attributes: str) -> Iterator[Span]:
    """One chain's step inside a timer tick: a span `reflex.<name>` parented to the chain `carried` names (the
    rollout record's `trace`), linked from the tick's span; a child of the tick when the chain carries none."""
    parent = _continued(carried)
    with _tracer().start_as_current_span(f"reflex.{name}", context=parent,
                                         attributes={f"reflex.{k}": v for k, v in attributes.items()}) as span:
        yield span


def annotate(span: Span, status: str, reason: str, refs: Mapping[str, Sequence[str]],
             extra: Mapping[str, Any] | None = None) -> None:
    """The outcome on `span`: `reflex.outcome`, `reflex.reason` and one `reflex.<kind>` attribute per ref kind the
    ledger records (shared/core/ledger.py REF_KINDS: batch, job, model, rollout, deployment, endpoint, ...)."""
    try:
        span.set_attribute("reflex.outcome", status)
        if reason:
            span.set_attribute("reflex.reason", reason[:_MAX_TEXT])
        for kind, ids in refs.items():
            kept = [str(i) for i in ids if i][:_MAX_IDS]
            if kept:
                span.set_attribute(f"reflex.{kind}", kept)
        for key, value in (extra or {}).items():
            if isinstance(value, (str, bool, int, float)):
                span.set_attribute(f"reflex.{key}", value)
    except Exception:  # never let an attribute fail the reaction
        log.debug("could not annotate span", exc_info=True)


def failed(span: Span, exc: BaseException, description: str) -> None:
    """Record `exc` on `span` and mark it ERROR (a reaction that dead-lettered: the exception does not leave it)."""
    from opentelemetry.trace import Status, StatusCode

    try:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, description[:_MAX_TEXT]))
    except Exception:
        log.debug("could not record the exception on the span", exc_info=True)
