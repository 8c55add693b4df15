"""#18.6: a canary on a loaded machine is judged on its typical request against the live deployment's, over the
same window and only on a full sample; a canary that is really slower still rolls back.

Why the demo canary once rolled back at load 12 (3,323 ms against live 121 ms): the check compared the mean of
the canary's few requests (10 at 10%) with the mean of the live deployment's hundreds. On a loaded machine single
requests stall for seconds while the median stays put: HistGradientBoosting (jobs/train/train.py) predicts one
row in 2 ms on this machine idle; with two CPU-bound processes per core beside it the median was 10-12 ms for
both models and single requests took up to 1,808 ms. The canary's window also holds the smoke test's request,
scored in the host process (local/platform.py `invoke`), the first score of that model in a process that
serves nothing else, so cold. One stall or that cold request among ten makes the canary's mean several times
the live one's; among hundreds it does not show. The latencies below are those measured shapes.

Real parts: the local platform's counters (local/endpoints.py `count`/`metrics`) on Azurite, read back into
`DeploymentMetrics`, judged by the pure machine with the demo's own plan (local/demo.py DEMO_SETTINGS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from local.endpoints import Endpoints
from shared.core.platform import DeploymentMetrics
from shared.core.state import BlobStateStore
from shared.rollout.machine import Promote, RollBack, SetTraffic, Wait, advance, decide, metrics_breach, metrics_window
from tests.conftest import Clock
from tests.test_rollout_machine import NEW, _demo_plan, decided_after_confirming, obs, rec, split

STALL_MS = 1808.0        # the longest single request measured at load (two busy loops per core)
COLD_SMOKE_MS = 3000.0   # the smoke test's request: the first score of the model in the host process
TYPICAL_MS = (10.3, 11.8, 10.8, 12.3, 11.1)   # medians measured over the same runs


def typical(n: int, factor: float = 1.0) -> list[float]:
    return [TYPICAL_MS[i % len(TYPICAL_MS)] * factor for i in range(n)]


@pytest.fixture
def endpoints(container_factory: Callable[[str], Any], tmp_path: Path, clock: Clock) -> Endpoints:
    return Endpoints(BlobStateStore(container_factory("state")), run_dir=tmp_path, model_exists=lambda _: True,
                     spawn_env={}, serving_url="http://127.0.0.1", quota_cores=8, clock=clock)


def serve(endpoints: Endpoints, deployment: str, latencies: list[float]) -> None:
    for ms in latencies:
        endpoints.count("heart", deployment, error=False, latency_ms=ms)


def judged(endpoints: Endpoints, canary: list[float], *, live_stalls: int = 3) -> tuple[DeploymentMetrics,
                                                                                         DeploymentMetrics]:
    """The canary's and the live deployment's metrics over one window, as the rollout reads them: the live one
    served 90 requests (three of them stalled), the canary the smoke test's cold one and then `canary`."""
    serve(endpoints, "blue", [*typical(90 - live_stalls), *[STALL_MS] * live_stalls])
    serve(endpoints, NEW, [COLD_SMOKE_MS, *canary])
    return endpoints.metrics("heart", NEW, 60), endpoints.metrics("heart", "blue", 60)


def test_a_canary_as_fast_as_live_advances_despite_a_stall_and_the_cold_smoke_request(endpoints: Endpoints) -> None:
    plan = _demo_plan()
    new, live = judged(endpoints, [*typical(plan.min_requests - 1), STALL_MS])
    assert new.requests == plan.min_requests + 1 and live.requests == 90
    # the means are what rolled the demo back: the canary's is several times the live one's
    assert new.latency_ms is not None and live.latency_ms is not None
    assert new.latency_ms > 5 * live.latency_ms
    assert metrics_breach(plan, replace(new, latency_p50_ms=None), replace(live, latency_p50_ms=None))
    # the typical request is the same on both
    assert new.latency_p50_ms is not None and live.latency_p50_ms is not None
    assert new.latency_p50_ms < 1.2 * live.latency_p50_ms
    action = decide(rec(plan=plan, phase_started_at=1000.0),
                    obs(traffic=split(plan.steps[0]), new_metrics=new, live_metrics=live), 1000.0 + plan.bake_seconds)
    assert action == SetTraffic(split(plan.steps[1]), {}, "baking", 1)


@pytest.mark.parametrize("factor", [2.0, 3.0, 10.0])
def test_a_canary_really_slower_than_live_still_rolls_back(endpoints: Endpoints, factor: float) -> None:
    """Every request of the canary slower (a heavier model): its median moves, stalls or not."""
    plan = _demo_plan()
    new, live = judged(endpoints, [*typical(plan.min_requests - 1, factor), STALL_MS])
    action = decided_after_confirming(rec(plan=plan), obs(traffic=split(plan.steps[0]), new_metrics=new,
                                                          live_metrics=live), 1005.0)
    assert isinstance(action, RollBack), action
    assert f"exceeds {plan.max_latency_ratio}x the live deployment's" in action.reason
    assert "median latency" in action.reason
    assert action.evidence["new"]["latency_p50_ms"] == new.latency_p50_ms


