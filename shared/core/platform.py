"""The small protocol the reactions need from an ML platform, with frozen value types.

Why a protocol: the flows decide and act through these few operations only, so the same flow code runs on
Azure ML (`shared/adapters/azureml/`), on the offline MLflow stack (`local/platform.py`) and against the behavioural
fake the tests use (`testing/fake_platform.py`). One protocol test suite runs against all of them, so they
cannot drift apart.

Rules every implementation follows (they encode the Azure ML traps in ../shared/reference/azure-ai-ml.md):

* "not there" is `None` from `get_*`, never an exception; "already exists" on create is success (idempotent);
* throttling, 5xx and connection loss raise `TransientError(retry_after)`; auth and validation failures raise
  `PermanentError` naming the resource;
* names are chosen by the caller and deterministic (job, deployment, data and model versions), so a repeated
  call finds its work done;
* long operations are begun, never awaited (`begin_*`): a timer polls `get_*` for the outcome;
* traffic and mirror traffic are read, modified and written as a whole; live traffic sums to 0 or 100, only
  Succeeded deployments receive traffic, and a deployment is deleted only at 0% live and mirrored traffic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    pass

__all__ = [
    "CHAMPION_TAG", "APPROVAL_TAG", "FAILURE_TRANSIENT", "FAILURE_USER", "REFLEX_TAG", "SUCCEEDED",
    "TERMINAL_JOB_STATES", "DataAsset", "Deployment", "DeploymentMetrics", "Endpoint", "EvaluationRequest",
    "InvokeResult", "Job", "MLPlatform", "ModelVersion", "QuotaCheck", "TrainingRequest", "BatchDeploymentSpec",
    "SERVING_TRANSITIONS", "TRANSITIONAL", "UPGRADE_RESERVE", "cores_needed", "job_output_uri", "model_output",
    "require_reflex_owned", "serving_states", "traffic_problems",
]

CHAMPION_TAG = "reflex.champion"   # "true" on the model version that serves production
APPROVAL_TAG = "reflex.approval"   # "pending" | "approved" | "rejected"
REFLEX_TAG = "reflex.managed"      # "true" on every asset and job Reflex creates

TERMINAL_JOB_STATES = frozenset({"Completed", "Failed", "Canceled", "NotResponding"})
# Why a job failed, as the platform reports it (`Job.failure`, #18.3): a transient cause (the platform or a
# dependency unreachable, throttled, 5xx) is trained again; the user's script or data is not; "" is unknown
# (not retried: retrying what may be the user's failure burns compute for nothing).
FAILURE_TRANSIENT = "transient"
FAILURE_USER = "user"
SUCCEEDED = "Succeeded"
# Provisioning states that pass by themselves (azure-ai-ml `DeploymentProvisioningState` and
# `EndpointProvisioningState`; endpoints have no Scaling). A deployment goes Updating or Scaling when its traffic,
# instance count or image changes and during platform maintenance, and keeps serving meanwhile.
TRANSITIONAL = frozenset({"Creating", "Updating", "Scaling"})
SERVING_TRANSITIONS = frozenset({"Updating", "Scaling"})

# The output that holds the trained MLflow model, by job kind. A command job names its own outputs (TRAIN_COMMAND
# in shared/adapters/azureml/jobs.py writes `model`); an AutoML job's is fixed by the service:
# `outputs.best_model`, "Type of best model. AutoML allows only mlflow models" (AutoML job YAML reference,
# MicrosoftDocs/azure-docs articles/machine-learning/reference-automl-nlp-cli-text-classification.md, "Best model
# output configuration"; azureml-examples pipelines consume `classification_node.outputs.best_model`).
MODEL_OUTPUTS = {"command": "model", "automl": "best_model"}

# "Azure Machine Learning reserves 20% extra compute resources for performing upgrades. For example, if you request
# 10 instances in a deployment, you must have a quota for 12." (how-to-manage-quotas, "Azure Machine Learning online
# endpoints and batch endpoints", footnote 4; MicrosoftDocs/azure-ai-docs articles/machine-learning/
# how-to-manage-quotas.md). Some VM SKUs are exempt; Reflex reserves for all (the safe side: never start a rollout
# whose upgrade would fail on quota).
UPGRADE_RESERVE = 0.2


def model_output(kind: str) -> str:
    """The name of the output a job of `kind` ("command" | "automl") writes its MLflow model to."""
    return MODEL_OUTPUTS.get(kind, MODEL_OUTPUTS["command"])


def job_output_uri(job: str, output: str, path: str = "") -> str:
    """`azureml://jobs/<job>/outputs/<output>/paths/<path>`: the documented job-output URI (how-to-manage-models,
    "A path from an Azure Machine Learning job"; azure-ai-ml 1.35.2 `constants._common.JOB_URI_FORMAT`). The empty
    path is the output folder itself, where an `mlflow_model` output keeps its MLmodel file."""
    return f"azureml://jobs/{job}/outputs/{output}/paths/{path}"


def require_reflex_owned(tags: Mapping[str, str] | None, what: str, setting: str) -> None:
    """Reflex acts only on endpoints it created (tag `reflex.managed=true`): never redefine someone else's.

    Every implementation tags what it creates and refuses an existing endpoint without the tag, naming the setting
    that picks another name (`REFLEX_ENDPOINTS`, `REFLEX_BATCH_ENDPOINT`).
    """
    from shared.core.errors import PermanentError

    if (tags or {}).get(REFLEX_TAG) != "true":
        raise PermanentError(f"{what} exists in this workspace but Reflex did not create it (no {REFLEX_TAG}=true "
                             f"tag); Reflex never redefines an endpoint it does not own. Set {setting} to a name of "
                             "Reflex's own, or tag the endpoint if it really is Reflex's")


def cores_needed(cores_per_instance: int, instance_count: int) -> int:
    """Quota a deployment of `instance_count` VMs needs, with Azure ML's upgrade reserve (whole instances, rounded
    up): 10 x 4 cores -> 48 (the doc's 12 instances), 1 x 4 cores -> 8."""
    return cores_per_instance * math.ceil(round(instance_count * (1 + UPGRADE_RESERVE), 6))


@dataclass(frozen=True)
class DataAsset:
    """A registered data asset version (Azure ML `uri_folder`)."""

    name: str
    version: str
    path: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingRequest:
    """Everything a training submission needs; `job_name` is the idempotency key (lower case)."""

    job_name: str
    experiment_name: str
    data_name: str
    data_version: str
    mode: str                    # "command" | "automl"
    task: str                    # "classification" | "regression"
    label_column: str
    compute: str
    environment: str             # pinned: azureml:<name>:<version>
    tags: Mapping[str, str] = field(default_factory=dict)
    display_name: str = ""
    code: str = ""               # registered code asset, or "" when the environment image carries the script
    primary_metric: str = "AUC_weighted"
    timeout_minutes: int = 60
    max_trials: int = 20
    early_stopping: bool = True
    champion_model: str = ""     # "<name>:<version>" the command job scores on its own holdout ("" = none)


@dataclass(frozen=True)
class EvaluationRequest:
    """Score MLflow models on the same rows (jobs/train/evaluate.py as a command job); `job_name` is the key.

    `models` maps a role ("challenger", "champion") to `azureml:<name>:<version>` (a registered model) or
    `azureml://jobs/<job>/outputs/<output>` (a job's model output, e.g. AutoML's `best_model`): the forms Azure
    ML takes as an `mlflow_model` input. `holdout`: score the batch's holdout split (train.py's), else all rows.
    """

    job_name: str
    experiment_name: str
    data_name: str
    data_version: str
    task: str
    label_column: str
    compute: str
    environment: str
    models: Mapping[str, str]
    holdout: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)
    display_name: str = ""
    code: str = ""


