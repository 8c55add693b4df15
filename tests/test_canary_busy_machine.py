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
from shared.rollout.machine import RollBack, SetTraffic, Wait, decide, metrics_breach
from tests.conftest import Clock
from tests.test_rollout_machine import NEW, _demo_plan, obs, rec, split

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
    action = decide(rec(plan=plan), obs(traffic=split(plan.steps[0]), new_metrics=new, live_metrics=live), 1005.0)
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
