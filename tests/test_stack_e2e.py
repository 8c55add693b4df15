"""End to end on the local stack: real processes, real MLflow, real Azurite, events through the host's webhooks.

What a user's laptop runs (`make stack`): the MLflow server, the scoring server (+ the MLflow webhook relay)
and the local host delivering blob, Event Grid and timer triggers to the very functions deployed to Azure.
These tests act only from outside (uploads, webhook POSTs, killing the host) and assert outcomes: models in
the registry, endpoint traffic, records in the state container, the ledger, the events Reflex published.
Slow by nature (training, bake times): about a minute each on a laptop.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack_support import LiveStack, live_stack, wait_for
from tests.stack_trace import assert_one_trace_covers_the_chain

pytestmark = [pytest.mark.timeout(600), pytest.mark.stack]

MODEL, ENDPOINT = "heart-failure", "heart-failure-ep"


@pytest.fixture
def live(tmp_path: Path, blob_service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    yield from live_stack(tmp_path / "run", monkeypatch.setenv)  # blob_service: fails clearly without Azurite


@pytest.fixture
def live_func(tmp_path: Path, blob_service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    yield from live_stack(tmp_path / "run", monkeypatch.setenv, func=True)


@pytest.fixture(scope="class")
def shared_live(tmp_path_factory: pytest.TempPathFactory, blob_service: Any) -> Iterator[LiveStack]:
    """One stack for the tests of a class (CI time: a stack's start is the slowest part of a short test).

    Only tests that need no fresh registry or host share it: they land data under batch names and send events
    with ids of their own, and assert about what they caused (their batch, their job, their model version), so
    they pass alone, together and in any order. Tests that kill the host, need another mode or settings, or
    assert about a registry without a champion keep a stack of their own (`live`)."""
    with pytest.MonkeyPatch.context() as patch:
        yield from live_stack(tmp_path_factory.mktemp("shared") / "run", patch.setenv)


# ------------------------------------------------------------------------------------------------ helpers
def _upload(live: LiveStack, batch: str, rows: int, seed: int, files: int = 2) -> list[str]:
    """A dataset batch as a user lands it: part files, then the completion marker. The blob URLs."""
    from local.sampledata import generate, to_csv_bytes

    container = live.deps.platform.blobs.get_container_client(live.deps.settings.data_container)
    data = generate(rows, seed=seed)
    size = (rows + files - 1) // files
    urls = []
    for i in range(files):
        blob = container.upload_blob(f"heart/{batch}/part-{i}.csv", to_csv_bytes(data[i * size:(i + 1) * size]))
        urls.append(blob.url)
    container.upload_blob(f"heart/{batch}/_SUCCESS", b"")
    return urls


def _traffic(live: LiveStack) -> dict[str, int]:
    endpoint = live.deps.platform.get_endpoint(ENDPOINT)
    return {k: v for k, v in (endpoint.traffic if endpoint else {}).items() if v}


def _deployment_of(live: LiveStack, version: str) -> str:
    from shared.rollout.plan import deployment_name

    return deployment_name(MODEL, version)


def _rollout(live: LiveStack) -> dict[str, Any]:
    from shared.rollout.flow import rollout_key

    record = live.deps.state.get(rollout_key(ENDPOINT))
    return dict(record.value) if record else {}


def _serving(live: LiveStack, version: str) -> bool:
    return _traffic(live) == {_deployment_of(live, version): 100} and _rollout(live).get("status") == "promoted"


def _register_by_hand(live: LiveStack, seed: int, *, tags: dict[str, str] | None = None) -> str:
    """A person trains a model and registers it in MLflow (no Reflex involved): the registry webhook must
    reach the host and start a rollout, as Azure ML's ModelRegistered event does."""
    import mlflow
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from local.sampledata import generate

    frame = pd.DataFrame(generate(300, seed=seed))
    features, label = frame.drop(columns=["DEATH_EVENT"]), frame["DEATH_EVENT"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, label)
    mlflow.set_tracking_uri(live.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(live.env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("by-hand")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=features.head(2))
    return str(mlflow.register_model(info.model_uri, MODEL, tags=tags).version)


def _no_dead_letters(live: LiveStack) -> list[dict[str, Any]]:
    return [dict(r.value) for r in live.deps.state.dead_letters()]


# ------------------------------------------------------------------------------------------------ the chain
def test_the_demo_chain_end_to_end(live: LiveStack) -> None:
    """`make demo`'s chain on a fresh stack: v1 from a small batch, v2 from a larger one wins its canary."""
    from local.demo import Demo
    from reflex.cli import main as cli

    demo = Demo(timeout=240, deps=live.deps)
    assert demo.run() == 0, [(s.name, s.status, s.detail) for s in demo.steps]

    platform = live.deps.platform
    models = {m.version: m for m in platform.list_models(MODEL)}
    assert sorted(models) == ["1", "2"]
    assert models["2"].tags.get("reflex.champion") == "true" and "reflex.champion" not in models["1"].tags
    auc = {v: float(m.properties["reflex.metric.auc"]) for v, m in models.items()}
    assert auc["2"] > auc["1"]
    assert _serving(live, "2")
    # v2 went through the plan's steps (10, 50, 100) beside v1, not straight to 100
    v1, v2 = _deployment_of(live, "1"), _deployment_of(live, "2")
    steps = [e["data"]["traffic"] for e in live.published("RolloutStepCompleted")
             if e["data"].get("version") == "2" and "traffic" in e["data"]]
    assert [t.get(v2) for t in steps] == [10, 50, 100], steps
    assert steps[0].get(v1) == 90
    # batch scoring wrote one prediction per scored row into a fresh folder of the output container
    outputs = live.deps.platform.blobs.get_container_client(live.deps.settings.output_container)
    written = [b.name for b in outputs.list_blobs()]
    assert written, "no batch scoring output"
    text = b"".join(outputs.download_blob(n).readall() for n in written if not n.endswith("_SUCCESS")).decode()
    assert len([line for line in text.splitlines() if line.strip()]) >= 200
    # the ledger walks from the endpoint back to the blobs that trained the serving model
    out = io.StringIO()
    assert cli(["explain", ENDPOINT, "--json"], deps=live.deps, stdout=out) == 0
    refs = json.loads(out.getvalue())["lineage"]
    data = live.deps.platform.blobs.get_container_client(live.deps.settings.data_container)
    batch2_parts = sorted(data.get_blob_client(b.name).url for b in data.list_blobs(f"heart/{demo.batch2}/")
                          if b.name.endswith(".csv"))
    assert len(batch2_parts) == 3 and set(batch2_parts) <= set(refs["blob"])
    assert not any(demo.batch1 in url for url in refs["blob"])  # the endpoint's current model only
    assert f"{MODEL}:2" in refs["model"] and v2 in refs["deployment"]
    # ---- #19.5 (timeline branch): one trace from v2's upload to its promotion; `explain --timeline` prints it
    assert_one_trace_covers_the_chain(live, batch=demo.batch2, model=MODEL, version="2", endpoint=ENDPOINT, steps=3)


# ------------------------------------------------------------------------------------------------ 3x delivery
def _run_completed_event(live: LiveStack, job: str) -> dict[str, Any]:
    """The RunCompleted Azure ML would publish for `job` (same id on every delivery, as Event Grid retries)."""
    from local import amlevents

    found = live.deps.platform.get_job(job)
    assert found is not None
    return amlevents.run_event(job_name=job, experiment_name=live.deps.settings.experiment_name, status="Completed",
                               tags=dict(found.tags))


def _blob_created(blob: Any) -> dict[str, Any]:
    """The BlobCreated a storage account publishes for `blob` (Microsoft's documented shape, its real properties)."""
    from local.host.blobs import blob_created_event

    return blob_created_event(blob, blob.get_blob_properties())


def _of_batch(events: list[dict[str, Any]], batch: str) -> list[dict[str, Any]]:
    return [e for e in events if str(e["data"].get("batch", "")).endswith(f"/heart/{batch}")]


class TestOnOneStack:
    """Tests that share one stack (`shared_live`): each sees only what it caused."""

    def test_every_event_delivered_three_times_does_everything_once(self, shared_live: LiveStack) -> None:
        """Blob, RunCompleted and ModelRegistered each arrive 3 more times (the Event Grid webhook, the admin API,
        and a second event id for the same blob version): still one data asset, one job, one model version, one
        rollout, nothing dead-lettered."""
        from local import amlevents

        live = shared_live
        settings = live.deps.settings
        urls = _upload(live, "b3x", rows=300, seed=5)
        container = live.deps.platform.blobs.get_container_client(settings.data_container)
        marker = container.get_blob_client("heart/b3x/_SUCCESS")
        delivered: set[str] = set()
        for url in [*urls, marker.url]:
            event = _blob_created(container.get_blob_client(url.split(f"/{settings.data_container}/", 1)[1]))
            for n in range(3):
                assert live.post("/runtime/webhooks/eventgrid?functionName=on_data_blob", [event]) == 202
                assert live.post("/admin/functions/on_data_blob", {"input": json.dumps(event)}) == 202
                assert live.post("/runtime/webhooks/eventgrid?functionName=on_data_blob",
                                 [{**event, "id": f"{event['id']}-{n}"}]) == 202
                delivered |= {event["id"], f"{event['id']}-{n}"}

        submitted = wait_for("a training job", lambda: _of_batch(live.published("TrainingSubmitted"), "b3x"))
        job = submitted[0]["data"]["job"]
        wait_for(f"job {job} to complete", lambda: (j := live.deps.platform.get_job(job)) and j.terminal)
        run_completed = _run_completed_event(live, job)
        for _ in range(3):
            assert live.deliver("/runtime/webhooks/eventgrid?functionName=on_run_event", [run_completed]) == 202
        delivered.add(run_completed["id"])

        def its_model() -> Any:
            return next((m for m in live.deps.platform.list_models(MODEL) if m.job_name == job), None)

        model = wait_for(f"the model of job {job}", its_model)
        registered = amlevents.model_registered(name=MODEL, version=model.version, tags=dict(model.tags))
        for _ in range(3):
            assert live.deliver("/runtime/webhooks/eventgrid?functionName=on_model_registered", [registered]) == 202
        delivered.add(registered["id"])
        wait_for(f"v{model.version} serving all traffic", lambda: _serving(live, model.version), timeout=120)

        assert [e["data"]["job"] for e in _of_batch(live.published("TrainingSubmitted"), "b3x")] == [job]
        assert [m.version for m in live.deps.platform.list_models(MODEL) if m.job_name == job] == [model.version]
        mine = [e for e in live.published() if e.get("subject", "").endswith(f"{MODEL}:{model.version}")
                or str(e["data"].get("version", "")) == model.version]
        assert [e["eventType"] for e in mine].count("Reflex.ModelRegistered") == 1
        assert [e["eventType"] for e in mine].count("Reflex.RolloutStarted") == 1
        assert [e["eventType"] for e in mine].count("Reflex.RolloutPromoted") == 1
        assets = [r for r in live.deps.state.records("platform/data/") if "/heart/b3x" in json.dumps(r.value)]
        assert len(assets) == 1, assets
        assert [d for d in _no_dead_letters(live) if d.get("event_id") in delivered] == []
        # the duplicates were seen and recorded as such, not silently dropped
        outcomes = [e.get("status") for e in live.deps.ledger.entries() if e.get("event_id") in delivered]
        assert outcomes.count("duplicate") >= 3, outcomes

    def test_poison_event_is_dead_lettered_and_the_host_goes_on(self, shared_live: LiveStack) -> None:
        """A ModelRegistered without a model version, then a batch whose only file is empty: each ends where an
        operator sees it (a dead letter with the payload and the error; a TrainingSkipped naming the file), the
        host answers and goes on with the next event, and the CLI lists the dead letter."""
        from reflex.cli import main as cli

        live = shared_live
        poison = {"id": "poison-1", "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
                  "subject": f"models/{MODEL}", "eventTime": "2026-11-22T00:00:00Z", "dataVersion": "2",
                  "metadataVersion": "1", "data": {"modelName": MODEL, "modelTags": {}}}
        assert live.post("/runtime/webhooks/eventgrid?functionName=on_model_registered", [poison]) == 202
        letters = wait_for("the dead letter",
                           lambda: [d for d in _no_dead_letters(live) if d.get("event_id") == "poison-1"])
        assert len(letters) == 1
        assert "version" in letters[0]["error"].lower() and letters[0]["payload"]["data"] == poison["data"]

        container = live.deps.platform.blobs.get_container_client(live.deps.settings.data_container)
        container.upload_blob("heart/empty/part-0.csv", b"")
        container.upload_blob("heart/empty/_SUCCESS", b"")
        skipped = wait_for("TrainingSkipped", lambda: _of_batch(live.published("TrainingSkipped"), "empty"))
        assert "part-0.csv" in json.dumps(skipped[0]["data"])
        assert _of_batch(live.published("TrainingSubmitted"), "empty") == []

        out = io.StringIO()
        assert cli(["dead-letters", "--json"], deps=live.deps, stdout=out) == 0
        assert "poison-1" in out.getvalue()


# ------------------------------------------------------------------------------------------------ host crash
def test_host_killed_mid_rollout_resumes_and_promotes(live: LiveStack) -> None:
    """A person registers v1 then v2 in MLflow (v2 tagged reflex.trusted=true: rolled out without evaluation, per
    the outside-model policy); the host is SIGKILLed while v2 bakes at 10% and restarted: the persisted rollout
    goes on from where it was and v2 ends at 100% (v1 at 0%), nothing lost."""
    v1 = _register_by_hand(live, seed=1)
    wait_for("v1 serving all traffic", lambda: _serving(live, v1), timeout=120)
    v2 = _register_by_hand(live, seed=2, tags={"reflex.trusted": "true"})
    new = _deployment_of(live, v2)
    wait_for("v2 at 10%", lambda: _traffic(live).get(new) == 10, timeout=120, every=0.2)

    live.stack.kill("host")
    killed_at = _rollout(live)
    time.sleep(live.deps.settings.bake_seconds + 2)  # the bake ends while no host is running
    assert _traffic(live).get(new) == 10 and _rollout(live)["status"] == killed_at["status"]
    live.stack.restart("host")

    wait_for("v2 serving all traffic", lambda: _serving(live, v2), timeout=180)
    rollout = _rollout(live)
    assert rollout["version"] == v2 and rollout["status"] == "promoted"
    champion = live.deps.platform.find_champion(MODEL)
    assert champion is not None and champion.version == v2
    assert _no_dead_letters(live) == []


# ------------------------------------------------------------------------------------------------ outside models
def _records(live: LiveStack, prefix: str, done: tuple[str, ...]) -> list[dict[str, Any]]:
    return [dict(r.value) for r in live.deps.state.records(prefix) if r.value.get("status") in done]


def test_a_notebook_model_follows_the_outside_model_policy_and_never_blocks_retraining(live: LiveStack) -> None:
    """A person registers v1 from a notebook (no champion yet: it rolls out). A Reflex batch trains a challenger
    whose job scores that champion on the challenger's own holdout (it used to be refused forever: "the champion
    has no 'auc'"). Then a second notebook model is evaluated against the champion on the same rows by a local
    evaluation job before any rollout, and the verdict, with both numbers and the rows, decides."""
    from shared.registration.outside_models import EVALUATION_TAG

    v1 = _register_by_hand(live, seed=1)
    wait_for("v1 serving all traffic", lambda: _serving(live, v1), timeout=120)
    _upload(live, "b1", rows=600, seed=3)
    wait_for("the gate's decision", lambda: _records(live, "registrations/jobs/", ("registered", "skipped")),
             timeout=300)
    [gated] = _records(live, "registrations/jobs/", ("registered", "skipped"))
    decision = gated["decision"]
    assert decision["champion_version"] == v1 and decision["champion"] is not None, decision
    assert decision["rows"]["source"] == "holdout" and decision["rows"]["count"] == 120
    if gated["status"] == "registered":
        wait_for("the challenger serving", lambda: _serving(live, gated["version"]), timeout=180)
    champion = live.deps.platform.find_champion(MODEL)
    assert champion is not None

    v3 = _register_by_hand(live, seed=4)
    wait_for("the outside model's verdict", lambda: _records(live, "evaluations/outside/", ("passed", "failed")),
             timeout=300)
    [verdict] = _records(live, "evaluations/outside/", ("passed", "failed"))
    assert (verdict["version"], verdict["champion"]) == (v3, champion.ref)
    assert verdict["decision"]["rows"]["count"] and verdict["decision"]["challenger"] is not None
    model = live.deps.platform.get_model(MODEL, v3)
    assert model is not None and model.tags[EVALUATION_TAG] == verdict["status"]
    if verdict["status"] == "passed":
        wait_for("the outside model serving", lambda: _serving(live, v3), timeout=180)
    else:
        assert _traffic(live) == {_deployment_of(live, champion.version): 100}
    assert _no_dead_letters(live) == []


# ------------------------------------------------------------------------------------------------ func start
def test_func_mode_feeds_blob_events_to_the_functions_host(live_func: LiveStack, tmp_path: Path) -> None:
    """`local.stack start --func` for Core Tools users: no host of ours runs the functions; the feeder turns
    new blobs into BlobCreated POSTs to the functions host and serves the topic. A functions host that only
    answers webhooks (the real host's contract; `func start` is not installable here) gets the whole chain."""
    import os
    import subprocess
    import sys

    from local.env import ROOT

    port = live_func.host_url.rsplit(":", 1)[1]
    log = tmp_path / "functions-host.log"
    with open(log, "wb") as out:
        functions_host = subprocess.Popen(
            [sys.executable, "-m", "local.host", "--port", port, "--no-blob-poll"], cwd=ROOT,
            env={**os.environ, **live_func.env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _upload(live_func, "viafunc", rows=300, seed=5)
        submitted = wait_for("TrainingSubmitted", lambda: live_func.published("TrainingSubmitted"), timeout=120)
        assert "viafunc" in submitted[0]["data"]["batch"]
        registered = wait_for("ModelRegistered", lambda: live_func.published("ModelRegistered"), timeout=180)
        assert registered[0]["subject"] == f"models/{MODEL}:1"
    finally:
        from local import procs

        procs.stop_group(functions_host.pid, grace=20.0)  # its whole process group, however the test ended
