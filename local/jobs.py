"""Local jobs: each training or batch scoring job is an MLflow run driven by a detached `local.jobrunner`.

Why both a record and a run: the record (`platform/jobs/<name>`, create-if-absent) makes submission idempotent
by job name even when two workers race, and remembers the run, the process and the inputs; the MLflow run
(run name = job name, tag `reflex.job_name`, the request's lineage tags) carries status, metrics, logs and the
model, and is what a person sees in the MLflow UI. Status: MLflow RUNNING/SCHEDULED/FINISHED/FAILED/KILLED ->
Running/Queued/Completed/Failed/Canceled; a RUNNING run whose runner process is gone is reported Failed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from local import procs
from local.mlflow_errors import NotFound, mlflow_errors
from shared.core.errors import PermanentError
from shared.core.platform import Job, model_output
from shared.core.state import StateStore, key_part

__all__ = ["Jobs", "JOB_NAME_TAG"]

JOB_NAME_TAG = "reflex.job_name"
_STATUS = {"RUNNING": "Running", "SCHEDULED": "Queued", "FINISHED": "Completed", "FAILED": "Failed",
           "KILLED": "Canceled"}
_JOB_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,254}")


def _key(name: str) -> str:
    return f"platform/jobs/{key_part(name)}"


class Jobs:
    def __init__(self, state: StateStore, client: Any, *, run_dir: Path, tracking_uri: str, host_url: str,
                 spawn_env: Mapping[str, str], clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.client = client
        self.run_dir = run_dir
        self.tracking_uri = tracking_uri.rstrip("/")
        self.host_url = host_url
        self.spawn_env = dict(spawn_env)
        self.clock = clock

    def _experiment(self, name: str) -> str:
        with mlflow_errors(f"experiment {name}"):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            try:
                return self.client.create_experiment(name)
            except Exception:
                found = self.client.get_experiment_by_name(name)  # lost a creation race
                if found is None:
                    raise
                return found.experiment_id

    def submit(self, job_name: str, *, kind: str, experiment_name: str, tags: Mapping[str, str],
               spec: Mapping[str, Any]) -> Job:
        """Create the job once: record, MLflow run, runner process. A repeated name returns the existing job."""
        if not _JOB_NAME.fullmatch(job_name):
            raise PermanentError(f"job {job_name}: names must be lower-case letters, digits, - and _")
        if not experiment_name:
            raise PermanentError(f"job {job_name}: experiment_name must be set")
        if self.state.create(_key(job_name), {"name": job_name, "kind": kind, "experiment_name": experiment_name,
                                              "tags": dict(tags), "created": self.clock(), "run_id": None,
                                              "pid": None, "outputs": dict(spec.get("outputs", {}))}) is None:
            return self.get(job_name)  # type: ignore[return-value]
        experiment_id = self._experiment(experiment_name)
        with mlflow_errors(f"job {job_name}"):
            run = self.client.create_run(experiment_id, run_name=job_name,
                                         tags={**tags, JOB_NAME_TAG: job_name, "reflex.kind": kind})
        folder = self.run_dir / "jobs" / key_part(job_name)
        folder.mkdir(parents=True, exist_ok=True)
        full = {**spec, "kind": kind, "job_name": job_name, "experiment_name": experiment_name,
                "experiment_id": experiment_id, "run_id": run.info.run_id, "tags": dict(tags),
                "host_url": self.host_url}
        (folder / "spec.json").write_text(json.dumps(full, indent=2))
        pid = procs.spawn(["local.jobrunner", str(folder / "spec.json")], log_path=folder / "runner.log",
                          env={**self.spawn_env, "MLFLOW_TRACKING_URI": self.tracking_uri})

        def started(rec: dict[str, Any] | None) -> dict[str, Any] | None:
            if rec is None:
                return None
            return {**rec, "run_id": run.info.run_id, "experiment_id": experiment_id, "pid": pid,
                    "folder": str(folder)}

        self.state.update(_key(job_name), started)
        return self.get(job_name)  # type: ignore[return-value]

    def record(self, name: str) -> dict[str, Any] | None:
        found = self.state.get(_key(name))
        return None if found is None else found.value

    def get(self, name: str) -> Job | None:
        rec = self.record(name)
        if rec is None:
            return None
        kind = "command" if rec["kind"] == "evaluate" else rec["kind"]  # an evaluation is a command job in Azure
        base = {"kind": kind, "experiment_name": rec["experiment_name"], "tags": dict(rec["tags"])}
        if not rec.get("run_id"):
            if self.clock() - rec["created"] < 120:
                return Job(name, "NotStarted", **base)
            return Job(name, "Failed", error="submission was interrupted before the run started", **base)
        try:
            with mlflow_errors(f"job {name}"):
                run = self.client.get_run(rec["run_id"])
        except NotFound:
            return Job(name, "Failed", error=f"MLflow run {rec['run_id']} is gone", **base)
        status = _STATUS.get(run.info.status, run.info.status.title())
        error = run.data.tags.get("reflex.error", "")
        failure = run.data.tags.get("reflex.failure", "")
        if status in ("Running", "Queued") and not procs.alive(rec.get("pid"), "local.jobrunner"):
            run = self.client.get_run(rec["run_id"])  # the runner may have finished just now
            status = _STATUS.get(run.info.status, run.info.status.title())
            if status in ("Running", "Queued"):
                status, error, failure = self._result(rec)
        outputs = dict(rec.get("outputs") or {})
        if rec["kind"] not in ("batch", "evaluate") and status == "Completed":
            # the same output name as on Azure ML: `model` for a command job, `best_model` for AutoML
            out = model_output(rec["kind"])
            outputs.setdefault(out, f"runs:/{rec['run_id']}/{out}")
        url = f"{self.tracking_uri}/#/experiments/{rec['experiment_id']}/runs/{rec['run_id']}"
        return Job(name, status, outputs=outputs, error=error, url=url, failure=failure if status == "Failed" else "",
                   **base)

    @staticmethod
    def _result(rec: Mapping[str, Any]) -> tuple[str, str, str]:
        """Status, error and failure of a job whose runner ended while MLflow still says it runs: what the runner
        wrote to `result.json` before telling MLflow (MLflow was down then, local/jobrunner.py), else a failure
        of the job's machinery, not of the user's script: transient, so the batch is trained again (#18.3)."""
        path = Path(str(rec.get("folder") or "")) / "result.json"
        try:
            found = json.loads(path.read_text()) if rec.get("folder") else None
        except (OSError, ValueError):
            found = None
        if isinstance(found, dict) and found.get("status") in ("Completed", "Failed"):
            return str(found["status"]), str(found.get("error") or ""), str(found.get("failure") or "")
        return "Failed", "the job process ended without reporting a result", "transient"

    def metrics(self, name: str) -> Mapping[str, float]:
        rec = self.record(name)
        if rec is None:
            raise PermanentError(f"job {name}: not found")
        if not rec.get("run_id"):
            return {}
        with mlflow_errors(f"job {name}"):
            return dict(self.client.get_run(rec["run_id"]).data.metrics)
