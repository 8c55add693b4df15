"""LocalPlatform against a real MLflow server (SQLite, loopback), real Azurite and real job processes.

One module-scoped stack: an MLflow server on a free port with a temporary store, unique containers, and a
tiny HTTP receiver standing in for the local host (it records the Azure ML events the platform posts).
The chain's steps (data -> training job -> RunCompleted -> model -> endpoint -> traffic -> batch) are module
fixtures, made once and idempotent, so each test passes alone and in any order: a test names the steps it builds
on (`heart_data`, `trained`, `failed_job`, `model`). Total ~1-2 minutes (each job is a Python process importing
MLflow and scikit-learn).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings, process_state

from local import amlevents, procs
from local.platform import LocalPlatform
from local.stack import mlflow_server_args, mlflow_server_env
from shared.batches import mltable
from shared.core.errors import PermanentError
from shared.core.platform import CHAMPION_TAG, BatchDeploymentSpec, EvaluationRequest, MLPlatform, TrainingRequest

pytestmark = pytest.mark.azurite

TRAIN_SCRIPT = '''
import argparse, glob, json, os
import mlflow, mlflow.sklearn, pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
p = argparse.ArgumentParser()
for a in ("--data", "--label", "--task", "--model-output", "--metrics-output"):
    p.add_argument(a)
a = p.parse_args()
frame = pd.concat(pd.read_csv(f) for f in sorted(glob.glob(os.path.join(a.data, "**", "*.csv"), recursive=True)))
x, y = frame.drop(columns=[a.label]), frame[a.label]
model = LogisticRegression(max_iter=500).fit(x, y)
metrics = {"auc": roc_auc_score(y, model.predict_proba(x)[:, 1]), "accuracy": accuracy_score(y, model.predict(x))}
with mlflow.start_run():
    mlflow.log_metrics(metrics)
    mlflow.sklearn.log_model(model, name="model", input_example=x.head(2), pip_requirements=["scikit-learn"])
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver(http.server.ThreadingHTTPServer):
    """Records every POST as (path, headers, json body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        received = self.posts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()},
                                 json.loads(body or b"null")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def events(self, function: str) -> list[dict[str, Any]]:
        return [e for path, _, body in self.posts if path.endswith(f"functionName={function}") for e in body]

    def wait_for(self, function: str, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The event about `run_id` (the runner posts it just after the run is marked finished)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events(function) if e["data"].get("runId") == run_id]
            if found:
                return found[0]
            time.sleep(0.2)
        pytest.fail(f"no {function} event for {run_id}")