@dataclass(frozen=True)
class Job:
    """A training or batch scoring job as the platform reports it."""

    name: str
    status: str                  # NotStarted | Queued | Running | Completed | Failed | Canceled | …
    kind: str = "command"        # "command" | "automl" | "batch"
    experiment_name: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)  # output name -> URI
    error: str = ""
    url: str = ""
    failure: str = ""            # FAILURE_TRANSIENT | FAILURE_USER | "" (unknown), for a failed job

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_JOB_STATES


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: str = ""
    type: str = "mlflow_model"
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    job_name: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Deployment:
    """An online or batch deployment; `state` is the provisioning state (Creating, Succeeded, Failed, …)."""

    name: str
    endpoint: str
    model: str                   # "<name>:<version>"
    state: str
    instance_type: str = ""
    instance_count: int = 1
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCEEDED


@dataclass(frozen=True)
class Endpoint:
    """An online endpoint with its deployments and traffic (0% entries present for every deployment)."""

    name: str
    state: str
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror: Mapping[str, int] = field(default_factory=dict)
    deployments: tuple[Deployment, ...] = ()
    scoring_uri: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def deployment(self, name: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name), None)

    @property
    def live(self) -> str | None:
        """The deployment with the most live traffic (None when nothing serves)."""
        serving = [(pct, name) for name, pct in self.traffic.items() if pct > 0]
        return max(serving)[1] if serving else None


@dataclass(frozen=True)
class InvokeResult:
    status: int
    body: str
    latency_ms: float


@dataclass(frozen=True)
class DeploymentMetrics:
    """Request count, errors and average latency of one deployment over a window.

    `has_data` False: the platform reported nothing for the window (Azure Monitor returns no series, or only points
    without values, until its first sample arrives). That is "no data yet", not "zero requests".
    `latency_p50_ms`: the median request latency over the window where the platform reports it (the local
    platform, from every request's latency), else None. A canary's typical request is judged on it: a mean over
    a canary's few requests is one stalled request away from a rollback on a loaded machine (#18.6).
    """

    requests: int
    errors: int
    latency_ms: float | None
    window_seconds: int
    has_data: bool = True
    latency_p50_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class QuotaCheck:
    """Whether `needed` more cores of a VM family fit: `limit - used >= needed`."""

    instance_type: str
    family: str
    needed: int
    used: int
    limit: int

    @property
    def ok(self) -> bool:
        return self.limit - self.used >= self.needed


