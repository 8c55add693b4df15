"""Shared scenario builders for the rollout tests: models registered the way the platform does it, a live
endpoint, the Event Grid event Azure ML emits, and an invariant check over the fake's state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.core.platform import serving_states, traffic_problems
from testing.fake_platform import FakePlatform

MODEL = "reflex-model"
ENDPOINT = "reflex-endpoint"
SMOKE = '{"data": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}'
ROLLOUT_ENV = {"REFLEX_SMOKE_REQUEST": SMOKE, "REFLEX_BAKE_SECONDS": "600", "REFLEX_ROLLOUT_STEPS": "10,50,100",
               "REFLEX_RETAIN_SECONDS": "3600", "REFLEX_ROLLOUT_DEADLINE_SECONDS": "14400"}


def register_model(fp: FakePlatform, version: str, *, name: str = MODEL,
                   tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Register `name:version` through a completed job (as the gate does); returns the ModelRegistered event."""
    from shared.core.platform import REFLEX_TAG, TrainingRequest

    fp.register_data(name="d", version=version, path=f"azureml://datastores/x/paths/{version}/", tags={})
    job = f"job-{name}-{version}".lower()
    fp.submit_training(TrainingRequest(job, "reflex", "d", version, "command", "classification", "label", "cpu",
                                       "azureml:env:1"))
    fp.finish_job(job, metrics={"auc": 0.9})
    fp.register_model(name=name, version=version, job_name=job, tags={REFLEX_TAG: "true", **(tags or {})})
    return fp.events[-1]


def live_endpoint(fp: FakePlatform, *, version: str = "1", deployment: str = "blue",
                  endpoint: str = ENDPOINT) -> None:
    """An endpoint serving model `version` from `deployment` at 100%, the model tagged champion."""
    register_model(fp, version)
    provisioning, fp.provisioning_seconds = fp.provisioning_seconds, 0.0  # already live: provisioned long ago
    fp.update_model_tags(MODEL, version, set_tags={"reflex.champion": "true"})
    fp.begin_create_endpoint(endpoint)
    fp.begin_create_deployment(endpoint, deployment, model=f"{MODEL}:{version}", instance_type="Standard_DS3_v2",
                               instance_count=1)
    fp.set_traffic(endpoint, {deployment: 100})
    fp.provisioning_seconds = provisioning
    fp.traffic_updates.clear()


def invariant_problems(fp: FakePlatform, endpoint: str = ENDPOINT) -> list[str]:
    """The endpoint's invariant violations, read from the fake's state (never consumes injected errors).

    Traffic a deployment already has while it is Updating or Scaling is not a violation (it keeps serving);
    assigning traffic to one is still refused by the fake's `set_traffic`."""
    stored = fp.endpoints.get(endpoint)
    if stored is None:
        return []
    ep = fp._view(stored)
    return traffic_problems(ep.traffic, ep.mirror, serving_states({d.name: d.state for d in ep.deployments}))
