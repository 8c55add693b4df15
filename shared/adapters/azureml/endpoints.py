"""The one Azure ML client module: `AzureMLPlatform` implements `shared.platform.MLPlatform` with azure-ai-ml.

Why one module: azure-ai-ml costs ~1.6 s and ~100 MiB to import, has traps that silently do the wrong thing
(../shared/reference/azure-ai-ml.md), and its errors need one translation. So nothing else in the app imports
`azure.ai.ml` (tests/test_layering.py enforces it) and this module imports it only inside the methods that
need it: a reaction that skips an event never pays for it.

The traps, and what this module does about each (each has a contract test in tests/test_azureml_contract.py):

* a reused job name answers 400 UserError "already exists", not 409: `submit_training` PUTs first and, on that
  answer, GETs the existing job and returns it (idempotent, race-safe, and the happy path stays at one request:
  data asset PUT + job PUT = two requests per submission). A GET-first pattern would cost a third request on
  every submission to save one on the rare retry;
* `command()` lower-cases names: names must already be lower case, else `PermanentError` (a job named
  differently from its idempotency key could never be found again);
* `experiment_name` defaults to the working folder (`wwwroot` on Functions): always set from the request;
* `<env>@latest` costs a lookup and resolves differently over time: only pinned environments are accepted;
* model auto-versioning is read-then-PUT and races: versions are always explicit;
* the SDK strips 0% traffic entries and a PUT replaces the whole endpoint: traffic and mirror are read from
  the endpoint, modified as a whole, validated with `traffic_problems` and written back in the same entity;
  `begin_create_endpoint` never re-sends an existing endpoint (that would reset its traffic); a deployment is
  deleted only when it has 0% live and 0% mirrored traffic;
* `online_endpoints.invoke` mutates a class-level header dict, so a deployment name leaks into later calls:
  `invoke` calls the scoring URI itself with the deployment header set per call, and the batch invoke (which
  goes through the SDK) restores the SDK's header dict afterwards;
* `begin_*` never waits on `.result()`: it begins, returns, and a timer polls `get_*`. The SDK's poller may
  keep polling in a daemon thread; its interval is the client's `polling_interval` (settable, so tests and
  the benchmark never sleep).

* endpoint names are unique per Azure region: an "already exists" (or "There is already an endpoint with this
  name") answer to a create is success only when the endpoint is then found here, tagged `reflex.managed`; an
  existing endpoint without the tag is never redefined. Both are `PermanentError`s naming `REFLEX_ENDPOINTS` /
  `REFLEX_BATCH_ENDPOINT`. Computes are only ever named, never created or changed;
* AutoML's model output is `best_model` (`model_output`), declared on the job after construction (the builder's
  `outputs=` keyword loses the type); models register from `azureml://jobs/<job>/outputs/<output>/paths/`
  (`job_output_uri`, the SDK's JOB_URI_FORMAT);
* Azure Monitor serves `RequestsPerMinute` with Average (and Count), not Total; a missing series is "no data yet"
  (`metrics_from_monitor`), never zero requests;
* quota keeps the 20% Azure ML reserves for upgrades (`cores_needed`).

Errors are mapped once, in `_call`: 404 -> the protocol's "absent" (`None`) where the protocol says so,
"already exists" -> idempotent success, 408/429/5xx/connection -> `TransientError(retry_after)`, auth and
validation -> `PermanentError` naming the resource (`shared.errors.map_azure_error`).

Job metrics come from the workspace's MLflow tracking server (azure-ai-ml has no metrics API) through one REST
call (`runs/get`) with the same credential, so neither mlflow nor azureml-mlflow is imported here. Deployment
metrics come from Azure Monitor (`azure-monitor-query`), quota from the workspace location's usage and VM size
lists the SDK exposes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import PermanentError, TransientError, map_azure_error, retry_after_seconds
from shared.platform import (
    CHAMPION_TAG,
    REFLEX_TAG,
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

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from shared.settings import Settings

__all__ = ["AzureMLPlatform", "TRAIN_COMMAND", "ML_SCOPE", "ARM_SCOPE", "metrics_from_monitor"]

log = logging.getLogger("reflex.azureml")
T = TypeVar("T")

ARM_SCOPE = "https://management.azure.com/.default"
ML_SCOPE = "https://ml.azure.com/.default"
# What the command job runs; the code asset (or the environment image) carries jobs/train/train.py.
TRAIN_COMMAND = ("python train.py --data ${{inputs.data}} --label LABEL --task TASK "
                 "--model-output ${{outputs.model}}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,254}")
_PINNED_ENV_RE = re.compile(r"azureml:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+|azureml://registries/[^/]+/environments/"
                            r"[^/]+/versions/[^/]+")
_invoke_lock = threading.Lock()   # the SDK's batch invoke mutates a class-level header dict


def _already_exists(exc: BaseException) -> bool:
    """Azure ML answers a reused job name with 400 UserError "already exists" (and ARM with 409)."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    if isinstance(exc, ResourceExistsError):
        return True
    return (isinstance(exc, HttpResponseError) and exc.status_code == 400
            and "already exists" in str(exc.message or exc).lower())


_NAME_TAKEN = re.compile(r"already an endpoint with this name|unique (with)?in a region", re.IGNORECASE)


def _name_taken(exc: BaseException) -> bool:
    """The service's "name is taken in this region" answer (400, the text in the error's details)."""
    return bool(_NAME_TAKEN.search(str(exc)))


