"""Azure ML HTTP requests per rollout tick: the real flows on the real azure-ai-ml SDK, every request answered by
the REST stand-in (`testing.aml_service`, from the service's published REST examples) and counted at the
transport (#17.3).

Shared by tests/test_scale_rollout_requests.py (the bounds) and bench/scale.py (the figures): two rollouts on one
endpoint, the way a model's life starts. The first puts version 1 on a new endpoint (its promotion is the model's
first, so the champion pointer is written there); the second rolls version 2 out beside it (the steady state:
canary steps, bake, promote, the former champion untagged, the old deployment retired). Azure Monitor queries
(the bake's health evidence) are counted apart from Azure ML's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aml_harness import azure_platform
from conftest import Clock, make_deps, make_settings
from rollout_helpers import ENDPOINT, MODEL, ROLLOUT_ENV

from local import amlevents
from shared.core import champion as champions
from shared.core.platform import REFLEX_TAG, TrainingRequest
from shared.registration import outside_models
from shared.rollout import reactions as rollout_reactions
from shared.rollout.flow import drive, rollout_key
from testing.aml_service import AmlService

__all__ = ["MONITOR", "Rollouts", "Tick", "azure_ml_calls", "service", "train", "two_rollouts"]

MONITOR = "/providers/Microsoft.Insights/metrics"


@dataclass(frozen=True)
class Tick:
    """One reconciler step: the action it took, the Azure ML requests it sent (method, path), Monitor queries."""

    action: str
    calls: tuple[tuple[str, str], ...]
    monitor: int

    @property
    def requests(self) -> int:
        return len(self.calls)


@dataclass
class Rollouts:
    """What `two_rollouts` saw: each rollout's ticks, and the registry and pointer at the end."""

    first: list[Tick] = field(default_factory=list)
    second: list[Tick] = field(default_factory=list)
    statuses: tuple[str, str] = ("", "")
    tags: dict[str, dict[str, str]] = field(default_factory=dict)   # version -> its tags at the end
    pointer: Any = None

    def most(self, action: str, rollout: int = 2) -> int:
        """The most requests a tick taking `action` sent in `rollout` (1 or 2); 0 when none took it."""
        ticks = self.first if rollout == 1 else self.second
        return max((t.requests for t in ticks if t.action == action), default=0)


def service() -> AmlService:
    """The stand-in, answering every scoring call with one prediction per input row (the smoke test passes)."""
    svc = AmlService()
    svc.responder = lambda ep, dep, body: (200, json.dumps([0] * len((body or {}).get("data", []))))
    return svc


def azure_ml_calls(svc: AmlService, since: int) -> tuple[list[tuple[str, str]], int]:
    """The Azure ML requests since request number `since`, and how many Azure Monitor queries went beside them."""
    calls = svc.calls(since)
    return [c for c in calls if MONITOR not in c[1]], sum(MONITOR in c[1] for c in calls)


def train(svc: AmlService, p: Any, job: str, auc: float) -> None:
    """A finished training job (its data asset registered, its metrics in the workspace's MLflow)."""
    p.register_data(name="sales", version=job, path="azureml://datastores/d/paths/sales/b1/", tags={})
    p.submit_training(TrainingRequest(job_name=job, experiment_name="reflex", data_name="sales", data_version=job,
                                      mode="command", task="classification", label_column="y", compute="cpu",
                                      environment="azureml:reflex-train:1", tags={REFLEX_TAG: "true"}))
    svc.finish_job(job, metrics={"auc": auc, "n_test": 200})


def _roll_out(svc: AmlService, p: Any, deps: Any, clock: Clock, version: str, *, limit: int = 60) -> list[Tick]:
    """Register `version` through its ModelRegistered event, then step the reconciler until the rollout ends."""
    p.register_model(name=MODEL, version=version, job_name=f"train-{version}", tags={})
    started = rollout_reactions.handle_model_registered(
        amlevents.model_registered(name=MODEL, version=version, tags={}), deps, outside_models)
    assert started.status == "acted", started
    ticks: list[Tick] = []
    for _ in range(limit):
        clock.advance(601)
        record = deps.state.get(rollout_key(ENDPOINT))
        assert record is not None
        svc.monitor[(ENDPOINT, record.value["deployment"])] = {"requests_by_class": {"2xx": 50}, "latency_ms": 20.0}
        before = len(svc.requests)
        steps = drive(deps, rollout_key(ENDPOINT))
        calls, monitor = azure_ml_calls(svc, before)
        ticks.append(Tick(steps[-1].action.name if steps else "", tuple(calls), monitor))
        if not steps or steps[-1].rollout.terminal:
            return ticks
    raise AssertionError(f"the rollout of {MODEL}:{version} did not end in {limit} ticks: {ticks[-3:]}")


def two_rollouts() -> Rollouts:
    """Version 1 onto a new endpoint, then version 2 beside it; every tick's requests."""
    svc = service()
    clock = Clock()
    seen = Rollouts()
    with azure_platform(svc) as p:
        deps = make_deps(make_settings(**ROLLOUT_ENV), platform=p, clock=clock)  # type: ignore[arg-type]
        train(svc, p, "train-1", 0.8)
        seen.first = _roll_out(svc, p, deps, clock, "1")
        first = deps.state.get(rollout_key(ENDPOINT))
        train(svc, p, "train-2", 0.9)
        seen.second = _roll_out(svc, p, deps, clock, "2")
        second = deps.state.get(rollout_key(ENDPOINT))
        seen.statuses = (str(first.value["status"]) if first else "", str(second.value["status"]) if second else "")
        seen.tags = {v: dict(p.get_model(MODEL, v).tags) for v in ("1", "2")}  # type: ignore[union-attr]
        seen.pointer = champions.pointer(deps, MODEL)
    return seen
