"""HTTP requests per reaction and per rollout tick through the real azure-ai-ml SDK (#17.3, #14.7).

The flows run unchanged (`shared.rollout.reactions`, `shared.rollout.flow`, `shared.registration.flow`) on
`AzureMLPlatform` with every request answered by the REST stand-in (`testing.aml_service`, from the published
REST examples) and counted at the transport. Azure Monitor queries (the bake's health evidence) are counted
apart from Azure ML's. Bounds: a Wait tick at most 2 Azure ML requests, a traffic step at most 4 (the naive
read-modify-write: GET endpoint, list deployments, the SDK's workspace read, PUT), promote 5 here (see there; 4 in
the steady state, tests/test_scale_rollout_requests.py); the event that starts a rollout reads the model and
nothing else; a registration fetches the run's metrics once.
"""

from __future__ import annotations

import pytest
from aml_harness import azure_platform
from conftest import Clock, make_deps, make_settings
from rollout_helpers import ENDPOINT, MODEL, ROLLOUT_ENV
from rollout_requests import azure_ml_calls as _split
from rollout_requests import service
from rollout_requests import train as _train

from local import amlevents
from shared.core.platform import REFLEX_TAG
from shared.registration import flow as registration
from shared.registration import outside_models
from shared.rollout import reactions as rollout_reactions
from shared.rollout.flow import drive, rollout_key
from testing.aml_service import AmlService


@pytest.fixture
def svc() -> AmlService:
    return service()


def test_registration_fetches_the_run_metrics_once(svc: AmlService) -> None:
    clock = Clock()
    with azure_platform(svc) as p:
        deps = make_deps(make_settings(**ROLLOUT_ENV), platform=p, clock=clock)  # type: ignore[arg-type]
        _train(svc, p, "train-1", 0.8)
        start = len(svc.requests)
        outcome = registration.handle_run_event(amlevents.run_event(
            job_name="train-1", experiment_name="reflex", status="Completed", tags={REFLEX_TAG: "true"}), deps)
    assert outcome.status == "acted", outcome
    calls, _ = _split(svc, start)
    assert sum(path.endswith("/mlflow/runs/get") for _, path in calls) == 1, calls
    assert ("PUT", f"/models/{MODEL}/versions/1") in calls


def test_rollout_start_reads_only_the_model_and_every_tick_stays_within_the_naive_count(svc: AmlService) -> None:
    clock = Clock()
    svc.monitor[(ENDPOINT, "live")] = {"requests_by_class": {"2xx": 50}, "latency_ms": 20.0}
    with azure_platform(svc) as p:
        deps = make_deps(make_settings(**ROLLOUT_ENV), platform=p, clock=clock)  # type: ignore[arg-type]
        _train(svc, p, "train-1", 0.8)
        p.register_model(name=MODEL, version="1", job_name="train-1", tags={})
        p.begin_create_endpoint(ENDPOINT)
        p.begin_create_deployment(ENDPOINT, "live", model=f"{MODEL}:1", instance_type="Standard_DS3_v2",
                                  instance_count=1)
        p.set_traffic(ENDPOINT, {"live": 100})
        _train(svc, p, "train-2", 0.9)
        p.register_model(name=MODEL, version="2", job_name="train-2", tags={})

        start = len(svc.requests)
        event = amlevents.model_registered(name=MODEL, version="2", tags={})
        started = rollout_reactions.handle_model_registered(event, deps, outside_models)
        assert started.status == "acted", started
        assert _split(svc, start) == ([("GET", f"/models/{MODEL}/versions/2")], 0)

        ticks: list[tuple[str, list[tuple[str, str]], int]] = []
        for _ in range(40):
            clock.advance(601)
            record = deps.state.get(rollout_key(ENDPOINT))
            assert record is not None
            new = record.value["deployment"]
            svc.monitor[(ENDPOINT, new)] = {"requests_by_class": {"2xx": 50}, "latency_ms": 20.0}
            before = len(svc.requests)
            steps = drive(deps, rollout_key(ENDPOINT))
            if not steps or steps[-1].rollout.terminal:
                break
            calls, monitor = _split(svc, before)
            ticks.append((steps[-1].action.name, calls, monitor))
        final = deps.state.get(rollout_key(ENDPOINT))
    assert final is not None and final.value["status"] == "done", final.value
    by_action = {name: max(len(calls) for n, calls, _ in ticks if n == name) for name, _, _ in ticks}
    assert {"SetTraffic", "Promote", "Wait"} <= set(by_action), by_action
    assert by_action["SmokeTest"] <= 4    # read, listKeys (auth mode known from the read), the scoring POST
    assert by_action["Wait"] <= 2, [t for t in ticks if t[0] == "Wait"]
    assert by_action["SetTraffic"] <= 4, [t for t in ticks if t[0] == "SetTraffic"]
    # promote: the tick's read (2) and the champion tag on the new version (GET + PUT: a model version has no
    # partial update); here no champion pointer exists yet (v1 never went through a promotion), so the pointer's
    # first move lists the versions once to learn which carry the tag: 5. With the pointer, 4; a former champion
    # is untagged by the next tick (Demote), within the same 4 (tests/test_scale_rollout_requests.py).
    assert by_action["Promote"] <= 5, [t for t in ticks if t[0] == "Promote"]
    for name, calls, _ in ticks:   # one endpoint read per tick, one deployments listing per read
        # (the SDK's online_deployments.begin_create_or_update GETs the endpoint itself before its PUT:
        # azure-ai-ml 1.35.2 _online_deployment_operations.py, `self._online_endpoint_operations.get`)
        own = 2 if name == "CreateDeployment" else 1
        assert calls.count(("GET", f"/onlineEndpoints/{ENDPOINT}")) <= own, calls
        assert calls.count(("GET", f"/onlineEndpoints/{ENDPOINT}/deployments")) <= 1, calls