@dataclass(frozen=True)
class BatchDeploymentSpec:
    endpoint: str
    deployment: str
    model: str                   # "<name>:<version>"
    compute: str
    mini_batch_size: int = 10
    instance_count: int = 1
    max_concurrency: int = 2


def traffic_problems(traffic: Mapping[str, int], mirror: Mapping[str, int],
                     deployments: Mapping[str, str]) -> list[str]:
    """Why a traffic assignment is invalid (empty when valid). `deployments` maps name -> state.

    Shared by every implementation and by the health check, so all agree on the invariants.
    """
    problems = []
    live_total = sum(traffic.values())
    if live_total not in (0, 100):
        problems.append(f"live traffic sums to {live_total}, not 0 or 100")
    for name, pct in {**traffic, **mirror}.items():
        if pct < 0 or pct > 100:
            problems.append(f"{name}: {pct}% is out of range")
        if pct > 0 and name not in deployments:
            problems.append(f"{name}: receives {pct}% but no such deployment exists")
        elif pct > 0 and deployments[name] != SUCCEEDED:
            problems.append(f"{name}: receives {pct}% but its state is {deployments[name]}")
    mirrored = {n: p for n, p in mirror.items() if p > 0}
    if len(mirrored) > 1:
        problems.append("mirror traffic may go to one deployment only")
    for name, pct in mirrored.items():
        if pct > 50:
            problems.append(f"{name}: mirror traffic {pct}% exceeds 50%")
        if traffic.get(name, 0) > 0:
            problems.append(f"{name}: takes live and mirrored traffic at once")
    return problems


def serving_states(deployments: Mapping[str, str]) -> dict[str, str]:
    """`deployments` (name -> state) with Updating and Scaling read as Succeeded, for checking traffic in place.

    A deployment that already takes traffic keeps serving it while it updates or scales, so traffic found on it
    is not a violation; assigning new traffic still requires Succeeded (`traffic_problems` on the raw states).
    """
    return {n: SUCCEEDED if s in SERVING_TRANSITIONS else s for n, s in deployments.items()}


@runtime_checkable
class MLPlatform(Protocol):
    """What Reflex needs from an ML platform. See the module docstring for the rules."""

    name: str

    # ---- data and training
    def register_data(self, *, name: str, version: str, path: str, tags: Mapping[str, str],
                      description: str = "") -> DataAsset: ...

    def get_data(self, name: str, version: str) -> DataAsset | None: ...

    def submit_training(self, request: TrainingRequest) -> Job: ...

    def submit_evaluation(self, request: EvaluationRequest) -> Job: ...

    def get_job(self, name: str) -> Job | None: ...

    def get_job_metrics(self, name: str) -> Mapping[str, float]: ...

    # ---- models
    def register_model(self, *, name: str, version: str, job_name: str, output_name: str = "model",
                       tags: Mapping[str, str], properties: Mapping[str, str] | None = None,
                       description: str = "") -> ModelVersion: ...

    def get_model(self, name: str, version: str) -> ModelVersion | None: ...

    def list_models(self, name: str) -> list[ModelVersion]: ...

    def get_latest_model(self, name: str) -> ModelVersion | None:
        """The newest (most recently created) version of model `name`, None when it has none: ONE request,
        never a listing of every version, because the reconciler asks this of every served model every tick."""
        ...

    def find_champion(self, name: str) -> ModelVersion | None: ...

    def update_model_tags(self, name: str, version: str, *, set_tags: Mapping[str, str] | None = None,
                          remove: tuple[str, ...] = ()) -> ModelVersion: ...

    # ---- online endpoints
    def get_endpoint(self, name: str) -> Endpoint | None: ...

    def begin_create_endpoint(self, name: str, *, tags: Mapping[str, str] | None = None) -> None: ...

    def begin_create_deployment(self, endpoint: str, deployment: str, *, model: str, instance_type: str,
                                instance_count: int, tags: Mapping[str, str] | None = None) -> None: ...

    def get_deployment(self, endpoint: str, deployment: str) -> Deployment | None: ...

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int],
                    mirror: Mapping[str, int] | None = None) -> Endpoint: ...

    def invoke(self, endpoint: str, deployment: str, body: Mapping[str, Any]) -> InvokeResult: ...

    def begin_delete_deployment(self, endpoint: str, deployment: str) -> None: ...

    def get_deployment_metrics(self, endpoint: str, deployment: str, *,
                               window_seconds: int) -> DeploymentMetrics: ...

    def check_quota(self, instance_type: str, instance_count: int) -> QuotaCheck: ...

    # ---- batch endpoints
    def begin_ensure_batch_deployment(self, spec: BatchDeploymentSpec) -> None: ...

    def get_batch_deployment(self, endpoint: str, deployment: str) -> Deployment | None: ...

    def invoke_batch(self, endpoint: str, deployment: str, *, input_path: str, output_path: str,
                     job_name: str, tags: Mapping[str, str] | None = None) -> Job: ...