def test_a_partial_canary_sample_waits_for_its_requests_instead_of_rolling_back(endpoints: Endpoints) -> None:
    """The cold smoke request and one stall are all the canary served so far: not yet evidence either way."""
    plan = _demo_plan()
    new, live = judged(endpoints, [STALL_MS])
    assert new.requests < plan.min_requests
    action = decide(rec(plan=plan, phase_started_at=1000.0),
                    obs(traffic=split(plan.steps[0]), new_metrics=new, live_metrics=live), 1000.0 + plan.bake_seconds)
    assert isinstance(action, Wait) and f"of {plan.min_requests} requests served" in action.reason


def test_a_canary_beyond_the_backstop_rolls_back_before_its_sample_is_full(endpoints: Endpoints) -> None:
    """Certain already: even if every missing request were instant, the mean stays over Azure ML's timeout."""
    plan = _demo_plan()
    new, live = judged(endpoints, [plan.max_latency_ms * plan.min_requests])
    action = decide(rec(plan=plan), obs(traffic=split(plan.steps[0]), new_metrics=new, live_metrics=live), 1005.0)
    assert isinstance(action, RollBack) and "backstop" in action.reason


def test_the_median_is_over_the_window_only(endpoints: Endpoints, clock: Clock) -> None:
    serve(endpoints, NEW, [STALL_MS] * 5)       # an earlier minute, outside the next window
    clock.advance(180)
    serve(endpoints, NEW, typical(5))
    seen = endpoints.metrics("heart", NEW, 60)
    assert seen.requests == 5 and seen.latency_p50_ms == sorted(typical(5))[2]


# ---- a stall right after a traffic move (#18.6): the CI run that rolled a sound canary back at 50% on a quiet
# machine: "median latency 904 ms exceeds 10.0x live's 71 ms over the same 60 s (5 and 44 requests)", with the
# stack tests' settings (tests/stack_support.py: no minimum of requests, ratio 10). The live deployment's 44
# requests were spread over the window, the canary's 5 came in the seconds after its traffic moved.
CI_LIVE_MS = 71.0
CI_CANARY_MS = [66.0, 70.0, 904.0, 1210.0, 1544.0]   # median 904: three of five in one stall


def stack_plan() -> Any:
    return replace(_demo_plan(), min_requests=0, max_latency_ratio=10.0, max_latency_ms=10_000.0)


def at_50(clock: Clock, **kw: Any) -> Any:
    """A rollout whose traffic moved to 50% (or to `phase`'s step) two seconds ago, an hour before its deadline."""
    return rec(**{"plan": stack_plan(), "phase": 1, "phase_started_at": clock() - 2, "started_at": clock() - 60,
                  "deadline": clock() + 3600, **kw})


def window_metrics(endpoints: Endpoints, record: Any, now: float) -> tuple[DeploymentMetrics, DeploymentMetrics]:
    """Both deployments' metrics over the window the flow asks for at `now` (shared.rollout.flow.observe)."""
    window = metrics_window(record, now)
    return endpoints.metrics("heart", NEW, window), endpoints.metrics("heart", "blue", window)