def _not_found(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404


def _status(value: Any) -> str:
    """Job and provisioning states are str-Enums in 1.35 (`str()` gives 'JobStatus.COMPLETED')."""
    value = getattr(value, "value", value)
    return str(value) if value is not None else "Unknown"


def _field(obj: Any, *names: str) -> Any:
    """azure-ai-ml 1.35 fills some entities from `as_dict()`, so a field may sit under its wire name."""
    for name in names:
        value = getattr(obj, name, None)
        if value is None and isinstance(getattr(obj, "__dict__", None), dict):
            value = obj.__dict__.get(name)
        if value is not None:
            return value
    return None


def _model_ref(value: Any) -> str:
    """'name:version' from an ARM model id, an `azureml:name:version` reference or a Model entity."""
    text = str(getattr(value, "id", None) or value or "")
    m = re.search(r"/models/([^/]+)/versions/([^/]+)$", text)
    if m:
        return f"{m.group(1)}:{m.group(2)}"
    return text.removeprefix("azureml:")


class AzureMLPlatform:
    """`MLPlatform` on Azure ML. Build with `from_settings` in the app; tests inject an `MLClient`."""

    name = "azureml"

    def __init__(self, ml_client: MLClient, *, credential: Any, data_type: str = "uri_folder",
                 metrics_client: Any = None, session: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.ml = ml_client
        self.credential = credential
        self.data_type = data_type
        self.clock = clock
        self._metrics_client = metrics_client
        self._session = session
        self._workspace: tuple[str, str] | None = None          # (location, mlflow tracking https base)
        self._scoring: dict[str, tuple[str, str]] = {}          # endpoint -> (scoring uri, auth header)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, settings: Settings) -> AzureMLPlatform:
        """One platform (and `MLClient`) per worker and workspace; logs once which identity and workspace."""
        return _cached_platform(settings.subscription_id, settings.resource_group, settings.workspace,
                                settings.client_id, "mltable" if settings.training_mode == "automl" else "uri_folder")

    @classmethod
    def connect(cls, credential: Any, *, subscription_id: str, resource_group: str, workspace: str,
                data_type: str = "uri_folder", metrics_client: Any = None,
                **client_options: Any) -> AzureMLPlatform:
        """Build the `MLClient` here (the only importer of azure.ai.ml); `client_options` go to azure-core
        (`retry_total`, `polling_interval`, `transport`...)."""
        from azure.ai.ml import MLClient

        ml = MLClient(credential, subscription_id=subscription_id, resource_group_name=resource_group,
                      workspace_name=workspace, show_progress=False, **client_options)
        return cls(ml, credential=credential, data_type=data_type, metrics_client=metrics_client)

    @property
    def scope(self) -> str:
        return (f"/subscriptions/{self.ml.subscription_id}/resourceGroups/{self.ml.resource_group_name}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{self.ml.workspace_name}")

    # ------------------------------------------------------------------ error mapping
    def _call(self, resource: str, fn: Callable[[], T], *, absent: bool = False) -> T | None:
        """Run one SDK call; 404 -> None when `absent`, everything else mapped by `map_azure_error`."""
        try:
            return fn()
        except Exception as exc:
            if absent and _not_found(exc):
                return None
            raise map_azure_error(exc, resource) from exc

    # ------------------------------------------------------------------ data and training
    def register_data(self, *, name: str, version: str, path: str, tags: Mapping[str, str],
                      description: str = "") -> DataAsset:
        from azure.ai.ml.entities import Data

        if not version:
            raise PermanentError(f"data asset {name}: version must be explicit")
        data = Data(name=name, version=version, path=path, type=self.data_type,
                    tags={**tags, REFLEX_TAG: "true"}, description=description or None)
        created = self._call(f"data asset {name}:{version}", lambda: self.ml.data.create_or_update(data))
        return self._data(created)

    @staticmethod
    def _data(d: Any) -> DataAsset:
        return DataAsset(d.name, str(d.version), str(d.path), dict(d.tags or {}))

    def get_data(self, name: str, version: str) -> DataAsset | None:
        found = self._call(f"data asset {name}:{version}", lambda: self.ml.data.get(name, version=version),
                           absent=True)
        return None if found is None else self._data(found)

    def _training_job(self, r: TrainingRequest) -> Any:
        from azure.ai.ml import Input, Output, automl, command

        what = f"job {r.job_name}"
        if r.job_name != r.job_name.lower() or not _NAME_RE.fullmatch(r.job_name):
            raise PermanentError(f"{what}: names must be lower-case letters, digits, - and _ (the SDK lower-cases "
                                 "them, so a mixed-case key could never be found again)")
        if not r.experiment_name:
            raise PermanentError(f"{what}: experiment_name must be set (the SDK default is the working folder)")
        tags = {**r.tags, REFLEX_TAG: "true"}
        data = f"azureml:{r.data_name}:{r.data_version}"
        if r.mode == "automl":
            builder = automl.classification if r.task == "classification" else automl.regression
            job = builder(name=r.job_name, experiment_name=r.experiment_name, display_name=r.display_name or None,
                          compute=r.compute, training_data=Input(type="mltable", path=data),
                          target_column_name=r.label_column, primary_metric=r.primary_metric, tags=tags)
            job.set_limits(timeout_minutes=r.timeout_minutes, max_trials=r.max_trials,
                           enable_early_termination=r.early_stopping)
            # declared so the job reports it (`outputs.best_model`, type mlflow_model, AutoML job YAML reference).
            # Set after construction: the builder's `outputs=` keyword sends jobOutputType uri_folder (1.35.2).
            job.outputs = {model_output("automl"): Output(type="mlflow_model")}
            return job
        if r.mode != "command":
            raise PermanentError(f"{what}: unknown training mode {r.mode!r}")
        if not _PINNED_ENV_RE.fullmatch(r.environment or ""):
            raise PermanentError(f"{what}: environment must be pinned (azureml:<name>:<version>), "
                                 f"got {r.environment!r}")
        code = None
        if r.code:
            m = re.fullmatch(r"azureml:([A-Za-z0-9_.-]+):([A-Za-z0-9_.-]+)", r.code)
            if not m:
                raise PermanentError(f"{what}: code must be a registered code asset (azureml:<name>:<version>); a "
                                     "local folder would be uploaded on every submission")
            code = f"{self.scope}/codes/{m.group(1)}/versions/{m.group(2)}"   # the SDK takes a short form as a path
        inputs = {"data": Input(type=self.data_type, path=data)}
        text = TRAIN_COMMAND.replace("LABEL", r.label_column).replace("TASK", r.task)
        if r.champion_model:  # scored on the run's own holdout: the gate compares both on the same rows
            inputs["champion"] = Input(type="mlflow_model", path=f"azureml:{r.champion_model}")
            text += " --champion-model ${{inputs.champion}}"
        return command(name=r.job_name, experiment_name=r.experiment_name, display_name=r.display_name or None,
                       command=text, inputs=inputs, outputs={model_output("command"): Output(type="mlflow_model")},
                       environment=r.environment, compute=r.compute, code=code, tags=tags,
                       timeout=r.timeout_minutes * 60)

    def submit_training(self, request: TrainingRequest) -> Job:
        job = self._training_job(request)
        what = f"job {request.job_name}"
        try:
            created = self.ml.jobs.create_or_update(job)
        except Exception as exc:
            if not _already_exists(exc):
                raise map_azure_error(exc, what) from exc
            log.info("%s already exists: returning it", what)
            created = self._call(what, lambda: self.ml.jobs.get(request.job_name))
        return self._job(created)

    def submit_evaluation(self, request: EvaluationRequest) -> Job:
        """jobs/train/evaluate.py as a command job: each model an `mlflow_model` input (a registered version
        `azureml:<name>:<version>` or a job output `azureml://jobs/<job>/outputs/<output>`, the path forms of
        Azure/azureml-examples cli/jobs/basics/hello-model-as-output.yml), mounted as a folder MLflow loads."""
        from azure.ai.ml import Input, command

        r = request
        what = f"job {r.job_name}"
        if r.job_name != r.job_name.lower() or not _NAME_RE.fullmatch(r.job_name):
            raise PermanentError(f"{what}: names must be lower-case letters, digits, - and _")
        if not _PINNED_ENV_RE.fullmatch(r.environment or ""):
            raise PermanentError(f"{what}: environment must be pinned (azureml:<name>:<version>), "
                                 f"got {r.environment!r}")
        inputs = {"data": Input(type=self.data_type, path=f"azureml:{r.data_name}:{r.data_version}")}
        text = f"python evaluate.py --data ${{{{inputs.data}}}} --label {r.label_column} --task {r.task}"
        for role, ref in r.models.items():
            if not re.fullmatch(r"[a-z_]+", role):
                raise PermanentError(f"{what}: model role {role!r} must be lower-case letters")
            inputs[role] = Input(type="mlflow_model", path=ref)
            text += f" --model {role}=${{{{inputs.{role}}}}}"
        if r.holdout:
            text += " --holdout"
        code = None
        if r.code:
            m = re.fullmatch(r"azureml:([A-Za-z0-9_.-]+):([A-Za-z0-9_.-]+)", r.code)
            if not m:
                raise PermanentError(f"{what}: code must be a registered code asset (azureml:<name>:<version>)")
            code = f"{self.scope}/codes/{m.group(1)}/versions/{m.group(2)}"
        job = command(name=r.job_name, experiment_name=r.experiment_name, display_name=r.display_name or None,
                      command=text, inputs=inputs, environment=r.environment, compute=r.compute, code=code,
                      tags={**r.tags, REFLEX_TAG: "true"})
        try:
            created = self.ml.jobs.create_or_update(job)
        except Exception as exc:
            if not _already_exists(exc):
                raise map_azure_error(exc, what) from exc
            created = self._call(what, lambda: self.ml.jobs.get(r.job_name))
        return self._job(created)

    @staticmethod
    def _job(j: Any) -> Job:
        kind = {"command": "command", "automl": "automl", "pipeline": "batch"}.get(
            _status(getattr(j, "type", "command")).lower(), "command")
        outputs = {}
        for key, out in (getattr(j, "outputs", None) or {}).items():
            path = getattr(out, "path", None)
            outputs[key] = str(path) if path else job_output_uri(j.name, key)
        error = ""
        if _status(j.status) in ("Failed", "NotResponding"):
            error = str(getattr(j, "error", "") or getattr(j, "status_message", "") or "")
        return Job(j.name, _status(j.status), kind=kind, experiment_name=j.experiment_name or "",
                   tags=dict(j.tags or {}), outputs=outputs, error=error, url=getattr(j, "studio_url", "") or "")

    def get_job(self, name: str) -> Job | None:
        found = self._call(f"job {name}", lambda: self.ml.jobs.get(name), absent=True)
        return None if found is None else self._job(found)

    def _workspace_info(self) -> tuple[str, str]:
        """(location, MLflow REST base) of the workspace: one GET per worker."""
        if self._workspace is None:
            ws = self._call(f"workspace {self.ml.workspace_name}",
                            lambda: self.ml.workspaces.get(self.ml.workspace_name))
            location = str(ws.location)
            uri = ws.mlflow_tracking_uri or f"azureml://{location}.api.azureml.ms/mlflow/v1.0{self.scope}"
            self._workspace = (location, "https://" + uri.split("://", 1)[1])
        return self._workspace

    def _http(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _get_json(self, what: str, url: str, *, scope: str, params: Mapping[str, str] | None = None,
                  method: str = "GET", headers: Mapping[str, str] | None = None, body: Any = None) -> Any:
        """One data-plane call with a bearer token; maps HTTP failures like the SDK's errors."""
        import requests

        try:
            token = self.credential.get_token(scope).token
        except Exception as exc:
            raise map_azure_error(exc, what) from exc
        try:
            resp = self._http().request(method, url, params=params, json=body, timeout=30,
                                        headers={"Authorization": f"Bearer {token}", **(headers or {})})
        except requests.RequestException as exc:
            raise TransientError(f"{what}: connection failed: {exc}", 5.0) from exc
        if resp.status_code == 404:
            raise PermanentError(f"{what}: not found ({resp.text[:200]})")
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            raise TransientError(f"{what}: service answered {resp.status_code}", _retry_after(resp.headers))
        if resp.status_code >= 400:
            raise PermanentError(f"{what}: rejected with {resp.status_code}: {resp.text[:200]}")
        return resp.json()

    def get_job_metrics(self, name: str) -> Mapping[str, float]:
        """The run's latest metric values from the workspace's MLflow server (run id = job name)."""
        _, base = self._workspace_info()
        data = self._get_json(f"metrics of job {name}", f"{base}/api/2.0/mlflow/runs/get", scope=ARM_SCOPE,
                              params={"run_id": name})
        latest: dict[str, tuple[int, int, float]] = {}
        for m in data.get("run", {}).get("data", {}).get("metrics", []) or []:
            key = (int(m.get("step", 0)), int(m.get("timestamp", 0)), float(m["value"]))
            if m["key"] not in latest or key[:2] >= latest[m["key"]][:2]:
                latest[m["key"]] = key
        return {k: v[2] for k, v in latest.items()}

    # ------------------------------------------------------------------ models
    def register_model(self, *, name: str, version: str, job_name: str, output_name: str = "model",
                       tags: Mapping[str, str], properties: Mapping[str, str] | None = None,
                       description: str = "") -> ModelVersion:
        from azure.ai.ml.entities import Model

        if not version:
            raise PermanentError(f"model {name}: version must be explicit (auto-increment races)")
        path = job_output_uri(job_name, output_name)   # the output folder is the MLflow model
        model = Model(name=name, version=version, path=path, type="mlflow_model",
                      tags={**tags, REFLEX_TAG: "true"}, properties=dict(properties or {}),
                      description=description or None)
        what = f"model {name}:{version}"
        try:
            created = self.ml.models.create_or_update(model)
        except Exception as exc:
            if not _already_exists(exc):
                raise map_azure_error(exc, what) from exc
            created = self._call(what, lambda: self.ml.models.get(name, version=version))
        return self._model(created, job_name)

    @staticmethod
    def _model(m: Any, job_name: str = "") -> ModelVersion:
        path = str(m.path or "")
        if not job_name:
            found = re.search(r"azureml://jobs/([^/]+)/", path)
            job_name = found.group(1) if found else getattr(m, "job_name", "") or ""
        return ModelVersion(m.name, str(m.version), path, _status(m.type), dict(m.tags or {}),
                            dict(m.properties or {}), job_name or "")

    def get_model(self, name: str, version: str) -> ModelVersion | None:
        found = self._call(f"model {name}:{version}", lambda: self.ml.models.get(name, version=version),
                           absent=True)
        return None if found is None else self._model(found)

    def list_models(self, name: str) -> list[ModelVersion]:
        found = self._call(f"model {name}", lambda: list(self.ml.models.list(name=name)), absent=True) or []
        models = [self._model(m) for m in found]
        return sorted(models, key=lambda m: int(m.version) if m.version.isdigit() else 0)

    def find_champion(self, name: str) -> ModelVersion | None:
        """Azure ML has no aliases: the champion is the highest version tagged `reflex.champion=true`."""
        champions = [m for m in self.list_models(name) if m.tags.get(CHAMPION_TAG) == "true"]
        return champions[-1] if champions else None

    def update_model_tags(self, name: str, version: str, *, set_tags: Mapping[str, str] | None = None,
                          remove: tuple[str, ...] = ()) -> ModelVersion:
        """Tags are mutable on a model version: GET it, change the tags, PUT the same version back."""
        what = f"model {name}:{version}"
        model = self._call(what, lambda: self.ml.models.get(name, version=version), absent=True)
        if model is None:
            raise PermanentError(f"{what}: not found")
        model.tags = {k: v for k, v in {**(model.tags or {}), **(set_tags or {})}.items() if k not in remove}
        updated = self._call(what, lambda: self.ml.models.create_or_update(model))
        return self._model(updated)

    # ------------------------------------------------------------------ online endpoints
    @staticmethod
    def _deployment(d: Any, endpoint: str) -> Deployment:
        sku = getattr(d, "instance_count", None)
        return Deployment(d.name, endpoint, _model_ref(d.model), _status(d.provisioning_state),
                          getattr(d, "instance_type", "") or "", int(sku or 1), dict(d.tags or {}))

    def _read_endpoint(self, name: str) -> tuple[Any, list[Any]] | None:
        """The SDK endpoint entity (GET endpoint + list deployments) and the deployment entities."""
        what = f"endpoint {name}"
        ep = self._call(what, lambda: self.ml.online_endpoints.get(name), absent=True)
        if ep is None:
            return None
        deps = self._call(what, lambda: list(self.ml.online_deployments.list(name))) or []
        return ep, deps

    def _endpoint(self, ep: Any, deps: list[Any]) -> Endpoint:
        deployments = tuple(self._deployment(d, ep.name) for d in deps)
        traffic = {d.name: 0 for d in deployments} | {k: int(v) for k, v in (ep.traffic or {}).items()}
        mirror = {k: int(v) for k, v in (ep.mirror_traffic or {}).items() if v}
        for k in mirror:
            if traffic.get(k) == 0 and k not in {d.name for d in deployments}:
                traffic.pop(k)
        return Endpoint(ep.name, _status(ep.provisioning_state), traffic, mirror, deployments,
                        ep.scoring_uri or "", dict(ep.tags or {}))

    def get_endpoint(self, name: str) -> Endpoint | None:
        read = self._read_endpoint(name)
        return None if read is None else self._endpoint(*read)

    def begin_create_endpoint(self, name: str, *, tags: Mapping[str, str] | None = None) -> None:
        """Create only when absent: re-sending an existing endpoint would reset its traffic.

        An endpoint Reflex did not create (no `reflex.managed` tag) is never taken over, and a name the region
        already gives to another workspace is a `PermanentError` naming `REFLEX_ENDPOINTS` (`_claim_name`).
        """
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        what = f"endpoint {name}"
        get = lambda: self.ml.online_endpoints.get(name)  # noqa: E731
        existing = self._call(what, get, absent=True)
        if existing is not None:
            require_reflex_owned(existing.tags, what, "REFLEX_ENDPOINTS")
            return
        ep = ManagedOnlineEndpoint(name=name, auth_mode="key", tags={**(tags or {}), REFLEX_TAG: "true"})
        try:
            self.ml.online_endpoints.begin_create_or_update(ep)
        except Exception as exc:
            self._claim_name(exc, what, get, "REFLEX_ENDPOINTS")

    def _claim_name(self, exc: Exception, what: str, get: Callable[[], Any], setting: str) -> None:
        """A create answered "already exists": success only if the endpoint is now Reflex's own in this workspace.

        Endpoint names are unique per Azure region (a batch endpoint's name is its invocation host), so the answer
        may mean another workspace holds the name. The service says so with 400 "There is already an endpoint with
        this name, Endpoint name needs to be unique within a region" (Azure/azureml-examples#1931,
        Azure/mlops-project-template#29; fixture tests/fixtures/aml-rest/errors/endpoint-name-taken.json): the GET
        that follows answers 404 here. Either way the name is not ours, and the fix is another name.
        """
        if not (_already_exists(exc) or _name_taken(exc)):
            raise map_azure_error(exc, what) from exc
        found = self._call(what, get, absent=True)
        if found is None:
            raise PermanentError(
                f"{what}: the name is taken in this Azure region by an endpoint of another workspace (endpoint "
                f"names are unique per region). Set {setting} to a name of your own (infra derives one from the "
                f"deployment's resource token). Service answer: {str(getattr(exc, 'message', '') or exc)[:300]}"
            ) from exc
        require_reflex_owned(found.tags, what, setting)
        log.info("%s was created meanwhile by another Reflex call: taking it as done", what)

    def begin_create_deployment(self, endpoint: str, deployment: str, *, model: str, instance_type: str,
                                instance_count: int, tags: Mapping[str, str] | None = None) -> None:
        from azure.ai.ml.entities import ManagedOnlineDeployment

        what = f"deployment {endpoint}/{deployment}"
        existing = self.get_deployment(endpoint, deployment)
        if existing is not None and existing.model == model:
            return
        dep = ManagedOnlineDeployment(name=deployment, endpoint_name=endpoint, model=f"azureml:{model}",
                                      instance_type=instance_type, instance_count=instance_count,
                                      tags={**(tags or {}), REFLEX_TAG: "true"})
        self._call(what, lambda: self.ml.online_deployments.begin_create_or_update(dep))

    def get_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        found = self._call(f"deployment {endpoint}/{deployment}",
                           lambda: self.ml.online_deployments.get(deployment, endpoint), absent=True)
        return None if found is None else self._deployment(found, endpoint)

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int],
                    mirror: Mapping[str, int] | None = None) -> Endpoint:
        """Read the endpoint, set live and mirror traffic for every deployment, validate, write it back."""
        what = f"endpoint {endpoint}"
        read = self._read_endpoint(endpoint)
        if read is None:
            raise PermanentError(f"traffic update: {what} does not exist")
        ep, deps = read
        states = {d.name: _status(d.provisioning_state) for d in deps}
        new_traffic = {n: 0 for n in states} | {n: int(p) for n, p in traffic.items()}
        new_mirror = {n: int(p) for n, p in (mirror or {}).items() if p}
        problems = traffic_problems(new_traffic, new_mirror, states)
        if problems:
            raise PermanentError(f"{what}: traffic rejected: {'; '.join(problems)}")
        ep.traffic = dict(new_traffic)
        ep.mirror_traffic = dict(new_mirror)
        try:
            self.ml.online_endpoints.begin_create_or_update(ep)
        except Exception as exc:
            if getattr(exc, "status_code", None) == 409:  # the endpoint exists: 409 is an update already in flight
                raise TransientError(f"{what}: traffic update refused while another update is in progress (409): "
                                     f"{str(getattr(exc, 'message', '') or exc)[:200]}",
                                     retry_after_seconds(exc, 30.0)) from exc
            raise map_azure_error(exc, what) from exc
        view = self._endpoint(ep, deps)
        return Endpoint(view.name, view.state, new_traffic, new_mirror, view.deployments, view.scoring_uri,
                        view.tags)

    def _scoring_target(self, endpoint: str, *, refresh: bool = False) -> tuple[str, str]:
        """(scoring URI, Authorization header) of an endpoint, cached per worker."""
        if refresh or endpoint not in self._scoring:
            what = f"endpoint {endpoint}"
            ep = self._call(what, lambda: self.ml.online_endpoints.get(endpoint), absent=True)
            if ep is None:
                raise PermanentError(f"invoke: {what} does not exist")
            mode = str(ep.auth_mode or "key").lower()
            if mode == "aad_token":
                token = self.credential.get_token(ML_SCOPE).token
            else:
                keys = self._call(what, lambda: self.ml.online_endpoints.get_keys(endpoint))
                token = getattr(keys, "primary_key", None) or getattr(keys, "access_token", "")
            self._scoring[endpoint] = (ep.scoring_uri, f"Bearer {token}")
        return self._scoring[endpoint]

    def invoke(self, endpoint: str, deployment: str, body: Mapping[str, Any]) -> InvokeResult:
        """POST to the scoring URI with `azureml-model-deployment` set for this call only."""
        import requests

        for attempt in (0, 1):
            uri, auth = self._scoring_target(endpoint, refresh=attempt == 1)
            start = time.perf_counter()
            try:
                resp = self._http().post(uri, json=dict(body), timeout=90, headers={
                    "Authorization": auth, "Content-Type": "application/json", "azureml-model-deployment": deployment})
            except requests.RequestException as exc:
                raise TransientError(f"invoke {endpoint}/{deployment}: connection failed: {exc}", 5.0) from exc
            latency = (time.perf_counter() - start) * 1000.0
            if resp.status_code == 401 and attempt == 0:
                continue                      # key rotated: read it again once
            return InvokeResult(resp.status_code, resp.text, latency)
        raise AssertionError("unreachable")  # pragma: no cover

    def begin_delete_deployment(self, endpoint: str, deployment: str) -> None:
        """Delete only at 0% live and mirrored traffic (read first); absent is already done."""
        what = f"deployment {endpoint}/{deployment}"
        ep = self._call(what, lambda: self.ml.online_endpoints.get(endpoint), absent=True)
        if ep is None:
            return
        if (ep.traffic or {}).get(deployment, 0) > 0 or (ep.mirror_traffic or {}).get(deployment, 0) > 0:
            raise PermanentError(f"{what}: cannot delete while it receives traffic "
                                 f"(live {ep.traffic}, mirror {ep.mirror_traffic})")
        if deployment not in (ep.traffic or {}):   # the SDK fills in 0% for every deployment that exists
            return
        try:
            self.ml.online_deployments.begin_delete(deployment, endpoint)
        except Exception as exc:
            if not _not_found(exc):
                raise map_azure_error(exc, what) from exc

    def get_deployment_logs(self, endpoint: str, deployment: str, *, lines: int = 100) -> str:
        what = f"deployment {endpoint}/{deployment}"
        logs = self._call(what, lambda: self.ml.online_deployments.get_logs(deployment, endpoint, lines),
                          absent=True)
        if logs is None:
            raise PermanentError(f"logs: {what} does not exist")
        return str(logs)

    def _metrics(self) -> Any:
        if self._metrics_client is None:
            from azure.monitor.query import MetricsQueryClient

            self._metrics_client = MetricsQueryClient(self.credential, retry_total=3)
        return self._metrics_client

    def get_deployment_metrics(self, endpoint: str, deployment: str, *,
                               window_seconds: int) -> DeploymentMetrics:
        """Azure Monitor, on the endpoint resource, filtered to one deployment; see `metrics_from_monitor`.

        Metric names, aggregations and dimensions as the supported-metrics page lists them for
        Microsoft.MachineLearningServices/workspaces/onlineEndpoints (MicrosoftDocs/azure-monitor-docs
        articles/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-
        onlineendpoints-metrics.md @ 0e7def83): `RequestsPerMinute` (Count, aggregation Average; dimensions
        deployment, statusCode, statusCodeClass, modelStatusCode) and `RequestLatency` (Milliseconds, Average;
        dimension deployment). There is no Total: asking for it returns no value, which read as zero requests.
        Only the listed Average is asked for (an older revision of the page also listed Count; the current one
        does not), so the query cannot be refused for an unsupported aggregation. Two queries, as the dimensions
        differ.
        """
        from azure.monitor.query import MetricAggregationType

        what = f"metrics of {endpoint}/{deployment}"
        resource = f"{self.scope}/onlineEndpoints/{endpoint}"
        span = timedelta(seconds=window_seconds)
        dep = deployment.replace("'", "''")
        client = self._metrics()
        counts = self._call(what, lambda: client.query_resource(
            resource, metric_names=["RequestsPerMinute"], timespan=span, granularity=timedelta(minutes=1),
            aggregations=[MetricAggregationType.AVERAGE],
            filter=f"deployment eq '{dep}' and statusCodeClass eq '*'"))
        latency = self._call(what, lambda: client.query_resource(
            resource, metric_names=["RequestLatency"], timespan=span, granularity=timedelta(minutes=1),
            aggregations=[MetricAggregationType.AVERAGE], filter=f"deployment eq '{dep}'"))
        return metrics_from_monitor(counts, latency, window_seconds)

    def check_quota(self, instance_type: str, instance_count: int) -> QuotaCheck:
        """Cores of the VM family free in the workspace's region (usage API) vs what the deployment needs, with the
        20% Azure ML reserves for upgrades (`shared.platform.cores_needed`)."""
        location, _ = self._workspace_info()
        what = f"quota for {instance_type}"
        sizes = self._call(what, lambda: list(self.ml.compute.list_sizes(location=location))) or []
        size = next((s for s in sizes if str(s.name).lower() == instance_type.lower()), None)
        if size is None:
            raise PermanentError(f"quota: unknown instance type {instance_type} in {location}")
        family = str(size.family)
        cores = int(_field(size, "v_cp_us", "vCPUs") or 0)
        usages = self._call(what, lambda: list(self.ml.compute.list_usage(location=location))) or []

        def usage_name(u: Any) -> str:
            name = u.name
            return str(name.get("value") if isinstance(name, dict) else getattr(name, "value", name))

        usage = next((u for u in usages if usage_name(u) == family), None)
        used = int(_field(usage, "current_value", "currentValue") or 0) if usage else 0
        limit = int(_field(usage, "limit") or 0) if usage else 0
        return QuotaCheck(instance_type, family, cores_needed(cores, instance_count), used, limit)

    # ------------------------------------------------------------------ batch endpoints
    def begin_ensure_batch_deployment(self, spec: BatchDeploymentSpec) -> None:
        """Advance the batch endpoint and deployment one step; call again until `get_batch_deployment` succeeds.

        Endpoint absent -> begin it (and go on only if it is already Succeeded); deployment absent or on another
        model -> begin it; deployment Succeeded and not the endpoint's default -> make it the default.
        """
        from azure.ai.ml.entities import BatchEndpoint, ModelBatchDeployment, ModelBatchDeploymentSettings

        what = f"batch endpoint {spec.endpoint}"
        get = lambda: self.ml.batch_endpoints.get(spec.endpoint)  # noqa: E731
        ep = self._call(what, get, absent=True)
        if ep is not None:
            require_reflex_owned(ep.tags, what, "REFLEX_BATCH_ENDPOINT")
        else:
            try:
                poller = self.ml.batch_endpoints.begin_create_or_update(
                    BatchEndpoint(name=spec.endpoint, tags={REFLEX_TAG: "true"}))
            except Exception as exc:
                self._claim_name(exc, what, get, "REFLEX_BATCH_ENDPOINT")
                return
            ep = self._call(what, get, absent=True) if poller is not None and poller.done() else None
        if ep is None or _status(ep.provisioning_state) != "Succeeded":
            return
        current = self.get_batch_deployment(spec.endpoint, spec.deployment)
        if current is None or current.model != spec.model:
            dep = ModelBatchDeployment(
                name=spec.deployment, endpoint_name=spec.endpoint, model=f"azureml:{spec.model}",
                compute=spec.compute, tags={REFLEX_TAG: "true"},
                settings=ModelBatchDeploymentSettings(mini_batch_size=spec.mini_batch_size,
                                                      instance_count=spec.instance_count,
                                                      max_concurrency_per_instance=spec.max_concurrency))
            self._call(f"batch deployment {spec.endpoint}/{spec.deployment}",
                       lambda: self.ml.batch_deployments.begin_create_or_update(dep))
            return
        default = ep.defaults.get("deployment_name") if isinstance(ep.defaults, dict) \
            else getattr(ep.defaults, "deployment_name", None)
        if current.succeeded and default != spec.deployment:
            ep.defaults = {"deployment_name": spec.deployment}
            self._call(what, lambda: self.ml.batch_endpoints.begin_create_or_update(ep))

    def get_batch_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        found = self._call(f"batch deployment {endpoint}/{deployment}",
                           lambda: self.ml.batch_deployments.get(deployment, endpoint), absent=True)
        if found is None:
            return None
        resources = getattr(found, "resources", None)
        count = getattr(found, "instance_count", None) or getattr(resources, "instance_count", None) or 1
        return Deployment(found.name, endpoint, _model_ref(found.model), _status(found.provisioning_state),
                          str(found.compute or "").rsplit("/", 1)[-1], int(count), dict(found.tags or {}))

    def invoke_batch(self, endpoint: str, deployment: str, *, input_path: str, output_path: str,
                     job_name: str, tags: Mapping[str, str] | None = None) -> Job:
        """Start a batch scoring job named `job_name` (idempotent: an existing job is returned).

        The SDK's batch invoke takes no tags; `tags` are not sent (the job is traceable by its name).
        """
        from azure.ai.ml import Input, Output
        from azure.ai.ml.constants._endpoint import EndpointInvokeFields

        what = f"batch job {job_name}"
        existing = self._call(what, lambda: self.ml.jobs.get(job_name), absent=True)
        if existing is not None:
            job = self._job(existing)
            return Job(job.name, job.status, "batch", job.experiment_name or endpoint, job.tags,
                       job.outputs or {"score": output_path}, job.error, job.url)
        out_type = "uri_folder" if output_path.endswith("/") else "uri_file"
        with _invoke_lock, _restore(EndpointInvokeFields.DEFAULT_HEADER):
            started = self._call(what, lambda: self.ml.batch_endpoints.invoke(
                endpoint_name=endpoint, deployment_name=deployment, job_name=job_name,
                input=Input(type="uri_folder", path=input_path),
                outputs={"score": Output(type=out_type, path=output_path)}))
        return Job(started.name or job_name, _status(started.status), kind="batch", experiment_name=endpoint,
                   tags=dict(tags or {}), outputs={"score": output_path})

    # ------------------------------------------------------------------ newest model version (#14.8)
    def get_latest_model(self, name: str) -> ModelVersion | None:
        """The most recently created version of `name`: one request.

        azure-ai-ml resolves the `latest` label with `ModelOperations._get_latest_version` ->
        `_utils/_asset_utils._get_latest`: `GET …/models/<name>/versions?$orderBy=createdtime desc&$top=1` in a
        workspace ("Latest is defined as the most recently created"). A model without versions answers an empty
        page, which the SDK raises as a ValidationException of type RESOURCE_NOT_FOUND: that is None here.
        """
        from azure.ai.ml.exceptions import ValidationErrorType, ValidationException

        def latest() -> Any:
            try:
                return self.ml.models.get(name, label="latest")
            except ValidationException as exc:
                if exc.error_type == ValidationErrorType.RESOURCE_NOT_FOUND:
                    return None
                raise

        found = self._call(f"model {name} (latest version)", latest, absent=True)
        return None if found is None else self._model(found)


def _dimension(series: Any, name: str) -> str:
    """A series' dimension value; Azure Monitor returns dimension names lower-cased (`"blobtype"` in the REST
    example GetMetric.json), so the name is matched without case."""
    values = getattr(series, "metadata_values", None) or {}
    return str(next((v for k, v in values.items() if str(k).lower() == name.lower()), "") or "")


def metrics_from_monitor(counts: Any, latency: Any, window_seconds: int) -> DeploymentMetrics:
    """Requests, 5xx errors and mean latency from two azure-monitor-query `MetricsQueryResult`s.

    A point of `RequestsPerMinute` at PT1M grain carries `average`: "the number of requests sent to online
    endpoint within a minute", i.e. that minute's requests. Where the answer also carries `count` (samples in the
    point, as the REST example does when asked for it), average x count is the sum of the samples (the Total the
    metric does not offer); without it a point is one sample. A point with no `average` is a minute without
    samples (the REST example answers `count: 0` and no average). No point with a value in any series is "no data
    yet" (`has_data` False), never zero requests: Azure Monitor ingests with a delay, and a canary that serves
    traffic shows none for its first minutes.
    """
    requests = errors = 0.0
    seen = False
    for metric in getattr(counts, "metrics", None) or []:
        for series in metric.timeseries or []:
            values = [(p.average, p.count) for p in series.data or [] if p.average is not None]
            if not values:
                continue
            seen = True
            n = sum(avg * (cnt if cnt else 1) for avg, cnt in values)
            requests += n
            if _dimension(series, "statusCodeClass").startswith("5"):
                errors += n
    points = [p.average for m in getattr(latency, "metrics", None) or [] for s in m.timeseries or []
              for p in s.data or [] if p.average is not None]
    return DeploymentMetrics(round(requests), round(errors), sum(points) / len(points) if points else None,
                             window_seconds, has_data=seen)


@contextmanager
def _restore(headers: dict[str, str]) -> Iterator[None]:
    """Put the SDK's class-level invoke headers back as they were (the SDK mutates them in place)."""
    saved = dict(headers)
    try:
        yield
    finally:
        headers.clear()
        headers.update(saved)


def _retry_after(headers: Mapping[str, str]) -> float:
    class _R:  # adapt a requests response's headers to retry_after_seconds
        pass

    exc = _R()
    exc.response = _R()  # type: ignore[attr-defined]
    exc.response.headers = headers  # type: ignore[attr-defined]
    return retry_after_seconds(exc)  # type: ignore[arg-type]


@lru_cache(maxsize=4)
def _cached_platform(subscription: str, resource_group: str, workspace: str, client_id: str,
                     data_type: str) -> AzureMLPlatform:
    from shared.storage import credential

    cred = credential(client_id)
    platform = AzureMLPlatform.connect(cred, subscription_id=subscription, resource_group=resource_group,
                                       workspace=workspace, data_type=data_type, retry_total=3)
    log.info("Azure ML: workspace %s (resource group %s, subscription %s) as %s", workspace, resource_group,
             subscription, f"user-assigned identity {client_id}" if client_id else
             "DefaultAzureCredential (system identity or developer login)")
    return platform
