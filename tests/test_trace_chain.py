"""One trace per chain (#19.1), asserted from the SDK's in-memory exporter on the fake platform and Azurite.

The real reactions run event by event (tests/real_chain.py): upload -> `data.arrival` (the training job's tag)
-> RunCompleted -> `registration.run_event` (the model's tag, `Reflex.ModelRegistered`) -> ModelRegistered ->
`rollout.model_registered` (the rollout record's `trace`) -> `rollout.reconcile` ticks (a `reflex.rollout.step`
span per rollout, the promotion among them). Storage requests go to Azurite through azure-storage-blob, so
azure-core's own HTTP spans are real too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.core import trace
from shared.rollout.flow import rollout_key
from tests.conftest import Clock
from tests.real_chain import MODEL, World, make_world
from tests.trace_support import hex_ids, recording, spans_named, traceparent_of


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    yield from recording()


@pytest.fixture
def world(container_factory: Callable[[str], Any], clock: Clock) -> World:
    return make_world(container_factory, clock)


def _by_id(spans: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans if s.context is not None}


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _the(spans: list[ReadableSpan], **attributes: str) -> ReadableSpan:
    found = [s for s in spans if all((s.attributes or {}).get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, [(s.name, dict(s.attributes or {})) for s in spans]
    return found[0]


def _submitting(spans: list[ReadableSpan]) -> ReadableSpan:
    """The arrival span that submitted the batch's job (the completion marker's)."""
    (found,) = [s for s in spans_named(spans, "reflex.data.arrival") if "reflex.job" in (s.attributes or {})]
    return found


def test_upload_to_promotion_is_one_trace(world: World, spans: InMemorySpanExporter) -> None:
    chain = world.chain("heart/b1", upto="promoted")
    done = spans.get_finished_spans()

    # the upload: the arrival that completed the batch submitted the job, from its span, and says so on it
    arrival = _submitting(list(done))
    trace_id = hex_ids(arrival)[0]
    assert arrival.parent is None and arrival.kind == SpanKind.CONSUMER
    assert (arrival.attributes or {})["reflex.job"] == (chain.job,)
    assert (arrival.attributes or {})["reflex.batch"] == (chain.batch,)
    job_tags = world.platform.jobs[chain.job].tags
    assert job_tags[trace.TAG] == traceparent_of(arrival)

    # the run's event carried the tag; the registration continues the upload's trace, as its child
    registration = _the(spans_named(list(done), "reflex.registration.run_event"))
    assert hex_ids(registration)[0] == trace_id and _parent(registration) == arrival.context.span_id
    assert (registration.attributes or {})["reflex.outcome"] == "acted"
    assert (registration.attributes or {})["reflex.model"] == (chain.model,)
    name, _, version = chain.model.partition(":")
    assert world.platform.models[(name, version)].tags[trace.TAG] == traceparent_of(registration)
    published = {e.type: e for e in world.deps.publisher.sent}
    assert published["Reflex.ModelRegistered"].data[trace.TRACEPARENT] == traceparent_of(registration)

    # the rollout starts as the registration's child and records the chain for its steps
    started = _the(spans_named(list(done), "reflex.rollout.model_registered"))
    assert hex_ids(started)[0] == trace_id and _parent(started) == registration.context.span_id
    record = world.deps.state.get(rollout_key(world.rollout().endpoint))  # type: ignore[union-attr]
    assert record is not None and record.value["trace"] == traceparent_of(started)

    # every reconcile step of that rollout, the promotion among them, is a span of the chain under that start
    steps = spans_named(list(done), "reflex.rollout.step")
    assert steps and {hex_ids(s)[0] for s in steps} == {trace_id}
    assert {_parent(s) for s in steps} == {started.context.span_id}
    actions = [(s.attributes or {}).get("reflex.action") for s in sorted(steps, key=lambda s: s.start_time or 0)]
    assert "Promote" in actions and actions.index("CreateDeployment") < actions.index("Promote")
    promote = next(s for s in steps if (s.attributes or {}).get("reflex.action") == "Promote")
    assert (promote.attributes or {})["reflex.rollout"] == (f"{world.rollout().endpoint}/{chain.model}",)  # type: ignore[union-attr]

    # a tick is its own root, linked to the chain it advanced; each step it took is its child in the chain's trace
    ticks = spans_named(list(done), "reflex.rollout.reconcile")
    assert ticks and all(t.parent is None and hex_ids(t)[0] != trace_id for t in ticks)
    by_id = _by_id(done)
    for tick in ticks:
        assert [(f"{link.context.trace_id:032x}", link.context.span_id) for link in tick.links] == \
            [(trace_id, started.context.span_id)]
    assert all(by_id[_parent(s) or 0] is started for s in steps)

    # once the rollout has ended, ticks add nothing to its trace
    spans.clear()
    world.tick()
    (idle,) = spans_named(list(spans.get_finished_spans()), "reflex.rollout.reconcile")
    assert not idle.links and not spans_named(list(spans.get_finished_spans()), "reflex.rollout.step")

    # what the rollout published on its way carries the step's context: the chain's trace
    rollout_events = [e for e in world.deps.publisher.sent if e.type.startswith("Reflex.Rollout")]
    assert rollout_events and all(e.data[trace.TRACEPARENT].split("-")[1] == trace_id for e in rollout_events)
    promoted = [e for e in rollout_events if e.type == "Reflex.RolloutPromoted"]
    assert promoted and promoted[0].data[trace.TRACEPARENT] == traceparent_of(promote)

    # azure-core's HTTP spans (state and ledger writes to Azurite) nest under the reactions, in the chain's trace
    http = [s for s in done if s.kind == SpanKind.CLIENT and hex_ids(s)[0] == trace_id]
    assert http, "no azure-core HTTP span in the chain's trace"

    def reaction_of(span: ReadableSpan) -> ReadableSpan | None:
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            if span.name.startswith("reflex."):
                return span
        return None

    under = {reaction_of(s).name for s in http if reaction_of(s) is not None}  # type: ignore[union-attr]
    assert {"reflex.data.arrival", "reflex.registration.run_event", "reflex.rollout.step"} <= under
    assert all(reaction_of(s) is not None for s in http)


def test_a_version_found_by_the_reconciler_is_rolled_out_in_its_registration_s_trace(
        world: World, spans: InMemorySpanExporter) -> None:
    """The model's ModelRegistered never arrives: the tick that discovers the version continues the chain from the
    model's tag, and the rollout it records (and its first step) are in the registration's trace."""
    chain = world.chain("heart/b4", upto="registered")
    world.tick()
    done = list(spans.get_finished_spans())
    registration = _the(spans_named(done, "reflex.registration.run_event"))
    (found,) = spans_named(done, "reflex.rollout.model_registered")
    assert (found.attributes or {})["reflex.discovered"] == "true"
    assert _parent(found) == registration.context.span_id and hex_ids(found)[0] == hex_ids(registration)[0]
    assert (found.attributes or {})["reflex.model"] == (chain.model,)
    rollout = world.rollout()
    assert rollout is not None and rollout.trace == traceparent_of(found)
    (step,) = spans_named(done, "reflex.rollout.step")
    assert _parent(step) == found.context.span_id
    (tick,) = spans_named(done, "reflex.rollout.reconcile")
    assert {f"{link.context.trace_id:032x}" for link in tick.links} == {hex_ids(registration)[0]}


def test_the_health_timer_s_rollback_of_an_overdue_rollout_is_a_step_of_its_chain(
        container_factory: Callable[[str], Any], clock: Clock, spans: InMemorySpanExporter) -> None:
    """REFLEX_HEALTH_REMEDIATE: a canary left past its deadline is rolled back by the health tick through the
    operator's rollback (shared/rollout/flow.py `operator_rollback`, as `python -m reflex rollback` does), in a span
    of the rollout's trace; the tick links to it and the RolloutRolledBack event carries that trace."""
    world = make_world(container_factory, clock, REFLEX_HEALTH_REMEDIATE="true", REFLEX_HEALTH_GRACE_SECONDS="600")
    world.chain("heart/b5", auc=0.8)  # v1 serves all traffic
    world.chain("heart/b6", auc=0.95, upto="rolling")  # v2 beats it: a canary beside v1
    rolling = world.roll_until_split()
    clock.advance(rolling.deadline - clock() + 700)  # past the deadline and the grace
    spans.clear()
    outcome = world.run("monitoring.health", {"past_due": False}, "")
    assert outcome.status == "acted" and world.rollout().status == "rolled_back"  # type: ignore[union-attr]
    done = list(spans.get_finished_spans())
    (rollback,) = spans_named(done, "reflex.rollout.rollback")
    assert traceparent_of(rollback).split("-")[1] == rolling.trace.split("-")[1]
    assert rollback.parent is not None and f"{rollback.parent.span_id:016x}" == rolling.trace.split("-")[2]
    assert (rollback.attributes or {})["reflex.outcome"] == "acted"
    assert (rollback.attributes or {})["reflex.by"] == "health"
    (tick,) = spans_named(done, "reflex.monitoring.health")
    assert [f"{link.context.span_id:016x}" for link in tick.links] == [rolling.trace.split("-")[2]]
    (rolled_back,) = [e for e in world.deps.publisher.sent if e.type == "Reflex.RolloutRolledBack"]
    assert rolled_back.data[trace.TRACEPARENT] == traceparent_of(rollback)


