"""The real reaction chain, driven event by event on Azurite and the fake platform, for the ledger and CLI tests.

upload a batch (files, then the completion marker) -> `data.arrival` per BlobCreated event -> the platform finishes
the job and emits RunCompleted -> `registration.run_event` -> the platform emits ModelRegistered ->
`rollout.model_registered` -> `rollout.reconcile` ticks (healthy metrics) until the rollout ends.
Every step goes through `shared.core.reaction.run` with the handlers `functions/*` register, so the ledger holds
exactly what the deployed app writes. The flows' own behaviour is tested in tests/test_*_flow.py.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from functions import data_arrival, registration, rollout  # noqa: F401 - importing registers the handlers
from shared.core import reaction
from shared.core.deps import Deps
from shared.core.ledger import BlobLedger
from shared.core.platform import DeploymentMetrics
from shared.core.state import BlobStateStore
from shared.rollout.flow import rollout_key
from shared.rollout.machine import Rollout
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.rollout_helpers import ENDPOINT, MODEL, ROLLOUT_ENV
from tests.timers_support import upload

__all__ = ["CHAIN_ENV", "ENDPOINT", "MODEL", "Chain", "Lake", "World", "make_world"]

CHAIN_ENV = {**ROLLOUT_ENV, "REFLEX_BAKE_SECONDS": "300", "REFLEX_RETAIN_SECONDS": "600",
             "REFLEX_ENDPOINTS": f"{MODEL}={ENDPOINT}"}
HEALTHY = DeploymentMetrics(200, 0, 40.0, 300)
TICK = 130.0


class Lake:
    """A real data container on Azurite: uploads blobs and returns the BlobCreated event for each."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.name: str = container.container_name

    def put(self, blob: str, data: bytes = b"a,label\n1,0\n") -> dict[str, Any]:
        return upload(self.container, blob, data)

    def put_many(self, blobs: list[str]) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(self.put, blobs))


@dataclass
class Chain:
    """The ids one pass of the chain touched (what `explain` must find again)."""

    blobs: list[str]
    batch: str
    job: str = ""
    model: str = ""
    deployment: str = ""
    outcomes: list[reaction.Outcome] = field(default_factory=list)


@dataclass
class World:
    deps: Deps
    platform: FakePlatform
    lake: Lake
    clock: Clock

    def run(self, name: str, raw: Any, event_id: str) -> reaction.Outcome:
        return reaction.run(name, raw, event_id=event_id, deps=self.deps)

    def deliver(self, raw: dict[str, Any]) -> reaction.Outcome:
        """One BlobCreated event, as `on_data_blob` hands it to the runner."""
        return self.run("data.arrival", raw, raw["id"])

    def upload(self, batch: str, files: tuple[str, ...] = ("part-0.csv", "part-1.csv")) -> list[dict[str, Any]]:
        """Upload the batch's files, then its completion marker; the deliveries in that order."""
        return [*(self.lake.put(f"{batch}/{f}") for f in files), self.lake.put(f"{batch}/_SUCCESS", b"")]

    def last_event(self, kind: str) -> dict[str, Any]:
        return next(e for e in reversed(self.platform.events) if e["eventType"].endswith(kind))

    def finish(self, job: str, auc: float) -> dict[str, Any]:
        """The platform ends the job; the RunCompleted event Azure ML would send.

        The job logs the champion it was given (tag `reflex.eval.champion`) as train.py does, scored on the same
        rows: here the champion's own auc (the gate then compares like with like)."""
        metrics = {"auc": auc, "n_test": 40.0}
        scored = self.platform.jobs[job].tags.get("reflex.eval.champion", "none")
        if scored != "none":
            name, _, version = scored.partition(":")
            champion_job = self.platform.models[(name, version)].job_name
            metrics.update({"champion.auc": self.platform.job_metrics[champion_job]["auc"], "champion.failed": 0.0})
        self.platform.finish_job(job, metrics=metrics)
        return self.last_event("RunCompleted")

    def tick(self) -> reaction.Outcome:
        """One reconcile timer tick, every deployment reporting healthy metrics."""
        self.clock.advance(TICK)
        ep = self.platform.get_endpoint(ENDPOINT)
        for d in ep.deployments if ep else ():
            self.platform.metrics[(ENDPOINT, d.name)] = HEALTHY
        return self.run("rollout.reconcile", {"past_due": False}, "")

    def rollout(self) -> Rollout | None:
        record = self.deps.state.get(rollout_key(ENDPOINT))
        return Rollout.from_dict(record.value) if record else None

    def roll_out(self, limit: int = 40) -> Rollout:
        """Tick until the endpoint's rollout has ended."""
        for _ in range(limit):
            self.tick()
            r = self.rollout()
            if r is not None and r.terminal and not r.queued:
                return r
        raise AssertionError(f"rollout did not end in {limit} ticks: {self.rollout()}")

    def roll_until_split(self, limit: int = 20) -> Rollout:
        """Tick until the rollout's new deployment takes part, not all, of the endpoint's traffic."""
        for _ in range(limit):
            self.tick()
            ep, r = self.platform.get_endpoint(ENDPOINT), self.rollout()
            if ep is not None and r is not None and 0 < ep.traffic.get(r.deployment, 0) < 100:
                return r
        raise AssertionError(f"the new deployment never took part of the traffic: {self.rollout()}")

    def chain(self, batch: str, *, auc: float = 0.9, upto: str = "promoted") -> Chain:
        """Upload `batch` and run the chain `upto` its model "registered", "rolling" (the rollout started) or
        "promoted" (the rollout ended)."""
        raws = self.upload(batch)
        chain = Chain([r["data"]["url"] for r in raws], f"{self.lake.name}/{batch}")
        chain.outcomes = [self.deliver(raw) for raw in raws]
        chain.job = str(chain.outcomes[-1].details["job"])
        run_completed = self.finish(chain.job, auc)
        registered = self.run("registration.run_event", run_completed, run_completed["id"])
        chain.outcomes.append(registered)
        if registered.status != "acted":
            return chain
        chain.model = f"{MODEL}:{registered.details['version']}"
        if upto == "registered":
            return chain
        model_event = self.last_event("ModelRegistered")
        chain.outcomes.append(self.run("rollout.model_registered", model_event, model_event["id"]))
        if upto == "promoted":
            chain.deployment = self.roll_out().deployment
        return chain


def make_world(container_factory: Callable[[str], Any], clock: Clock, **env: str) -> World:
    """A data container and a state container (state + ledger) on Azurite, the fake platform, `CHAIN_ENV`."""
    lake = Lake(container_factory("data"))
    state = container_factory("state")
    platform = FakePlatform(clock=clock)
    settings = make_settings(**{**CHAIN_ENV, "REFLEX_DATA_CONTAINER": lake.name, **env})
    deps = make_deps(settings, state=BlobStateStore(state), platform=platform, clock=clock,
                     ledger=BlobLedger(state, clock))
    return World(deps, platform, lake, clock)
