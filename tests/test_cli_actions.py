"""No stranded versions or batches: `reflex rollout MODEL:VERSION`, `reflex train BATCH`, and a smoke test that
needs no configuration (a row of the model's own training data), through the CLI and the real reactions on
Azurite state and the fake platform (tests/real_chain.py)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.arrival.retry import train_again
from shared.core.errors import PermanentError
from shared.core.platform import InvokeResult
from shared.rollout.plan import deployment_name
from shared.rollout.smoke import find_smoke_request
from shared.rollout.smoke_row import column_kinds, first_rows, pick_row, request_from_row
from tests.conftest import Clock
from tests.real_chain import ENDPOINT, MODEL, World, make_world
from tests.test_cli import cli, cli_json

V2 = deployment_name(MODEL, "2")


@pytest.fixture
def world(container_factory: Callable[[str], Any], clock: Clock) -> World:
    return make_world(container_factory, clock, REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1")


def record(world: World, batch: str) -> dict[str, Any]:
    found = world.deps.state.get(f"arrivals/{world.lake.name}/{batch}")
    assert found is not None
    return found.value


def jobs_for(world: World, batch: str) -> list[str]:
    return [n for n, r in world.platform.job_requests.items() if r.data_version == batch]


# ------------------------------------------------------------------------------------------- rollout
def test_a_failed_rollout_gets_a_new_attempt_and_duplicates_stay_duplicates(world: World) -> None:
    deps, platform = world.deps, world.platform
    first = world.chain("heart/b1")  # model 1 serves
    world.chain("heart/b2", auc=0.95, upto="registered")
    registered = world.last_event("ModelRegistered")
    platform.inject("begin_create_deployment", PermanentError("InternalServerError: deployment template broken"))
    assert world.run("rollout.model_registered", registered, registered["id"]).status == "acted"
    world.tick()   # the event records the rollout; its first step is the reconciler's (#14.7)
    failed = world.rollout()
    assert failed is not None and failed.status == "failed" and "template broken" in failed.reason
    code, result = cli_json(deps, "rollout", f"{MODEL}:2", "--why", "template fixed", "--by", "erin")
    assert code == 0 and result["status"] == "acted", result
    assert result["retry_of"] == registered["id"] and result["previous"]["status"] == "failed"
    code, result = cli_json(deps, "rollout", f"{MODEL}:2")  # the attempt runs: never a second one beside it
    assert code == 2 and "is in progress" in result["message"]
    assert world.run("rollout.model_registered", registered, registered["id"]).status == "duplicate"
    done = world.roll_out()
    assert done.status == "done" and platform.get_endpoint(ENDPOINT).traffic == {V2: 100}
    assert first.deployment not in {d.name for d in platform.get_endpoint(ENDPOINT).deployments}
    code, text = cli(deps, "rollout", f"{MODEL}:2")
    assert code == 2 and "already serves all traffic" in text
    notes = [e for e in deps.ledger.entries() if e["reaction"] == "operator.rollout"]
    assert [(n["status"], n["decision"]["by"], n["decision"]["why"]) for n in notes] == [
        ("acted", "erin", "template fixed")]
    code, explained = cli_json(deps, "explain", ENDPOINT)
    assert code == 0 and explained["lineage"]["model"] == [f"{MODEL}:2"]
    assert "rollout.model_registered" in [e["reaction"] for e in explained["entries"]]


def test_the_same_attempt_requested_twice_starts_once(world: World) -> None:
    world.chain("heart/b1", upto="registered")
    registered = world.last_event("ModelRegistered")
    world.platform.inject("begin_create_endpoint", PermanentError("AuthorizationFailed: no role to create endpoints"))
    world.run("rollout.model_registered", registered, registered["id"])
    world.tick()   # the first step, the reconciler's
    assert world.rollout().status == "failed"
    from shared.rollout.retry import plan_attempt

    a, b = (plan_attempt(world.deps, MODEL, "1", by=who, why="retry") for who in ("ann", "bob"))
    assert a.event["id"] == b.event["id"]  # the same request, whoever sends it
    outcomes = [world.run("rollout.model_registered", r.event, r.event["id"]).status for r in (a, b)]
    assert outcomes == ["acted", "duplicate"]
    assert world.roll_out().status == "done"


def test_a_version_registered_during_dry_run_is_rolled_out_on_request(world: World) -> None:
    deps = world.deps
    world.chain("heart/b1", upto="registered")
    assert cli(deps, "dry-run", "on", "--why", "rehearsal")[0] == 0
    registered = world.last_event("ModelRegistered")
    assert world.run("rollout.model_registered", registered, registered["id"]).status == "dry-run"
    assert world.rollout() is None
    assert cli(deps, "dry-run", "off")[0] == 0
    code, result = cli_json(deps, "rollout", f"{MODEL}:1")
    assert code == 0 and result["status"] == "acted" and result["retry_of"] == "", result
    assert world.roll_out().status == "done"


def test_rollout_bad_input(world: World) -> None:
    deps = world.deps
    world.chain("heart/b1", upto="registered")
    for argv, words in ((["nocolon"], "expected MODEL:VERSION"), ([f"{MODEL}:9"], "is not registered"),
                        (["other-model:1"], "no endpoint configured")):
        code, result = cli_json(deps, "rollout", *argv)
        assert code == 2 and words in result["message"], result
    assert world.rollout() is None


# --------------------------------------------------------------------------------------------- train
def test_a_batch_that_arrived_in_dry_run_is_trained_on_request(world: World) -> None:
    deps = world.deps
    assert cli(deps, "dry-run", "on", "--why", "rehearsal")[0] == 0
    outcomes = [world.deliver(raw) for raw in world.upload("heart/b1")]
    assert outcomes[-1].status == "dry-run" and not world.platform.jobs
    code, result = cli_json(deps, "train", "heart/b1")
    assert code == 2 and "dry-run is on" in result["message"]
    assert cli(deps, "dry-run", "off")[0] == 0
    code, result = cli_json(deps, "train", f"{world.lake.name}/heart/b1", "--by", "fay")
    assert code == 0 and result["status"] == "acted" and result["attempt"] == 2, result
    [job] = jobs_for(world, "b1")
    assert result["job"] == job and record(world, "heart/b1")["status"] == "submitted"
    code, result = cli_json(deps, "train", "heart/b1")
    assert code == 2 and f"it is training: job {job} is running" in result["message"]
    run_completed = world.finish(job, 0.9)
    assert world.run("registration.run_event", run_completed, run_completed["id"]).status == "acted"
    code, result = cli_json(deps, "train", "heart/b1")
    assert code == 2 and "already trained" in result["message"] and jobs_for(world, "b1") == [job]
    code, explained = cli_json(deps, "explain", job)
    assert code == 0 and explained["lineage"]["batch"] == [f"{world.lake.name}/heart/b1"]
    assert "operator.train" in [e["reaction"] for e in explained["entries"]]


def test_a_batch_whose_training_failed_gets_a_new_job_once(world: World) -> None:
    deps, platform = world.deps, world.platform
    raws = world.upload("heart/b2")
    first = str([world.deliver(raw) for raw in raws][-1].details["job"])
    failed = platform.finish_job(first, "Failed", error="train.py: error: label column 'label' not found")
    event = world.last_event("RunStatusChanged")
    world.run("registration.run_event", event, event["id"])
    assert failed.status == "Failed" and record(world, "heart/b2")["status"] == "failed"
    with ThreadPoolExecutor(2) as pool:  # two operators at once: one new attempt, one job
        outcomes = list(pool.map(lambda who: train_again(deps, f"arrivals/{world.lake.name}/heart/b2", by=who,
                                                         why="fixed the label"), ("ann", "bob")))
    assert sorted(o.status for o in outcomes) in (["acted", "duplicate"], ["acted", "refused"]), outcomes
    jobs = jobs_for(world, "b2")
    assert len(jobs) == 2 and first in jobs
    [second] = [j for j in jobs if j != first]
    value = record(world, "heart/b2")
    assert value["status"] == "submitted" and value["job"] == second and value["attempt"] == 2
    assert world.deliver(raws[-1]).status == "duplicate"  # the marker again: still one job per attempt
    assert len(jobs_for(world, "b2")) == 2
    assert platform.job_requests[second].tags["reflex.batch"] == f"arrivals/{world.lake.name}/heart/b2"
    run_completed = world.finish(second, 0.9)
    assert world.run("registration.run_event", run_completed, run_completed["id"]).status == "acted"
    assert record(world, "heart/b2")["status"] == "trained"


def test_train_refuses_what_it_cannot_train_and_says_why(world: World) -> None:
    deps = world.deps
    assert world.deliver(world.lake.put("heart/b3/part-0.csv")).status == "acted"  # no marker yet
    cases = [("heart/b3", "not complete yet: it still collects files, waiting for its marker '_SUCCESS'"),
             ("heart/nope", "no batch"), ("just-one-part", "expected <dataset>/<batch>")]
    for batch, words in cases:
        code, result = cli_json(deps, "train", batch)
        assert code == 2 and words in result["message"], result
    cli(deps, "pause", "--why", "incident")
    code, result = cli_json(deps, "train", "heart/b3")
    assert code == 2 and "automation is paused (incident)" in result["message"]
    assert not world.platform.jobs


# --------------------------------------------------------------------------------------------- smoke
def test_without_a_smoke_request_a_row_of_the_training_data_is_sent_without_the_label(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    world = make_world(container_factory, clock, REFLEX_SMOKE_REQUEST="")
    sent: list[Any] = []
    world.platform.responder = lambda ep, dep, body: sent.append(body) or InvokeResult(200, "[1]", 9.0)
    chain = world.chain("heart/b1")  # its files hold "a,label" rows; REFLEX_LABEL_COLUMN is "label"
    assert chain.deployment and world.rollout().status == "done"
    assert sent[0] == {"input_data": {"columns": ["a"], "index": [0], "data": [[1]]}}


def test_the_smoke_row_comes_from_the_models_batch_and_a_failed_version_rolls_out_after_the_fix(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    world = make_world(container_factory, clock, REFLEX_SMOKE_REQUEST="", REFLEX_LABEL_COLUMN="target")
    sent: list[Any] = []
    world.platform.responder = lambda ep, dep, body: sent.append(body) or InvokeResult(200, "[1]", 9.0)
    rows = b"age,sex,target\n63,,1\n45,m,0\n"
    raws = [world.lake.put("heart/b1/part-0.csv", rows), world.lake.put("heart/b1/part-1.csv", b"age,sex,target\n"),
            world.lake.put("heart/b1/_SUCCESS", b"")]
    job = str([world.deliver(raw) for raw in raws][-1].details["job"])
    run_completed = world.finish(job, 0.9)
    assert world.run("registration.run_event", run_completed, run_completed["id"]).status == "acted"
    model = world.platform.get_model(MODEL, "1")
    assert model.tags["reflex.batch"] == f"arrivals/{world.lake.name}/heart/b1"
    # the smoke row comes from the file as the job read it: the batch's frozen copy (shared/batches/freeze.py)
    [trained] = [b.name for b in world.lake.container.list_blobs(name_starts_with=".reflex-frozen/heart/b1/")
                 if b.name.endswith("/part-0.csv")]
    # that training file is gone when the rollout starts: the rollout fails at once, naming it
    world.lake.container.delete_blob(trained)
    registered = world.last_event("ModelRegistered")
    world.run("rollout.model_registered", registered, registered["id"])
    world.tick()   # the first step, the reconciler's
    failed = world.rollout()
    assert failed.status == "failed" and "no smoke request for reflex-model:1" in failed.reason
    assert trained in failed.reason and world.platform.get_endpoint(ENDPOINT) is None
    # restored: the same version rolls out through a new attempt, smoke-tested with its own row
    world.lake.put(trained, rows)
    code, result = cli_json(world.deps, "rollout", f"{MODEL}:1")
    assert code == 0 and result["status"] == "acted", result
    assert world.roll_out().status == "done"
    assert sent[0] == {"input_data": {"columns": ["age", "sex"], "index": [0], "data": [[45, "m"]]}}
    assert world.rollout().smoke["source"] == f"training data {world.lake.name}/{trained}"


def test_without_the_batch_record_the_data_asset_names_the_folder(container_factory: Callable[[str], Any],
                                                                    clock: Clock) -> None:
    world = make_world(container_factory, clock, REFLEX_SMOKE_REQUEST="")
    world.chain("heart/b1", upto="registered")
    world.deps.state.delete(f"arrivals/{world.lake.name}/heart/b1")
    found = find_smoke_request(world.deps, MODEL, "1")
    assert found.body == {"input_data": {"columns": ["a"], "index": [0], "data": [[1]]}}
    # the data asset names the batch's frozen copy (shared/batches/freeze.py), which is what the job read
    asset = world.platform.data[("heart", "b1")].path.split("/paths/", 1)[1]
    assert asset.startswith(".reflex-frozen/heart/b1/")
    assert found.source == f"training data {world.lake.name}/{asset}part-0.csv"
    world.platform.models[(MODEL, "1")] = world.platform.models[(MODEL, "1")].__class__(MODEL, "1")
    assert "no reflex.batch or reflex.data tag" in find_smoke_request(world.deps, MODEL, "1").problem


def test_a_configured_smoke_request_still_wins(world: World) -> None:
    found = find_smoke_request(world.deps, MODEL, "1")
    assert found.source == "REFLEX_SMOKE_REQUEST" and found.body == world.deps.settings.smoke_request


def test_the_row_picked_is_whole_and_complete_and_typed_like_its_column() -> None:
    rows = [{"a": "", "b": "1"}, {"a": "2", "b": "x"}, {"a": "3", "b": "4"}]
    assert pick_row(first_rows(iter(rows), cut=False)) == {"a": "2", "b": "x"}
    assert pick_row(rows[:1]) == {"a": "", "b": "1"}  # nothing complete: the first row
    assert first_rows(iter(rows), cut=True) == rows[:2]  # the last row of a file read in part may be cut short

    def broken() -> Any:
        yield {"a": "1", "b": "2"}
        raise PermanentError("line 3: not JSON")

    assert first_rows(broken(), cut=True) == [{"a": "1", "b": "2"}]  # a tail cut in half ends the reading
    assert pick_row([]) is None
    # a whole number in a column of decimals is sent as a decimal (MLflow refuses a long for a double)
    sample = [{"n": "7", "p": "265000", "s": "abc", "m": "NA", "j": 3}, {"n": "8", "p": "263358.03", "s": "1",
                                                                        "m": "2", "j": 4.5}]
    assert column_kinds(sample) == {"n": "int", "p": "float", "s": "other", "m": "int", "j": "float"}
    assert request_from_row(sample[0], column_kinds(sample)) == {
        "input_data": {"columns": ["n", "p", "s", "m", "j"], "index": [0], "data": [[7, 265000.0, "abc", None, 3.0]]}}


def test_the_smoke_row_passes_a_real_mlflow_models_input_schema(tmp_path: Any) -> None:
    """What the deployed model checks: MLflow enforces the signature inferred from the training frame."""
    import io

    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from shared.batches.tabular import read_rows

    data = b"age,platelets,sex,target\n63,265000,1,1\n45,263358.03,0,0\n50,,1,0\n70,150000.5,0,1\n"
    frame = pd.read_csv(io.BytesIO(data)).dropna()
    features = frame.drop(columns="target")
    model = LogisticRegression().fit(features, frame["target"])
    mlflow.sklearn.save_model(model, str(tmp_path / "model"), signature=infer_signature(features,
                                                                                       model.predict(features)))
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    rows = first_rows(read_rows("part-0.csv", [data]), cut=False)
    body = request_from_row({k: v for k, v in pick_row(rows).items() if k != "target"}, column_kinds(rows))
    assert body["input_data"]["data"] == [[63, 265000.0, 1]]
    # read as Azure ML's MLflow scoring reads `input_data`: pandas DataFrame arguments, "split" orientation
    # (MicrosoftDocs/azure-ai-docs articles/machine-learning/how-to-deploy-mlflow-models-online-endpoints.md,
    # commit 15fb5ac2: `pd.DataFrame(**sample_request["input_data"])`)
    assert len(loaded.predict(pd.DataFrame(**body["input_data"]))) == 1
