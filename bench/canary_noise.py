"""Canary verdicts on a loaded machine (#18.6): how often a sound canary is rolled back, and a slow one kept,
under the rule before (any latency breach rolls back at once, at every step, the last one included) beside the
rule now (a ratio breach held and confirmed over the next whole minute; the ratio judged while the live
deployment serves a share, and a sample of it taken before the move to 100%), on the same simulated traffic.

Why a simulation: the CI failure it answers ("median latency 904 ms exceeds 10.0x the live deployment's 71 ms
over the same 60 s (5 and 44 requests)") needs a stall to fall in the seconds after a traffic move; a real stack
shows it in about one CI run of a few. Here the parts that judge are the real ones: the local platform's
per-minute counters (local/endpoints.py `count`/`metrics`, on the in-memory state store), the flow's window
(`metrics_window`) and the pure machine (`decide`/`advance`). Simulated: time, and one client sending requests one
after another 0.1 s apart (local/demo.py `ClientTraffic`), routed by the traffic split, each taking a loaded
machine's latency (a lognormal around `--typical` ms; stalls that start at random, every `--stall-every` s on
average, last 1-6 s and slow every request in them, of either deployment, to 0.7-1.6 s). A "slow" canary takes
1.5 times the plan's ratio times the typical latency on each request. Ticks every 2 s, as the stack tests'
reconcile schedule. Each seed runs once under each rule, with the same random stream.

Plans: the stack tests' (tests/stack_support.py: no minimum of requests, ratio 10, bake 4 s) and the demo's
(local/demo.py: 10 requests, ratio 1.5, bake 10 s). Run: `.venv/bin/python bench/canary_noise.py [--trials N]`;
ends with one `RESULT canary_noise ...` line.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from local.endpoints import Endpoints  # noqa: E402
from shared.core.state import MemoryStateStore  # noqa: E402
from shared.rollout.machine import (  # noqa: E402
    Action,
    Observation,
    Promote,
    RollBack,
    Rollout,
    SetTraffic,
    advance,
    decide,
    metrics_breach,
    metrics_window,
)
from shared.rollout.plan import Plan, split_traffic  # noqa: E402

S = "Succeeded"
LIVE, NEW = "blue", "green"
PLANS = {"stack": Plan(steps=(10, 50, 100), bake_seconds=4, deadline_seconds=3600, max_latency_ratio=10.0,
                       max_latency_ms=10_000.0, min_requests=0),
         "demo": Plan(steps=(10, 50, 100), bake_seconds=10, deadline_seconds=3600, max_latency_ratio=1.5,
                      max_latency_ms=5000.0, min_requests=10)}


@dataclass
class Trial:
    end: str = ""              # "promoted" or "rolled_back"
    took: float = 0.0          # seconds from the first traffic step to the end


def decide_before(r: Rollout, o: Observation, now: float) -> Action:
    """The rule before: any breach, the ratio's included, rolls back at once at every step (the last one judged
    against the live deployment's requests of the step before, while the window reaches back), and a step is
    left without waiting for a sample to compare."""
    breach = metrics_breach(r.plan, o.new_metrics, o.live_metrics)
    if breach:
        return RollBack(breach, {})
    return decide(r, replace(o, live_metrics=None), now)


class Load:
    """A loaded machine's latency at each moment: stalls slow every request in them, whichever deployment."""

    def __init__(self, rng: random.Random, typical_ms: float, stall_every: float, since: float,
                 horizon: float) -> None:
        self.rng, self.typical = rng, typical_ms
        self.stalls: list[tuple[float, float]] = []
        t = since
        while t < horizon:
            t += rng.expovariate(1 / stall_every)
            self.stalls.append((t, t + rng.uniform(1.0, 6.0)))

    def latency(self, at: float, factor: float) -> float:
        if any(a <= at < b for a, b in self.stalls):
            return self.rng.uniform(700.0, 1600.0)
        return self.rng.lognormvariate(0.0, 0.25) * self.typical * factor


def run_trial(plan: Plan, seed: int, factor: float, typical: float, stall_every: float,
              rule: Callable[[Rollout, Observation, float], Action]) -> Trial:
    rng = random.Random(seed)
    clock = [1_700_000_000.0 + rng.uniform(0, 60)]
    endpoints = Endpoints(MemoryStateStore(), run_dir=ROOT, model_exists=lambda _: True, spawn_env={},
                          serving_url="http://127.0.0.1", quota_cores=8, clock=lambda: clock[0])
    load = Load(rng, typical, stall_every, since=clock[0], horizon=clock[0] + 4000)
    share = 0
    start = clock[0] + 60                      # the live deployment served alone for a minute before the move
    record = Rollout("ep", "m", "2", NEW, plan, created_at=start, status="baking", previous=LIVE,
                     previous_traffic={LIVE: 100}, phase=0, phase_started_at=start, started_at=start,
                     deadline=start + plan.deadline_seconds)
    next_tick = start
    while True:
        if clock[0] >= start and share == 0:
            share = plan.steps[0]
        if clock[0] >= next_tick and share:
            now = next_tick
            next_tick += 2.0
            window = metrics_window(record, now)
            seen = Observation(endpoint_state=S, traffic=split_traffic({LIVE: 100}, NEW, share),
                               deployments={LIVE: S, NEW: S},
                               new_metrics=endpoints.metrics("ep", NEW, window),
                               live_metrics=endpoints.metrics("ep", LIVE, window))
            action = rule(record, seen, now)
            if isinstance(action, (RollBack, Promote)):
                return Trial("rolled_back" if isinstance(action, RollBack) else "promoted", now - start)
            if isinstance(action, SetTraffic):
                share = action.traffic[NEW]
            record = advance(record, action, now)
        to_new = rng.random() * 100 < share
        ms = load.latency(clock[0], factor if to_new else 1.0)
        endpoints.count("ep", NEW if to_new else LIVE, error=False, latency_ms=ms)
        clock[0] += 0.1 + ms / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="rollouts per plan and kind of canary")
    parser.add_argument("--typical", type=float, default=70.0, help="typical latency on the loaded machine, ms")
    parser.add_argument("--stall-every", type=float, default=20.0, help="mean seconds between stalls")
    args = parser.parse_args()
    fields: list[str] = [f"trials={args.trials}"]
    for name, plan in PLANS.items():
        for kind, factor in (("sound", 1.0), ("slow", plan.max_latency_ratio * 1.5)):
            for label, rule in (("before", decide_before), ("now", decide)):
                trials = [run_trial(plan, seed, factor, args.typical, args.stall_every, rule)
                          for seed in range(args.trials)]
                back = [t for t in trials if t.end == "rolled_back"]
                mean = sum(t.took for t in back) / len(back) if back else 0.0
                print(f"{name:5} {kind:5} canary (x{factor:g}) {label:6}: rolled back {len(back):3}/{len(trials)}"
                      f" (after {mean:.0f} s on average)", flush=True)
                fields.append(f"{name}_{kind}_rolled_back_{label}={len(back)}")
                if kind == "slow":
                    fields.append(f"{name}_slow_rollback_s_{label}={mean:.0f}")
    print("RESULT canary_noise " + " ".join(fields))


if __name__ == "__main__":
    main()