def _csv(rows: int, seed: int) -> bytes:
    import random

    rnd = random.Random(seed)
    lines = ["age,ejection_fraction,serum_creatinine,DEATH_EVENT"]
    for _ in range(rows):
        age, ef, sc = rnd.randint(40, 95), rnd.randint(14, 80), round(rnd.uniform(0.5, 9.0), 2)
        risk = (age - 40) / 55 + (40 - ef) / 40 + sc / 5
        lines.append(f"{age},{ef},{sc},{int(risk + rnd.gauss(0, 0.3) > 1.0)}")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MLflow's server as the stack runs it (local.stack: job execution off), ready when /health answers.

    The start waits for readiness within procs.START_TIMEOUT (MLflow took over 60 s on a loaded machine), and the
    server's whole process group is stopped afterwards, also when the start or a test fails."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        proc = procs.start_server(mlflow_server_args(root, port), env=mlflow_server_env(os.environ),
                                  log_path=root / "server.log", ready=lambda: _answers(f"{url}/health"),
                                  what="MLflow server", cwd=root)
    except procs.StartFailed as exc:
        pytest.fail(f"{exc}:\n{(root / 'server.log').read_text()[-2000:]}")
    try:
        yield url
    finally:
        procs.stop_group(proc.pid)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def env(mlflow_server: str, receiver: Receiver, blob_service: Any, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:10]
    containers = {"REFLEX_STATE_CONTAINER": f"lp-state-{suffix}", "REFLEX_DATA_CONTAINER": f"lp-data-{suffix}",
                  "REFLEX_SCORING_CONTAINER": f"lp-score-{suffix}", "REFLEX_OUTPUT_CONTAINER": f"lp-out-{suffix}"}
    settings = make_settings(MLFLOW_TRACKING_URI=mlflow_server,
                             REFLEX_LOCAL_HOST_URL=f"http://127.0.0.1:{receiver.server_address[1]}", **containers)
    for name in containers.values():
        blob_service.create_container(name)
    data = blob_service.get_container_client(settings.data_container)
    data.upload_blob("heart/b1/part-0.csv", _csv(200, 1))
    data.upload_blob("heart/b1/MLTable", mltable.document(["part-0.csv"]).encode())   # AutoML reads mltable data
    data.upload_blob("heart/b1/_SUCCESS", b"")
    scoring = blob_service.get_container_client(settings.scoring_container)
    scoring.upload_blob("heart/s1/rows.csv", _csv(25, 2))
    run_dir = tmp_path_factory.mktemp("run")
    script = run_dir / "train.py"
    script.write_text(TRAIN_SCRIPT)
    import mlflow
    from mlflow import MlflowClient

    from shared.core.state import BlobStateStore

    with process_state():  # MLflow points at this module's server process-wide, as in LocalPlatform.from_settings
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        mlflow.set_tracking_uri(mlflow_server)
        mlflow.set_registry_uri(mlflow_server)
        state = BlobStateStore(blob_service.get_container_client(settings.state_container))
        platform = LocalPlatform(settings, state=state, blob_service=blob_service,
                                 client=MlflowClient(mlflow_server, mlflow_server), run_dir=run_dir,
                                 train_script=script, quota_cores=16)
        yield {"platform": platform, "settings": settings, "receiver": receiver, "blobs": blob_service}
    for name in containers.values():
        try:
            blob_service.delete_container(name)
        except Exception:
            pass


