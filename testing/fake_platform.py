"""A behavioural fake of `shared.core.platform.MLPlatform` for flow tests and benchmarks.

Why not a mock: a MagicMock lets any call "succeed", so a flow could do nothing and still pass. This fake keeps
state (assets, versions, jobs, endpoints, traffic), enforces the same invariants and raises the same errors as
the Azure ML adapter (a repeated name is success, an invalid traffic split or a delete under traffic is a
`PermanentError`, injected throttling is a `TransientError`), and the shared protocol suite
(tests/test_platform_protocol.py) holds it and the adapters to the same behaviour.

Time is a callable `clock` so tests advance it instead of sleeping: long operations (endpoint and deployment
provisioning) complete `provisioning_seconds` after they begin, observed on the next `get_*`.
Azure ML's passing states are modelled the same way: `transition` puts an endpoint or deployment in Updating
(or Scaling, Creating) for some seconds, as maintenance or a scale change does, and with
`traffic_update_seconds` the endpoint reports Updating for that long after every traffic update, as Azure's does.
Jobs finish only when the test says so (`finish_job`), as on the real service. The Azure ML events the real
service would emit (RunCompleted, RunStatusChanged, ModelRegistered) are appended to `events` in Event Grid
schema, for tests to deliver to the functions.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.core.errors import PermanentError, ReflexError
from shared.core.platform import (
    CHAMPION_TAG,
    REFLEX_TAG,
    SERVING_TRANSITIONS,
    SUCCEEDED,
    BatchDeploymentSpec,
    DataAsset,
    Deployment,
    DeploymentMetrics,
    Endpoint,
    EvaluationRequest,
    InvokeResult,
    Job,
    ModelVersion,
    QuotaCheck,
    TrainingRequest,
    cores_needed,
    job_output_uri,
    model_output,
    require_reflex_owned,
    traffic_problems,
)

__all__ = ["FakePlatform", "VM_SIZES"]

WORKSPACE_TOPIC = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
                   "Microsoft.MachineLearningServices/workspaces/fake")

# cores and quota family of the VM sizes the tests use
VM_SIZES: dict[str, tuple[int, str]] = {
    "Standard_DS2_v2": (2, "standardDSv2Family"),
    "Standard_DS3_v2": (4, "standardDSv2Family"),
    "Standard_DS4_v2": (8, "standardDSv2Family"),
    "Standard_F4s_v2": (4, "standardFSv2Family"),
}


@dataclass
class _Pending:
    state: str
    ready_at: float
    outcome: str = SUCCEEDED


@dataclass
class _Endpoint:
    name: str
    tags: dict[str, str]
    pending: _Pending
    traffic: dict[str, int] = field(default_factory=dict)
    mirror: dict[str, int] = field(default_factory=dict)
    deployments: dict[str, tuple[Deployment, _Pending]] = field(default_factory=dict)


class FakePlatform:
    """In-memory ML platform with Azure ML's rules. Inspect `calls`, `events`, `traffic_updates` in tests."""

    name = "fake"

    def __init__(self, *, clock: Callable[[], float] = time.time, provisioning_seconds: float = 0.0,
                 quota_limits: Mapping[str, int] | None = None, traffic_update_seconds: float = 0.0) -> None:
        self.clock = clock
        self.provisioning_seconds = provisioning_seconds
        self.traffic_update_seconds = traffic_update_seconds
        self.quota_limits = dict(quota_limits or {"standardDSv2Family": 64, "standardFSv2Family": 64})
        self.calls: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.traffic_updates: list[tuple[str, dict[str, int], dict[str, int]]] = []
        self.data: dict[tuple[str, str], DataAsset] = {}
        self.jobs: dict[str, Job] = {}
        self.job_requests: dict[str, TrainingRequest] = {}
        self.evaluation_requests: dict[str, EvaluationRequest] = {}
        self.job_metrics: dict[str, dict[str, float]] = {}
        self.models: dict[tuple[str, str], ModelVersion] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        self.batch_endpoints: dict[str, _Endpoint] = {}
        self.batch_outputs: set[str] = set()
        self.metrics: dict[tuple[str, str], DeploymentMetrics] = {}
        self.failing_deployments: set[str] = set()
        self.responder: Callable[[str, str, Mapping[str, Any]], InvokeResult] = (
            lambda ep, dep, body: InvokeResult(200, json.dumps([0] * len(body.get("data", [0]))), 12.0))
        self._injected: list[tuple[str, ReflexError, int]] = []

    # ------------------------------------------------------------------ test controls
    def inject(self, operation: str, error: ReflexError, times: int = 1) -> None:
        """Make the next `times` calls of `operation` raise `error` before doing anything."""
        self._injected.append((operation, error, times))

    def transition(self, endpoint: str, deployment: str | None = None, *, state: str = "Updating",
                   seconds: float) -> None:
        """Make the endpoint (or one of its deployments) report `state` for `seconds`, then what it was headed for.

        A deployment in transition keeps the traffic it has and keeps serving (as on Azure ML); new traffic to it
        is refused like any deployment that is not Succeeded.
        """
        ep = self._endpoint(endpoint, "transition")
        if deployment is None:
            ep.pending = _Pending(state, max(ep.pending.ready_at, self.clock() + seconds), ep.pending.outcome)
            return
        dep, pending = ep.deployments[deployment]
        ep.deployments[deployment] = (dep, _Pending(state, max(pending.ready_at, self.clock() + seconds),
                                                    pending.outcome))

    def finish_job(self, name: str, status: str = "Completed", *, metrics: Mapping[str, float] | None = None,
                   outputs: Mapping[str, str] | None = None, error: str = "") -> Job:
        """End a job as the service would, and emit the event Azure ML would send."""
        job = self.jobs[name]
        # the output the service reports for the job's kind: `model` (command) or `best_model` (AutoML)
        default_outputs = {model_output(job.kind): job_output_uri(name, model_output(job.kind))} \
            if job.kind != "batch" else {}
        if name in self.evaluation_requests:
            default_outputs = {}  # an evaluation job produces metrics only
        job = replace(job, status=status, error=error,
                      outputs=dict(outputs if outputs is not None else (job.outputs or default_outputs)))
        self.jobs[name] = job
        if metrics is not None:
            self.job_metrics[name] = dict(metrics)
        run = {"experimentId": str(uuid.uuid5(uuid.NAMESPACE_URL, job.experiment_name)),
               "experimentName": job.experiment_name, "runId": name, "runType": None,
               "runTags": dict(job.tags), "runProperties": {}}
        if status == "Completed":
            self._emit("RunCompleted", f"experiments/{run['experimentId']}/runs/{name}", run)
        else:
            self._emit("RunStatusChanged", f"experiments/{run['experimentId']}/runs/{name}",
                       {**run, "runStatus": status.lower()})
        return job

    # ------------------------------------------------------------------ helpers
    def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        for i, (op, error, times) in enumerate(self._injected):
            if op == operation:
                if times <= 1:
                    del self._injected[i]
                else:
                    self._injected[i] = (op, error, times - 1)
                raise error

    def _emit(self, kind: str, subject: str, data: Mapping[str, Any]) -> None:
        self.events.append({
            "id": str(uuid.uuid4()), "topic": WORKSPACE_TOPIC, "subject": subject,
            "eventType": f"Microsoft.MachineLearningServices.{kind}",
            "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": dict(data), "dataVersion": "2", "metadataVersion": "1"})

    def _pending(self, outcome: str = SUCCEEDED, state: str = "Creating") -> _Pending:
        return _Pending(state, self.clock() + self.provisioning_seconds, outcome)

    def _state(self, pending: _Pending) -> str:
        return pending.outcome if self.clock() >= pending.ready_at else pending.state

    # ------------------------------------------------------------------ data and training
    def register_data(self, *, name: str, version: str, path: str, tags: Mapping[str, str],
                      description: str = "") -> DataAsset:
        self._call("register_data")
        existing = self.data.get((name, version))
        if existing is not None:
            if existing.path != path:
                raise PermanentError(f"data asset {name}:{version} exists with another path ({existing.path})")
            return existing
        asset = DataAsset(name, version, path, dict(tags))
        self.data[(name, version)] = asset
        return asset

    def get_data(self, name: str, version: str) -> DataAsset | None:
        self._call("get_data")
        return self.data.get((name, version))

    def submit_training(self, request: TrainingRequest) -> Job:
        self._call("submit_training")
        if request.job_name != request.job_name.lower() or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,254}",
                                                                             request.job_name):
            raise PermanentError(f"job {request.job_name}: names must be lower-case letters, digits, - and _")
        if "@latest" in request.environment or not request.environment:
            raise PermanentError(f"job {request.job_name}: environment must be pinned, got {request.environment!r}")
        if not request.experiment_name:
            raise PermanentError(f"job {request.job_name}: experiment_name must be set")
        if (request.data_name, request.data_version) not in self.data:
            raise PermanentError(f"job {request.job_name}: data asset {request.data_name}:{request.data_version} "
                                 "does not exist")
        existing = self.jobs.get(request.job_name)
        if existing is not None:
            return existing
        job = Job(request.job_name, "Queued", kind=request.mode, experiment_name=request.experiment_name,
                  tags=dict(request.tags), url=f"https://ml.fake/jobs/{request.job_name}")
        self.jobs[request.job_name] = job
        self.job_requests[request.job_name] = request
        return job

    def _model_input(self, what: str, ref: str) -> None:
        """An evaluation's model must exist, in the forms Azure ML takes as an `mlflow_model` input."""
        job_output = re.fullmatch(r"azureml://jobs/([^/]+)/outputs/([^/]+)", ref)
        if job_output:
            job = self.jobs.get(job_output.group(1))
            if job is None or job_output.group(2) not in job.outputs:
                raise PermanentError(f"{what}: {ref} does not exist")
            return
        registered = re.fullmatch(r"azureml:([^:]+):([^:]+)", ref)
        if registered is None or (registered.group(1), registered.group(2)) not in self.models:
            raise PermanentError(f"{what}: model {ref} does not exist")

    def submit_evaluation(self, request: EvaluationRequest) -> Job:
        self._call("submit_evaluation")
        what = f"job {request.job_name}"
        if request.job_name != request.job_name.lower() or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,254}",
                                                                             request.job_name):
            raise PermanentError(f"{what}: names must be lower-case letters, digits, - and _")
        if (request.data_name, request.data_version) not in self.data:
            raise PermanentError(f"{what}: data asset {request.data_name}:{request.data_version} does not exist")
        existing = self.jobs.get(request.job_name)
        if existing is not None:
            return existing
        for ref in request.models.values():
            self._model_input(what, ref)
        job = Job(request.job_name, "Queued", kind="command", experiment_name=request.experiment_name,
                  tags=dict(request.tags), url=f"https://ml.fake/jobs/{request.job_name}")
        self.jobs[request.job_name] = job
        self.evaluation_requests[request.job_name] = request
        return job

    def get_job(self, name: str) -> Job | None:
        self._call("get_job")
        return self.jobs.get(name)

    def get_job_metrics(self, name: str) -> Mapping[str, float]:
        self._call("get_job_metrics")
        if name not in self.jobs:
            raise PermanentError(f"job {name}: not found")
        return dict(self.job_metrics.get(name, {}))

    # ------------------------------------------------------------------ models
    def register_model(self, *, name: str, version: str, job_name: str, output_name: str = "model",
                       tags: Mapping[str, str], properties: Mapping[str, str] | None = None,
                       description: str = "") -> ModelVersion:
        self._call("register_model")
        if not version:
            raise PermanentError(f"model {name}: version must be explicit")
        job = self.jobs.get(job_name)
        if job is None or job.status != "Completed":
            raise PermanentError(f"model {name}:{version}: job {job_name} has not completed")
        if output_name not in job.outputs:
            raise PermanentError(f"model {name}:{version}: job {job_name} has no output {output_name!r}")
        path = job_output_uri(job_name, output_name)
        existing = self.models.get((name, version))
        if existing is not None:
            if existing.path != path:
                raise PermanentError(f"model {name}:{version} exists with another path ({existing.path})")
            return existing
        model = ModelVersion(name, version, path, "mlflow_model", dict(tags), dict(properties or {}), job_name)
        self.models[(name, version)] = model
        self._emit("ModelRegistered", f"models/{name}:{version}",
                   {"modelName": name, "modelVersion": version, "modelTags": dict(tags),
                    "modelProperties": dict(properties or {})})
        return model

    def get_model(self, name: str, version: str) -> ModelVersion | None:
        self._call("get_model")
        return self.models.get((name, version))

    def list_models(self, name: str) -> list[ModelVersion]:
        self._call("list_models")
        found = [m for (n, _), m in self.models.items() if n == name]
        return sorted(found, key=lambda m: int(m.version) if m.version.isdigit() else 0)

    def get_latest_model(self, name: str) -> ModelVersion | None:
        """The most recently registered version (Azure ML's "latest" is the most recently created one)."""
        self._call("get_latest_model")
        return next((m for (n, _), m in reversed(self.models.items()) if n == name), None)

    def find_champion(self, name: str) -> ModelVersion | None:
        self._call("find_champion")
        champions = [m for (n, _), m in self.models.items() if n == name and m.tags.get(CHAMPION_TAG) == "true"]
        return max(champions, key=lambda m: int(m.version) if m.version.isdigit() else 0, default=None)

    def update_model_tags(self, name: str, version: str, *, set_tags: Mapping[str, str] | None = None,
                          remove: tuple[str, ...] = ()) -> ModelVersion:
        self._call("update_model_tags")
        model = self.models.get((name, version))
        if model is None:
            raise PermanentError(f"model {name}:{version}: not found")
        tags = {k: v for k, v in {**model.tags, **(set_tags or {})}.items() if k not in remove}
        model = replace(model, tags=tags)
        self.models[(name, version)] = model
        return model

    # ------------------------------------------------------------------ online endpoints
    def _view(self, ep: _Endpoint) -> Endpoint:
        deployments = tuple(replace(d, state=self._state(p)) for d, p in ep.deployments.values())
        traffic = {d.name: ep.traffic.get(d.name, 0) for d in deployments}
        mirror = {n: p for n, p in ep.mirror.items() if p > 0}
        return Endpoint(ep.name, self._state(ep.pending), traffic, mirror, deployments,
                        f"https://{ep.name}.fake.inference.ml.azure.com/score", dict(ep.tags))

    def get_endpoint(self, name: str) -> Endpoint | None:
        self._call("get_endpoint")
        ep = self.endpoints.get(name)
        return None if ep is None else self._view(ep)

    def begin_create_endpoint(self, name: str, *, tags: Mapping[str, str] | None = None) -> None:
        self._call("begin_create_endpoint")
        if name in self.endpoints:   # as on Azure ML: an endpoint Reflex did not create is never taken over
            require_reflex_owned(self.endpoints[name].tags, f"endpoint {name}", "REFLEX_ENDPOINTS")
            return
        self.endpoints[name] = _Endpoint(name, {**(tags or {}), REFLEX_TAG: "true"}, self._pending())

    def _endpoint(self, name: str, what: str) -> _Endpoint:
        ep = self.endpoints.get(name)
        if ep is None:
            raise PermanentError(f"{what}: endpoint {name} does not exist")
        return ep

    def begin_create_deployment(self, endpoint: str, deployment: str, *, model: str, instance_type: str,
                                instance_count: int, tags: Mapping[str, str] | None = None) -> None:
        self._call("begin_create_deployment")
        ep = self._endpoint(endpoint, f"deployment {deployment}")
        if self._state(ep.pending) != SUCCEEDED:
            raise PermanentError(f"deployment {deployment}: endpoint {endpoint} is {self._state(ep.pending)}")
        name, _, version = model.partition(":")
        if (name, version) not in self.models:
            raise PermanentError(f"deployment {deployment}: model {model} does not exist")
        if instance_type not in VM_SIZES:
            raise PermanentError(f"deployment {deployment}: unknown instance type {instance_type}")
        existing = ep.deployments.get(deployment)
        if existing is not None and existing[0].model == model:
            return
        outcome = "Failed" if deployment in self.failing_deployments else SUCCEEDED
        ep.deployments[deployment] = (Deployment(deployment, endpoint, model, "Creating", instance_type,
                                                 instance_count, dict(tags or {})), self._pending(outcome))

    def get_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        self._call("get_deployment")
        ep = self.endpoints.get(endpoint)
        if ep is None or deployment not in ep.deployments:
            return None
        dep, pending = ep.deployments[deployment]
        return replace(dep, state=self._state(pending))

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int],
                    mirror: Mapping[str, int] | None = None) -> Endpoint:
        self._call("set_traffic")
        ep = self._endpoint(endpoint, "traffic update")
        states = {n: self._state(p) for n, (_, p) in ep.deployments.items()}
        new_traffic = {n: 0 for n in states} | {n: int(p) for n, p in traffic.items()}
        new_mirror = {n: int(p) for n, p in (mirror or {}).items() if p}
        problems = traffic_problems(new_traffic, new_mirror, states)
        if problems:
            raise PermanentError(f"endpoint {endpoint}: traffic rejected: {'; '.join(problems)}")
        ep.traffic, ep.mirror = new_traffic, new_mirror
        self.traffic_updates.append((endpoint, dict(new_traffic), dict(new_mirror)))
        if self.traffic_update_seconds > 0:
            ep.pending = _Pending("Updating", self.clock() + self.traffic_update_seconds, self._state(ep.pending))
        return self._view(ep)

    def invoke(self, endpoint: str, deployment: str, body: Mapping[str, Any]) -> InvokeResult:
        self._call("invoke")
        ep = self._endpoint(endpoint, "invoke")
        entry = ep.deployments.get(deployment)
        if entry is None:
            raise PermanentError(f"invoke: deployment {deployment} does not exist on {endpoint}")
        if self._state(entry[1]) != SUCCEEDED and self._state(entry[1]) not in SERVING_TRANSITIONS:
            raise PermanentError(f"invoke: deployment {deployment} is {self._state(entry[1])}")
        return self.responder(endpoint, deployment, body)

    def begin_delete_deployment(self, endpoint: str, deployment: str) -> None:
        self._call("begin_delete_deployment")
        ep = self.endpoints.get(endpoint)
        if ep is None or deployment not in ep.deployments:
            return
        if ep.traffic.get(deployment, 0) > 0 or ep.mirror.get(deployment, 0) > 0:
            raise PermanentError(f"deployment {deployment}: cannot delete while it receives traffic")
        del ep.deployments[deployment]
        ep.traffic.pop(deployment, None)
        ep.mirror.pop(deployment, None)

    def get_deployment_metrics(self, endpoint: str, deployment: str, *,
                               window_seconds: int) -> DeploymentMetrics:
        self._call("get_deployment_metrics")
        found = self.metrics.get((endpoint, deployment))
        if found:
            return replace(found, window_seconds=window_seconds)
        return DeploymentMetrics(0, 0, None, window_seconds, has_data=False)   # Azure Monitor: no series yet

    def check_quota(self, instance_type: str, instance_count: int) -> QuotaCheck:
        self._call("check_quota")
        if instance_type not in VM_SIZES:
            raise PermanentError(f"quota: unknown instance type {instance_type}")
        cores, family = VM_SIZES[instance_type]
        used = sum(VM_SIZES[d.instance_type][0] * d.instance_count
                   for ep in self.endpoints.values() for d, _ in ep.deployments.values()
                   if VM_SIZES.get(d.instance_type, (0, ""))[1] == family)
        return QuotaCheck(instance_type, family, cores_needed(cores, instance_count), used,
                          self.quota_limits.get(family, 0))

    # ------------------------------------------------------------------ batch endpoints
    def begin_ensure_batch_deployment(self, spec: BatchDeploymentSpec) -> None:
        self._call("begin_ensure_batch_deployment")
        name, _, version = spec.model.partition(":")
        if (name, version) not in self.models:
            raise PermanentError(f"batch deployment {spec.deployment}: model {spec.model} does not exist")
        ep = self.batch_endpoints.setdefault(spec.endpoint, _Endpoint(spec.endpoint, {REFLEX_TAG: "true"},
                                                                      self._pending()))
        require_reflex_owned(ep.tags, f"batch endpoint {spec.endpoint}", "REFLEX_BATCH_ENDPOINT")
        if self._state(ep.pending) != SUCCEEDED:
            return   # as on Azure ML: the deployment is begun by a later call, once the endpoint exists
        existing = ep.deployments.get(spec.deployment)
        if existing is None or existing[0].model != spec.model:
            ep.deployments[spec.deployment] = (Deployment(spec.deployment, spec.endpoint, spec.model, "Creating",
                                                          spec.compute, spec.instance_count), self._pending())

    def get_batch_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        self._call("get_batch_deployment")
        ep = self.batch_endpoints.get(endpoint)
        if ep is None or deployment not in ep.deployments:
            return None
        dep, pending = ep.deployments[deployment]
        return replace(dep, state=self._state(pending))

    def invoke_batch(self, endpoint: str, deployment: str, *, input_path: str, output_path: str,
                     job_name: str, tags: Mapping[str, str] | None = None) -> Job:
        self._call("invoke_batch")
        existing = self.jobs.get(job_name)
        if existing is not None:
            return existing
        dep = self.get_batch_deployment(endpoint, deployment)
        if dep is None or not dep.succeeded:
            raise PermanentError(f"batch job {job_name}: deployment {endpoint}/{deployment} is not ready")
        if output_path in self.batch_outputs:
            raise PermanentError(f"batch job {job_name}: output {output_path} already exists")
        self.batch_outputs.add(output_path)
        job = Job(job_name, "Queued", kind="batch", experiment_name=endpoint, tags=dict(tags or {}),
                  outputs={"score": output_path})
        self.jobs[job_name] = job
        return job
