"""The process behind one local job: training (command or AutoML), batch scoring, or deployment provisioning.

Why a wrapper process: it is the local stand-in for Azure ML's job runtime. It downloads the input folder from
Azurite (Azure ML's download mode), runs the user's script as a child with the MLflow run made active
(`MLFLOW_RUN_ID`), marks the MLflow run FINISHED or FAILED by the child's exit code — so `get_job` is right even
when nobody hears the event — and then emits the Azure ML event (`RunCompleted` / `RunStatusChanged`) to the
local host, retrying, and records on the run whether delivery succeeded (`reflex.event_delivered`).

What outlives an outage (#18): the result is written to `result.json` in the job folder first (status, error,
and why it failed: `failure`), then told to MLflow with retries for up to `FINISH_PATIENCE_SECONDS`, so MLflow
down for a while at the end no longer kills the runner with the run left RUNNING; if MLflow stays away,
`local/jobs.py` reads the result from the folder. Delivery of the event is left to the timer when the host
is down: `amlevents.deliver` tries for a few seconds, and the data sweep finds a job that ended unheard and
runs the same reaction (shared/core/unheard.py), as it does for Azure ML's events.

Why a job failed (`failure`, what `Job.failure` reports): `transient` when a dependency was down (MLflow or
storage unreachable, a 5xx or 429 from either; the user's script exiting with EX_TEMPFAIL, 75, from
sysexits.h, says the same), `user` for the user's script or data (any other non-zero exit, an input with no
file, no model logged), "" when the runner itself broke in another way.

    python -m local.jobrunner <job folder>/spec.json        (written by local/jobs.py)
    python -m local.jobrunner provision <endpoint> <deployment>   (written by local/endpoints.py)

spec.json: {"kind": "command"|"automl"|"batch"|"evaluate", "job_name", "experiment_name", "run_id", "tags",
"input": {"container", "prefix"}, "label", "task", "script", "primary_metric", "max_trials",
"timeout_minutes", "champion_model" (command: MLflow URI scored on the holdout), "models" ({role: MLflow URI},
evaluate), "holdout" (evaluate), "model" ("name:version", batch), "output": {"container", "prefix"} (batch),
"host_url"}.
The storage connection and tracking URI come from the environment (AzureWebJobsStorage, MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.core.failure import error_line

__all__ = ["EX_TEMPFAIL", "FINISH_PATIENCE_SECONDS", "JobFailed", "failure_of", "main", "run_job", "script_failure"]

EX_TEMPFAIL = 75   # sysexits.h: "temporary failure, the user is invited to retry"
FINISH_PATIENCE_SECONDS = 600.0

# What the last line of a script's traceback names when the script failed because a dependency did not answer:
# the exception types of requests/urllib3 (MLflow's client), azure-core (storage) and the OS.
_TRANSIENT_MARKS = ("requests.exceptions.ConnectionError", "requests.exceptions.Timeout", "urllib3.exceptions.",
                    "ConnectionRefusedError", "ConnectionResetError", "azure.core.exceptions.ServiceRequestError",
                    "azure.core.exceptions.ServiceResponseError", "TEMPORARILY_UNAVAILABLE",
                    "Max retries exceeded with url")


class JobFailed(Exception):
    """The job's own program failed; the message is the reason as is (its error line first, `shared.core.failure`).

    `failure`: `user` (the script or its data), or `transient` when the script says a dependency was down."""

    def __init__(self, message: str, failure: str = "user") -> None:
        super().__init__(message)
        self.failure = failure


def failure_of(exc: BaseException) -> str:
    """Why the job failed, for `Job.failure`: transient (a dependency down), user (script or data), "" (other).

    The exception and what caused it are looked at (MLflow's client raises `MlflowException("API request to …
    failed with exception …")` while handling the requests error, mlflow/utils/rest_utils.py `http_request`)."""
    if isinstance(exc, JobFailed):
        return exc.failure
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        if _transient(seen):
            return "transient"
        seen = seen.__cause__ or seen.__context__
    return ""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status_code", None)
    if isinstance(status, int) and (status == 429 or status >= 500):
        return True
    if getattr(exc, "error_code", "") == "TEMPORARILY_UNAVAILABLE":
        return True
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
    return bool(names & {"requests.exceptions.ConnectionError", "requests.exceptions.Timeout",
                         "azure.core.exceptions.ServiceRequestError", "azure.core.exceptions.ServiceResponseError"}) \
        or any(n.startswith("urllib3.exceptions.") for n in names)


def _blob_service() -> Any:
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])  # noqa: SIM112 - the host's name


