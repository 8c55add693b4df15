"""Property tests of the rollout: random observation sequences and failures injected at random steps.

Hypothesis drives the behavioural fake platform (time, metrics, provisioning failures, platform errors,
failing smoke tests, newer registrations, worker restarts, and the endpoint or a deployment passing through
Creating, Updating or Scaling) while the reconciler ticks. After every step: traffic sums to 0 or 100, traffic
is never assigned to a deployment that is not Succeeded, mirroring follows Azure ML's limits, and no deployment
is ever asked to be deleted while it takes traffic. Once the chaos stops, every rollout reaches a terminal state
within a bounded number of ticks, and no rollout ever ended because of a transitional state alone before its
deadline. A pure property checks the same at `decide` over random observations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from conftest import Clock, make_deps, make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollout_helpers import ENDPOINT, MODEL, ROLLOUT_ENV, invariant_problems, live_endpoint, register_model

import functions.rollout  # noqa: F401  (registers the handlers)
from shared.core import reaction
from shared.core.errors import PermanentError, TransientError
from shared.core.platform import DeploymentMetrics, InvokeResult
from shared.core.state import MemoryStateStore
from shared.rollout.flow import rollout_key
from shared.rollout.machine import Finish, Observation, RollBack, Rollout, decide
from shared.rollout.plan import Plan, deployment_name, split_traffic
from testing.fake_platform import FakePlatform

OPS = ["get_endpoint", "set_traffic", "begin_create_deployment", "begin_create_endpoint", "invoke",
       "get_deployment_metrics", "update_model_tags", "begin_delete_deployment", "check_quota", "get_model"]


class WatchedPlatform(FakePlatform):
    """The fake, plus a record of any delete requested while the deployment takes traffic (an invariant)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.unsafe_deletes: list[str] = []

    def begin_delete_deployment(self, endpoint: str, deployment: str) -> None:
        ep = self.endpoints.get(endpoint)
        if ep is not None and (ep.traffic.get(deployment, 0) or ep.mirror.get(deployment, 0)):
            self.unsafe_deletes.append(deployment)
        super().begin_delete_deployment(endpoint, deployment)


metrics = st.sampled_from([
    DeploymentMetrics(200, 0, 40.0, 300), DeploymentMetrics(200, 0, 40.0, 300), DeploymentMetrics(0, 0, None, 300),
    DeploymentMetrics(200, 30, 40.0, 300), DeploymentMetrics(200, 0, 5000.0, 300), DeploymentMetrics(200, 0, 90.0, 300),
])
chaos = st.fixed_dictionaries({
    "advance": st.sampled_from([5.0, 60.0, 130.0, 400.0, 2000.0]),
    "metrics": metrics,
    "inject": st.one_of(st.none(), st.tuples(st.sampled_from(OPS), st.booleans())),
    "smoke_ok": st.integers(0, 4).map(lambda n: n != 0),
    "fail_next_deployment": st.integers(0, 6).map(lambda n: n == 0),
    "newer_model": st.integers(0, 12).map(lambda n: n == 0),
    "restart": st.integers(0, 5).map(lambda n: n == 0),
    "transit": st.one_of(st.none(), st.none(), st.tuples(st.sampled_from(["new", "previous", "endpoint"]),
                                                         st.sampled_from(["Updating", "Scaling"]),
                                                         st.sampled_from([30.0, 200.0, 1000.0]))),
})
plans = st.fixed_dictionaries({
    "REFLEX_ROLLOUT_STEPS": st.sampled_from(["10,50,100", "100", "25,100", "5,20,60,100"]),
    "REFLEX_MIRROR_PERCENT": st.sampled_from(["0", "0", "20"]),
    "REFLEX_DELETE_ON_ROLLBACK": st.sampled_from(["true", "false"]),
    "REFLEX_MIN_REQUESTS": st.sampled_from(["0", "0", "100"]),
    "REFLEX_BAKE_SECONDS": st.sampled_from(["0", "300"]),
})


def _responder(ok: bool) -> Any:
    def answer(ep: str, dep: str, body: Mapping[str, Any]) -> InvokeResult:
        if not ok:
            return InvokeResult(500, "upstream error", 3.0)
        return InvokeResult(200, json.dumps([0] * len(body.get("data", [0]))), 12.0)

    return answer


