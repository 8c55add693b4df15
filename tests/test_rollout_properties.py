"""Property tests of the rollout: random observation sequences and failures injected at random steps.

Hypothesis drives the behavioural fake platform (time, metrics, provisioning failures, platform errors,
failing smoke tests, newer registrations, worker restarts) while the reconciler ticks. After every step:
traffic sums to 0 or 100, traffic never points at a deployment that is not Succeeded, mirroring follows
Azure ML's limits, and no deployment is ever asked to be deleted while it takes traffic. Once the chaos stops,
every rollout reaches a terminal state within a bounded number of ticks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from conftest import Clock, make_deps, make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollout_helpers import ENDPOINT, MODEL, ROLLOUT_ENV, invariant_problems, live_endpoint, register_model

import functions.rollout  # noqa: F401  (registers the handlers)
from shared import reaction
from shared.errors import PermanentError, TransientError
from shared.platform import DeploymentMetrics, InvokeResult
from shared.rollout_flow import rollout_key
from shared.rollout_machine import Rollout
from shared.rollout_plan import deployment_name
from shared.state import MemoryStateStore
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, steps=st.lists(chaos, min_size=1, max_size=25), first_model=st.booleans())
def test_invariants_hold_and_every_rollout_terminates(plan: dict[str, str], steps: list[dict[str, Any]],
                                                      first_model: bool) -> None:
    env = {**ROLLOUT_ENV, **plan, "REFLEX_RETAIN_SECONDS": "600", "REFLEX_ROLLOUT_DEADLINE_SECONDS": "20000",
           "REFLEX_MIRROR_SECONDS": "300"}
    clock = Clock()
    fp = WatchedPlatform(clock=clock, provisioning_seconds=120)
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
    ep = fp.get_endpoint(ENDPOINT)
    if record.status == "done":
        assert ep is not None and ep.traffic.get(record.deployment) == 100
    if record.status in ("rolled_back", "failed") and not first_model and ep is not None:
        assert sum(ep.traffic.values()) == 100  # the live deployment kept (or got back) all traffic
