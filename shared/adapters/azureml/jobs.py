"""Data assets, training and evaluation jobs, and a run's metrics: the job side of the Azure ML adapter.

Submissions are one PUT (a reused name answers 400 "already exists": the existing job is returned), names must
already be lower case (`command()` lower-cases them), environments pinned, code a registered asset. A run's
metrics come from the workspace's MLflow REST API (`runs/get`, run id = job name) through `http.DataPlane`, so
neither mlflow nor azureml-mlflow is imported here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from shared.adapters.azureml.base import ARM_SCOPE, PlatformBase, status
from shared.core.errors import PermanentError
from shared.core.platform import (
    REFLEX_TAG,
    DataAsset,
    EvaluationRequest,
    Job,
    TrainingRequest,
    job_output_uri,
    model_output,
)

__all__ = ["TRAIN_COMMAND", "JobsMixin", "job_view"]

log = logging.getLogger("reflex.azureml")

# What the command job runs; the code asset (or the environment image) carries jobs/train/train.py.
TRAIN_COMMAND = ("python train.py --data ${{inputs.data}} --label LABEL --task TASK "
                 "--model-output ${{outputs.model}}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,254}")
_PINNED_ENV_RE = re.compile(r"azureml:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+|azureml://registries/[^/]+/environments/"
                            r"[^/]+/versions/[^/]+")


def job_view(j: Any) -> Job:
    """The protocol's `Job` from an SDK job entity (batch scoring jobs are pipeline jobs)."""
    kind = {"command": "command", "automl": "automl", "pipeline": "batch"}.get(
        status(getattr(j, "type", "command")).lower(), "command")
    outputs = {}
    for key, out in (getattr(j, "outputs", None) or {}).items():
        path = getattr(out, "path", None)
        outputs[key] = str(path) if path else job_output_uri(j.name, key)
    error = ""
    if status(j.status) in ("Failed", "NotResponding"):
        error = str(getattr(j, "error", "") or getattr(j, "status_message", "") or "")
    return Job(j.name, status(j.status), kind=kind, experiment_name=j.experiment_name or "",
               tags=dict(j.tags or {}), outputs=outputs, error=error, url=getattr(j, "studio_url", "") or "")


class JobsMixin(PlatformBase):
    """Data assets, training and evaluation submissions, jobs and their metrics."""

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
        return job_view(self._create_or_existing(what, lambda: self.ml.jobs.create_or_update(job),
                                                 lambda: self.ml.jobs.get(request.job_name)))

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
        return job_view(self._create_or_existing(what, lambda: self.ml.jobs.create_or_update(job),
                                                 lambda: self.ml.jobs.get(r.job_name)))

    def get_job(self, name: str) -> Job | None:
        found = self._call(f"job {name}", lambda: self.ml.jobs.get(name), absent=True)
        return None if found is None else job_view(found)

    def get_job_metrics(self, name: str) -> Mapping[str, float]:
        """The run's latest metric values from the workspace's MLflow server (run id = job name)."""
        _, base = self._workspace_info()
        data = self.http.send(f"metrics of job {name}", "GET", f"{base}/api/2.0/mlflow/runs/get", scope=ARM_SCOPE,
                              params={"run_id": name}).json()
        latest: dict[str, tuple[int, int, float]] = {}
        for m in data.get("run", {}).get("data", {}).get("metrics", []) or []:
            key = (int(m.get("step", 0)), int(m.get("timestamp", 0)), float(m["value"]))
            if m["key"] not in latest or key[:2] >= latest[m["key"]][:2]:
                latest[m["key"]] = key
        return {k: v[2] for k, v in latest.items()}
