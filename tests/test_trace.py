"""shared/core/trace.py: where trace context is read and written, poison trace context, errors on spans, the no-op
API, the trace file, and azure-core's HTTP spans on the Azure ML requests (the real SDK at the HTTP boundary).

The whole chain, upload to promotion, is tests/test_trace_chain.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aml_harness import azure_platform
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import shared.handlers  # noqa: F401 - registers the reactions' handlers, as function_app does
from shared.core import events, reaction, trace
from shared.core.errors import TransientError
from shared.core.platform import TrainingRequest
from shared.core.publish import Publisher
from testing.aml_service import AmlService
from testing.fake_platform import FakePlatform
from tests.conftest import make_deps, make_settings
from tests.trace_support import hex_ids, recording, spans_named, traceparent_of

ROOT = Path(__file__).resolve().parent.parent
VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"   # the W3C spec's own example
MALFORMED: list[Any] = [
    "garbage", "", "   ", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",          # a field short
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",                            # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",                            # all-zero span id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",                            # version ff: invalid
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",                            # upper case hex
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",                             # 31 hex digits
    VALID + "x" * 600,                                                                    # far too long
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\ud800",                      # a lone surrogate
    12345, 1.5, True, None, ["x"], {"traceparent": VALID},
]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    yield from recording()


EVENTS = ROOT / "tests" / "events"  # the documented Azure ML event forms (tests/events/README.md)


def _fixture(name: str) -> dict[str, Any]:
    (event,) = json.loads((EVENTS / name).read_text())
    return dict(event)


def _run_event(tags: dict[str, Any]) -> dict[str, Any]:
    """The docs' RunCompleted sample (its job is not in the workspace: the gate skips it), with `tags` as runTags."""
    event = _fixture("run_completed.json")
    return {**event, "data": {**event["data"], "runTags": tags}}


def _model_registered(tags: dict[str, Any]) -> dict[str, Any]:
    """The docs' ModelRegistered sample, PascalCase keys (no endpoint serves its model: the rollout skips it)."""
    event = _fixture("model_registered_pascal.json")
    return {**event, "data": {**event["data"], "ModelTags": {**event["data"]["ModelTags"], **tags}}}


def _reflex_registered(data_extra: dict[str, Any]) -> dict[str, Any]:
    """`Reflex.ModelRegistered` as the gate publishes it (Event Grid schema), for a model no endpoint serves."""
    return {"id": "ev-reg", "topic": "reflex", "subject": "models/unserved:1", "eventType": "Reflex.ModelRegistered",
            "eventTime": "2026-12-01T10:00:00Z", "dataVersion": "1",
            "data": {"model": "unserved", "version": "1", **data_extra}}


def _cloud_registered(extension: dict[str, Any]) -> dict[str, Any]:
    """The docs' ModelRegistered in the CloudEvents 1.0 schema, trace context as its extension attribute."""
    return {**_fixture("model_registered_cloudevent.json"), **extension}


CARRIERS = {
    "run tag": ("registration.run_event", lambda v: _run_event({trace.TAG: v})),
    "model tag": ("rollout.model_registered", lambda v: _model_registered({trace.TAG: v})),
    "event data": ("rollout.model_registered", lambda v: _reflex_registered({trace.TRACEPARENT: v})),
    "cloudevent attribute": ("rollout.model_registered", lambda v: _cloud_registered({trace.TRACEPARENT: v})),
}
PLAIN = {"run tag": lambda: _run_event({}), "model tag": lambda: _model_registered({}),
         "event data": lambda: _reflex_registered({}), "cloudevent attribute": lambda: _cloud_registered({})}


def _deps() -> Any:
    return make_deps(make_settings(), platform=FakePlatform())


