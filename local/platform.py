"""`LocalPlatform`: the MLflow-backed implementation of `shared.core.platform.MLPlatform` for running offline.

Why MLflow: Azure ML has no emulator, and MLflow is the real thing Azure ML itself speaks for tracking and
models. The mapping, part by part:

* models -> the MLflow registry (`runs:/<run>/model` sources); tags are model-version tags, the champion is
  the `reflex.champion` tag (not an alias: Azure ML has none), properties are tags prefixed `reflex.property.`.
  Versions: MLflow numbers versions itself (1, 2, …). The protocol's explicit version is enforced, not
  mapped: registration succeeds only when the requested version is the one MLflow assigns next; a repeat for
  the same job returns the existing version (idempotent); anything else is a `PermanentError`.
* data assets -> records in the state container (`platform/data/<name>/<version>`: name, version, path, tags);
  MLflow has no registry for uri_folder assets.
* training and batch jobs -> MLflow runs driven by detached `local.jobrunner` processes (local/jobs.py), which
  emit `RunCompleted` / `RunStatusChanged` to the local host when they finish.
* online endpoints -> records + model loading + counters (local/endpoints.py); served over HTTP by
  `python -m local.serving`. Batch endpoints -> records; `invoke_batch` is a job of kind "batch".
* events: `register_model` emits `ModelRegistered` to `on_model_registered`; a model registered by a person
  in the MLflow UI reaches the host through MLflow's registry webhook and the relay in local/mlflow_relay.py.

Local knobs (environment, see local/env.py): REFLEX_LOCAL_RUN_DIR, REFLEX_LOCAL_SERVING_URL,
REFLEX_LOCAL_QUOTA_CORES (default 64), REFLEX_LOCAL_TRAIN_SCRIPT.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local import amlevents
from local.blobs import datastores, folder_has_blobs, resolve
from local.endpoints import Endpoints
from local.env import ROOT
from local.jobs import JOB_NAME_TAG, Jobs
from local.mlflow_errors import NotFound, mlflow_errors
from shared.core.errors import PermanentError, TransientError
from shared.core.platform import (
    CHAMPION_TAG,
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
)
from shared.core.state import BlobStateStore, StateStore, key_part

if TYPE_CHECKING:
    from shared.core.settings import Settings

__all__ = ["LocalPlatform", "PROPERTY_PREFIX", "VM_CORES"]

PROPERTY_PREFIX = "reflex.property."
VM_CORES = {"Standard_DS1_v2": 1, "Standard_DS2_v2": 2, "Standard_DS3_v2": 4, "Standard_DS4_v2": 8,
            "Standard_DS5_v2": 16, "Standard_F2s_v2": 2, "Standard_F4s_v2": 4, "Standard_F8s_v2": 8,
            "Standard_E4s_v3": 4, "Standard_D2as_v4": 2, "Standard_D4as_v4": 4}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _version_key(model: ModelVersion) -> int:
    return int(model.version) if model.version.isdigit() else 0


class LocalPlatform:
    """Azure ML's behaviour on MLflow + Azurite + local processes. Build with `from_settings`."""

    name = "local"

    def __init__(self, settings: Settings, *, state: StateStore, blob_service: Any, client: Any, run_dir: Path,
                 serving_url: str = "http://127.0.0.1:5001", quota_cores: int = 64,
                 train_script: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.state = state
        self.blobs = blob_service
        self.client = client
        self.run_dir = run_dir
        self.quota_cores = quota_cores
        self.train_script = train_script or ROOT / "jobs" / "train" / "train.py"
        self.clock = clock
        self.stores = datastores(settings)
        spawn_env = {**os.environ, "AzureWebJobsStorage": settings.storage_connection,
                     "REFLEX_STATE_CONTAINER": settings.state_container,
                     "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
                     "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")}
        self.jobs = Jobs(state, client, run_dir=run_dir, tracking_uri=settings.mlflow_tracking_uri,
                         host_url=settings.local_host_url, spawn_env=spawn_env, clock=clock)
        self.endpoints = Endpoints(state, run_dir=run_dir, model_exists=self._model_exists, spawn_env=spawn_env,
                                   serving_url=serving_url, quota_cores=quota_cores, clock=clock)
        self._senders: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalPlatform:
        import mlflow
        from mlflow import MlflowClient

        from shared.adapters.storage import blob_service

        if not settings.mlflow_tracking_uri:
            raise PermanentError("local platform: MLFLOW_TRACKING_URI is not set (start the stack: make stack)")
        if not settings.storage_connection:
            raise PermanentError("local platform: AzureWebJobsStorage must be a connection string (Azurite)")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
        run_dir = Path(os.environ.get("REFLEX_LOCAL_RUN_DIR") or ROOT / "run" / "current").resolve()
        script = os.environ.get("REFLEX_LOCAL_TRAIN_SCRIPT")
        service = blob_service(settings)
        return cls(settings, state=BlobStateStore.from_service(service, settings), blob_service=service,
                   client=client, run_dir=run_dir,
                   serving_url=os.environ.get("REFLEX_LOCAL_SERVING_URL", "http://127.0.0.1:5001"),
                   quota_cores=int(os.environ.get("REFLEX_LOCAL_QUOTA_CORES", "64")),
                   train_script=Path(script) if script else None)

    # ------------------------------------------------------------------ events
    def _emit(self, function_name: str, event: Mapping[str, Any]) -> None:
        """Deliver in a (non-daemon) thread: the caller may itself be serving the host's request."""
        thread = threading.Thread(target=amlevents.deliver, args=(self.settings.local_host_url, function_name, event),
                                  name=f"emit-{function_name}")
        thread.start()
        self._senders.append(thread)

    def flush_events(self, timeout: float = 30.0) -> None:
        """Wait until every event emitted by this instance has been delivered or given up (tests, CLI)."""
        for thread in self._senders:
            thread.join(timeout)
        self._senders = [t for t in self._senders if t.is_alive()]

    # ------------------------------------------------------------------ data and training
    def register_data(self, *, name: str, version: str, path: str, tags: Mapping[str, str],
                      description: str = "") -> DataAsset:
        resolve(path, self.stores)  # an unknown datastore is a validation error, as on the service
        key = f"platform/data/{key_part(name)}/{key_part(version)}"
        self.state.create(key, {"name": name, "version": version, "path": path, "tags": dict(tags),
                                "description": description, "created": self.clock()})
        asset = self.get_data(name, version)
        if asset is None or asset.path != path:
            raise PermanentError(f"data asset {name}:{version} exists with another path ({asset and asset.path})")
        return asset

    def get_data(self, name: str, version: str) -> DataAsset | None:
        found = self.state.get(f"platform/data/{key_part(name)}/{key_part(version)}")
        if found is None:
            return None
        v = found.value
        return DataAsset(v["name"], v["version"], v["path"], dict(v["tags"]))

    def submit_training(self, request: TrainingRequest) -> Job:
        if not request.environment or "@latest" in request.environment:
            raise PermanentError(f"job {request.job_name}: environment must be pinned, got {request.environment!r}")
        if request.mode not in ("command", "automl"):
            raise PermanentError(f"job {request.job_name}: unknown mode {request.mode!r}")
        existing = self.jobs.get(request.job_name)
        if existing is not None:
            return existing
        asset = self.get_data(request.data_name, request.data_version)
        if asset is None:
            raise PermanentError(f"job {request.job_name}: data asset {request.data_name}:{request.data_version} "
                                 "does not exist")
        if request.mode == "command" and not self.train_script.exists():
            raise PermanentError(f"job {request.job_name}: training script {self.train_script} does not exist")
        container, prefix = resolve(asset.path, self.stores)
        spec = {"input": {"container": container, "prefix": prefix}, "label": request.label_column,
                "task": request.task, "script": str(self.train_script), "primary_metric": request.primary_metric,
                "max_trials": min(request.max_trials, 3), "timeout_minutes": request.timeout_minutes,
                "early_stopping": request.early_stopping,
                "data": f"azureml:{asset.name}:{asset.version}"}
        if request.champion_model and request.mode == "command":  # AutoML in Azure runs no script of ours
            spec["champion_model"] = self._model_uri(request.champion_model.join(("azureml:", "")),
                                                     f"job {request.job_name}")
        tags = {**request.tags, "reflex.data_asset": f"{asset.name}:{asset.version}"}
        if request.mode == "automl":
            tags["reflex.automl"] = "local-search"
        return self.jobs.submit(request.job_name, kind=request.mode, experiment_name=request.experiment_name,
                                tags=tags, spec=spec)

    def _model_uri(self, ref: str, what: str) -> str:
        """The MLflow URI of an Azure ML model input: `azureml:<name>:<version>` -> `models:/<name>/<version>`,
        `azureml://jobs/<job>/outputs/<output>` -> that job's output (`runs:/<run>/<output>`)."""
        if ref.startswith("azureml://jobs/"):
            job_name, _, output = ref[len("azureml://jobs/"):].partition("/outputs/")
            job = self.jobs.get(job_name)
            if job is None or output not in job.outputs:
                raise PermanentError(f"{what}: {ref} does not exist")
            return job.outputs[output]
        _, name, version = [*ref.split(":"), "", ""][:3]
        if not ref.startswith("azureml:") or self.get_model(name, version) is None:
            raise PermanentError(f"{what}: model {ref} does not exist")
        return f"models:/{name}/{version}"

    def submit_evaluation(self, request: EvaluationRequest) -> Job:
        """jobs/train/evaluate.py beside the training script, on the data asset, as a local job."""
        what = f"job {request.job_name}"
        existing = self.jobs.get(request.job_name)
        if existing is not None:
            return existing
        asset = self.get_data(request.data_name, request.data_version)
        if asset is None:
            raise PermanentError(f"{what}: data asset {request.data_name}:{request.data_version} does not exist")
        script = self.train_script.parent / "evaluate.py"  # beside a custom training script, else Reflex's
        script = script if script.exists() else ROOT / "jobs" / "train" / "evaluate.py"
        if not script.exists():
            raise PermanentError(f"{what}: evaluation script {script} does not exist")
        container, prefix = resolve(asset.path, self.stores)
        spec = {"input": {"container": container, "prefix": prefix}, "label": request.label_column,
                "task": request.task, "script": str(script), "holdout": request.holdout,
                "models": {role: self._model_uri(ref, what) for role, ref in request.models.items()},
                "data": f"azureml:{asset.name}:{asset.version}"}
        return self.jobs.submit(request.job_name, kind="evaluate", experiment_name=request.experiment_name,
                                tags={**request.tags, "reflex.data_asset": f"{asset.name}:{asset.version}"},
                                spec=spec)

    def get_job(self, name: str) -> Job | None:
        return self.jobs.get(name)

    def get_job_metrics(self, name: str) -> Mapping[str, float]:
        return self.jobs.metrics(name)

    # ------------------------------------------------------------------ models
    def _model(self, mv: Any) -> ModelVersion:
        tags = {k: v for k, v in mv.tags.items() if not k.startswith(PROPERTY_PREFIX)}
        props = {k[len(PROPERTY_PREFIX):]: v for k, v in mv.tags.items() if k.startswith(PROPERTY_PREFIX)}
        return ModelVersion(mv.name, str(mv.version), mv.source or "", "mlflow_model", tags, props,
                            mv.tags.get(JOB_NAME_TAG, ""))

    def _model_exists(self, ref: str) -> bool:
        name, _, version = ref.partition(":")
        return self.get_model(name, version) is not None

    def register_model(self, *, name: str, version: str, job_name: str, output_name: str = "model",
                       tags: Mapping[str, str], properties: Mapping[str, str] | None = None,
                       description: str = "") -> ModelVersion:
        if not version or not version.isdigit():
            raise PermanentError(f"model {name}: version must be explicit and numeric on MLflow, got {version!r}")
        job = self.jobs.get(job_name)
        if job is None or job.status != "Completed":
            raise PermanentError(f"model {name}:{version}: job {job_name} has not completed")
        if output_name not in job.outputs:
            raise PermanentError(f"model {name}:{version}: job {job_name} has no output {output_name!r}")
        source = job.outputs[output_name]
        existing = self.get_model(name, version)
        if existing is not None:
            if existing.job_name != job_name:
                raise PermanentError(f"model {name}:{version} exists from another job ({existing.job_name})")
            return existing
        run_id, source, model_id = self._resolve_source(source, f"model {name}:{version}")
        all_tags = {**tags, **{PROPERTY_PREFIX + k: v for k, v in (properties or {}).items()},
                    JOB_NAME_TAG: job_name}
        with mlflow_errors(f"model {name}:{version}"):
            try:
                self.client.create_registered_model(name)
            except PermanentError:
                raise
            except Exception as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
            expected = max((_version_key(m) for m in self.list_models(name)), default=0) + 1
            if int(version) < expected and (raced := self._registered_by(name, version, job_name)):
                return raced  # registered meanwhile, by a duplicate delivery of the same event
            if int(version) != expected:
                raise PermanentError(f"model {name}:{version}: MLflow numbers versions itself and the next version "
                                     f"of {name} is {expected}")
            claim = self._claim_registration(name, version, job_name)
            if claim is None:
                if raced := self._registered_by(name, version, job_name):
                    return raced
                raise TransientError(f"model {name}:{version}: a concurrent call is registering it; retry", 1.0)
            mv = self.client.create_model_version(name, source, run_id=run_id, tags=all_tags,
                                                  description=description or None, model_id=model_id)
            if str(mv.version) != version:
                # MLflow never reuses a number: a deleted version (or one a person is registering right now)
                # holds this one. Retrying would only burn more numbers, so this needs a person.
                self.client.delete_model_version(name, mv.version)
                self.state.delete(claim)
                raise PermanentError(f"model {name}:{version}: MLflow assigned version {mv.version} instead "
                                     f"(versions deleted from the registry keep their numbers); removed it")
        model = self._model(mv)
        self._emit("on_model_registered", amlevents.model_registered(
            name=name, version=version, tags=model.tags, properties=model.properties))
        return model

    def _registered_by(self, name: str, version: str, job_name: str) -> ModelVersion | None:
        """`name:version` if it exists and `job_name` registered it (a duplicate call's own work)."""
        found = self.get_model(name, version)
        return found if found is not None and found.job_name == job_name else None

    def _claim_registration(self, name: str, version: str, job_name: str,
                            stale_after: float = 120.0) -> str | None:
        """One caller at a time creates `name:version` (MLflow would give a second caller the next number):
        the claim's key for that caller, None for the others.

        A claim older than `stale_after` whose version never appeared belonged to a caller that died before
        creating it: it is taken over (compare-and-swap, so by one caller only).
        """
        key = f"platform/registrations/{key_part(name)}/{key_part(version)}"
        if self.state.claim(key, {"job": job_name, "at_epoch": self.clock()}):
            return key
        record = self.state.get(key)
        if record is None or self.clock() - float(record.value.get("at_epoch", 0)) < stale_after:
            return None
        if self.get_model(name, version) is not None:
            return None
        try:
            self.state.replace(record, {"job": job_name, "at_epoch": self.clock()})
        except TransientError:  # Conflict: another caller took it over first
            return None
        return key

    def _resolve_source(self, uri: str, what: str) -> tuple[str | None, str, str | None]:
        """(run id, registry source, logged model id) of `runs:/<run>/<path>`, as `mlflow.register_model` does:
        the run's logged model named `<path>` (MLflow 3), else the run's artifact folder holding an MLmodel."""
        if not uri.startswith("runs:/"):
            return None, uri, None
        run_id, _, path = uri[len("runs:/"):].partition("/")
        with mlflow_errors(what):
            run = self.client.get_run(run_id)
            logged = self.client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{path}'")
            if logged:
                return run_id, f"models:/{logged[-1].model_id}", logged[-1].model_id
            if any(a.path.endswith("MLmodel") for a in self.client.list_artifacts(run_id, path)):
                return run_id, f"{run.info.artifact_uri}/{path}", None
        raise PermanentError(f"{what}: run {run_id} logged no MLflow model named {path!r}")

    def get_model(self, name: str, version: str) -> ModelVersion | None:
        try:
            with mlflow_errors(f"model {name}:{version}"):
                return self._model(self.client.get_model_version(name, version))
        except NotFound:
            return None

    def list_models(self, name: str) -> list[ModelVersion]:
        with mlflow_errors(f"model {name}"):
            found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self._model(mv) for mv in found), key=_version_key)

    def get_latest_model(self, name: str) -> ModelVersion | None:
        """One registry call: MLflow numbers versions in creation order, so the highest number is the newest."""
        with mlflow_errors(f"model {name}"):
            found = self.client.search_model_versions(f"name = '{name}'", max_results=1,
                                                      order_by=["version_number DESC"])
        return self._model(found[0]) if found else None

    def find_champion(self, name: str) -> ModelVersion | None:
        champions = [m for m in self.list_models(name) if m.tags.get(CHAMPION_TAG) == "true"]
        return max(champions, key=_version_key, default=None)

    def update_model_tags(self, name: str, version: str, *, set_tags: Mapping[str, str] | None = None,
                          remove: tuple[str, ...] = ()) -> ModelVersion:
        if self.get_model(name, version) is None:
            raise PermanentError(f"model {name}:{version}: not found")
        with mlflow_errors(f"model {name}:{version}"):
            for key, value in (set_tags or {}).items():
                self.client.set_model_version_tag(name, version, key, value)
        for key in remove:
            try:
                with mlflow_errors(f"model {name}:{version} tag {key}"):
                    self.client.delete_model_version_tag(name, version, key)
            except NotFound:
                pass  # already gone
        return self.get_model(name, version)  # type: ignore[return-value]

    # ------------------------------------------------------------------ online endpoints
    def get_endpoint(self, name: str) -> Endpoint | None:
        return self.endpoints.get_endpoint(name)

    def begin_create_endpoint(self, name: str, *, tags: Mapping[str, str] | None = None) -> None:
        self.endpoints.create_endpoint(name, tags)

    def begin_create_deployment(self, endpoint: str, deployment: str, *, model: str, instance_type: str,
                                instance_count: int, tags: Mapping[str, str] | None = None) -> None:
        if instance_type not in VM_CORES:
            raise PermanentError(f"deployment {deployment}: unknown instance type {instance_type}")
        self.endpoints.create_deployment(endpoint, deployment, model=model, instance_type=instance_type,
                                         instance_count=instance_count, tags=tags)

    def get_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        return self.endpoints.get_deployment(endpoint, deployment)

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int],
                    mirror: Mapping[str, int] | None = None) -> Endpoint:
        return self.endpoints.set_traffic(endpoint, traffic, mirror)

    def invoke(self, endpoint: str, deployment: str, body: Mapping[str, Any]) -> InvokeResult:
        """In-process scoring (the model is cached per process), counted like a request to the server."""
        return self.endpoints.invoke(endpoint, deployment, body)[1]

    def begin_delete_deployment(self, endpoint: str, deployment: str) -> None:
        self.endpoints.delete_deployment(endpoint, deployment)

    def get_deployment_metrics(self, endpoint: str, deployment: str, *,
                               window_seconds: int) -> DeploymentMetrics:
        return self.endpoints.metrics(endpoint, deployment, window_seconds)

    def check_quota(self, instance_type: str, instance_count: int) -> QuotaCheck:
        """One local core pool of REFLEX_LOCAL_QUOTA_CORES cores, used by every online deployment."""
        if instance_type not in VM_CORES:
            raise PermanentError(f"quota: unknown instance type {instance_type}")
        used = self.endpoints.used_cores(lambda t: VM_CORES.get(t, 0))
        return QuotaCheck(instance_type, "local", cores_needed(VM_CORES[instance_type], instance_count), used,
                          self.quota_cores)

    # ------------------------------------------------------------------ batch endpoints
    def begin_ensure_batch_deployment(self, spec: BatchDeploymentSpec) -> None:
        if not self._model_exists(spec.model):
            raise PermanentError(f"batch deployment {spec.deployment}: model {spec.model} does not exist")

        def ensure(rec: dict[str, Any] | None) -> dict[str, Any] | None:
            rec = rec or {"name": spec.endpoint, "deployments": {}}
            current = rec["deployments"].get(spec.deployment)
            if current is not None and current["model"] == spec.model:
                return None
            rec["deployments"][spec.deployment] = {"model": spec.model, "compute": spec.compute,
                                                   "instance_count": spec.instance_count, "state": SUCCEEDED}
            return rec

        self.state.update(f"platform/batch/{key_part(spec.endpoint)}", ensure)

    def get_batch_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        found = self.state.get(f"platform/batch/{key_part(endpoint)}")
        dep = None if found is None else found.value["deployments"].get(deployment)
        if dep is None:
            return None
        return Deployment(deployment, endpoint, dep["model"], dep["state"], dep["compute"],
                          int(dep["instance_count"]))

    def invoke_batch(self, endpoint: str, deployment: str, *, input_path: str, output_path: str,
                     job_name: str, tags: Mapping[str, str] | None = None) -> Job:
        existing = self.jobs.get(job_name)
        if existing is not None:
            return existing
        dep = self.get_batch_deployment(endpoint, deployment)
        if dep is None or not dep.succeeded:
            raise PermanentError(f"batch job {job_name}: deployment {endpoint}/{deployment} is not ready")
        in_container, in_prefix = self._input(input_path)
        out_container, out_prefix = resolve(output_path, self.stores)
        if folder_has_blobs(self.blobs, out_container, out_prefix) or not self.state.claim(
                f"platform/outputs/{_digest(out_container + '/' + out_prefix)}", {"job": job_name}):
            raise PermanentError(f"batch job {job_name}: output {output_path} already exists")
        spec = {"input": {"container": in_container, "prefix": in_prefix}, "model": dep.model,
                "output": {"container": out_container, "prefix": out_prefix}, "outputs": {"score": output_path}}
        return self.jobs.submit(job_name, kind="batch", experiment_name=endpoint,
                                tags={**(tags or {}), "reflex.batch_deployment": f"{endpoint}/{deployment}"},
                                spec=spec)

    def _input(self, path: str) -> tuple[str, str]:
        """A datastore URI, or `azureml:<data asset>:<version>`."""
        if path.startswith("azureml:") and not path.startswith("azureml://"):
            _, name, version = [*path.split(":"), "", ""][:3]
            asset = self.get_data(name, version)
            if asset is None:
                raise PermanentError(f"batch input {path}: data asset does not exist")
            path = asset.path
        return resolve(path, self.stores)