def test_every_blob_of_a_batch_runs_in_its_own_span(world: World, spans: InMemorySpanExporter) -> None:
    """Each BlobCreated is its own reaction: the files' arrivals are roots that wait, the marker's starts the job."""
    for raw in world.upload("heart/b2"):
        world.deliver(raw)
    arrivals = spans_named(list(spans.get_finished_spans()), "reflex.data.arrival")
    assert len(arrivals) == 3 and all(a.parent is None for a in arrivals)
    assert len({hex_ids(a)[0] for a in arrivals}) == 3
    assert [(a.attributes or {})["reflex.event_id"] for a in arrivals] == \
        [(a.attributes or {})["reflex.event_id"] for a in sorted(arrivals, key=lambda a: a.start_time or 0)]
    assert sum(1 for a in arrivals if "reflex.job" in (a.attributes or {})) == 1


def test_a_failed_job_s_reaction_is_in_the_upload_s_trace_and_records_no_error(
        world: World, spans: InMemorySpanExporter) -> None:
    """A training failure is an outcome (TrainingFailed), not an error of the reaction: status stays unset."""
    outcomes = [world.deliver(raw) for raw in world.upload("heart/b3")]
    job = str(outcomes[-1].details["job"])
    world.platform.finish_job(job, "Failed", error="train.py: error: bad label")
    event = world.last_event("RunStatusChanged")
    world.run("registration.run_event", event, event["id"])
    done = list(spans.get_finished_spans())
    arrival = _submitting(done)
    failed = _the(spans_named(done, "reflex.registration.run_event"))
    assert _parent(failed) == arrival.context.span_id and hex_ids(failed)[0] == hex_ids(arrival)[0]
    assert failed.status.status_code == StatusCode.UNSET
    published = next(e for e in world.deps.publisher.sent if e.type == "Reflex.TrainingFailed")
    assert published.data[trace.TRACEPARENT] == traceparent_of(failed)
    assert MODEL  # the chain's model name is configured (tests/real_chain.py)