@pytest.mark.parametrize("where", sorted(CARRIERS))
def test_a_reaction_continues_the_trace_its_event_carries(where: str, spans: InMemorySpanExporter) -> None:
    name, build = CARRIERS[where]
    raw = build(VALID)
    outcome = reaction.run(name, raw, event_id=raw["id"], deps=_deps())
    assert outcome.status == "skipped"
    (span,) = spans_named(list(spans.get_finished_spans()), f"reflex.{name}")
    assert hex_ids(span)[0] == VALID.split("-")[1]
    assert span.parent is not None and f"{span.parent.span_id:016x}" == VALID.split("-")[2]
    assert span.parent.is_remote and span.kind == SpanKind.CONSUMER
    assert (span.attributes or {})["faas.trigger"] == "pubsub"
    attributes = span.attributes or {}
    assert (attributes["reflex.reaction"], attributes["reflex.event_id"], attributes["reflex.outcome"]) == \
        (name, raw["id"], "skipped")
    assert events.trace_carrier(raw) == VALID


@pytest.mark.parametrize("where", sorted(CARRIERS))
@pytest.mark.parametrize("carried", MALFORMED, ids=repr)
def test_a_malformed_traceparent_is_ignored_and_never_breaks_the_reaction(
        where: str, carried: Any, spans: InMemorySpanExporter) -> None:
    """Poison trace context (a person's tag, a hand-made event): the reaction does what it does without it, in a
    new root span."""
    name, build = CARRIERS[where]
    raw = build(carried)
    plain = reaction.run(name, PLAIN[where](), event_id="plain", deps=_deps())
    outcome = reaction.run(name, raw, event_id=raw["id"], deps=_deps())
    assert (outcome.status, outcome.reason) == (plain.status, plain.reason)
    runs = spans_named(list(spans.get_finished_spans()), f"reflex.{name}")
    assert len(runs) == 2 and all(s.parent is None for s in runs)
    assert hex_ids(runs[0])[0] != hex_ids(runs[1])[0]  # each a trace of its own
    assert all(s.status.status_code == StatusCode.UNSET for s in runs)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                  max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.dictionaries(st.sampled_from(["traceparent", "data", "runTags", "modelTags", "id"]), _JSON))
def test_reading_trace_context_never_raises(data: Any, top: dict[str, Any]) -> None:
    """Whatever JSON an event holds, finding and parsing its trace context never raises."""
    for raw in (data, top, {**top, "data": data}, {"data": {"runTags": data, "modelTags": data, "traceparent": data}}):
        carried = events.trace_carrier(raw)
        assert isinstance(carried, str)
        assert trace.context_of(carried) is None or carried.strip().startswith("00-")


def test_a_dead_letter_records_the_exception_on_an_error_span(spans: InMemorySpanExporter) -> None:
    broken = _run_event({})
    # InvalidEvent: dead-lettered, the exception does not leave the reaction
    broken["data"] = {k: v for k, v in broken["data"].items() if k != "runId"}
    outcome = reaction.run("registration.run_event", broken, event_id="ev-bad", deps=_deps())
    assert outcome.status == "dead-lettered"
    (span,) = spans_named(list(spans.get_finished_spans()), "reflex.registration.run_event")
    assert span.status.status_code == StatusCode.ERROR and "data.runId is missing" in (span.status.description or "")
    (exception,) = [e for e in span.events if e.name == "exception"]
    assert str((exception.attributes or {})["exception.type"]).endswith("InvalidEvent")
    assert (span.attributes or {})["reflex.outcome"] == "dead-lettered"
    assert (span.attributes or {})["reflex.dead_letter"] == (outcome.details["dead_letter"],)


def test_a_transient_failure_leaves_the_span_as_an_error_and_is_redelivered(spans: InMemorySpanExporter) -> None:
    platform = FakePlatform()
    platform.inject("get_job", TransientError("throttled (429)", retry_after=5.0))
    with pytest.raises(TransientError):
        reaction.run("registration.run_event", _run_event({trace.TAG: VALID}), event_id="ev-429",
                     deps=make_deps(make_settings(), platform=platform))
    (span,) = spans_named(list(spans.get_finished_spans()), "reflex.registration.run_event")
    assert span.status.status_code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert (span.attributes or {})["reflex.outcome"] == "transient-failure"
    assert hex_ids(span)[0] == VALID.split("-")[1]  # the redelivery will continue the same chain


