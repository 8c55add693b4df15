"""The rollout transition table: decide(record, observation, now) for every state and the checks between them,
plus admission, advance/record round trips, naming and traffic arithmetic. Pure: no I/O."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.core.platform import DeploymentMetrics, QuotaCheck
from shared.rollout.machine import (
    ROLLBACK_SETTLE_SECONDS,
    Action,
    Begin,
    CreateDeployment,
    CreateEndpoint,
    DeleteDeployment,
    Finish,
    Observation,
    Promote,
    RollBack,
    Rollout,
    SetTraffic,
    SmokeTest,
    Wait,
    admit,
    advance,
    decide,
    defer_rollback,
    metrics_window,
    rollback_hold,
    rolling_back,
)
from shared.rollout.plan import Plan, deployment_name, restore_traffic, split_traffic, version_key

S = "Succeeded"
NEW = "new"
PLAN = Plan(steps=(10, 50, 100), bake_seconds=600, retain_seconds=3600, deadline_seconds=10_000,
            max_error_rate=0.02, max_latency_ms=1000, max_latency_ratio=1.5, min_requests=0,
            approval_timeout_seconds=50_000)
QUOTA_OK = QuotaCheck("Standard_DS3_v2", "standardDSv2Family", 4, 4, 64)
QUOTA_FULL = QuotaCheck("Standard_DS3_v2", "standardDSv2Family", 4, 62, 64)
GOOD = DeploymentMetrics(100, 0, 50.0, 600)
LIVE = DeploymentMetrics(900, 1, 40.0, 600)


def rec(status: str = "baking", **kw: Any) -> Rollout:
    base = dict(endpoint="ep", model="m", version="2", deployment=NEW, plan=PLAN, created_at=0.0, status=status,
                previous="blue", previous_traffic={"blue": 100}, phase=0, phase_started_at=1000.0,
                started_at=0.0, deadline=10_000.0)
    base.update(kw)
    return Rollout(**base)  # type: ignore[arg-type]


def obs(**kw: Any) -> Observation:
    base: dict[str, Any] = dict(endpoint_state=S, traffic={"blue": 100, NEW: 0}, deployments={"blue": S, NEW: S})
    base.update(kw)
    return Observation(**base)


def split(p: int) -> dict[str, int]:
    return {"blue": 100 - p, NEW: p}


TABLE: list[tuple[str, Rollout, Observation, float, Any]] = [
    # ---- pending: approval, smoke configuration, endpoint, quota
    ("approval pending waits", rec("pending"), obs(approval="pending", deployments={"blue": S}), 5.0,
     Wait("awaiting approval: set tag reflex.approval=approved to start the rollout", approval=True)),
    ("approval waits up to the plan's timeout", rec("pending"), obs(approval="pending"), 50_000.0,
     Wait("awaiting approval: set tag reflex.approval=approved to start the rollout", approval=True)),
    ("approval wait is bounded", rec("pending"), obs(approval="pending"), 50_001.0, Finish),
    ("rejected model fails", rec("pending"), obs(approval="rejected"), 5.0, Finish),
    ("model deleted meanwhile", rec("pending"), obs(model_found=False), 5.0, Finish),
    ("no smoke request fails before creating anything", rec("pending"), obs(smoke_configured=False), 5.0, Finish),
    ("no endpoint: create it", rec("pending", previous=None, previous_traffic={}), obs(endpoint_state=None,
     traffic={}, deployments={}), 5.0, CreateEndpoint()),
    ("endpoint still creating", rec("pending"), obs(endpoint_state="Creating", deployments={}), 5.0, Wait),
    ("endpoint failed", rec("pending"), obs(endpoint_state="Failed"), 5.0, Finish),
    ("quota fits: create beside the live one", rec("pending", previous=None, previous_traffic={}),
     obs(deployments={"blue": S}, traffic={"blue": 100}, quota=QUOTA_OK), 5.0,
     CreateDeployment("blue", {"blue": 100})),
    ("quota full: fail at once", rec("pending"), obs(deployments={"blue": S}, quota=QUOTA_FULL), 5.0, Finish),
    ("deployment exists already (resumed): begin", rec("pending"), obs(deployments={"blue": S, NEW: "Creating"}),
     5.0, Begin("blue", {"blue": 100})),
    ("already serving 100%", rec("pending"), obs(traffic={"blue": 0, NEW: 100}), 5.0, Finish),
    # ---- creating
    ("creating: wait for provisioning", rec("creating"), obs(deployments={"blue": S, NEW: "Creating"}), 5.0, Wait),
    ("creating: provisioning failed", rec("creating"), obs(deployments={"blue": S, NEW: "Failed"}), 5.0, RollBack),
    ("creating: succeeded -> smoke test", rec("creating"), obs(), 5.0, SmokeTest()),
    ("creating: deployment missing -> create (quota)", rec("creating"), obs(deployments={"blue": S},
     quota=QUOTA_OK), 5.0, CreateDeployment("blue", {"blue": 100})),
    ("creating: past deadline", rec("creating"), obs(deployments={"blue": S, NEW: "Creating"}), 10_001.0, RollBack),
    ("creating: endpoint gone", rec("creating"), obs(endpoint_state=None), 5.0, RollBack),
    # ---- smoke
    ("smoke failed", rec("smoke", smoke={"ok": False, "detail": "HTTP 500"}), obs(), 5.0, RollBack),
    ("smoke ok -> first canary step", rec("smoke", smoke={"ok": True}), obs(), 5.0,
     SetTraffic(split(10), {}, "baking", 0)),
    ("smoke ok, first model -> 100%", rec("smoke", smoke={"ok": True}, previous=None, previous_traffic={}),
     obs(traffic={NEW: 0}, deployments={NEW: S}), 5.0, SetTraffic({NEW: 100}, {}, "baking", 2)),
    ("smoke ok with mirror -> mirror", rec("smoke", smoke={"ok": True}, plan=replace(PLAN, mirror_percent=20,
     mirror_seconds=300)), obs(), 5.0, SetTraffic({"blue": 100, NEW: 0}, {NEW: 20}, "mirroring", -1)),
    ("new deployment went bad", rec("smoke", smoke={"ok": True}), obs(deployments={"blue": S, NEW: "Failed"}),
     5.0, RollBack),
    # ---- mirroring
    ("mirroring: bake", rec("mirroring", phase=-1, plan=replace(PLAN, mirror_percent=20, mirror_seconds=300)),
     obs(mirror={NEW: 20}, new_metrics=GOOD), 1100.0, Wait),
    ("mirroring done -> canary, mirror off", rec("mirroring", phase=-1, plan=replace(PLAN, mirror_percent=20,
     mirror_seconds=300)), obs(mirror={NEW: 20}, new_metrics=GOOD), 1300.0, SetTraffic(split(10), {}, "baking", 0)),
    ("mirroring breach", rec("mirroring", phase=-1, plan=replace(PLAN, mirror_percent=20, mirror_seconds=300)),
     obs(mirror={NEW: 20}, new_metrics=DeploymentMetrics(100, 10, 50.0, 60)), 1100.0, RollBack),
    # ---- baking
    ("baking: bake time not over", rec(), obs(traffic=split(10), new_metrics=GOOD, live_metrics=LIVE), 1599.0, Wait),
    ("baking: over -> 50%", rec(), obs(traffic=split(10), new_metrics=GOOD, live_metrics=LIVE), 1600.0,
     SetTraffic(split(50), {}, "baking", 1)),
    ("baking at 50%: over -> 100%", rec(phase=1), obs(traffic=split(50), new_metrics=GOOD), 1600.0,
     SetTraffic(split(100), {}, "baking", 2)),
    ("baking at 100%: over -> promote", rec(phase=2), obs(traffic=split(100), new_metrics=GOOD), 1600.0, Promote()),
    ("error rate breach rolls back at once", rec(phase=1), obs(traffic=split(50),
     new_metrics=DeploymentMetrics(100, 3, 50.0, 60)), 1100.0, RollBack),
    ("absolute latency breach", rec(), obs(traffic=split(10), new_metrics=DeploymentMetrics(100, 0, 1500.0, 60)),
     1100.0, RollBack),
    ("latency relative to live breach holds the traffic to confirm it", rec(),
     obs(traffic=split(10), new_metrics=DeploymentMetrics(100, 0, 70.0, 600), live_metrics=LIVE), 1100.0, Wait),
    ("latency breach confirmed over the next minute rolls back", rec(suspect={"at": 1100.0, "reason": "r"}),
     obs(traffic=split(10), new_metrics=DeploymentMetrics(100, 0, 70.0, 60), live_metrics=DeploymentMetrics(
         900, 1, 40.0, 60)), 1200.0, RollBack),
    ("latency breach not confirmed: the bake goes on", rec(suspect={"at": 1100.0, "reason": "r"}),
     obs(traffic=split(10), new_metrics=DeploymentMetrics(100, 0, 41.0, 60), live_metrics=DeploymentMetrics(
         900, 1, 40.0, 60)), 1600.0, SetTraffic(split(50), {}, "baking", 1)),
    ("latency breach: no verdict before the confirming minute is over", rec(suspect={"at": 1100.0, "reason": "r"}),
     obs(traffic=split(10), new_metrics=DeploymentMetrics(100, 0, 41.0, 60), live_metrics=DeploymentMetrics(
         900, 1, 40.0, 60)), 1199.0, Wait),
    ("errors roll back at once while a latency breach is confirmed", rec(suspect={"at": 1100.0, "reason": "r"}),
     obs(traffic=split(10), new_metrics=DeploymentMetrics(100, 5, 41.0, 60), live_metrics=LIVE), 1150.0,
     RollBack),
    ("relative latency ignored without live data", rec(), obs(traffic=split(10),
     new_metrics=DeploymentMetrics(100, 0, 70.0, 60), live_metrics=DeploymentMetrics(0, 0, None, 60)), 1100.0, Wait),
    ("too few requests waits", rec(plan=replace(PLAN, min_requests=500)), obs(traffic=split(10), new_metrics=GOOD),
     1600.0, Wait("at 10%: 100 of 500 requests served, waiting for the rest before advancing")),
    ("no metrics series yet says so, not zero requests", rec(plan=replace(PLAN, min_requests=500)),
     obs(traffic=split(10), new_metrics=DeploymentMetrics(0, 0, None, 600, has_data=False)), 1600.0,
     Wait("at 10%: no metrics data yet for new (Azure Monitor has reported no requests so far); 500 "
          "requests needed before advancing")),
    ("too few requests until the deadline", rec(plan=replace(PLAN, min_requests=500)),
     obs(traffic=split(10), new_metrics=GOOD), 10_000.0, RollBack),
    ("no data is not a breach", rec(), obs(traffic=split(10), new_metrics=DeploymentMetrics(0, 0, None, 60)),
     1600.0, SetTraffic(split(50), {}, "baking", 1)),
    ("resumed after traffic was already moved", rec(), obs(traffic=split(50), new_metrics=GOOD), 1600.0,
     SetTraffic(split(50), {}, "baking", 1)),
    ("traffic edited outside Reflex", rec(), obs(traffic={"blue": 70, NEW: 30}, new_metrics=GOOD), 1100.0, RollBack),
    ("first model baking -> promote", rec(previous=None, previous_traffic={}, phase=2),
     obs(traffic={NEW: 100}, deployments={NEW: S}), 5.0, Promote()),
    # ---- promoted, retiring
    ("promoted: keep the old one for the retention", rec("promoted", phase=2), obs(traffic={"blue": 0, NEW: 100}),
     1000.0 + 3599, Wait),
    ("promoted: retention over -> delete old", rec("promoted", phase=2), obs(traffic={"blue": 0, NEW: 100}),
     1000.0 + 3600, DeleteDeployment(("blue",))),
    ("promoted: old has traffic again -> keep", rec("promoted", phase=2), obs(traffic={"blue": 10, NEW: 90}),
     1000.0 + 3600, Finish),
    ("promoted: nothing to retire", rec("promoted", previous=None, previous_traffic={}),
     obs(traffic={NEW: 100}, deployments={NEW: S}), 5.0, Finish),
    ("retiring: deleting", rec("retiring"), obs(traffic={"blue": 0, NEW: 100},
     deployments={"blue": "Deleting", NEW: S}), 5.0, Wait),
    ("retiring: gone -> done", rec("retiring"), obs(traffic={NEW: 100}, deployments={NEW: S}), 5.0, Finish),
    ("promoted is exempt from the deadline", rec("promoted", deadline=2000.0), obs(traffic={"blue": 0, NEW: 100}),
     4000.0, Wait),
    # ---- supersede, rollback resume, terminal
    ("superseded while baking -> traffic back", rec(queued={"model": "m", "version": "3"}),
     obs(traffic=split(10)), 1100.0, RollBack),
    ("superseded while pending", rec("pending", queued={"model": "m", "version": "3"}), obs(), 5.0, Finish),
    ("superseded after promotion: retire now", rec("promoted", queued={"model": "m", "version": "3"}),
     obs(traffic={"blue": 0, NEW: 100}), 1100.0, DeleteDeployment(("blue",))),
    ("rolling back resumes", rec("rolling_back", reason="x", final="rolled_back"), obs(), 5.0,
     RollBack("x", {}, "rolled_back")),
    ("terminal stays", rec("rolled_back", reason="x"), obs(), 5.0, Finish("rolled_back", "x")),
]


@pytest.mark.parametrize(("name", "record", "observation", "now", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_transition_table(name: str, record: Rollout, observation: Observation, now: float, expected: Any) -> None:
    action = decide(record, observation, now)
    if isinstance(expected, type):
        assert isinstance(action, expected), action
    else:
        assert action == expected


# ---- transitional provisioning states (Creating, Updating, Scaling): wait naming the state, never roll back.
# One record and observation per phase; `who` is the new deployment, the previous (live) one or the endpoint.
MIRROR_PLAN = replace(PLAN, mirror_percent=20, mirror_seconds=300)
PHASES: dict[str, tuple[Rollout, Observation, float]] = {
    "creating": (rec("creating"), obs(), 5.0),
    "smoke": (rec("smoke", smoke={"ok": True}), obs(), 5.0),
    "mirroring": (rec("mirroring", phase=-1, plan=MIRROR_PLAN), obs(mirror={NEW: 20}, new_metrics=GOOD), 1300.0),
    "baking": (rec(), obs(traffic=split(10), new_metrics=GOOD, live_metrics=LIVE), 1600.0),
    "baking at 100%": (rec(phase=2), obs(traffic=split(100), new_metrics=GOOD), 1600.0),
    "promoted": (rec("promoted", phase=2), obs(traffic={"blue": 0, NEW: 100}), 1000.0 + 3600),
    "retiring": (rec("retiring", phase=2), obs(traffic={"blue": 0, NEW: 100}), 1000.0 + 3600),
    "rolling_back": (rec("rolling_back", reason="x", final="rolled_back"), obs(traffic=split(10)), 1600.0),
}
# what each phase does when everything is Succeeded, and when `who` is transitional (Wait: its reason names it)
SETTLED = {"creating": SmokeTest(), "smoke": SetTraffic(split(10), {}, "baking", 0),
           "mirroring": SetTraffic(split(10), {}, "baking", 0), "baking": SetTraffic(split(50), {}, "baking", 1),
           "baking at 100%": Promote(), "promoted": DeleteDeployment(("blue",)),
           "retiring": DeleteDeployment(("blue",)), "rolling_back": RollBack("x", {}, "rolled_back")}
TRANSIT_EXPECT: dict[tuple[str, str], Any] = {
    ("creating", "previous"): SETTLED["creating"],            # the live one is not involved in provisioning
    ("promoted", "new"): SETTLED["promoted"], ("retiring", "new"): SETTLED["retiring"],  # the new one serves on
    **{("rolling_back", who): SETTLED["rolling_back"] for who in ("new", "previous", "endpoint")},  # see hold tests
}
TRANSIT = [(phase, who, state) for phase in PHASES for who in ("new", "previous", "endpoint")
           for state in ("Creating", "Updating", "Scaling") if not (who == "endpoint" and state == "Scaling")]


def _in_transit(o: Observation, who: str, state: str) -> Observation:
    if who == "endpoint":
        return replace(o, endpoint_state=state)
    return replace(o, deployments={**o.deployments, NEW if who == "new" else "blue": state})


@pytest.mark.parametrize("phase", list(PHASES))
def test_each_phase_acts_when_everything_is_succeeded(phase: str) -> None:
    assert decide(*PHASES[phase]) == SETTLED[phase]


@pytest.mark.parametrize(("phase", "who", "state"), TRANSIT, ids=[f"{p}-{w}-{s}" for p, w, s in TRANSIT])
def test_a_transitional_state_waits_and_never_rolls_back(phase: str, who: str, state: str) -> None:
    r, o, now = PHASES[phase]
    action = decide(r, _in_transit(o, who, state), now)
    expected = TRANSIT_EXPECT.get((phase, who))
    if expected is not None:
        assert action == expected
        return
    assert isinstance(action, Wait), action
    named = {"endpoint": f"endpoint {r.endpoint}", "new": f"deployment {NEW}", "previous": "deployment blue"}[who]
    assert f"{named} is {state}" in action.reason, action.reason
    assert action.restart_clock == (who == "new" and r.status in ("mirroring", "baking"))


@pytest.mark.parametrize("phase", ["mirroring", "baking"])
def test_the_bake_clock_restarts_while_the_new_deployment_is_transitional(phase: str) -> None:
    r, o, _ = PHASES[phase]
    mid = r.phase_started_at + 100
    waited = advance(r, decide(r, _in_transit(o, "new", "Updating"), mid), mid)
    assert waited.phase_started_at == mid and waited.status == r.status and waited.phase == r.phase
    again = advance(waited, decide(waited, _in_transit(o, "new", "Updating"), mid + 50), mid + 50)
    assert again.phase_started_at == mid + 50 and len(again.history) == len(waited.history)  # one note, clock moved
    duration = r.plan.mirror_seconds if phase == "mirroring" else r.plan.bake_seconds
    assert isinstance(decide(again, o, mid + 50 + duration - 1), Wait)       # Succeeded again: a full bake first
    assert decide(again, o, mid + 50 + duration) == SETTLED[phase]


TRANSIT_EDGES: list[tuple[str, Rollout, Observation, float, Any, str]] = [
    ("stuck Updating past the deadline rolls back", rec(), obs(traffic=split(10), deployments={"blue": S,
     NEW: "Updating"}), 10_000.0, RollBack,
     f"deadline passed while baking (started 10000 s ago); new deployment {NEW} is Updating"),
    ("creating: stuck Creating past the deadline", rec("creating"), obs(deployments={"blue": S, NEW: "Creating"}),
     10_000.0, RollBack, "deadline passed while creating"),
    ("creating: new deployment being deleted", rec("creating"), obs(deployments={"blue": S, NEW: "Deleting"}), 5.0,
     RollBack, "is being deleted"),
    ("baking: new deployment being deleted", rec(), obs(traffic=split(10), deployments={"blue": S, NEW: "Deleting"}),
     1100.0, RollBack, "is Deleting"),
    ("baking: new deployment Canceled", rec(), obs(traffic=split(10), deployments={"blue": S, NEW: "Canceled"}),
     1100.0, RollBack, "is Canceled"),
    ("baking: new deployment missing", rec(), obs(traffic={"blue": 100}, deployments={"blue": S}), 1100.0, RollBack,
     "is missing"),
    ("a breach still rolls back while the live one is Updating", rec(), obs(traffic=split(10),
     deployments={"blue": "Updating", NEW: S}, new_metrics=DeploymentMetrics(100, 30, 50.0, 60)), 1100.0, RollBack,
     "error rate"),
    ("superseded after promotion: old one Updating waits", rec("promoted", queued={"model": "m", "version": "3"}),
     obs(traffic={"blue": 0, NEW: 100}, deployments={"blue": "Updating", NEW: S}), 1100.0, Wait, "blue is Updating"),
    ("superseded while baking and Updating still rolls back", rec(queued={"model": "m", "version": "3"}),
     obs(traffic=split(10), deployments={"blue": S, NEW: "Updating"}), 1100.0, RollBack, "superseded"),
    ("first model: endpoint Updating before 100%", rec("smoke", smoke={"ok": True}, previous=None,
     previous_traffic={}), obs(endpoint_state="Updating", traffic={NEW: 0}, deployments={NEW: S}), 5.0, Wait,
     "endpoint ep is Updating"),
]


@pytest.mark.parametrize(("name", "record", "observation", "now", "kind", "why"), TRANSIT_EDGES,
                         ids=[t[0] for t in TRANSIT_EDGES])
def test_transitional_edges(name: str, record: Rollout, observation: Observation, now: float, kind: type,
                            why: str) -> None:
    action = decide(record, observation, now)
    assert isinstance(action, kind) and why in getattr(action, "reason", ""), action


def test_rollback_holds_while_the_live_deployment_or_endpoint_is_transitional() -> None:
    action = RollBack("at 10%: error rate 0.300", {})
    r = rec()
    updating = obs(traffic=split(10), deployments={"blue": "Updating", NEW: S})
    assert rollback_hold(r, obs(traffic=split(10)), 1100.0) is None
    assert rollback_hold(r, obs(traffic={"blue": 100, NEW: 0}, deployments={"blue": "Updating", NEW: S}),
                         1100.0) is None  # nothing to move: the new deployment can be deleted at once
    hold = rollback_hold(r, updating, 1100.0)
    assert hold == Wait("rollback waits: deployment blue is Updating")
    assert rollback_hold(r, obs(traffic=split(10), endpoint_state="Updating"), 1100.0) == Wait(
        "rollback waits: endpoint ep is Updating")
    assert isinstance(hold, Wait)
    held = defer_rollback(r, action, hold, 1100.0)
    assert (held.status, held.reason, held.attempts) == ("rolling_back", action.reason, 0)  # written ahead, no try
    assert defer_rollback(held, action, hold, 1200.0) == held                               # same note, no rewrite
    assert decide(held, updating, 1200.0) == RollBack(action.reason, {}, "rolled_back")     # resumes as a rollback
    assert isinstance(rollback_hold(held, updating, 1100.0 + ROLLBACK_SETTLE_SECONDS - 1), Wait)
    gave_up = rollback_hold(held, updating, 1100.0 + ROLLBACK_SETTLE_SECONDS)
    assert isinstance(gave_up, Finish) and gave_up.status == "failed" and "blue is Updating" in gave_up.reason


def test_rollback_reasons_carry_the_evidence() -> None:
    action = decide(rec(phase=1), obs(traffic=split(50), new_metrics=DeploymentMetrics(200, 10, 80.0, 600),
                                      live_metrics=LIVE), 1100.0)
    assert isinstance(action, RollBack)
    assert action.reason == "at 50%: error rate 0.050 (10/200) exceeds 0.020"
    assert action.evidence["new"]["errors"] == 10 and action.evidence["live"]["requests"] == 900
    assert action.evidence["traffic"] == split(50)


def test_quota_failure_names_the_numbers() -> None:
    action = decide(rec("pending"), obs(deployments={"blue": S}, quota=QUOTA_FULL), 5.0)
    assert isinstance(action, Finish) and action.status == "failed"
    assert "needs 4 standardDSv2Family cores; 62 of 64 are in use, 2 free" in action.reason


@pytest.mark.parametrize(("current", "incoming", "verdict"), [
    (None, ("m", "2"), "start"),
    (rec(version="2"), ("m", "2"), "duplicate"),
    (rec(version="2", status="done"), ("m", "2"), "duplicate"),
    (rec(version="3"), ("m", "2"), "older"),
    (rec(version="3", status="rolled_back"), ("m", "2"), "older"),
    (rec(version="2"), ("m", "3"), "supersede"),
    (rec(version="2", queued={"model": "m", "version": "4"}), ("m", "3"), "older"),
    (rec(version="2", queued={"model": "m", "version": "4"}), ("m", "4"), "duplicate"),
    (rec(version="2", status="done"), ("m", "3"), "start"),
    (rec(version="10", status="done"), ("m", "9"), "older"),
    (rec(version="2"), ("other", "1"), "supersede"),
])
def test_admission(current: Rollout | None, incoming: tuple[str, str], verdict: str) -> None:
    assert admit(current, *incoming) == verdict


@pytest.mark.parametrize(("current", "retry_of", "verdict"), [
    (rec(status="failed", event_id="e1"), "e1", "start"),           # the new attempt after the failed one
    (rec(status="rolled_back", event_id="e1"), "e1", "start"),
    (rec(status="failed", event_id="e1"), "", "duplicate"),         # a redelivery of the registration
    (rec(status="failed", event_id="e2"), "e1", "duplicate"),       # that attempt already started (and ended)
    (rec(status="baking", event_id="e1"), "e1", "duplicate"),       # in progress: never restarted
    (rec(status="failed", event_id="e1", version="3"), "e1", "older"),
    (rec(status="failed", event_id="e1", queued={"model": "m", "version": "3"}), "e1", "duplicate"),
])
def test_a_new_attempt_starts_only_after_the_finished_attempt_it_names(current: Rollout, retry_of: str,
                                                                       verdict: str) -> None:
    assert admit(current, "m", "2", retry_of=retry_of) == verdict


def test_a_new_attempt_waits_while_the_earlier_attempts_deployment_is_being_deleted() -> None:
    action = decide(rec("pending"), obs(deployments={"blue": S, NEW: "Deleting"}), 5.0)
    assert isinstance(action, Wait) and "earlier attempt is being deleted" in action.reason
    assert isinstance(decide(rec("pending"), obs(deployments={"blue": S, NEW: S}), 5.0), Begin)


def test_record_round_trips_through_json_dict() -> None:
    import json

    r = rec(smoke={"ok": True, "detail": "2 predictions"}, queued={"model": "m", "version": "3", "event_id": "e"},
            history=({"at": 1.0, "action": "SmokeTest", "status": "smoke", "detail": "ok"},))
    assert Rollout.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_advance_records_each_action() -> None:
    r = rec("pending", previous=None, previous_traffic={}, deadline=0.0)
    r1 = advance(r, CreateDeployment("blue", {"blue": 100}), 50.0)
    assert (r1.status, r1.previous, dict(r1.previous_traffic), r1.started_at, r1.deadline) == (
        "creating", "blue", {"blue": 100}, 50.0, 50.0 + PLAN.deadline_seconds)
    r2 = advance(r1, SmokeTest(), 60.0, {"ok": True, "detail": "2 predictions"})
    assert r2.status == "smoke" and r2.smoke == {"ok": True, "detail": "2 predictions"}
    r3 = advance(r2, SetTraffic(split(10), {}, "baking", 0), 70.0)
    assert (r3.status, r3.phase, r3.phase_started_at) == ("baking", 0, 70.0)
    assert advance(r3, Wait("baking"), 80.0) != r3
    assert advance(advance(r3, Wait("baking"), 80.0), Wait("baking"), 90.0) == advance(r3, Wait("baking"), 80.0)
    ahead = rolling_back(r3, RollBack("breach", {"n": 1}), 100.0)
    assert (ahead.status, ahead.attempts, ahead.final) == ("rolling_back", 1, "rolled_back")
    done = advance(ahead, RollBack("breach", {"n": 1}), 100.0)
    assert (done.status, done.reason, dict(done.evidence)) == ("rolled_back", "breach", {"n": 1})
    assert [h["action"] for h in done.history] == ["CreateDeployment", "SmokeTest", "SetTraffic", "RollBack",
                                                   "RollBack"]


def test_history_is_bounded() -> None:
    r = rec()
    for i in range(200):
        r = advance(r, Wait(f"w{i}"), float(i))
    assert len(r.history) == 50 and r.history[-1]["detail"] == "w199"


@pytest.mark.parametrize(("model", "version"), [("churn", "3"), ("A_Very.Long model NAME" * 3, "1234567"),
                                                ("9lives", "1"), ("---", "x")])
def test_deployment_names_are_valid_and_stable(model: str, version: str) -> None:
    import re

    name = deployment_name(model, version)
    assert re.fullmatch(r"[a-z][a-z0-9-]{2,31}", name) and not name.endswith("-")
    assert name == deployment_name(model, version) and name != deployment_name(model, version + "0")


def test_traffic_arithmetic() -> None:
    assert split_traffic({"a": 70, "b": 30}, "n", 10) == {"a": 63, "b": 27, "n": 10}
    assert split_traffic({"a": 100}, "n", 100) == {"a": 0, "n": 100}
    assert split_traffic({}, "n", 10) == {"n": 100}
    assert restore_traffic({"a": 70, "b": 30}, {"a": S, "b": S, "n": S}, "n") == {"a": 70, "b": 30}
    assert restore_traffic({"a": 70, "b": 30}, {"a": S, "b": "Failed"}, "n") == {"a": 100}
    assert restore_traffic({}, {"n": S}, "n") == {}
    assert version_key("10") > version_key("9") and version_key("b") > version_key("100")


@pytest.mark.parametrize(("requests", "errors", "latency", "min_requests", "breach"), [
    (1, 0, 850.0, 0, ""),     # no minimum set: still no ratio from one request (a cold one failed CI, 2,820 ms)
    (4, 0, 850.0, 0, ""),                                # below RATIO_MIN_SAMPLE: a median of 4 is 2 requests
    (5, 0, 850.0, 0, "latency 850 ms exceeds 1.5x"),     # five: judged without a minimum set
    (1, 0, 6000.0, 0, "latency 6000 ms exceeds the 1000 ms backstop"),  # the backstop needs no sample
    (1, 0, 850.0, 10, ""),                               # one slow request of ten needed: noise (850/10 = 85)
    (3, 0, 600.0, 10, ""),  # 3 slow requests of 10: the ratio waits for a full sample (a cold request, #18.6)
    (3, 0, 4000.0, 10, "latency 1200 ms (at least, over 10 requests) exceeds the 1000 ms backstop"),  # certain
    (10, 0, 100.0, 10, ""),
    (10, 0, 200.0, 10, "latency 200 ms exceeds 1.5x"),
    (1, 1, 5.0, 10, "error rate 0.100 (1/10 at least) exceeds 0.020"),  # certain: 1 error of at most 10
    (1, 1, 5.0, 100, ""),                                # 1/100 is within 2%: wait for more evidence
    (100, 3, 5.0, 100, "error rate 0.030 (3/100) exceeds 0.020"),
])
def test_metrics_are_judged_on_enough_requests(requests: int, errors: int, latency: float, min_requests: int,
                                               breach: str) -> None:
    from shared.rollout.machine import metrics_breach

    plan = Plan(min_requests=min_requests, max_error_rate=0.02, max_latency_ratio=1.5, max_latency_ms=1000.0)
    found = metrics_breach(plan, DeploymentMetrics(requests, errors, latency, 60),
                           DeploymentMetrics(500, 0, 87.0, 60))
    assert found.startswith(breach) if breach else found == ""


# ------------------------------------------------------------------------------------------------ a busy machine
# Metrics as a loaded laptop produced them (issue #18: load 10+ on 2 cores, canaries at 1,034-1,578 ms rolled back
# against the old 1,000 ms absolute limit). The live deployment runs on the same machine in the same window, so
# it is as slow; the canary is judged against it. The plan is the demo's own (local/demo.py DEMO_SETTINGS).
def _demo_plan() -> Plan:
    from conftest import BASE_ENV

    from local.demo import DEMO_SETTINGS
    from shared.core.settings import load

    return Plan.from_settings(load({**BASE_ENV, **DEMO_SETTINGS}))


LOADED_CANARY_MS = (1034.0, 1187.0, 1302.0, 1455.0, 1578.0)


@pytest.mark.parametrize("canary_ms", LOADED_CANARY_MS)
@pytest.mark.parametrize("live_factor", [0.8, 1.0, 1.25])  # the live one equally slow, give or take noise
def test_a_canary_on_a_loaded_machine_beside_an_equally_slow_live_one_advances(canary_ms: float,
                                                                               live_factor: float) -> None:
    plan = _demo_plan()
    window = 60
    new = DeploymentMetrics(plan.min_requests, 0, canary_ms, window)
    live = DeploymentMetrics(9 * plan.min_requests, 0, canary_ms * live_factor, window)
    record = rec(plan=plan, phase_started_at=1000.0)
    action = decide(record, obs(traffic=split(plan.steps[0]), new_metrics=new, live_metrics=live),
                    1000.0 + plan.bake_seconds)
    assert action == SetTraffic(split(plan.steps[1]), {}, "baking", 1)


@pytest.mark.parametrize("live_ms", [60.0, 400.0, 1034.0, 1578.0])
def test_a_canary_three_times_slower_than_live_rolls_back(live_ms: float) -> None:
    plan = _demo_plan()
    new = DeploymentMetrics(plan.min_requests, 0, 3 * live_ms, 60)
    live = DeploymentMetrics(9 * plan.min_requests, 0, live_ms, 60)
    action = decided_after_confirming(rec(plan=plan), obs(traffic=split(plan.steps[0]), new_metrics=new,
                                                           live_metrics=live), 1100.0)
    assert isinstance(action, RollBack)
    assert f"exceeds {plan.max_latency_ratio}x the live deployment's {live_ms:.0f} ms over the same 60 s" \
        in action.reason
    assert action.evidence["live"]["latency_ms"] == live_ms


def decided_after_confirming(record: Rollout, observation: Observation, now: float) -> Action:
    """A latency-ratio breach at `now` holds the traffic (a Wait that records it); the action once the minute
    that confirms it is over, the same metrics seen over that minute."""
    first = decide(record, observation, now)
    assert isinstance(first, Wait) and first.suspect is not None, first
    assert "holding the traffic as it is to confirm it" in first.reason
    held = advance(record, first, now)
    assert held.suspect is not None and held.suspect["at"] == now
    later = (int(now // 60) + 2) * 60.0
    assert metrics_window(held, later) == 60
    return decide(held, observation, later)


def test_without_a_live_deployment_to_compare_the_backstop_judges() -> None:
    """The last step (the live one serves nothing in the window) and the first model: only the backstop, which
    a loaded machine's 1,578 ms does not reach and a canary slower than Azure ML's request timeout does."""
    plan = _demo_plan()
    idle_live = DeploymentMetrics(0, 0, None, 60)
    slow = DeploymentMetrics(plan.min_requests, 0, 1578.0, 60)
    last = rec(plan=plan, phase=len(plan.steps) - 1)
    assert decide(last, obs(traffic=split(100), new_metrics=slow, live_metrics=idle_live),
                  1000.0 + plan.bake_seconds) == Promote()
    stuck = DeploymentMetrics(plan.min_requests, 0, plan.max_latency_ms + 1, 60)
    action = decide(last, obs(traffic=split(100), new_metrics=stuck, live_metrics=idle_live), 1100.0)
    assert isinstance(action, RollBack) and f"exceeds the {plan.max_latency_ms:.0f} ms backstop" in action.reason


def test_the_backstop_holds_even_beside_a_live_deployment_as_slow() -> None:
    plan = _demo_plan()
    ms = plan.max_latency_ms * 1.2
    action = decide(rec(plan=plan), obs(traffic=split(plan.steps[0]),
                                        new_metrics=DeploymentMetrics(plan.min_requests, 0, ms, 60),
                                        live_metrics=DeploymentMetrics(90, 0, ms, 60)), 1100.0)
    assert isinstance(action, RollBack)
    assert f"backstop (the live deployment's: {ms:.0f} ms)" in action.reason


def test_live_latency_over_another_window_is_not_compared() -> None:
    """The ratio holds only for the same window: a live figure over an hour says nothing about the last minute."""
    from shared.rollout.machine import metrics_breach

    plan = _demo_plan()
    new = DeploymentMetrics(plan.min_requests, 0, 900.0, 60)
    assert metrics_breach(plan, new, DeploymentMetrics(900, 0, 100.0, 3600)) == ""
    assert "3.0x" not in metrics_breach(plan, new, DeploymentMetrics(900, 0, 100.0, 60))
    assert metrics_breach(plan, new, DeploymentMetrics(900, 0, 100.0, 60)).startswith("latency 900 ms exceeds 1.5x")
