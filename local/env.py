"""The environment of the local stack: every app setting the Functions app reads, with offline defaults.

Why one builder: the local host, the MLflow-backed platform, the scoring server, the job runner and the demo
must agree on ports, containers and schedules. `local_env()` is the single source; `local.settings.example.json`
(the file `func start` reads) is generated from it (`python -m local.env --write`) and a test checks the two
still match. Schedules and bake/quiet times are short so a demo shows every reaction within minutes.

Local-only knobs (read by `local/`, never by the app in Azure):

* `REFLEX_LOCAL_RUN_DIR`     folder for job runs, deployment logs and process logs (default `run/current`);
* `REFLEX_LOCAL_SERVING_URL` the scoring server (`python -m local.serving`), also the MLflow webhook relay;
* `REFLEX_LOCAL_QUOTA_CORES` cores the local "region" grants to online deployments (default 64, generous);
* `REFLEX_LOCAL_TRAIN_SCRIPT` the command-job script (default `jobs/train/train.py`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from local.sampledata import patient_record

__all__ = ["PORTS", "local_env", "settings_file", "ROOT"]

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"blob": 10000, "queue": 10001, "table": 10002, "mlflow": 5000, "serving": 5001, "host": 7071,
         "feeder": 7072}
LOCAL_TOPIC_KEY = "local-only-key"  # not a secret: the local outbound topic accepts any caller on loopback


def local_env(*, run_dir: str | Path | None = None, ports: Mapping[str, int] | None = None,
              func: bool = False) -> dict[str, str]:
    """The app settings (and local knobs) of the local stack, as environment variables.

    `func`: the functions run in Core Tools (`func start` on the host port); the outbound topic is then served
    by the feeder (`python -m local.host --forward-to`) on its own port, since `func` serves no `/api/events`.
    """
    p = {**PORTS, **(ports or {})}
    topic_port = p["feeder"] if func else p["host"]
    env = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "REFLEX_PLATFORM": "local",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{p['mlflow']}",
        "REFLEX_LOCAL_HOST_URL": f"http://127.0.0.1:{p['host']}",
        "REFLEX_EVENTGRID_TOPIC_ENDPOINT": f"http://127.0.0.1:{topic_port}/api/events",
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
        "REFLEX_BATCH_ENDPOINT": "heart-failure-batch",
        # the smoke test's request: one patient record, as a client of the endpoint would send it
        "REFLEX_SMOKE_REQUEST": json.dumps({"data": [patient_record(0)]}),
        # local-only knobs (see the module docstring)
        "REFLEX_LOCAL_SERVING_URL": f"http://127.0.0.1:{p['serving']}",
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