def test_without_a_provider_nothing_is_recorded_and_a_carried_context_is_handed_on_unchanged() -> None:
    """The no-op API (no connection string, no trace file): no span, yet a chain's context still travels."""
    assert not trace.active()
    assert trace.traceparent() == "" and trace.tags() == {}
    publisher = Publisher()
    with trace.reaction_span("registration.run_event", VALID, "ev"):
        assert trace.traceparent() == VALID and trace.tags() == {trace.TAG: VALID}
        published = publisher.publish("ModelRegistered", "models/m:1", {"model": "m", "version": "1"})
    assert published.data[trace.TRACEPARENT] == VALID
    with trace.reaction_span("rollout.reconcile", "", ""):
        assert trace.traceparent() == ""
        assert "traceparent" not in publisher.publish("RolloutPromoted", "e", {"endpoint": "e"}).data


def test_a_published_event_keeps_a_traceparent_its_data_already_has(spans: InMemorySpanExporter) -> None:
    with trace.reaction_span("rollout.reconcile", "", ""):
        kept = Publisher().publish("X", "s", {trace.TRACEPARENT: VALID})
        added = Publisher().publish("X", "s", {"a": 1})
    (tick,) = spans.get_finished_spans()
    assert kept.data[trace.TRACEPARENT] == VALID and added.data[trace.TRACEPARENT] == traceparent_of(tick)