def _check(fp: WatchedPlatform) -> None:
    assert invariant_problems(fp) == []
    assert fp.unsafe_deletes == []


def _transit(fp: WatchedPlatform, who: str, state: str, seconds: float, version: int) -> None:
    """Put the endpoint, the newest deployment or the one before it in `state` for `seconds` (if they exist).

    Only what Azure ML reports for a resource that exists: Updating or Scaling (Creating happens once, while
    provisioning, which the fake does by itself; `decide` alone is tested with Creating anywhere below)."""
    ep = fp.endpoints.get(ENDPOINT)
    if ep is None:
        return
    if who == "endpoint":
        fp.transition(ENDPOINT, state="Updating" if state == "Scaling" else state, seconds=seconds)  # no Scaling
        return
    names = [deployment_name(MODEL, str(v)) for v in range(version, 0, -1)] + ["blue"]
    present = [n for n in names if n in ep.deployments]
    pick = present[0 if who == "new" else 1] if len(present) > (0 if who == "new" else 1) else None
    if pick is not None:
        fp.transition(ENDPOINT, pick, state=state, seconds=seconds)


TRANSITIONAL_CAUSE = re.compile(r"\b(Creating|Updating|Scaling)\b")
BOUNDED = ("deadline passed", "rollback could not restore traffic")  # allowed: the deadline, or a held rollback


def _false_rollbacks(records: list[Rollout]) -> list[str]:
    """RollBack or failed-Finish steps whose reason is a transitional state, other than the deadline's."""
    bad = []
    for r in records:
        for h in r.history:
            ended = h.get("action") == "RollBack" or (h.get("action") == "Finish" and h.get("status") == "failed")
            detail = str(h.get("detail", ""))
            if ended and TRANSITIONAL_CAUSE.search(detail) and not detail.startswith(BOUNDED):
                bad.append(detail)
    return bad


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, steps=st.lists(chaos, min_size=1, max_size=25), first_model=st.booleans(),
       traffic_update_seconds=st.sampled_from([0.0, 0.0, 30.0]))
def test_invariants_hold_and_every_rollout_terminates(plan: dict[str, str], steps: list[dict[str, Any]],
                                                      first_model: bool, traffic_update_seconds: float) -> None:
    env = {**ROLLOUT_ENV, **plan, "REFLEX_RETAIN_SECONDS": "600", "REFLEX_ROLLOUT_DEADLINE_SECONDS": "20000",
           "REFLEX_MIRROR_SECONDS": "300"}
    clock = Clock()
    fp = WatchedPlatform(clock=clock, provisioning_seconds=120, traffic_update_seconds=traffic_update_seconds)
    state = MemoryStateStore()
    deps = make_deps(make_settings(**env), state=state, platform=fp, clock=clock)
    if not first_model:
        live_endpoint(fp)
    version = 2
    raw = register_model(fp, str(version))
    reaction.run("rollout.model_registered", raw, event_id=raw["id"], deps=deps)
    _check(fp)
    for chaos_step in steps:
        clock.advance(chaos_step["advance"])
        for v in range(1, version + 1):
            fp.metrics[(ENDPOINT, deployment_name(MODEL, str(v)))] = chaos_step["metrics"]
        fp.responder = _responder(chaos_step["smoke_ok"])
        if chaos_step["fail_next_deployment"]:
            fp.failing_deployments.add(deployment_name(MODEL, str(version + 1)))
        if chaos_step["inject"]:
            op, permanent = chaos_step["inject"]
            error = PermanentError(f"{op}: rejected with 400") if permanent else TransientError(f"{op}: 503")
            fp.inject(op, error)
        if chaos_step["transit"]:
            _transit(fp, *chaos_step["transit"], version=version)
        if chaos_step["restart"]:
            deps = make_deps(make_settings(**env), state=state, platform=fp, clock=clock)
        if chaos_step["newer_model"]:
            version += 1
            fp._injected.clear()  # registration itself is not under test here
            raw = register_model(fp, str(version))
            try:
                reaction.run("rollout.model_registered", raw, event_id=raw["id"], deps=deps)
            except TransientError:
                pass  # Event Grid would redeliver; the reconciler advances the record meanwhile
        else:
            try:
                reaction.run("rollout.reconcile", {"past_due": False}, deps=deps)
            except TransientError:
                pass
        _check(fp)
    # the chaos stops: healthy metrics, no injections; every rollout must now finish
    fp._injected.clear()
    fp.responder = _responder(True)
    for v in range(1, version + 1):
        fp.metrics[(ENDPOINT, deployment_name(MODEL, str(v)))] = DeploymentMetrics(200, 0, 40.0, 300)
    for _ in range(80):
        clock.advance(400.0)
        reaction.run("rollout.reconcile", {"past_due": False}, deps=deps)
        _check(fp)
        found = state.get(rollout_key(ENDPOINT))
        assert found is not None
        record = Rollout.from_dict(found.value)
        if record.terminal and not record.queued:
            break
    else:
        raise AssertionError(f"rollout did not terminate: {record.status} {record.history[-3:]}")
    archived = [Rollout.from_dict(found.value) for found in state.records("rollout-history/")]
    assert _false_rollbacks([record, *archived]) == []
    ep = fp.get_endpoint(ENDPOINT)
    if record.status == "done":
        assert ep is not None and ep.traffic.get(record.deployment) == 100
    if record.status in ("rolled_back", "failed") and not first_model and ep is not None:
        assert sum(ep.traffic.values()) == 100  # the live deployment kept (or got back) all traffic