def _wait_job(platform: LocalPlatform, name: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = platform.get_job(name)
        if job is not None and job.terminal:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {name} did not finish: {job}")
        time.sleep(0.5)


def _request(name: str, mode: str = "command", **kw: Any) -> TrainingRequest:
    base = dict(job_name=name, experiment_name="reflex-test", data_name="heart", data_version="1", mode=mode,
                task="classification", label_column="DEATH_EVENT", compute="local", environment="azureml:env:1",
                tags={"reflex.trigger": "test", "reflex.event_id": "e1", "reflex.managed": "true"})
    return TrainingRequest(**{**base, **kw})


HEART_TAGS = {"reflex.data": "b1"}


@pytest.fixture(scope="module")
def heart_data(env: dict[str, Any]) -> Any:
    """The data asset heart:1 on the uploaded batch (register_data is idempotent for the same path)."""
    path = f"azureml://datastores/{env['settings'].data_datastore}/paths/heart/b1/"
    return env["platform"].register_data(name="heart", version="1", path=path, tags=HEART_TAGS)


@pytest.fixture(scope="module")
def trained(env: dict[str, Any], heart_data: Any) -> dict[str, Any]:
    """A command job and an AutoML job on heart:1, submitted once and run to completion, with what the
    submissions returned and how long they took (the training test asserts on those)."""
    p: LocalPlatform = env["platform"]
    started = time.monotonic()
    job = p.submit_training(_request("job-command-1"))
    automl = p.submit_training(_request("job-automl-1", mode="automl"))
    submitted = {"seconds": time.monotonic() - started, "job": job, "automl": automl}
    return {**submitted, "done": _wait_job(p, "job-command-1"), "done_automl": _wait_job(p, "job-automl-1")}


@pytest.fixture(scope="module")
def failed_job(env: dict[str, Any], blob_service: Any) -> Any:
    """A job on data without the label column, run to its failure."""
    p: LocalPlatform = env["platform"]
    s = env["settings"]
    blob_service.get_container_client(s.data_container).upload_blob("bad/b1/x.csv", b"a,b\n1,2\n", overwrite=True)
    p.register_data(name="bad", version="1", path=f"azureml://datastores/{s.data_datastore}/paths/bad/b1/", tags={})
    p.submit_training(_request("job-bad-1", data_name="bad"))
    return _wait_job(p, "job-bad-1")


@pytest.fixture(scope="module")
def model(env: dict[str, Any], trained: dict[str, Any]) -> str:
    """A model of this module: v1 from the command job's `model`, v2 from the AutoML job's `best_model`."""
    p: LocalPlatform = env["platform"]
    name = f"heart-{uuid.uuid4().hex[:6]}"
    p.register_model(name=name, version="1", job_name="job-command-1", tags={})
    p.register_model(name=name, version="2", job_name="job-automl-1", output_name="best_model", tags={})
    return name


def test_is_an_ml_platform(env: dict[str, Any]) -> None:
    assert isinstance(env["platform"], MLPlatform)


def test_data_assets_are_durable_and_idempotent(env: dict[str, Any], heart_data: Any) -> None:
    p: LocalPlatform = env["platform"]
    path = f"azureml://datastores/{env['settings'].data_datastore}/paths/heart/b1/"
    asset = p.register_data(name="heart", version="1", path=path, tags=HEART_TAGS)
    assert asset == heart_data and asset.tags["reflex.data"] == "b1"
    assert p.register_data(name="heart", version="1", path=path, tags={}) == asset
    assert p.get_data("heart", "1") == asset and p.get_data("heart", "2") is None
    with pytest.raises(PermanentError, match="another path"):
        p.register_data(name="heart", version="1", path=path + "x/", tags={})
    with pytest.raises(PermanentError, match="unknown datastore"):
        p.register_data(name="heart", version="9", path="azureml://datastores/nope/paths/a/", tags={})


def test_training_jobs_run_to_completion_and_emit_events(env: dict[str, Any], trained: dict[str, Any]) -> None:
    p: LocalPlatform = env["platform"]
    job, automl = trained["job"], trained["automl"]
    assert trained["seconds"] < 10, "submission must not wait for the job"
    assert job.status in ("NotStarted", "Queued", "Running") and automl.kind == "automl"
    assert p.submit_training(_request("job-command-1")).name == "job-command-1"  # idempotent by name
    with pytest.raises(PermanentError, match="does not exist"):
        p.submit_training(_request("job-nodata", data_version="7"))
    with pytest.raises(PermanentError, match="lower-case"):
        p.submit_training(_request("Job-Upper"))
    done, done_automl = trained["done"], trained["done_automl"]
    assert done.status == "Completed", done.error
    assert done_automl.status == "Completed", done_automl.error
    assert done.outputs["model"].startswith("runs:/") and done.tags["reflex.trigger"] == "test"
    assert set(done_automl.outputs) == {"best_model"}          # AutoML's output name, as on Azure ML
    metrics = p.get_job_metrics("job-command-1")
    assert 0.5 < metrics["auc"] <= 1.0 and "accuracy" in metrics
    assert "auc" in p.get_job_metrics("job-automl-1")
    assert p.get_job("no-such-job") is None
    event = env["receiver"].wait_for("on_run_event", "job-command-1")
    assert env["receiver"].wait_for("on_run_event", "job-automl-1")["eventType"].endswith("RunCompleted")
    assert event["eventType"] == "Microsoft.MachineLearningServices.RunCompleted"
    assert event["subject"] == f"experiments/{event['data']['experimentId']}/runs/job-command-1"
    assert event["data"]["experimentName"] == "reflex-test"
    assert event["data"]["runTags"]["reflex.event_id"] == "e1"
    headers = next(h for path, h, _ in env["receiver"].posts if "on_run_event" in path)
    assert headers["aeg-event-type"] == "Notification"


def test_failed_job_reports_failed_and_emits_status_changed(env: dict[str, Any], failed_job: Any) -> None:
    job = failed_job
    # the reason starts with the line the script's traceback ends with, not a frame or log line before it
    assert job.status == "Failed" and job.error.startswith("KeyError: \"['DEATH_EVENT'] not found"), job.error
    assert "exited with code 1" in job.error
    changed = env["receiver"].wait_for("on_run_event", "job-bad-1")
    assert changed["eventType"].endswith("RunStatusChanged") and changed["data"]["runStatus"] == "failed"


def test_models_register_with_explicit_versions_and_champion_tags(env: dict[str, Any], trained: dict[str, Any],
                                                                  failed_job: Any) -> None:
    p: LocalPlatform = env["platform"]
    name = f"heart-{uuid.uuid4().hex[:6]}"
    with pytest.raises(PermanentError, match="next version"):
        p.register_model(name=name, version="2", job_name="job-command-1", tags={})
    with pytest.raises(PermanentError, match="has not completed"):
        p.register_model(name=name, version="1", job_name="job-bad-1", tags={})
    m1 = p.register_model(name=name, version="1", job_name="job-command-1", tags={"reflex.parent": "job-command-1"},
                          properties={"auc": "0.9"})
    assert (m1.version, m1.job_name, m1.properties["auc"]) == ("1", "job-command-1", "0.9")
    assert p.register_model(name=name, version="1", job_name="job-command-1", tags={}) == m1  # idempotent
    with pytest.raises(PermanentError, match="no output 'model'"):   # AutoML's model is best_model
        p.register_model(name=name, version="2", job_name="job-automl-1", tags={})
    m2 = p.register_model(name=name, version="2", job_name="job-automl-1", output_name="best_model", tags={})
    assert [m.version for m in p.list_models(name)] == ["1", "2"]
    assert p.find_champion(name) is None
    p.update_model_tags(name, "1", set_tags={CHAMPION_TAG: "true"})
    assert p.find_champion(name).version == "1"
    p.update_model_tags(name, "1", remove=(CHAMPION_TAG,))
    p.update_model_tags(name, "2", set_tags={CHAMPION_TAG: "true"})
    assert p.find_champion(name).version == m2.version
    assert p.get_model(name, "3") is None and p.get_model("no-such-model", "1") is None
    p.flush_events()
    registered = [e for e in env["receiver"].events("on_model_registered") if e["data"]["modelName"] == name]
    assert sorted(e["data"]["modelVersion"] for e in registered) == ["1", "2"]
    assert registered[0]["subject"] == f"models/{name}:1" and registered[0]["data"]["modelProperties"]["auc"] == "0.9"


def test_an_evaluation_job_scores_a_job_output_and_a_registered_model_on_the_same_rows(env: dict[str, Any],
                                                                                       model: str) -> None:
    """jobs/train/evaluate.py as a local job: the challenger from a job's output, the champion from the registry
    (`models:/<name>/<version>`), both on the batch's holdout rows; RunCompleted as for any job."""
    p: LocalPlatform = env["platform"]
    name = model  # v2 came from job-automl-1
    request = EvaluationRequest(
        job_name="job-eval-1", experiment_name="reflex-test", data_name="heart", data_version="1",
        task="classification", label_column="DEATH_EVENT", compute="local", environment="azureml:env:1",
        models={"challenger": "azureml://jobs/job-command-1/outputs/model", "champion": f"azureml:{name}:2"},
        tags={"reflex.managed": "true", "reflex.kind": "evaluation"})
    with pytest.raises(PermanentError, match="does not exist"):
        p.submit_evaluation(EvaluationRequest(**{**request.__dict__, "job_name": "job-eval-x",
                                                 "models": {"champion": f"azureml:{name}:9"}}))
    job = p.submit_evaluation(request)
    assert p.submit_evaluation(request).name == job.name == "job-eval-1"  # idempotent by name
    done = _wait_job(p, "job-eval-1")
    assert done.status == "Completed", done.error
    assert done.kind == "command" and "model" not in done.outputs and done.tags["reflex.kind"] == "evaluation"
    metrics = p.get_job_metrics("job-eval-1")
    assert metrics["eval.rows"] == 40  # the holdout of 200 rows, as train.py splits it
    assert 0.5 < metrics["challenger.auc"] <= 1.0 and 0.5 < metrics["champion.auc"] <= 1.0
    assert metrics["challenger.failed"] == metrics["champion.failed"] == 0
    assert env["receiver"].wait_for("on_run_event", "job-eval-1")["eventType"].endswith("RunCompleted")


def test_concurrent_registrations_of_one_version_by_its_job_all_return_it(env: dict[str, Any],
                                                                          trained: dict[str, Any]) -> None:
    """The same RunCompleted delivered several times at once: one version, every caller gets it (a transient
    error, retried as Event Grid redelivers, is allowed; a permanent one, which dead-letters, is not)."""
    from concurrent.futures import ThreadPoolExecutor

    from shared.core.errors import TransientError

    p: LocalPlatform = env["platform"]
    name = f"race-{uuid.uuid4().hex[:6]}"

    def register(_: int) -> str:
        for _attempt in range(5):
            try:
                return p.register_model(name=name, version="1", job_name="job-command-1", tags={}).ref
            except TransientError:
                time.sleep(0.2)
        raise AssertionError("still transient after 5 attempts")

    with ThreadPoolExecutor(6) as pool:
        refs = list(pool.map(register, range(6)))
    assert refs == [f"{name}:1"] * 6
    assert [m.version for m in p.list_models(name)] == ["1"]


def _wait_deployment(p: LocalPlatform, ep: str, dep: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        d = p.get_deployment(ep, dep)
        if d is not None and d.state != "Creating":
            return d
        if time.monotonic() > deadline:
            pytest.fail(f"deployment {ep}/{dep} still {d}")
        time.sleep(0.3)


ROW = {"age": 70, "ejection_fraction": 20, "serum_creatinine": 3.1}


def test_online_endpoint_deploy_route_mirror_metrics_delete(env: dict[str, Any], model: str) -> None:
    p: LocalPlatform = env["platform"]
    name = model
    before = p.check_quota("Standard_DS3_v2", 1).used  # other tests' deployments share the pool
    ep = f"ep-{uuid.uuid4().hex[:8]}"
    assert p.get_endpoint(ep) is None
    with pytest.raises(PermanentError, match="does not exist"):
        p.begin_create_deployment(ep, "blue", model=f"{name}:1", instance_type="Standard_DS3_v2", instance_count=1)
    p.begin_create_endpoint(ep, tags={"reflex.managed": "true"})
    p.begin_create_endpoint(ep)  # idempotent
    p.begin_create_deployment(ep, "blue", model=f"{name}:1", instance_type="Standard_DS3_v2", instance_count=1)
    p.begin_create_deployment(ep, "green", model=f"{name}:2", instance_type="Standard_DS3_v2", instance_count=1)
    with pytest.raises(PermanentError, match="does not exist"):
        p.begin_create_deployment(ep, "red", model=f"{name}:9", instance_type="Standard_DS3_v2", instance_count=1)
    with pytest.raises(PermanentError, match="state is Creating"):
        p.set_traffic(ep, {"blue": 100})
    assert _wait_deployment(p, ep, "blue").succeeded and _wait_deployment(p, ep, "green").succeeded
    quota = p.check_quota("Standard_DS3_v2", 1)
    # 1 x 4 cores plus the 20% upgrade reserve (whole instances): 8 each, blue's and green's
    assert (quota.used - before, quota.needed, quota.limit, quota.ok) == (8, 8, 16, before + 16 <= 16)
    assert not p.check_quota("Standard_DS3_v2", 2).ok

    with pytest.raises(PermanentError, match="routes no traffic"):
        p.invoke(ep, "", {"data": [ROW]})
    direct = p.invoke(ep, "green", {"data": [ROW, ROW]})
    assert direct.status == 200 and len(json.loads(direct.body)) == 2
    assert p.invoke(ep, "green", {"rows": []}).status == 400

    with pytest.raises(PermanentError, match="sums to 90"):
        p.set_traffic(ep, {"blue": 90})
    endpoint = p.set_traffic(ep, {"blue": 100})
    assert endpoint.traffic == {"blue": 100, "green": 0} and endpoint.live == "blue"
    with pytest.raises(PermanentError, match="receives traffic"):
        p.begin_delete_deployment(ep, "blue")
    p.set_traffic(ep, {"blue": 100}, mirror={"green": 50})
    for _ in range(20):
        assert p.invoke(ep, "", {"data": [ROW]}).status == 200
    time.sleep(1.0)  # mirrored copies are scored in the background
    blue = p.get_deployment_metrics(ep, "blue", window_seconds=300)
    green = p.get_deployment_metrics(ep, "green", window_seconds=300)
    assert blue.requests == 20 and blue.errors == 0 and blue.latency_ms and blue.latency_ms > 0
    assert 2 + 1 < green.requests < 2 + 20 and green.errors == 1  # direct calls + some mirrored copies
    with pytest.raises(PermanentError, match="receives traffic"):  # mirrored traffic counts too
        p.begin_delete_deployment(ep, "green")
    p.set_traffic(ep, {"blue": 50, "green": 50})
    routed = {p.endpoints.invoke(ep, "", {"data": [ROW]})[0] for _ in range(30)}
    assert routed == {"blue", "green"}
    p.set_traffic(ep, {"green": 100})
    p.begin_delete_deployment(ep, "blue")
    p.begin_delete_deployment(ep, "blue")  # already gone: no-op
    assert [d.name for d in p.get_endpoint(ep).deployments] == ["green"]


def test_failed_provisioning_is_reported(env: dict[str, Any], model: str, failed_job: Any) -> None:
    p: LocalPlatform = env["platform"]
    name = model
    ep = f"ep-{uuid.uuid4().hex[:8]}"
    p.begin_create_endpoint(ep)
    # a registered version whose artifacts are not an MLflow model: loading fails, as a broken image would
    run_id = p.jobs.record("job-bad-1")["run_id"]
    broken = p.client.create_model_version(name, f"runs:/{run_id}/user_logs.txt", run_id=run_id).version
    p.begin_create_deployment(ep, "broken", model=f"{name}:{broken}", instance_type="Standard_DS2_v2", instance_count=1)
    dep = _wait_deployment(p, ep, "broken")
    assert dep.state == "Failed"


def test_batch_scoring_writes_a_fresh_output_and_refuses_to_overwrite(env: dict[str, Any], model: str) -> None:
    p: LocalPlatform = env["platform"]
    s = env["settings"]
    name = model
    p.begin_ensure_batch_deployment(BatchDeploymentSpec("batch-ep", "d1", f"{name}:1", "local"))
    assert p.get_batch_deployment("batch-ep", "d1").succeeded and p.get_batch_deployment("batch-ep", "x") is None
    source = f"azureml://datastores/{s.scoring_datastore}/paths/heart/s1/"
    out = f"azureml://datastores/{s.output_datastore}/paths/scores/heart/s1/run-1/"
    job = p.invoke_batch("batch-ep", "d1", input_path=source, output_path=out, job_name="batch-1",
                         tags={"reflex.trigger": "test"})
    assert job.kind == "batch" and job.outputs["score"] == out
    assert p.invoke_batch("batch-ep", "d1", input_path=source, output_path=out, job_name="batch-1").name == "batch-1"
    with pytest.raises(PermanentError, match="already exists"):
        p.invoke_batch("batch-ep", "d1", input_path=source, output_path=out, job_name="batch-2")
    done = _wait_job(p, "batch-1")
    assert done.status == "Completed", done.error
    text = env["blobs"].get_container_client(s.output_container).download_blob(
        "scores/heart/s1/run-1/predictions.csv").readall().decode()
    assert text.splitlines()[0].endswith(",prediction") and len(text.splitlines()) == 26
    assert p.get_job_metrics("batch-1")["rows_scored"] == 25
    assert env["receiver"].wait_for("on_run_event", "batch-1")["eventType"].endswith("RunCompleted")


def test_event_envelopes_have_stable_ids() -> None:
    a = amlevents.model_registered(name="m", version="1", tags={})
    b = amlevents.model_registered(name="m", version="1", tags={})
    assert a["id"] == b["id"] and a["eventType"] == "Microsoft.MachineLearningServices.ModelRegistered"
    run = amlevents.run_event(job_name="j", experiment_name="e", status="Canceled", tags={})
    assert run["eventType"].endswith("RunStatusChanged") and run["data"]["runStatus"] == "canceled"


def test_delivery_gives_up_on_an_unreachable_host() -> None:
    port = _free_port()
    assert amlevents.deliver(f"http://127.0.0.1:{port}", "on_run_event", {"eventType": "x"}, attempts=2,
                             backoff=0.01) is False


def test_settings_example_matches_local_env() -> None:
    from local.env import ROOT, settings_file

    assert json.loads((ROOT / "local.settings.example.json").read_text()) == settings_file()
    from local.env import local_env
    from shared.core.settings import load

    settings = load(local_env())
    assert settings.platform == "local" and settings.label_column == "DEATH_EVENT"
    assert Path(ROOT / "local.settings.example.json").exists()