def test_a_step_of_a_chain_is_its_child_and_the_tick_links_to_it(spans: InMemorySpanExporter) -> None:
    with trace.reaction_span("rollout.reconcile", "", ""):
        with trace.chain_step("rollout.step", VALID, record="rollouts/e"):
            pass
        with trace.chain_step("rollout.step", "not a traceparent", record="rollouts/f"):
            pass
    chained, orphan, tick = spans.get_finished_spans()
    assert tick.parent is None and tick.kind == SpanKind.SERVER
    assert (tick.attributes or {})["faas.trigger"] == "timer"
    assert chained.parent is not None and hex_ids(chained)[0] == VALID.split("-")[1]
    assert f"{chained.parent.span_id:016x}" == VALID.split("-")[2]
    assert orphan.parent is not None and orphan.parent.span_id == tick.context.span_id  # no chain: the tick's child
    assert [(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in tick.links] == \
        [(VALID.split("-")[1], VALID.split("-")[2])]
    assert (chained.attributes or {})["reflex.record"] == "rollouts/e"


def test_a_reaction_run_from_a_tick_joins_its_chain_and_the_tick_links_to_it(spans: InMemorySpanExporter) -> None:
    """The sweep hands a job that ended unheard to the gate's reaction (shared/core/unheard.py, runTags from the job):
    that nested run continues the job's chain, not the tick's trace, and the tick's span links to the chain."""
    with trace.reaction_span("data.sweep", "", ""):
        outcome = reaction.run("registration.run_event", _run_event({trace.TAG: VALID}), event_id="unheard:x",
                               deps=_deps())
    assert outcome.status == "skipped"
    gate, sweep = spans.get_finished_spans()
    assert gate.parent is not None and f"{gate.parent.span_id:016x}" == VALID.split("-")[2]
    assert hex_ids(gate)[0] == VALID.split("-")[1] != hex_ids(sweep)[0]
    assert [f"{link.context.span_id:016x}" for link in sweep.links] == [VALID.split("-")[2]]


def test_the_training_job_s_request_carries_the_trace_and_its_http_span_is_under_the_reaction(
        spans: InMemorySpanExporter) -> None:
    """The real azure-ai-ml SDK against the Azure ML REST stand-in: the job PUT's tags hold `reflex.traceparent`
    (Reflex's tags go verbatim into `properties.tags`, tests/test_azureml_contract.py), and azure-core's own span
    for that PUT is a CLIENT child of the reaction's span, whose context goes out as the W3C `traceparent` header."""
    svc = AmlService()
    with azure_platform(svc) as p, trace.reaction_span("data.arrival", "", "ev-blob") as span:
        p.register_data(name="sales", version="7", path="azureml://datastores/d/paths/sales/7/", tags={})
        request = TrainingRequest(job_name="train-trace", experiment_name="reflex", data_name="sales",
                                  data_version="7", mode="command", task="classification", label_column="y",
                                  compute="cpu-cluster", environment="azureml:reflex-train:3",
                                  tags={"reflex.trigger": "blob", **trace.tags()})
        p.submit_training(request)
        ours = trace.traceparent()
    put = next(r for r in svc.requests if r.method == "PUT" and r.path.endswith("/jobs/train-trace"))
    assert put.body["properties"]["tags"] == {"reflex.trigger": "blob", trace.TAG: ours, "reflex.managed": "true"}
    done = list(spans.get_finished_spans())
    (arrival,) = spans_named(done, "reflex.data.arrival")
    assert traceparent_of(arrival) == ours and span.get_span_context().span_id == arrival.context.span_id
    header = put.headers.get("traceparent", "")
    http = {f"{s.context.span_id:016x}": s for s in done if s.kind == SpanKind.CLIENT}
    assert header.split("-")[1] == hex_ids(arrival)[0]
    sent = http[header.split("-")[2]]  # the span azure-core started for this very request
    ancestor = sent
    by_id = {s.context.span_id: s for s in done}
    while ancestor.parent is not None and ancestor.parent.span_id in by_id:
        ancestor = by_id[ancestor.parent.span_id]
    assert ancestor is arrival


def _otlp_request(line: str) -> trace_service_pb2.ExportTraceServiceRequest:
    """Parse one OTLP/JSON line with the OTLP protobuf schema itself (its ids hex, as OTLP/JSON says; protobuf's
    own JSON mapping wants base64 bytes, so they are converted for the parse)."""
    body = json.loads(line)
    for resource in body["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                for link in span.get("links", []):
                    link["traceId"] = base64.b64encode(bytes.fromhex(link["traceId"])).decode()
                    link["spanId"] = base64.b64encode(bytes.fromhex(link["spanId"])).decode()
    return json_format.ParseDict(body, trace_service_pb2.ExportTraceServiceRequest())


def test_the_trace_file_holds_the_reactions_spans_as_otlp_json_lines(tmp_path: Path) -> None:
    """REFLEX_TRACE_FILE in a fresh process (the global provider is set once per process): the reaction's span,
    continuing the carried context, in OTLP/JSON that the OTLP protobuf schema accepts; azure-core's tracing on."""
    path = tmp_path / "run" / "trace.jsonl"
    code = f"""
import json, sys
import shared.handlers
from shared.core import reaction
from azure.core.settings import settings
from testing.fake_platform import FakePlatform
from tests.conftest import make_deps, make_settings
from tests.test_trace import _run_event
deps = make_deps(make_settings(REFLEX_TRACE_FILE={str(path)!r}), platform=FakePlatform())
print(reaction.run("registration.run_event", _run_event({{"reflex.traceparent": {VALID!r}}}), event_id="ev-f",
                   deps=deps).status)
print(settings.tracing_implementation().__name__)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("APPLICATIONINSIGHTS_CONNECTION_STRING",
                                                            "REFLEX_TRACE_FILE")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["skipped", "OpenTelemetrySpan"]
    lines = path.read_text().splitlines()
    spans = [(resource, span) for line in lines for resource in json.loads(line)["resourceSpans"]
             for scope in resource["scopeSpans"] for span in scope["spans"]]
    (resource, span), = [(r, s) for r, s in spans if s["name"] == "reflex.registration.run_event"]
    assert (span["traceId"], span["parentSpanId"]) == tuple(VALID.split("-")[1:3])
    assert span["kind"] == 5 and int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert attributes["reflex.outcome"] == {"stringValue": "skipped"}
    run_id = _run_event({})["data"]["runId"]
    assert attributes["reflex.job"] == {"arrayValue": {"values": [{"stringValue": run_id}]}}
    assert {"key": "service.name", "value": {"stringValue": "reflex"}} in resource["resource"]["attributes"]
    for line in lines:
        parsed = _otlp_request(line)
        assert parsed.resource_spans and parsed.resource_spans[0].scope_spans[0].spans