def test_a_stall_right_after_a_traffic_move_holds_the_canary_and_the_next_minute_clears_it(
        endpoints: Endpoints, clock: Clock) -> None:
    plan = stack_plan()
    serve(endpoints, "blue", [CI_LIVE_MS] * 44)
    record = at_50(clock)
    serve(endpoints, NEW, CI_CANARY_MS)
    new, live = window_metrics(endpoints, record, clock())
    assert (new.requests, live.requests, new.latency_p50_ms, live.latency_p50_ms) == (5, 44, 904.0, CI_LIVE_MS)
    seen = obs(traffic=split(50), new_metrics=new, live_metrics=live)
    assert "exceeds 10.0x the live deployment's 71 ms" in metrics_breach(plan, new, live)

    first = decide(record, seen, clock())
    assert isinstance(first, Wait) and first.suspect is not None, first      # the old check rolled back here
    held = advance(record, first, clock())
    # the rest of this minute: the breach's requests are still in the window, no verdict on latency
    clock.advance(30)
    new, live = window_metrics(endpoints, held, clock())
    assert isinstance(decide(held, obs(traffic=split(50), new_metrics=new, live_metrics=live), clock()), Wait)
    # the next whole minute: both deployments serve interleaved, and a stall slows a request of each
    clock.now = (int(clock() // 60) + 1) * 60.0
    for i in range(20):
        stalled = 1300.0 if i == 7 else 0.0
        serve(endpoints, NEW, [stalled or TYPICAL_MS[i % 5] * 6])
        serve(endpoints, "blue", [stalled or TYPICAL_MS[(i + 2) % 5] * 6])
        clock.advance(3)
    clock.advance(1)
    new, live = window_metrics(endpoints, held, clock())
    assert (new.requests, live.requests) == (20, 20)                         # none of the breach's minute
    action = decide(held, obs(traffic=split(50), new_metrics=new, live_metrics=live), clock())
    assert action == SetTraffic(split(100), {}, "baking", 2)
    assert advance(held, action, clock()).suspect is None


def test_a_canary_slower_in_the_confirming_minute_too_rolls_back_with_both_judgements(
        endpoints: Endpoints, clock: Clock) -> None:
    serve(endpoints, "blue", [CI_LIVE_MS] * 44)
    serve(endpoints, NEW, [CI_LIVE_MS * 12] * 5)
    record = at_50(clock)
    new, live = window_metrics(endpoints, record, clock())
    first = decide(record, obs(traffic=split(50), new_metrics=new, live_metrics=live), clock())
    assert isinstance(first, Wait) and first.suspect is not None
    held = advance(record, first, clock())
    clock.now = (int(clock() // 60) + 1) * 60.0
    for _ in range(10):
        serve(endpoints, NEW, [CI_LIVE_MS * 12])
        serve(endpoints, "blue", [CI_LIVE_MS])
        clock.advance(6)
    clock.advance(1)
    new, live = window_metrics(endpoints, held, clock())
    action = decide(held, obs(traffic=split(50), new_metrics=new, live_metrics=live), clock())
    assert isinstance(action, RollBack), action
    assert "confirmed over the minute after the first breach" in action.reason
    assert action.evidence["new"]["requests"] == 10 and action.evidence["first"]["new"]["requests"] == 5


def test_a_confirmation_waits_for_enough_requests_of_both(endpoints: Endpoints, clock: Clock) -> None:
    """A quiet confirming minute is no verdict: the hold lasts until both served the sample, or the deadline."""
    record = at_50(clock, suspect={"at": clock(), "reason": "slow"})
    clock.now = (int(clock() // 60) + 2) * 60.0 + 1
    serve(endpoints, NEW, [CI_LIVE_MS] * 3)
    serve(endpoints, "blue", [CI_LIVE_MS] * 30)
    new, live = window_metrics(endpoints, record, clock())
    action = decide(record, obs(traffic=split(50), new_metrics=new, live_metrics=live), clock())
    assert isinstance(action, Wait) and "3 and 30 requests served, 5 of each needed" in action.reason
    assert advance(record, action, clock()).suspect == record.suspect


# ---- the last step: the live deployment serves nothing there, so the comparison is made before the move
def test_at_100_percent_the_live_requests_from_before_the_move_are_not_compared(
        endpoints: Endpoints, clock: Clock) -> None:
    """bench/canary_noise.py's false rollbacks under the rule before: at 100%, five canary requests in a stall
    just after the move, against the live deployment's hundreds, all served before it."""
    serve(endpoints, "blue", [CI_LIVE_MS] * 347)
    serve(endpoints, NEW, CI_CANARY_MS)
    record = at_50(clock, phase=2)
    new, live = window_metrics(endpoints, record, clock())
    assert "exceeds 10.0x" in metrics_breach(record.plan, new, live)          # what the rule before rolled back on
    action = decide(record, obs(traffic=split(100), new_metrics=new, live_metrics=live),
                    record.phase_started_at + record.plan.bake_seconds)
    assert action == Promote()


def test_the_move_to_100_percent_waits_for_a_sample_to_compare_beside_live_traffic(
        endpoints: Endpoints, clock: Clock) -> None:
    record = at_50(clock)
    serve(endpoints, "blue", [CI_LIVE_MS] * 30)
    serve(endpoints, NEW, [CI_LIVE_MS * 20] * 3)                            # slow, but only three so far
    new, live = window_metrics(endpoints, record, clock())
    done = record.phase_started_at + record.plan.bake_seconds
    action = decide(record, obs(traffic=split(50), new_metrics=new, live_metrics=live), done)
    assert action == Wait("at 50%: 3 of 5 requests served beside the live deployment's 30: its latency is "
                          "compared with the live one's before it takes all the traffic")
    serve(endpoints, NEW, [CI_LIVE_MS * 20] * 2)
    new, live = window_metrics(endpoints, record, clock())
    held = decide(record, obs(traffic=split(50), new_metrics=new, live_metrics=live), done)
    assert isinstance(held, Wait) and held.suspect is not None                 # judged: slower, to confirm


def test_without_traffic_the_move_to_100_percent_does_not_wait(endpoints: Endpoints, clock: Clock) -> None:
    """REFLEX_MIN_REQUESTS=0 advances without traffic: a quiet endpoint's rollout is not held for a sample."""
    record = at_50(clock)
    serve(endpoints, "blue", [CI_LIVE_MS] * 2)
    new, live = window_metrics(endpoints, record, clock())
    action = decide(record, obs(traffic=split(50), new_metrics=new, live_metrics=live),
                    record.phase_started_at + record.plan.bake_seconds)
    assert action == SetTraffic(split(100), {}, "baking", 2)