# ------------------------------------------------------------------------------------------------ decide alone
PLAN = Plan(steps=(10, 50, 100), bake_seconds=600, retain_seconds=600, deadline_seconds=20_000,
            max_error_rate=0.02, max_latency_ms=1000, max_latency_ratio=1.5, min_requests=0)
TRANSIT_STATES = ["Succeeded", "Creating", "Updating", "Scaling"]
NEW = "new"


@st.composite
def healthy_but_transitional(draw: st.DrawFn) -> tuple[Rollout, Observation, float]:
    """A rollout in any active or promoted phase whose platform is healthy except for transitional states."""
    status = draw(st.sampled_from(["creating", "smoke", "mirroring", "baking", "promoted", "retiring"]))
    phase = -1 if status == "mirroring" else draw(st.integers(0, 2))
    plan = replace(PLAN, mirror_percent=20, mirror_seconds=300) if status == "mirroring" else PLAN
    started = draw(st.floats(0.0, 5_000.0))
    r = Rollout("ep", "m", "2", NEW, plan, created_at=0.0, status=status, previous="blue",
                previous_traffic={"blue": 100}, phase=phase, phase_started_at=started, started_at=0.0,
                deadline=PLAN.deadline_seconds, smoke={"ok": True})
    traffic = ({"blue": 100, NEW: 0} if status in ("creating", "smoke", "mirroring")
               else split_traffic({"blue": 100}, NEW, PLAN.steps[phase]) if status == "baking"
               else {"blue": 0, NEW: 100})
    states = {"blue": draw(st.sampled_from(TRANSIT_STATES)), NEW: draw(st.sampled_from(TRANSIT_STATES))}
    good = DeploymentMetrics(200, 0, 40.0, 300)
    o = Observation(endpoint_state=draw(st.sampled_from(["Succeeded", "Creating", "Updating"])), traffic=traffic,
                    mirror={NEW: 20} if status == "mirroring" else {}, deployments=states,
                    new_metrics=good if states[NEW] == "Succeeded" else None,
                    live_metrics=good if states["blue"] == "Succeeded" else None)
    return r, o, draw(st.floats(started, PLAN.deadline_seconds - 1))


@settings(max_examples=400, deadline=None)
@given(case=healthy_but_transitional())
def test_a_transitional_state_alone_never_ends_a_rollout_before_its_deadline(
        case: tuple[Rollout, Observation, float]) -> None:
    r, o, now = case
    action = decide(r, o, now)
    assert not isinstance(action, RollBack), action
    assert not (isinstance(action, Finish) and action.status == "failed"), action
