"""Rollout flows end to end on real Azurite state and the behavioural fake platform, through the decorated
Functions (`on_model_registered`, `reconcile`) and the reaction runner. The clock is a test clock: no sleeps.

Each test checks the invariants (traffic sums to 0/100, only Succeeded deployments take traffic) after every
step, and asserts what the platform ended with, not which functions were called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from conftest import Clock, OutcomeLedger, make_deps, make_settings
from rollout_helpers import ENDPOINT, MODEL, ROLLOUT_ENV, invariant_problems, live_endpoint, register_model

import functions.rollout as rollout_fn
from shared.core import deps as deps_module
from shared.core import reaction
from shared.core.deps import Deps
from shared.core.errors import PermanentError
from shared.core.platform import CHAMPION_TAG, DeploymentMetrics, InvokeResult
from shared.core.reaction import Outcome
from shared.core.state import BlobStateStore, StateStore
from shared.rollout.flow import rollout_key
from shared.rollout.machine import Rollout
from shared.rollout.plan import deployment_name
from testing.fake_platform import FakePlatform

pytestmark = pytest.mark.azurite

TICK = 130.0
ENV = {**ROLLOUT_ENV, "REFLEX_BAKE_SECONDS": "300", "REFLEX_RETAIN_SECONDS": "600"}
V2 = deployment_name(MODEL, "2")
V3 = deployment_name(MODEL, "3")
GOOD = DeploymentMetrics(200, 0, 40.0, 300)
LIVE = DeploymentMetrics(800, 1, 35.0, 300)


@dataclass
class World:
    clock: Clock
    fp: FakePlatform
    state: StateStore
    env: dict[str, str]

    def deps(self) -> Deps:
        """Fresh dependencies over the same state and platform: what a restarted worker would build."""
        return make_deps(make_settings(**self.env), state=self.state, platform=self.fp, clock=self.clock)

    def record(self, endpoint: str = ENDPOINT) -> Rollout:
        found = self.state.get(rollout_key(endpoint))
        assert found is not None
        return Rollout.from_dict(found.value)


@pytest.fixture
def world(blob_state: BlobStateStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    clock = Clock()
    fp = FakePlatform(clock=clock, provisioning_seconds=120)
    w = World(clock, fp, blob_state, dict(ENV))
    current = {"deps": w.deps()}
    monkeypatch.setattr(deps_module, "get_deps", lambda: current["deps"])
    w.current = current  # type: ignore[attr-defined]
    yield w


def grid_event(raw: dict[str, Any]) -> func.EventGridEvent:
    return func.EventGridEvent(id=raw["id"], data=raw["data"], topic=raw["topic"], subject=raw["subject"],
                               event_type=raw["eventType"], event_time=datetime.now(UTC),
                               data_version=raw["dataVersion"])


def deliver(w: World, raw: dict[str, Any]) -> Outcome:
    """Deliver through the decorated Event Grid function, and return the outcome the runner recorded; then drive
    the reconciler once at the same instant: the event only records the rollout (Event Grid's 30 s, #14.7) and
    the first step is the reconciler's."""
    deps = w.current["deps"]  # type: ignore[attr-defined]
    before, deps.ledger = deps.ledger, OutcomeLedger(w.clock)
    try:
        rollout_fn.on_model_registered(grid_event(raw))
        outcomes = [outcome for _, outcome in deps.ledger.outcomes]
    finally:
        deps.ledger = before
    assert invariant_problems(w.fp) == []
    tick(w, 0)
    return outcomes[-1]


def tick(w: World, seconds: float = TICK) -> Outcome:
    w.clock.advance(seconds)
    outcome = reaction.run("rollout.reconcile", {"past_due": False}, deps=w.current["deps"])  # type: ignore[attr-defined]
    assert invariant_problems(w.fp) == [], outcome
    return outcome


def run_to_end(w: World, *, limit: int = 60, each: Callable[[World], None] | None = None) -> Rollout:
    for _ in range(limit):
        if each:
            each(w)
        tick(w)
        if w.record().terminal and not w.record().queued:
            return w.record()
    raise AssertionError(f"rollout did not finish in {limit} ticks: {w.record().status}")


def healthy(w: World) -> None:
    w.fp.metrics[(ENDPOINT, V2)] = GOOD
    w.fp.metrics[(ENDPOINT, V3)] = GOOD
    w.fp.metrics[(ENDPOINT, "blue")] = LIVE


def to_canary_step(w: World, phase: int = 0) -> None:
    """A live endpoint, model 2 registered, and healthy ticks until it bakes at canary step `phase`."""
    live_endpoint(w.fp)
    deliver(w, register_model(w.fp, "2"))
    for _ in range(10):
        healthy(w)
        tick(w)
        if w.record().status == "baking" and w.record().phase == phase:
            return
    raise AssertionError(f"never reached canary step {phase}: {w.record().status} {w.record().phase}")


def sent(w: World) -> list[str]:
    return [e.type for e in w.current["deps"].publisher.sent]  # type: ignore[attr-defined]


def test_happy_path_through_the_decorated_functions(world: World) -> None:
    live_endpoint(world.fp)
    outcome = deliver(world, register_model(world.fp, "2"))
    assert outcome.status == "acted" and world.record().status == "creating"
    rollout_fn.reconcile(TimerRequest(past_due=False))  # the timer function itself: provisioning not done yet
    assert world.record().status == "creating"
    final = run_to_end(world, each=healthy)
    assert final.status == "done" and final.reason == "promoted; previous deployment retired"
    assert [u[1] for u in world.fp.traffic_updates] == [
        {"blue": 90, V2: 10}, {"blue": 50, V2: 50}, {"blue": 0, V2: 100}]
    ep = world.fp.get_endpoint(ENDPOINT)
    assert ep is not None and dict(ep.traffic) == {V2: 100} and [d.name for d in ep.deployments] == [V2]
    assert world.fp.models[(MODEL, "2")].tags.get(CHAMPION_TAG) == "true"
    assert CHAMPION_TAG not in world.fp.models[(MODEL, "1")].tags
    assert sent(world) == ["Reflex.RolloutStarted"] + ["Reflex.RolloutStepCompleted"] * 5 + [
        "Reflex.RolloutPromoted", "Reflex.RolloutStepCompleted", "Reflex.RolloutCompleted"]
    deployment = world.fp.get_deployment(ENDPOINT, V2)
    assert deployment is not None and deployment.tags["reflex.parent"] == f"{MODEL}:2"


def test_model_registered_three_times_makes_one_rollout(world: World) -> None:
    live_endpoint(world.fp)
    raw = register_model(world.fp, "2")
    outcomes = [deliver(world, raw) for _ in range(3)]
    assert [o.status for o in outcomes] == ["acted", "duplicate", "duplicate"]
    assert world.fp.calls["begin_create_deployment"] == 2  # live_endpoint's blue, then v2 once
    assert sent(world).count("Reflex.RolloutStarted") == 1
    run_to_end(world, each=healthy)
    assert deliver(world, raw).status == "duplicate"  # redelivered after it finished: still one rollout
    assert world.state.keys("rollout-history/") == []


def test_supersede_mid_rollout_takes_traffic_back_first(world: World) -> None:
    to_canary_step(world, 1)
    assert dict(world.fp.get_endpoint(ENDPOINT).traffic) == {"blue": 50, V2: 50}  # type: ignore[union-attr]
    updates_before = len(world.fp.traffic_updates)
    outcome = deliver(world, register_model(world.fp, "3"))
    assert outcome.status == "acted" and outcome.reason.startswith("superseded the running rollout")
    assert world.fp.traffic_updates[updates_before][1] == {"blue": 100, V2: 0}  # one update back, first
    assert world.fp.get_deployment(ENDPOINT, V2) is None  # REFLEX_DELETE_ON_ROLLBACK=true
    assert world.record().ref == f"{MODEL}:3" and world.record().previous == "blue"
    archived = [Rollout.from_dict(r.value) for r in world.state.records("rollout-history/")]
    assert [(a.ref, a.status) for a in archived] == [(f"{MODEL}:2", "superseded")]
    final = run_to_end(world, each=healthy)
    assert final.status == "done" and world.fp.get_endpoint(ENDPOINT).traffic == {V3: 100}  # type: ignore[union-attr]
    assert world.fp.models[(MODEL, "3")].tags.get(CHAMPION_TAG) == "true"


def test_older_version_out_of_order_is_skipped(world: World) -> None:
    live_endpoint(world.fp)
    old = register_model(world.fp, "2")
    deliver(world, register_model(world.fp, "3"))
    outcome = deliver(world, old)
    assert outcome.status == "skipped" and "older" in outcome.reason
    assert world.record().ref == f"{MODEL}:3"


def test_failed_smoke_test_rolls_back_without_touching_live_traffic(world: World) -> None:
    live_endpoint(world.fp)
    world.fp.responder = lambda ep, dep, body: InvokeResult(200, '{"error": "model not loaded"}', 5.0)
    deliver(world, register_model(world.fp, "2"))
    final = run_to_end(world)
    assert final.status == "rolled_back" and final.reason.startswith("smoke test failed: no predictions")
    assert world.fp.traffic_updates == []  # the new deployment never took traffic
    assert world.fp.get_deployment(ENDPOINT, V2) is None
    rolled = [e for e in world.current["deps"].publisher.sent if e.type == "Reflex.RolloutRolledBack"]  # type: ignore[attr-defined]
    assert len(rolled) == 1 and rolled[0].data["evidence"]["ok"] is False


def test_metric_breach_at_50_percent_is_one_traffic_update_back(world: World) -> None:
    world.env["REFLEX_DELETE_ON_ROLLBACK"] = "false"
    world.current["deps"] = world.deps()  # type: ignore[attr-defined]
    live_endpoint(world.fp)
    deliver(world, register_model(world.fp, "2"))

    def breach_at_50(w: World) -> None:
        healthy(w)
        ep = w.fp.get_endpoint(ENDPOINT)
        if ep is not None and ep.traffic.get(V2) == 50:
            w.fp.metrics[(ENDPOINT, V2)] = DeploymentMetrics(400, 40, 45.0, 300)

    final = run_to_end(world, each=breach_at_50)
    assert final.status == "rolled_back" and final.reason == "at 50%: error rate 0.100 (40/400) exceeds 0.020"
    assert [u[1] for u in world.fp.traffic_updates] == [{"blue": 90, V2: 10}, {"blue": 50, V2: 50},
                                                        {"blue": 100, V2: 0}]
    kept = world.fp.get_deployment(ENDPOINT, V2)
    assert kept is not None and kept.succeeded  # kept at 0% to inspect
    assert final.evidence["new"]["errors"] == 40
    assert world.fp.models[(MODEL, "1")].tags.get(CHAMPION_TAG) == "true"


def test_latency_breach_holds_the_traffic_and_is_judged_again_over_the_next_minute(world: World) -> None:
    """#18.6: a ratio breach neither advances nor rolls back at once; the flow reads the metrics over whole
    minutes after it, and the canary goes on (the breach was a moment) or rolls back (still slower there)."""
    windows: list[int] = []
    read = world.fp.get_deployment_metrics

    def spy(endpoint: str, deployment: str, *, window_seconds: int) -> DeploymentMetrics:
        windows.append(window_seconds)
        return read(endpoint, deployment, window_seconds=window_seconds)

    world.fp.get_deployment_metrics = spy  # type: ignore[method-assign]
    to_canary_step(world, 0)
    world.fp.metrics[(ENDPOINT, V2)] = replace(GOOD, latency_ms=400.0)
    tick(world, 10)
    held = world.record()
    assert held.status == "baking" and held.suspect is not None and held.phase == 0
    assert "holding the traffic as it is to confirm it" in held.history[-1]["detail"]
    updates = len(world.fp.traffic_updates)
    world.fp.metrics[(ENDPOINT, V2)] = GOOD            # the next minute: as fast as the live deployment
    windows.clear()
    tick(world, 130)
    start = (int(held.suspect["at"] // 60) + 1) * 60
    assert windows == [int(world.clock() - start)] * 2  # the new and the live deployment, since that minute
    after = world.record()
    assert after.suspect is None and after.phase == 0 and len(world.fp.traffic_updates) == updates
    assert after.history[-1]["detail"].startswith("latency confirmed as sound over the minute after")
    tick(world, 300)                                   # the bake is over: the next step
    assert world.record().phase == 1 and len(world.fp.traffic_updates) == updates + 1

    world.fp.metrics[(ENDPOINT, V2)] = replace(GOOD, latency_ms=400.0)   # slower at 50%, and it stays so
    final = run_to_end(world)
    assert final.status == "rolled_back" and "confirmed over the minute after the first breach" in final.reason
    assert final.evidence["first"]["new"]["latency_ms"] == 400.0
    assert [h["action"] for h in final.history[-3:]] == ["Wait", "RollBack", "RollBack"]


def test_first_model_on_a_new_endpoint(world: World) -> None:
    deliver(world, register_model(world.fp, "1"))
    final = run_to_end(world)
    assert final.status == "done" and final.previous is None
    v1 = deployment_name(MODEL, "1")
    assert world.fp.get_endpoint(ENDPOINT).traffic == {v1: 100}  # type: ignore[union-attr]
    assert [u[1] for u in world.fp.traffic_updates] == [{v1: 100}]
    assert world.fp.models[(MODEL, "1")].tags.get(CHAMPION_TAG) == "true"


def test_quota_failure_leaves_the_live_deployment_untouched(world: World) -> None:
    world.fp.quota_limits["standardDSv2Family"] = 6
    live_endpoint(world.fp)
    outcome = deliver(world, register_model(world.fp, "2"))
    record = world.record()
    assert outcome.status == "acted" and record.status == "failed"
    # 1 x 4 cores plus the 20% upgrade reserve Azure ML keeps (whole instances): 8 cores
    assert "needs 8 standardDSv2Family cores; 4 of 6 are in use, 2 free" in record.reason
    assert world.fp.traffic_updates == [] and world.fp.get_deployment(ENDPOINT, V2) is None
    assert world.fp.get_endpoint(ENDPOINT).traffic == {"blue": 100}  # type: ignore[union-attr]
    assert "Reflex.RolloutFailed" in sent(world)


def test_awaiting_approval_starts_once_approved(world: World) -> None:
    live_endpoint(world.fp)
    outcome = deliver(world, register_model(world.fp, "2", tags={"reflex.approval": "pending"}))
    assert outcome.status == "skipped" and "awaiting approval" in outcome.reason
    assert tick(world).status == "skipped" and world.record().status == "pending"
    world.fp.update_model_tags(MODEL, "2", set_tags={"reflex.approval": "approved"})
    assert run_to_end(world, each=healthy).status == "done"


def test_unconfigured_and_non_mlflow_models_are_skipped(world: World) -> None:
    outcome = deliver(world, register_model(world.fp, "1", name="other-model"))
    assert outcome.status == "skipped" and "no endpoint configured" in outcome.reason
    raw = register_model(world.fp, "1")
    world.fp.models[(MODEL, "1")] = replace(world.fp.models[(MODEL, "1")], type="custom_model")
    outcome = deliver(world, raw)
    assert outcome.status == "skipped" and "not an MLflow model" in outcome.reason
    assert world.state.keys("rollouts/") == []


def test_smoke_request_from_the_state_container_or_a_clear_failure_then_a_new_attempt(world: World) -> None:
    """A model without lineage (registered outside Reflex) and no smoke request: the rollout fails at once,
    saying why and what to do; once the owner writes the request, a new attempt rolls that same version out,
    while a redelivery of its registration stays a duplicate."""
    from shared.rollout.retry import plan_attempt

    world.env["REFLEX_SMOKE_REQUEST"] = ""
    world.current["deps"] = world.deps()  # type: ignore[attr-defined]
    live_endpoint(world.fp)
    registered = register_model(world.fp, "2")
    deliver(world, registered)
    failed = world.record()
    assert failed.status == "failed" and "no smoke request for reflex-model:2" in failed.reason
    assert "no reflex.batch or reflex.data tag" in failed.reason and f"reflex rollout {MODEL}:2" in failed.reason
    assert not world.fp.get_endpoint(ENDPOINT).deployment(V2)  # nothing was created
    world.state.create(f"smoke/{MODEL}.json", {"input_data": {"columns": ["a"], "data": [[1], [2], [3]]}})
    seen: list[Any] = []
    world.fp.responder = lambda ep, dep, body: seen.append(body) or InvokeResult(200, '{"predictions": [1,0,1]}', 9.0)
    assert deliver(world, registered).status == "duplicate"  # a redelivery never restarts a finished attempt
    attempt = plan_attempt(world.current["deps"], MODEL, "2", by="ops", why="smoke request written")  # type: ignore[attr-defined]
    assert attempt.retry_of == failed.event_id and not attempt.refusal
    assert deliver(world, attempt.event).status == "acted"  # through the Event Grid function, as any event
    assert deliver(world, attempt.event).status == "duplicate"
    assert run_to_end(world, each=healthy).status == "done"
    assert world.fp.get_endpoint(ENDPOINT).traffic == {V2: 100}
    assert seen and seen[0]["input_data"]["data"] == [[1], [2], [3]]
    assert world.state.keys("rollout-history/")  # the failed attempt is archived


@pytest.mark.parametrize("fail_at", range(9))
def test_injected_failure_at_every_step_rolls_back(world: World, fail_at: int) -> None:
    """A platform error while observing at tick `fail_at` rolls the rollout back (or fails it cleanly)."""
    live_endpoint(world.fp)
    deliver(world, register_model(world.fp, "2"))
    ticks = 0

    def inject(w: World) -> None:
        nonlocal ticks
        healthy(w)
        if ticks == fail_at:
            w.fp.inject("get_endpoint", PermanentError("endpoint reflex-endpoint: rejected with 400"))
        ticks += 1

    final = run_to_end(world, each=inject)
    assert final.status in ("rolled_back", "done"), final
    ep = world.fp.get_endpoint(ENDPOINT)
    assert ep is not None
    if final.status == "rolled_back":
        assert "rejected with 400" in final.reason and dict(ep.traffic) == {"blue": 100}
        assert world.fp.get_deployment(ENDPOINT, V2) is None
    else:  # the failure hit after promotion: a promoted model is never rolled back
        assert ep.traffic.get(V2) == 100


class Crash(BaseException):
    """The worker dies: not an Exception, so nothing in the app catches it."""


class CrashingStore(BlobStateStore):
    """Azurite store whose `n`-th record write dies before it is stored (after the platform already acted)."""

    def __init__(self, inner: BlobStateStore, n: int) -> None:
        super().__init__(inner._container)
        self.n = n
        self.writes = 0

    def _replace(self, key: str, body: bytes, etag: str, **kwargs: Any) -> str | None:
        if key.startswith("rollouts/"):
            self.writes += 1
            if self.writes == self.n:
                raise Crash(f"worker died before write {self.n}")
        return super()._replace(key, body, etag, **kwargs)


def _run_with_crash(w: World, n: int, each: Callable[[World], None]) -> bool:
    store = CrashingStore(w.state, n)  # type: ignore[arg-type]
    w.state = store
    w.current["deps"] = w.deps()  # type: ignore[attr-defined]
    crashed = False
    for _ in range(80):
        try:
            each(w)
            tick(w)
        except Crash:
            crashed = True
            w.current["deps"] = w.deps()  # restart: fresh deps, same storage and platform  # type: ignore[attr-defined]
        if w.record().terminal and not w.record().queued:
            return crashed
    raise AssertionError(f"no terminal state after a crash at write {n}: {w.record().status}")


@pytest.mark.parametrize("scenario", ["promote", "breach"])
def test_crash_after_every_step_resumes_to_the_same_end(blob_state: BlobStateStore, container_factory: Any,
                                                       monkeypatch: pytest.MonkeyPatch, scenario: str) -> None:
    def each(w: World) -> None:
        healthy(w)
        ep = w.fp.get_endpoint(ENDPOINT)
        if scenario == "breach" and ep is not None and ep.traffic.get(V2) == 50:
            w.fp.metrics[(ENDPOINT, V2)] = DeploymentMetrics(400, 40, 45.0, 300)

    def fresh(store: BlobStateStore) -> World:
        clock = Clock()
        w = World(clock, FakePlatform(clock=clock, provisioning_seconds=120), store, dict(ENV))
        w.current = {"deps": w.deps()}  # type: ignore[attr-defined]
        monkeypatch.setattr(deps_module, "get_deps", lambda: w.current["deps"])  # type: ignore[attr-defined]
        live_endpoint(w.fp)
        w.clock.advance(1)
        return w

    baseline = fresh(blob_state)
    deliver(baseline, register_model(baseline.fp, "2"))
    expected = run_to_end(baseline, each=each)
    expected_ep = baseline.fp.get_endpoint(ENDPOINT)
    writes = 0
    for n in range(1, 40):
        w = fresh(BlobStateStore(container_factory("crash")))
        raw = register_model(w.fp, "2")
        deliver(w, raw)
        if not _run_with_crash(w, n, each):
            writes = n
            break
        final = w.record()
        assert (final.status, final.reason) == (expected.status, expected.reason), n
        ep = w.fp.get_endpoint(ENDPOINT)
        assert ep is not None and expected_ep is not None
        assert dict(ep.traffic) == dict(expected_ep.traffic), n
        assert sorted(d.name for d in ep.deployments) == sorted(d.name for d in expected_ep.deployments), n
    assert writes > 5  # every write of the rollout was crashed once


def test_reconcile_isolates_a_broken_rollout(world: World) -> None:
    live_endpoint(world.fp)
    live_endpoint(world.fp, endpoint="other-endpoint", deployment="blue2")
    world.env["REFLEX_ENDPOINTS"] = f"{MODEL}={ENDPOINT},second={'other-endpoint'}"
    world.current["deps"] = world.deps()  # type: ignore[attr-defined]
    deliver(world, register_model(world.fp, "2"))
    world.state.create("rollouts/broken", {"endpoint": "x"})  # an unreadable record must not block the others
    outcome = tick(world)
    assert outcome.status == "acted" and world.record().status == "smoke"
    assert "rollouts/broken" in outcome.details


def test_mirror_phase_then_canary(world: World) -> None:
    world.env.update(REFLEX_MIRROR_PERCENT="20", REFLEX_MIRROR_SECONDS="300")
    world.current["deps"] = world.deps()  # type: ignore[attr-defined]
    live_endpoint(world.fp)
    deliver(world, register_model(world.fp, "2"))
    final = run_to_end(world, each=healthy)
    assert final.status == "done"
    assert [(u[1], u[2]) for u in world.fp.traffic_updates[:2]] == [
        ({"blue": 100, V2: 0}, {V2: 20}), ({"blue": 90, V2: 10}, {})]  # mirror removed before live traffic


def test_canary_passing_through_updating_during_the_bake_is_promoted(world: World) -> None:
    """Azure ML reports Updating after every traffic update (the endpoint) and while a deployment is scaled or
    maintained; the canary waits through it, bakes a full window once Succeeded again, and is promoted."""
    world.fp.traffic_update_seconds = 30.0
    to_canary_step(world)
    assert dict(world.fp.get_endpoint(ENDPOINT).traffic) == {"blue": 90, V2: 10}  # type: ignore[union-attr]
    updating_until = world.clock() + 400
    world.fp.transition(ENDPOINT, V2, state="Updating", seconds=400)
    world.fp.transition(ENDPOINT, "blue", state="Scaling", seconds=200)
    final = run_to_end(world, each=healthy)
    assert final.status == "done" and final.reason == "promoted; previous deployment retired"
    assert [u[1] for u in world.fp.traffic_updates] == [
        {"blue": 90, V2: 10}, {"blue": 50, V2: 50}, {"blue": 0, V2: 100}]
    waits = [h["detail"] for h in final.history if h["action"] == "Wait"]
    assert any(f"new deployment {V2} is Updating" in w and "bake clock restarts" in w for w in waits), waits
    to_50 = next(h["at"] for h in final.history if h["action"] == "SetTraffic" and f"'{V2}': 50" in h["detail"])
    assert to_50 >= updating_until + 300 - TICK  # a full bake (300 s) after it was last seen Updating


def test_rollback_waits_for_the_live_deployment_to_settle_instead_of_emptying_the_endpoint(world: World) -> None:
    """A breach while the live deployment is Scaling: restoring over the Succeeded ones would leave nothing
    serving, so the rollback holds (no attempt spent) and restores blue once it is Succeeded."""
    world.env["REFLEX_DELETE_ON_ROLLBACK"] = "false"
    world.current["deps"] = world.deps()  # type: ignore[attr-defined]
    to_canary_step(world)
    world.fp.transition(ENDPOINT, "blue", state="Scaling", seconds=300)
    world.fp.metrics[(ENDPOINT, V2)] = DeploymentMetrics(400, 40, 45.0, 300)
    tick(world)
    held = world.record()
    assert (held.status, held.attempts, held.reason) == ("rolling_back", 0,
                                                         "at 10%: error rate 0.100 (40/400) exceeds 0.020")
    assert held.history[-1]["detail"] == "rollback waits: deployment blue is Scaling"
    assert dict(world.fp.get_endpoint(ENDPOINT).traffic) == {"blue": 90, V2: 10}  # type: ignore[union-attr]
    final = run_to_end(world)
    assert final.status == "rolled_back" and final.reason == held.reason
    assert [u[1] for u in world.fp.traffic_updates] == [{"blue": 90, V2: 10}, {"blue": 100, V2: 0}]


def test_function_metadata() -> None:
    import function_app

    function_app.app.functions_bindings = None  # get_functions() is not idempotent (python-worker#1867)
    found = {f.get_function_name(): f for f in function_app.app.get_functions()}
    timer = found["reconcile"].get_bindings()[0].get_dict_repr()
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%REFLEX_RECONCILE_SCHEDULE%"
    assert timer["runOnStartup"] is False
    assert found["on_model_registered"].get_bindings()[0].get_dict_repr()["type"] == "eventGridTrigger"


def test_dry_run_decides_and_acts_on_nothing(world: World) -> None:
    from shared.core.control import write_control

    live_endpoint(world.fp)
    deliver(world, register_model(world.fp, "2"))
    write_control(world.current["deps"], by="test", why="look first", dry_run=True)  # type: ignore[attr-defined]
    before = world.record()
    outcome = tick(world)
    assert outcome.status == "dry-run" and world.record() == before
    assert deliver(world, register_model(world.fp, "3")).status == "dry-run"
    assert world.record().ref == f"{MODEL}:2" and world.fp.traffic_updates == []


def test_health_remediates_an_overdue_canary_through_the_rollout_machinery(world: World) -> None:
    """REFLEX_HEALTH_REMEDIATE: a canary the reconciler left past its deadline (say its timer stopped) is rolled
    back by the health timer with the machine's own roll_back: previous split in one update, record closed."""
    from shared.handlers import monitoring_health

    to_canary_step(world, 0)
    assert dict(world.fp.get_endpoint(ENDPOINT).traffic) == {"blue": 90, V2: 10}  # type: ignore[union-attr]
    world.clock.advance(world.record().deadline - world.clock() + 700)  # past the deadline and the grace
    world.env.update(REFLEX_HEALTH_REMEDIATE="true", REFLEX_HEALTH_GRACE_SECONDS="600")
    deps = world.deps()
    outcome = monitoring_health(deps)
    assert outcome.status == "acted" and outcome.details["remediated"]
    assert dict(world.fp.get_endpoint(ENDPOINT).traffic) == {"blue": 100}  # type: ignore[union-attr]
    assert world.fp.get_deployment(ENDPOINT, V2) is None  # REFLEX_DELETE_ON_ROLLBACK=true, as the reconciler
    assert world.record().status == "rolled_back" and "health" in world.record().reason
    findings = [e for e in deps.publisher.sent if e.type == "Reflex.HealthCheckFailed"]  # type: ignore[attr-defined]
    assert len(findings) == 1 and findings[0].data["remediation"].startswith("rollback through the rollout")
    assert monitoring_health(world.deps()).details["remediated"] == []  # done once
