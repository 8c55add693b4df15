"""The settings of the local stack: the offline defaults, and the one function that layers them as `func` does.

Why one builder: the local host, the MLflow-backed platform, the scoring server, the job runner, the CLI and
the demo must agree on every value. `local_env()` holds the offline defaults; `local.settings.example.json` is
generated from it (`python -m local.env --write`; a test checks the two still match). Schedules and bake/quiet
times are short so a demo shows every reaction within minutes.

Where a value comes from (`layered_settings`), as Core Tools does for `func start`
(Azure/azure-functions-core-tools, src/Cli/func/Actions/HostActions/StartHostAction.cs,
`UpdateEnvironmentVariables`): every `Values` entry of `local.settings.json` becomes an app setting unless the
environment already holds a non-empty value for it ("Skipping 'X' from local settings as it's already defined
in current environment variables"): the environment wins, an empty variable counts as unset. The file is
created from `local.settings.example.json` when absent, and never written afterwards. On top, and only there,
come explicit overrides: the stack's own (ports, run folder: `stack_settings`) and the demo's.

Local-only knobs (read by `local/`, never by the app in Azure):

* `REFLEX_LOCAL_RUN_DIR`     folder for job runs, deployment logs and process logs (default `run/current`);
* `REFLEX_LOCAL_SERVING_URL` the scoring server (`python -m local.serving`), also the MLflow webhook relay;
* `REFLEX_LOCAL_QUOTA_CORES` cores the local "region" grants to online deployments (default 64, generous);
* `REFLEX_LOCAL_TRAIN_SCRIPT` the command-job script (default `jobs/train/train.py`).

The stack also sets the app setting `REFLEX_TRACE_FILE` to `<run folder>/traces.jsonl`: every span of the host
and of the job runners goes there as OTLP/JSON (shared/core/trace_file.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from local.sampledata import patient_record

__all__ = ["PORTS", "ROOT", "TRACE_FILE_NAME", "Layered", "layered_settings", "local_env", "settings_file",
           "stack_settings"]

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"blob": 10000, "queue": 10001, "table": 10002, "mlflow": 5000, "serving": 5001, "host": 7071,
         "feeder": 7072}
TRACE_FILE_NAME = "traces.jsonl"  # the stack's span file in its run folder (`explain --timeline` reads it)
LOCAL_TOPIC_KEY = "local-only-key"  # not a secret: the local outbound topic accepts any caller on loopback
SETTINGS_FILE, EXAMPLE_FILE = "local.settings.json", "local.settings.example.json"
# variables of the environment that are app settings even when the file does not name them
APP_PREFIXES = ("REFLEX_", "AZUREML_", "AzureWebJobs", "MLFLOW_", "AZURE_CLIENT_ID", "APPLICATIONINSIGHTS_",
                "FUNCTIONS_")


def stack_settings(*, run_dir: str | Path | None = None, ports: Mapping[str, int] | None = None,
                   func: bool = False) -> dict[str, str]:
    """The settings that point at the stack's own processes: they follow its ports and run folder, always."""
    p = {**PORTS, **(ports or {})}
    topic_port = p["feeder"] if func else p["host"]
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{p['mlflow']}",
           "REFLEX_LOCAL_HOST_URL": f"http://127.0.0.1:{p['host']}",
           "REFLEX_EVENTGRID_TOPIC_ENDPOINT": f"http://127.0.0.1:{topic_port}/api/events",
           "REFLEX_LOCAL_SERVING_URL": f"http://127.0.0.1:{p['serving']}"}
    if run_dir is not None:
        env["REFLEX_LOCAL_RUN_DIR"] = str(run_dir)
        # every process of the stack (host, job runners) appends its spans here (shared/core/trace_file.py)
        env["REFLEX_TRACE_FILE"] = str(Path(run_dir) / TRACE_FILE_NAME)
    return env


@dataclass(frozen=True)
class Layered:
    """App settings and where each came from: `local.settings.json`, `the environment` or an override's label."""

    values: dict[str, str]
    sources: dict[str, str]
    path: Path
    created: bool = False

    def with_overrides(self, label: str, overrides: Mapping[str, str]) -> Layered:
        values, sources = dict(self.values), dict(self.sources)
        for key, value in overrides.items():
            values[key], sources[key] = str(value), label
        return Layered(values, sources, self.path, self.created)

    def from_source(self, source: str) -> list[str]:
        return sorted(k for k, v in self.sources.items() if v == source)

    def origin(self, names: list[str]) -> str:
        """`NAME (from SOURCE)` for each name, for an error message."""
        return ", ".join(f"{n} (from {self.sources.get(n, 'the default')})" for n in names)


