"""ONE protocol suite, run against the behavioural fake and the Azure ML adapter (real SDK, HTTP intercepted).

Whatever the flows may observe through `shared.core.platform.MLPlatform` is asserted here for both, so the fake the
flow tests use cannot drift from the adapter that runs in Azure. Behaviour only one side can show (the fake's
test controls, the adapter's wire shape) lives in tests/test_azureml_contract.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from aml_harness import azure_platform
from conftest import Clock

from shared.core.errors import PermanentError, TransientError
from shared.core.platform import CHAMPION_TAG, BatchDeploymentSpec, DeploymentMetrics, MLPlatform, TrainingRequest
from testing.aml_service import AmlService
from testing.fake_platform import FakePlatform

REQ = TrainingRequest(job_name="train-0001", experiment_name="reflex", data_name="sales", data_version="1",
                      mode="command", task="classification", label_column="y", compute="cpu-cluster",
                      environment="azureml:reflex-train:1", tags={"reflex.trigger": "test"})
DATA = "azureml://datastores/reflexdata/paths/sales/b1/"


class Backend:
    """One platform plus the few test controls both sides can honour (the service's side of the world)."""

    def __init__(self, kind: str, clock: Clock, provisioning_seconds: float, stack: ExitStack) -> None:
        self.kind, self.clock = kind, clock
        if kind == "fake":
            self.fake = FakePlatform(clock=clock, provisioning_seconds=provisioning_seconds)
            self.platform: MLPlatform = self.fake
        else:
            self.svc = AmlService(clock=clock, provisioning_seconds=provisioning_seconds)
            self.platform = stack.enter_context(azure_platform(self.svc))

    def finish_job(self, name: str, status: str = "Completed", metrics: dict[str, float] | None = None) -> None:
        if self.kind == "fake":
            self.fake.finish_job(name, status, metrics=metrics)
        else:
            self.svc.finish_job(name, status, metrics=metrics)

    def set_metrics(self, endpoint: str, deployment: str, requests: int, errors: int, latency: float) -> None:
        if self.kind == "fake":
            self.fake.metrics[(endpoint, deployment)] = DeploymentMetrics(requests, errors, latency, 0)
        else:
            self.svc.monitor[(endpoint, deployment)] = {
                "requests_by_class": {"2xx": requests - errors, "5xx": errors}, "latency_ms": latency}

    def disown_endpoint(self, name: str) -> None:
        """Someone else's endpoint of that name in the workspace: no `reflex.managed` tag."""
        if self.kind == "fake":
            self.fake.endpoints[name].tags = {"owner": "someone else"}
        else:
            self.svc.resources[f"/onlineEndpoints/{name}".lower()]["tags"] = {"owner": "someone else"}

    def throttle_next_job_read(self, retry_after: float) -> None:
        if self.kind == "fake":
            self.fake.inject("get_job", TransientError("job: service answered 429", retry_after))
        else:
            self.svc.fail("GET", r"/jobs/", 429, headers={"Retry-After": str(int(retry_after))})


@pytest.fixture(params=["fake", "azureml"])
def make_backend(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Any]:
    with ExitStack() as stack:
        yield lambda provisioning_seconds=0.0: Backend(request.param, clock, provisioning_seconds, stack)


@pytest.fixture
def backend(make_backend: Any) -> Backend:
    return make_backend()


def _trained(b: Backend, name: str = "churn", version: str = "1") -> None:
    p = b.platform
    p.register_data(name="sales", version="1", path=DATA, tags={})
    p.submit_training(REQ)
    b.finish_job(REQ.job_name, metrics={"auc": 0.9})
    p.register_model(name=name, version=version, job_name=REQ.job_name, tags={"reflex.parent": REQ.job_name})


# ------------------------------------------------------------------ data and training
def test_data_assets_are_versioned_and_idempotent(backend: Backend) -> None:
    p = backend.platform
    assert p.get_data("sales", "1") is None
    first = p.register_data(name="sales", version="1", path=DATA, tags={"reflex.data": DATA})
    again = p.register_data(name="sales", version="1", path=DATA, tags={"reflex.data": DATA})
    assert (first.name, first.version, first.path) == (again.name, again.version, again.path) == ("sales", "1", DATA)
    assert first.tags["reflex.data"] == DATA
    got = p.get_data("sales", "1")
    assert got is not None and got.path == DATA
    with pytest.raises(PermanentError):
        p.register_data(name="sales", version="1", path=DATA + "other/", tags={})


def test_training_submission_is_idempotent_and_guards_the_traps(backend: Backend) -> None:
    p = backend.platform
    p.register_data(name="sales", version="1", path=DATA, tags={})
    job = p.submit_training(REQ)
    assert (job.name, job.experiment_name, job.kind, job.terminal) == (REQ.job_name, "reflex", "command", False)
    assert job.tags["reflex.trigger"] == "test"
    assert p.submit_training(REQ).name == REQ.job_name
    for change in ({"job_name": "Train-0002"}, {"environment": "azureml:reflex-train@latest"},
                   {"experiment_name": ""}):
        with pytest.raises(PermanentError):
            p.submit_training(dataclasses.replace(REQ, **change))
    assert p.get_job("train-9999") is None
    backend.finish_job(REQ.job_name, "Completed", metrics={"auc": 0.93})
    done = p.get_job(REQ.job_name)
    assert done is not None and done.status == "Completed" and done.terminal and "model" in done.outputs
    assert p.get_job_metrics(REQ.job_name) == {"auc": 0.93}
    with pytest.raises(PermanentError):
        p.get_job_metrics("train-unknown")


def test_failed_job_is_terminal(backend: Backend) -> None:
    p = backend.platform
    p.register_data(name="sales", version="1", path=DATA, tags={})
    p.submit_training(REQ)
    backend.finish_job(REQ.job_name, "Failed")
    job = p.get_job(REQ.job_name)
    assert job is not None and job.status == "Failed" and job.terminal


def test_throttling_is_transient_with_the_hint(backend: Backend) -> None:
    backend.throttle_next_job_read(12)
    with pytest.raises(TransientError) as caught:
        backend.platform.get_job(REQ.job_name)
    assert caught.value.retry_after == 12
    assert backend.platform.get_job(REQ.job_name) is None


# ------------------------------------------------------------------ models
def test_models_versions_champion_and_tags(backend: Backend) -> None:
    p = backend.platform
    assert p.get_model("churn", "1") is None and p.list_models("churn") == [] and p.find_champion("churn") is None
    _trained(backend, version="1")
    again = p.register_model(name="churn", version="1", job_name=REQ.job_name, tags={})
    assert again.ref == "churn:1" and again.path.endswith(f"/jobs/{REQ.job_name}/outputs/model/paths/")
    p.register_model(name="churn", version="2", job_name=REQ.job_name, tags={"reflex.approval": "pending"})
    with pytest.raises(PermanentError):
        p.register_model(name="churn", version="", job_name=REQ.job_name, tags={})
    assert [m.version for m in p.list_models("churn")] == ["1", "2"]
    model = p.get_model("churn", "2")
    assert model is not None and model.job_name == REQ.job_name and model.tags["reflex.approval"] == "pending"
    p.update_model_tags("churn", "1", set_tags={CHAMPION_TAG: "true"})
    assert p.find_champion("churn").version == "1"
    updated = p.update_model_tags("churn", "2", set_tags={CHAMPION_TAG: "true"}, remove=("reflex.approval",))
    assert "reflex.approval" not in updated.tags and p.find_champion("churn").version == "2"
    p.update_model_tags("churn", "2", remove=(CHAMPION_TAG,))
    assert p.find_champion("churn").version == "1"
    with pytest.raises(PermanentError):
        p.update_model_tags("churn", "7", set_tags={"a": "b"})


# ------------------------------------------------------------------ online endpoints
def _endpoint_with(b: Backend, *deployments: str) -> None:
    _trained(b)
    b.platform.begin_create_endpoint("churn-ep", tags={"reflex.model": "churn"})
    for d in deployments:
        b.platform.begin_create_deployment("churn-ep", d, model="churn:1", instance_type="Standard_DS3_v2",
                                           instance_count=1)


def test_rollout_lifecycle(backend: Backend) -> None:
    p = backend.platform
    assert p.get_endpoint("churn-ep") is None
    _endpoint_with(backend, "blue", "green")
    ep = p.get_endpoint("churn-ep")
    assert ep is not None and ep.state == "Succeeded" and ep.traffic == {"blue": 0, "green": 0}
    assert ep.tags["reflex.model"] == "churn" and ep.scoring_uri.startswith("https://")
    assert p.set_traffic("churn-ep", {"blue": 100}).traffic == {"blue": 100, "green": 0}
    mirrored = p.set_traffic("churn-ep", {"blue": 100}, mirror={"green": 10})
    assert mirrored.mirror == {"green": 10}
    p.begin_create_endpoint("churn-ep")                       # already there: traffic must survive
    ep = p.get_endpoint("churn-ep")
    assert ep.traffic == {"blue": 100, "green": 0} and ep.mirror == {"green": 10} and ep.live == "blue"
    step = p.set_traffic("churn-ep", {"blue": 90, "green": 10})
    assert step.traffic == {"blue": 90, "green": 10} and step.mirror == {}
    assert p.invoke("churn-ep", "green", {"data": [[1, 2]]}).status == 200
    with pytest.raises(PermanentError):
        p.begin_delete_deployment("churn-ep", "green")
    p.set_traffic("churn-ep", {"green": 100})
    p.begin_delete_deployment("churn-ep", "blue")
    assert p.get_deployment("churn-ep", "blue") is None
    p.begin_delete_deployment("churn-ep", "blue")
    assert p.get_endpoint("churn-ep").traffic == {"green": 100}


@pytest.mark.parametrize("traffic, mirror", [({"blue": 50}, {}), ({"blue": 100}, {"green": 60}),
                                             ({"blue": 100}, {"blue": 5}), ({"blue": 90, "red": 10}, {}),
                                             ({"blue": 100}, {"green": 5, "blue": 0, "red": 5})])
def test_invalid_traffic_is_refused(backend: Backend, traffic: dict, mirror: dict) -> None:
    _endpoint_with(backend, "blue", "green")
    with pytest.raises(PermanentError):
        backend.platform.set_traffic("churn-ep", traffic, mirror)
    assert backend.platform.get_endpoint("churn-ep").traffic == {"blue": 0, "green": 0}


def test_traffic_waits_for_provisioning(make_backend: Any, clock: Clock) -> None:
    b = make_backend(provisioning_seconds=120)
    _trained(b)
    b.platform.begin_create_endpoint("churn-ep")
    assert b.platform.get_endpoint("churn-ep").state == "Creating"
    clock.advance(121)
    b.platform.begin_create_deployment("churn-ep", "blue", model="churn:1", instance_type="Standard_DS3_v2",
                                       instance_count=1)
    assert b.platform.get_deployment("churn-ep", "blue").state == "Creating"
    with pytest.raises(PermanentError):
        b.platform.set_traffic("churn-ep", {"blue": 100})
    clock.advance(121)
    assert b.platform.get_deployment("churn-ep", "blue").succeeded
    assert b.platform.set_traffic("churn-ep", {"blue": 100}).traffic == {"blue": 100}


def test_an_endpoint_reflex_did_not_create_is_never_redefined(backend: Backend) -> None:
    p = backend.platform
    p.begin_create_endpoint("churn-ep")
    p.begin_create_endpoint("churn-ep")                               # Reflex's own: idempotent
    assert p.get_endpoint("churn-ep").tags.get("reflex.managed") == "true"
    backend.disown_endpoint("churn-ep")
    with pytest.raises(PermanentError, match="REFLEX_ENDPOINTS"):
        p.begin_create_endpoint("churn-ep")


def test_metrics_quota(backend: Backend) -> None:
    p = backend.platform
    _endpoint_with(backend, "green")
    backend.set_metrics("churn-ep", "green", 200, 4, 35.0)
    m = p.get_deployment_metrics("churn-ep", "green", window_seconds=300)
    assert (m.requests, m.errors, m.latency_ms, m.window_seconds, m.error_rate) == (200, 4, 35.0, 300, 0.02)
    assert m.has_data
    quiet = p.get_deployment_metrics("churn-ep", "blue", window_seconds=300)   # nothing reported: no data yet
    assert (quiet.requests, quiet.has_data, quiet.latency_ms) == (0, False, None)
    q = p.check_quota("Standard_DS3_v2", 3)   # 3 instances + the 20% upgrade reserve = 4 x 4 cores
    assert (q.family, q.needed, q.limit) == ("standardDSv2Family", 16, 64) and q.ok
    assert not p.check_quota("Standard_DS4_v2", 9).ok
    with pytest.raises(PermanentError):
        p.check_quota("Standard_Unknown", 1)


# ------------------------------------------------------------------ batch
def test_batch_deployment_advances_step_by_step_and_invoke_is_idempotent(make_backend: Any, clock: Clock) -> None:
    b = make_backend(provisioning_seconds=60)
    _trained(b)
    spec = BatchDeploymentSpec(endpoint="churn-batch", deployment="v1", model="churn:1", compute="cpu-cluster")
    p = b.platform
    p.begin_ensure_batch_deployment(spec)
    assert p.get_batch_deployment("churn-batch", "v1") is None          # the endpoint is still being created
    clock.advance(61)
    p.begin_ensure_batch_deployment(spec)
    assert p.get_batch_deployment("churn-batch", "v1").state == "Creating"
    clock.advance(61)
    p.begin_ensure_batch_deployment(spec)
    dep = p.get_batch_deployment("churn-batch", "v1")
    assert dep.succeeded and dep.model == "churn:1"
    out = "azureml://datastores/reflexoutputs/paths/score-1/predictions.csv"
    job = p.invoke_batch("churn-batch", "v1", input_path="azureml://datastores/reflexscoring/paths/b1/",
                         output_path=out, job_name="score-1")
    assert (job.name, job.kind, job.terminal, job.outputs["score"]) == ("score-1", "batch", False, out)
    again = p.invoke_batch("churn-batch", "v1", input_path="azureml://datastores/reflexscoring/paths/b1/",
                           output_path=out, job_name="score-1")
    assert again.name == "score-1" and again.outputs["score"] == out
    assert p.get_job("score-1").kind == "batch"