def _run_script(command: list[str], spec: dict[str, Any], folder: Path, what: str) -> None:
    """The user's script as the job's child process, with the MLflow run active; its output in user_logs.txt."""
    env = {**os.environ, "MLFLOW_RUN_ID": spec["run_id"], "MLFLOW_EXPERIMENT_ID": spec["experiment_id"]}
    with open(folder / "user_logs.txt", "ab") as log:
        code = subprocess.call(command, cwd=Path(__file__).resolve().parent.parent, env=env, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        log_path = folder / "user_logs.txt"
        output = log_path.read_text(errors="replace")
        said = error_line(output) or ""
        transient = code == EX_TEMPFAIL or any(mark in said for mark in _TRANSIENT_MARKS)
        raise JobFailed(script_failure(output, code, log_path, what), "transient" if transient else "user")


def _evaluate(spec: dict[str, Any], folder: Path, data: Path) -> None:
    """jobs/train/evaluate.py on the downloaded data, one `--model role=uri` per model."""
    command = [sys.executable, spec["script"], "--data", str(data), "--label", spec["label"], "--task", spec["task"],
               "--metrics-output", str(folder / "metrics.json")]
    for role, uri in spec["models"].items():
        command += ["--model", f"{role}={uri}"]
    if spec.get("holdout"):
        command.append("--holdout")
    _run_script(command, spec, folder, "evaluation script")


def _train(spec: dict[str, Any], folder: Path, data: Path) -> None:
    model_dir = folder / "model_output"
    if spec["kind"] == "automl":   # AutoML's inputs (shared/adapters/azureml/jobs.py builds the same job on Azure ML)
        command = [sys.executable, "-m", "local.automl", "--training-data", str(data),
                   "--target-column-name", spec["label"],
                   "--primary-metric", spec.get("primary_metric", "AUC_weighted"),
                   "--max-trials", str(spec.get("max_trials", 3)),
                   "--timeout-minutes", str(spec.get("timeout_minutes", 10)),
                   "--enable-early-termination", str(spec.get("early_stopping", True)).lower()]
    else:
        command = [sys.executable, spec["script"]]
        if spec.get("champion_model"):
            command += ["--champion-model", spec["champion_model"]]
        command += ["--data", str(data), "--label", spec["label"]]
    command += ["--task", spec["task"], "--model-output", str(model_dir),
                "--metrics-output", str(folder / "metrics.json")]
    _run_script(command, spec, folder, "training script")
    _ensure_model_logged(spec, model_dir)


def script_failure(output: str, code: int, log_path: Path, what: str = "training script") -> str:
    """The job's reason when the user's script failed: the line of its output that states the error first
    (`shared.core.failure.error_line`: the script's `train.py: error: …`, or the exception a traceback ends with),
    then the exit code and where the whole log is."""
    said = error_line(output) or f"the {what} printed nothing"
    return f"{said} ({what} exited with code {code}; log: {log_path})"


def _ensure_model_logged(spec: dict[str, Any], model_dir: Path) -> None:
    """`runs:/<run>/<output>` must resolve (output `model`, or `best_model` for AutoML, as on Azure ML): log the
    script's saved model folder if it logged no model itself."""
    from mlflow import MlflowClient

    from shared.core.platform import model_output

    out = model_output(spec["kind"])
    client = MlflowClient()
    logged = client.search_logged_models(experiment_ids=[spec["experiment_id"]],
                                         filter_string=f"source_run_id = '{spec['run_id']}' AND name = '{out}'")
    if logged:
        return
    if (model_dir / "MLmodel").exists():
        client.log_artifacts(spec["run_id"], str(model_dir), out)
        return
    raise JobFailed(f"the training script logged no MLflow model named {out!r} and wrote none to --model-output")


def _batch(spec: dict[str, Any], data: Path) -> int:
    from local.batch import score_folder

    return score_folder(model=spec["model"], data=data, service=_blob_service(), output=spec["output"],
                        run_id=spec["run_id"])


def run_job(spec_path: Path) -> str:
    """Run the job described by `spec_path` to its end; the final status (Completed or Failed)."""
    from mlflow import MlflowClient

    from local import amlevents
    from local.blobs import download_folder

    began_ns = time.time_ns()
    spec = json.loads(spec_path.read_text())
    folder = spec_path.parent
    client = MlflowClient()
    status, error, failure = "Completed", "", ""
    try:
        data = folder / "inputs"
        files = download_folder(_blob_service(), spec["input"]["container"], spec["input"]["prefix"], data)
        if not files:
            raise JobFailed(f"input {spec['input']['container']}/{spec['input']['prefix']} has no files")
        client.log_param(spec["run_id"], "input_files", len(files))
        if spec["kind"] == "batch":
            client.log_metric(spec["run_id"], "rows_scored", _batch(spec, data))
        elif spec["kind"] == "evaluate":
            _evaluate(spec, folder, data)
        else:
            _train(spec, folder, data)
    except JobFailed as exc:
        status, error, failure = "Failed", str(exc), exc.failure
        print(error, flush=True)
    except Exception as exc:
        status, error, failure = "Failed", f"{type(exc).__name__}: {exc}", failure_of(exc)
        traceback.print_exc()
    # the result first where nothing can be down (local/jobs.py reads it if MLflow never hears it), then MLflow
    (folder / "result.json").write_text(json.dumps({"status": status, "error": error, "failure": failure}))
    _trace_job(spec, spec_path, began_ns, time.time_ns(), status, error)
    try:
        if (folder / "user_logs.txt").exists():
            client.log_artifact(spec["run_id"], str(folder / "user_logs.txt"))
    except Exception:
        traceback.print_exc()
    tags = {"reflex.error": error[:4000], "reflex.failure": failure} if error else {}
    _patiently(lambda: [client.set_tag(spec["run_id"], k, v) for k, v in tags.items()], "tag the run")
    _patiently(lambda: client.set_terminated(spec["run_id"], "FINISHED" if status == "Completed" else "FAILED"),
               "end the run")
    event = amlevents.run_event(job_name=spec["job_name"], experiment_name=spec["experiment_name"], status=status,
                                tags=spec.get("tags", {}), run_type="batch" if spec["kind"] == "batch" else None)
    delivered = amlevents.deliver(spec["host_url"], "on_run_event", event)
    client.set_tag(spec["run_id"], "reflex.event_delivered", str(delivered).lower())
    print(f"job {spec['job_name']}: {status}{' - ' + error if error else ''}; event delivered: {delivered}", flush=True)
    return status


def _trace_job(spec: dict[str, Any], spec_path: Path, began_ns: int, end_ns: int, status: str, error: str) -> None:
    """The job's span in the stack's trace file (local/job_trace.py), queued from the job's creation: the time
    local/jobs.py wrote the spec, right after creating the MLflow run (no MLflow call here: it may be down, and
    the result must not wait for it). Tracing never fails a job."""
    from local.job_trace import record_job_span

    try:
        record_job_span(spec, created_ns=spec_path.stat().st_mtime_ns, running_ns=began_ns, end_ns=end_ns,
                        status=status, error=error)
    except Exception:
        traceback.print_exc()


def _patiently(call: Callable[[], Any], what: str, *, patience: float = FINISH_PATIENCE_SECONDS,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> bool:
    """`call()` until it succeeds or `patience` seconds have passed (MLflow restarting, briefly down), waiting 1,
    2, 4 … 30 s between tries; False when it never did (the result stays in result.json)."""
    deadline, wait = clock() + patience, 1.0
    while True:
        try:
            call()
            return True
        except Exception as exc:
            if clock() + wait > deadline:
                print(f"could not {what} in MLflow for {patience:.0f} s: {exc}", flush=True)
                return False
            print(f"could not {what} in MLflow ({exc}); trying again in {wait:.0f} s", flush=True)
            sleep(wait)
            wait = min(wait * 2, 30.0)


def main(argv: list[str]) -> int:
    if argv[:1] == ["provision"] and len(argv) == 3:
        from local.endpoints import provision_from_env

        return provision_from_env(argv[1], argv[2])
    if len(argv) != 1:
        raise SystemExit("usage: python -m local.jobrunner <spec.json> | provision <endpoint> <deployment>")
    return 0 if run_job(Path(argv[0])) == "Completed" else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