def layered_settings(settings_dir: Path = ROOT, environ: Mapping[str, str] | None = None) -> Layered:
    """`local.settings.json` Values (created from the example when absent), then the environment wins."""
    environ = os.environ if environ is None else environ
    path = Path(settings_dir) / SETTINGS_FILE
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / EXAMPLE_FILE, path)
    try:
        file_values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise SystemExit(f"{path}: not a readable settings file ({exc}); fix it, or delete it to start again "
                         f"from {EXAMPLE_FILE}") from None
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, value in file_values.items():
        if key and value is not None:
            values[key], sources[key] = str(value), SETTINGS_FILE
    for key, value in environ.items():
        if value and (key in values or key.startswith(APP_PREFIXES)):
            values[key], sources[key] = value, "the environment"
    return Layered(values, sources, path, created)


def local_env(*, run_dir: str | Path | None = None, ports: Mapping[str, int] | None = None,
              func: bool = False) -> dict[str, str]:
    """The offline defaults: the app settings (and local knobs) of `local.settings.example.json`.

    `func`: the functions run in Core Tools (`func start` on the host port); the outbound topic is then served
    by the feeder (`python -m local.host --forward-to`) on its own port, since `func` serves no `/api/events`.
    """
    stack = stack_settings(ports=ports, func=func)
    env = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "REFLEX_PLATFORM": "local",
        "MLFLOW_TRACKING_URI": stack["MLFLOW_TRACKING_URI"],
        "REFLEX_LOCAL_HOST_URL": stack["REFLEX_LOCAL_HOST_URL"],
        "REFLEX_EVENTGRID_TOPIC_ENDPOINT": stack["REFLEX_EVENTGRID_TOPIC_ENDPOINT"],
        "REFLEX_EVENTGRID_TOPIC_KEY": LOCAL_TOPIC_KEY,
        "REFLEX_LABEL_COLUMN": "DEATH_EVENT",
        "REFLEX_TASK": "classification",
        "REFLEX_TRAINING_MODE": "command",
        "REFLEX_MODEL_NAME": "heart-failure",
        "REFLEX_ENDPOINTS": "heart-failure=heart-failure-ep",
        "REFLEX_EXPERIMENT": "reflex",
        "REFLEX_STATE_CONTAINER": "reflex-state",
        "REFLEX_DATA_CONTAINER": "reflex-data",
        "REFLEX_SCORING_CONTAINER": "reflex-scoring",
        "REFLEX_OUTPUT_CONTAINER": "reflex-outputs",
        "REFLEX_COMPLETION_MARKER": "_SUCCESS",
        "REFLEX_QUIET_SECONDS": "30",
        "REFLEX_GATE_METRIC": "auc",
        "REFLEX_GATE_DIRECTION": "max",
        "REFLEX_ROLLOUT_STEPS": "10,50,100",
        "REFLEX_BAKE_SECONDS": "10",
        "REFLEX_RETAIN_SECONDS": "30",
        # a canary is judged on 10 requests at least (the demo's client sends them); with no traffic at all a
        # step waits for it, as in production, and the status says so
        "REFLEX_MIN_REQUESTS": "10",
        "REFLEX_INSTANCE_TYPE": "Standard_DS3_v2",
        "REFLEX_INSTANCE_COUNT": "1",
        "REFLEX_ROLLOUT_DEADLINE_SECONDS": "900",
        "REFLEX_SWEEP_SCHEDULE": "*/15 * * * * *",
        "REFLEX_RECONCILE_SCHEDULE": "*/5 * * * * *",
        "REFLEX_HEALTH_SCHEDULE": "0 */1 * * * *",
        "REFLEX_DRIFT_SCHEDULE": "0 */5 * * * *",
        "REFLEX_RETRAIN_SCHEDULE": "0 0 3 * * 0",
        "REFLEX_BATCH_SCHEDULE": "0 0 2 * * *",
        "REFLEX_LEDGER_INDEX_SCHEDULE": "0 */5 * * * *",
        "REFLEX_BATCH_ENDPOINT": "heart-failure-batch",
        # the smoke test's request: one patient record, as a client of the endpoint would send it
        "REFLEX_SMOKE_REQUEST": json.dumps({"data": [patient_record(0)]}),
        # local-only knobs (see the module docstring)
        "REFLEX_LOCAL_SERVING_URL": stack["REFLEX_LOCAL_SERVING_URL"],
        "REFLEX_LOCAL_QUOTA_CORES": "64",
        # MLflow client: fail fast when the tracking server is down instead of retrying for minutes
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # progress bars in the host's and jobs' logs are noise
    }
    if run_dir is not None:
        env["REFLEX_LOCAL_RUN_DIR"] = str(run_dir)
    return env


def settings_file(*, func: bool = False) -> dict[str, object]:
    """The content of `local.settings.example.json` (the Functions Core Tools format)."""
    return {"IsEncrypted": False, "Values": local_env(func=func)}


if __name__ == "__main__":  # python -m local.env [--write] [--func]
    text = json.dumps(settings_file(func="--func" in sys.argv), indent=2) + "\n"
    if "--write" in sys.argv and "--func" not in sys.argv:
        (ROOT / "local.settings.example.json").write_text(text)
    else:
        sys.stdout.write(text)
