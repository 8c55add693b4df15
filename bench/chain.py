"""Chain bench: seconds from a dataset upload to its model serving 100% of an endpoint's traffic, and local
batch scoring throughput against a bare `model.predict` over the same rows, on a whole local stack.

The stack is `local.stack.ephemeral` (MLflow server, scoring server, local host as processes; its own
containers in Azurite, free ports), with the demo's plan (`local/env.py`: steps 10,50,100, bake 10 s, 10
requests at least per step, a client calling the endpoint 10 times a second during the canary) and the
demo's data: a first batch (300 rows) that becomes v1, then a batch eight times larger whose model wins its
canary. Milestones come from the `Reflex.*` events the app published (their eventTime), so each stage's
share is visible: detection + submission, training, the gate, the rollout.

Batch scoring: N rows uploaded to the scoring container -> the batch job writes predictions.csv. Its rate is
compared with the same model loaded in this process predicting the same rows (no I/O, no process start),
measured in the same run: the gap is the price of a job (download, model load, upload), not of prediction.

    python -m local.azurite run -- .venv/bin/python bench/chain.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local.demo import ClientTraffic, upload_batch  # noqa: E402
from local.sampledata import generate, patient_record  # noqa: E402
from local.stack import ephemeral  # noqa: E402

MODEL, ENDPOINT = "heart-failure", "heart-failure-ep"


def _events(host: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{host}/api/events", timeout=10) as resp:
        body = json.loads(resp.read())
    return body if isinstance(body, list) else body.get("events", [])


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["eventTime"]).replace("Z", "+00:00")).timestamp()


def _wait(host: str, kind: str, needle: str, timeout: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in _events(host):
            if event.get("eventType") == f"Reflex.{kind}" and needle in json.dumps(event):
                return event
        time.sleep(0.2)
    raise SystemExit(f"bench: no Reflex.{kind} mentioning {needle!r} within {timeout:.0f}s")


def model_to_full_traffic(deps: Any, host: str, batch: str, rows: int, seed: int) -> dict[str, float]:
    """Upload a batch; stage times (s, from the upload) until its model is promoted to 100%."""
    data = deps.platform.blobs.get_container_client(deps.settings.data_container)
    start = time.time()
    upload_batch(data, "heart", batch, generate(rows, seed=seed))
    submitted = _wait(host, "TrainingSubmitted", batch)
    job = str(submitted["data"]["job"])
    registered = _wait(host, "ModelRegistered", job)
    version = str(registered["subject"]).rpartition(":")[2]
    started = _wait(host, "RolloutStarted", f'"version": "{version}"')
    promoted = _wait(host, "RolloutPromoted", f'"version": "{version}"')
    traffic = deps.platform.get_endpoint(ENDPOINT).traffic
    assert max(traffic.values()) == 100, traffic
    return {"submitted": _at(submitted) - start, "registered": _at(registered) - start,
            "rollout_started": _at(started) - start, "at_100": _at(promoted) - start, "version": float(version)}


def batch_scoring(deps: Any, host: str, rows: int) -> dict[str, float]:
    """Upload `rows` to score; the job's own duration and the end-to-end time until the output is written."""
    scoring = deps.platform.blobs.get_container_client(deps.settings.scoring_container)
    frame = [{k: v for k, v in r.items() if k != deps.settings.label_column} for r in generate(rows, seed=99)]
    start = time.time()
    upload_batch(scoring, "heart", "bench-score", frame, files=4)
    done = _wait(host, "BatchScoringCompleted", "bench-score")
    job = str(done["data"]["job"])
    record = deps.platform.jobs.record(job)
    run = deps.platform.client.get_run(record["run_id"])
    scored = int(run.data.metrics.get("rows_scored", 0))
    assert scored == rows, (scored, rows)
    return {"end_to_end": _at(done) - start, "job": (run.info.end_time - run.info.start_time) / 1000.0,
            "rows": float(scored)}


def bare_predict(version: str, rows: int, repeats: int = 3) -> dict[str, float]:
    """The same model, loaded once in this process, predicting the same rows: the baseline."""
    import mlflow.pyfunc
    import pandas as pd

    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "DEATH_EVENT"} for r in generate(rows, seed=99)])
    t0 = time.perf_counter()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    load = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictions = model.predict(frame)
        best = min(best, time.perf_counter() - t0)
    assert len(predictions) == rows
    return {"load": load, "predict": best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows to batch-score")
    args = parser.parse_args(argv)
    from shared.core.deps import get_deps, reset_deps
    from shared.core.settings import reset_cache

    with tempfile.TemporaryDirectory(prefix="reflex-bench-") as tmp, ephemeral(Path(tmp) / "run") as stack:
        os.environ.update(stack.env())
        reset_cache()
        reset_deps()
        deps = get_deps()
        host = stack.env()["REFLEX_LOCAL_HOST_URL"]
        s = deps.settings
        print(f"plan: steps {s.rollout_steps}, bake {s.bake_seconds}s, min requests {s.min_requests}, quiet "
              f"{s.quiet_seconds}s; reconcile {s.reconcile_schedule}", flush=True)
        first = model_to_full_traffic(deps, host, "bench-a", 300, 5)
        # as in the demo, a client keeps calling the endpoint: canary steps need REFLEX_MIN_REQUESTS requests
        scoring_url = f"{stack.env()['REFLEX_LOCAL_SERVING_URL']}/endpoints/{ENDPOINT}/score"
        with ClientTraffic(scoring_url, {"data": [patient_record(3)]}) as client:
            second = model_to_full_traffic(deps, host, "bench-b", 2400, 4)
        scored = batch_scoring(deps, host, args.rows)
        bare = bare_predict(str(int(second["version"])), args.rows)

    print(f"\nclient requests during the canary: {dict(client.served)} ({client.errors} failed)")
    print(f"\n{'upload -> (seconds)':28} {'first model (no champion)':>26} {'challenger (canary plan)':>26}")
    for stage in ("submitted", "registered", "rollout_started", "at_100"):
        print(f"{stage:28} {first[stage]:26.1f} {second[stage]:26.1f}")
    job_rate, e2e_rate = scored["rows"] / scored["job"], scored["rows"] / scored["end_to_end"]
    bare_rate = args.rows / bare["predict"]
    print(f"\nbatch scoring, {args.rows} rows:            seconds     rows/s")
    print(f"  local batch job (download, load, predict, upload) {scored['job']:8.2f} {job_rate:10.0f}")
    print(f"  upload -> BatchScoringCompleted                    {scored['end_to_end']:8.2f} {e2e_rate:10.0f}")
    print(f"  bare model.predict, model in memory (baseline)     {bare['predict']:8.2f} {bare_rate:10.0f}"
          f"   (+{bare['load']:.2f}s to load it)")
    print(f"RESULT chain first_model_at_100_s={first['at_100']:.1f} new_model_at_100_s={second['at_100']:.1f} "
          f"new_model_registered_s={second['registered']:.1f} batch_job_rows_per_s={job_rate:.0f} "
          f"batch_end_to_end_rows_per_s={e2e_rate:.0f} bare_predict_rows_per_s={bare_rate:.0f} rows={args.rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
