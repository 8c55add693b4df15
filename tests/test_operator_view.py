"""Every failure and every wait where the operator looks: `status`, `explain` and the ledger, after real reactions.

The chain runs on Azurite state and ledger and the fake platform (tests/real_chain.py): a training job fails with
the reason the local platform gives for a real `train.py` failure, a batch waits for its marker, a rollout waits
for requests and is then rolled back, a scoring job fails and another writes its output. Each is then looked at
only through the CLI, as text and as --json. The closed pipe and the SDK's HTTP logging are checked in
subprocesses, as a user meets them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from functions import batch_scoring  # noqa: F401 - importing registers the scoring handlers
from local.jobrunner import script_failure
from local.sampledata import LABEL, generate, to_csv_bytes
from reflex.cli import main
from reflex.explain import reason_for
from reflex.records import rollout_note, waiting_for
from shared.core import reaction
from shared.core.failure import error_line
from shared.core.ledger import entry_from
from shared.core.platform import DeploymentMetrics
from shared.rollout.machine import Rollout, read
from tests.conftest import AZURITE, ROOT, Clock, make_settings
from tests.real_chain import ENDPOINT, HEALTHY, Lake, World, make_world
from tests.stack_support import LiveStack, live_stack, wait_for


def cli(world: World, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), deps=world.deps, stdout=out), out.getvalue()


def cli_json(world: World, *argv: str) -> tuple[int, dict[str, Any]]:
    code, text = cli(world, "--json", *argv)
    return code, json.loads(text)


def hhmm(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M UTC")


@pytest.fixture
def world(container_factory: Callable[[str], Any], clock: Clock) -> World:
    return make_world(container_factory, clock, REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1")


# ------------------------------------------------------------------------------------ the error line
@pytest.fixture(scope="module")
def train_failure(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the local platform reports for a real `jobs/train/train.py` run on data without the label column:
    the script's own output, turned into the job's reason by the job runner (local/jobrunner.py)."""
    folder = tmp_path_factory.mktemp("train-failure")
    (folder / "data").mkdir()
    (folder / "data" / "part-0.csv").write_text("age,sex\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    run = subprocess.run([sys.executable, "jobs/train/train.py", "--data", str(folder / "data"), "--label", "target",
                          "--task", "classification", "--model-output", str(folder / "model")], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""}, timeout=300)
    assert run.returncode == 2, run.stderr
    return script_failure(run.stdout + run.stderr, run.returncode, folder / "user_logs.txt")


def test_a_failed_training_script_is_reported_by_its_error_line(train_failure: str) -> None:
    assert train_failure.startswith("train.py: error: label column 'target' not found in ")
    assert "set REFLEX_LABEL_COLUMN" in train_failure and "columns are: age, sex" in train_failure
    assert "(training script exited with code 2; log: " in train_failure


@pytest.mark.parametrize(("output", "line"), [
    ("INFO mlflow: tracking\nusage: train.py [-h] --data DATA\ntrain.py: error: the following arguments are "
     "required: --label\n", "train.py: error: the following arguments are required: --label"),
    ("2026 INFO loading\nTraceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n    f()\n"
     "pandas.errors.ParserError: Error tokenizing data. C error: Expected 2 fields in line 3, saw 3\n"
     "2026 WARNING mlflow: run ended\n",
     "pandas.errors.ParserError: Error tokenizing data. C error: Expected 2 fields in line 3, saw 3"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyboardInterrupt\n",
     "KeyboardInterrupt"),
    ("step 1\nstep 2: model upload failed with status 500\nstep 3: cleaning up\n",
     "step 2: model upload failed with status 500"),
    ("one\ntwo\n\n", "two"),
    ("", ""),
])
def test_error_line_picks_the_line_that_states_the_error(output: str, line: str) -> None:
    assert error_line(output) == line


# ------------------------------------------------------------------------------ training: failed, waiting
def test_a_failed_training_job_and_a_batch_waiting_for_its_marker_show_in_status_and_explain(
        world: World, train_failure: str) -> None:
    raws = world.upload("heart/b1")
    outcomes = [world.deliver(raw) for raw in raws]
    job = str(outcomes[-1].details["job"])
    world.platform.finish_job(job, "Failed", error=train_failure)
    changed = world.last_event("RunStatusChanged")
    assert world.run("registration.run_event", changed, changed["id"]).status == "acted"
    waiting = world.deliver(world.lake.put("heart/b2/part-0.csv"))
    # the ledger line says why (no running count: it would be the per-file summary write #17 removed; status has it)
    assert waiting.reason.endswith("(collecting; waiting for _SUCCESS)")
    batch, since = f"{world.lake.name}/heart/b1", hhmm(world.clock())

    code, result = cli_json(world, "status")
    assert code == 0
    [failed] = result["failures"]
    assert (failed["kind"], failed["id"], failed["job"]) == ("training", batch, job)
    assert failed["reason"] == f"job failed: {train_failure}"  # whole: the error line first, nothing cut
    [pending] = result["pending_batches"]
    assert pending["kind"] == "training" and pending["key"] == f"arrivals/{world.lake.name}/heart/b2"
    assert pending["waiting_for"] == f"waiting for _SUCCESS since {since} (1 file(s), the last at {since})"
    code, text = cli(world, "status")
    assert code == 0 and f"job failed: {train_failure}" in text and pending["waiting_for"] in text
    assert "(none)" not in text.split("failures, newest first", 1)[1]

    code, explained = cli_json(world, "explain", job)
    assert code == 0 and explained["kind"] == "job"
    assert explained["lineage"] == {"blob": [r["data"]["url"] for r in raws], "batch": [batch], "data": ["heart:b1"],
                                    "job": [job]}  # the gate names the batch by its record key: the same batch
    [now] = explained["failures"]
    assert (now["kind"], now["id"], now["status"], now["detail"]) == ("training", batch, "failed",
                                                                       f"job failed: {train_failure}")
    [gate] = [e for e in explained["entries"] if e["reaction"] == "registration.run_event"]
    assert gate["chain_reason"] == f"training failed: job failed: {train_failure}"
    code, text = cli(world, "explain", job)
    assert code == 0 and f"training failed: job failed: {train_failure}" in text
    assert f"failed (FAILED)  job failed: {train_failure}" in text


# ------------------------------------------------------------------------- rollout: waiting, rolled back
def reconcile(world: World, new: DeploymentMetrics, *, advance: float) -> Any:
    """One reconcile tick `advance` seconds on, the new deployment reporting `new`, the live one healthy."""
    world.clock.advance(advance)
    rollout = world.rollout()
    assert rollout is not None
    world.platform.metrics[(ENDPOINT, rollout.deployment)] = new
    if rollout.previous:
        world.platform.metrics[(ENDPOINT, rollout.previous)] = HEALTHY
    return world.run("rollout.reconcile", {"past_due": False}, "")


def test_a_rollout_waiting_for_requests_then_rolled_back_shows_why_everywhere(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    world = make_world(container_factory, clock, REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1",
                       REFLEX_MIN_REQUESTS="10")
    world.chain("heart/b1")
    second = world.chain("heart/b2", auc=0.95, upto="rolling")
    rollout = world.roll_until_split()
    wait = "at 10%: 1 of 10 requests served, waiting for the rest before advancing"
    tick = reconcile(world, DeploymentMetrics(1, 0, 40.0, 300), advance=400)  # bake time over, 1 request in
    assert tick.status == "skipped" and tick.reason == f"1 rollout(s) waiting: {ENDPOINT}: {wait}"
    line = next(iter(world.deps.ledger.entries()))
    assert line["reaction"] == "rollout.reconcile" and line["reason"] == tick.reason
    assert [item["waiting"] for item in line["decision"].values()] == [wait]

    code, result = cli_json(world, "status")
    [record] = result["rollouts"]
    assert code == 0 and record["note"] == f"{wait} (since {hhmm(clock())})"
    code, text = cli(world, "status")
    assert code == 0 and record["note"] in text
    code, explained = cli_json(world, "explain", second.model)
    assert code == 0 and explained["entries"][-1]["chain_reason"] == f"Wait -> baking: {wait}"
    [now] = [r for r in explained["now"] if r["kind"] == "rollout"]
    assert now["status"] == "baking" and now["detail"] == record["note"] and not explained["failures"]

    tick = reconcile(world, DeploymentMetrics(40, 20, 40.0, 300), advance=130)  # half of them fail
    assert tick.status == "acted" and world.rollout().status == "rolled_back"
    reason = world.rollout().reason
    assert reason == "at 10%: error rate 0.500 (20/40) exceeds 0.020"
    code, result = cli_json(world, "status")
    [failed] = result["failures"]
    assert code == 0 and (failed["kind"], failed["id"], failed["status"], failed["reason"]) == (
        "rollout", f"{ENDPOINT}/{second.model}", "rolled_back", reason)
    assert failed["evidence"]["new"]["errors"] == 20 and result["rollouts"][0]["note"] == reason
    code, text = cli(world, "status")
    assert code == 0 and reason in text
    code, explained = cli_json(world, "explain", f"{ENDPOINT}/{second.model}")
    assert code == 0 and explained["failures"][0]["detail"] == reason
    assert explained["entries"][-1]["chain_reason"] == f"RollBack -> rolled_back: {reason}"
    assert rollout.deployment in explained["lineage"]["deployment"]


# ------------------------------------------------------------------------------ scoring: failed, output
def test_scoring_failures_and_outputs_show_and_scoring_data_stays_apart_from_training_data(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    score = Lake(container_factory("score"))
    world = make_world(container_factory, clock, REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1",
                       REFLEX_SCORING_CONTAINER=score.name)
    trained = world.chain("heart/b1")
    uploads = {b: [score.put(f"patients/{b}/part-0.csv"), score.put(f"patients/{b}/_SUCCESS", b"")]
               for b in ("s1", "s2")}
    for raws in uploads.values():
        for raw in raws:
            world.run("scoring.blob", raw, raw["id"])
    jobs: dict[str, str] = {}
    for _ in range(10):  # the tracker waits for the batch deployment, then submits both batch jobs
        clock.advance(130)
        world.run("scoring.track", {"past_due": False}, "")
        jobs = {j.tags["reflex.batch"].rsplit("/", 1)[-1]: n for n, j in world.platform.jobs.items()
                if j.kind == "batch"}
        if len(jobs) == 2:
            break
    assert set(jobs) == {"s1", "s2"}
    error = "ValueError: the scoring batch lacks columns the model needs: age, sex"
    world.platform.finish_job(jobs["s1"], "Completed")
    world.platform.finish_job(jobs["s2"], "Failed", error=error)
    clock.advance(130)
    world.run("scoring.track", {"past_due": False}, "")
    s1, s2 = (f"{score.name}/patients/{b}" for b in ("s1", "s2"))

    code, result = cli_json(world, "status")
    [failed] = result["failures"]
    assert code == 0 and (failed["kind"], failed["id"], failed["job"], failed["model"]) == (
        "scoring", s2, jobs["s2"], trained.model)
    assert failed["reason"] == f"batch job Failed: {error}" and failed["output"]
    assert result["pending_batches"] == []
    code, text = cli(world, "status")
    assert code == 0 and f"batch job Failed: {error}" in text

    code, explained = cli_json(world, "explain", s2)
    assert code == 0 and explained["kind"] == "scoring_batch"
    lineage = explained["lineage"]
    assert lineage["scoring_blob"] == [r["data"]["url"] for r in uploads["s2"]] and lineage["scoring_batch"] == [s2]
    assert lineage["scoring_job"] == [jobs["s2"]] and lineage["model"] == [trained.model]
    assert lineage["batch"] == [trained.batch] and set(lineage["blob"]) == set(trained.blobs)  # its training
    assert explained["failures"][0]["detail"] == f"batch job Failed: {error}"
    assert any(e["chain_reason"] == f"BatchScoringFailed: batch job Failed: {error}" for e in explained["entries"])
    code, text = cli(world, "explain", s2)
    assert code == 0 and f"BatchScoringFailed: batch job Failed: {error}" in text

    code, explained = cli_json(world, "explain", s1)
    output = world.platform.jobs[jobs["s1"]].outputs["score"]
    assert code == 0 and explained["lineage"]["scoring_output"] == [output]
    [now] = [r for r in explained["now"] if r["kind"] == "scoring"]
    assert now["status"] == "completed" and now["detail"] == f"batch job completed; output {output}"
    assert [r["status"] for r in explained["now"] if r["kind"] == "training"] == ["trained"]  # its model's batch

    code, explained = cli_json(world, "explain", trained.model)  # forward from the model: what it scored, apart
    assert code == 0 and explained["lineage"]["batch"] == [trained.batch]
    assert set(explained["lineage"]["blob"]) == set(trained.blobs)
    assert set(explained["lineage"]["scoring_batch"]) == {s1, s2}
    assert set(explained["lineage"]["scoring_job"]) == set(jobs.values())


# ----------------------------------------------------------------------------- the CLI as a user runs it
def _cli_env(state_container: str) -> dict[str, str]:
    return {**os.environ, "AzureWebJobsStorage": AZURITE, "REFLEX_STATE_CONTAINER": state_container,
            "REFLEX_PLATFORM": "local", "PYTHONPATH": str(ROOT)}


def test_output_into_a_closed_pipe_ends_quietly(container_factory: Callable[[str], Any]) -> None:
    """`python -m reflex dead-letters | head`, with the reader gone before the first line is written."""
    state = container_factory("state")
    for n in range(3):
        state.upload_blob(f"deadletters/20261201/1200000{n}-t.x-ev{n}", json.dumps(
            {"reaction": "t.x", "event_id": f"ev{n}", "at": "2026-12-01T12:00:00Z", "error": "boom" * 50,
             "error_type": "PermanentError", "payload": {}, "context": {}}))
    read, write = os.pipe()
    os.close(read)  # the reader has exited
    try:
        run = subprocess.run([sys.executable, "-m", "reflex", "dead-letters"], cwd=ROOT, stdout=write,
                             stderr=subprocess.PIPE, text=True, env=_cli_env(state.container_name), timeout=120)
    finally:
        os.close(write)
    assert run.returncode == 141 and run.stderr == "", run.stderr  # 128 + SIGPIPE; no traceback, no message
    ok = subprocess.run([sys.executable, "-m", "reflex", "dead-letters"], cwd=ROOT, capture_output=True, text=True,
                        env=_cli_env(state.container_name), timeout=120)
    assert ok.returncode == 0 and "3 dead-lettered event(s)" in ok.stdout  # the same command, read to its end


LOGGING_PROBE = """
import logging, sys
from azure.storage.blob import BlobServiceClient
from shared.core.log import configure_process
if sys.argv[1] == "configured":
    configure_process()
elif sys.argv[1] == "reactions":  # a process whose root logs INFO (the Functions worker), then the reactions' setup
    logging.basicConfig(level=logging.INFO)
    from shared.core import log
    log.configure()
else:
    logging.basicConfig(level=logging.INFO)
client = BlobServiceClient.from_connection_string(sys.argv[2])
client.get_container_client(sys.argv[3]).exists()
logging.getLogger("reflex.local.serving").info("a line of our own")
"""


def test_local_process_logs_keep_their_lines_without_the_sdk_http_lines(
        container_factory: Callable[[str], Any]) -> None:
    container = container_factory("state").container_name

    def stderr(mode: str) -> str:
        run = subprocess.run([sys.executable, "-c", LOGGING_PROBE, mode, AZURITE, container], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stderr

    plain = stderr("plain")  # what the scoring server's log got: one request and one response block per call
    assert "azure.core.pipeline.policies.http_logging_policy" in plain and "Request URL" in plain
    for mode in ("configured", "reactions"):  # the scoring server's setup; the host's, the CLI's and the worker's
        configured = stderr(mode)
        assert "a line of our own" in configured and "http_logging_policy" not in configured, mode
        assert "Request URL" not in configured, mode


# ------------------------------------------------------------------------------- the words, pure
def test_explain_picks_the_chain_s_own_item_of_a_run_that_handled_several() -> None:
    tick = reaction.Outcome("acted", "tracker: 0 batch(es) completed, 1 advanced", {
        "scoring/a": {"status": "skipped", "reason": "batch job ja is Running", "batch": "s/d/a", "job": "ja",
                      "model": "m:1"},
        "scoring/b": {"status": "acted", "reason": "BatchScoringFailed: batch job Failed: boom", "batch": "s/d/b",
                      "job": "jb", "model": "m:1"}})
    entry = entry_from("scoring.track", "", {}, tick, at=0.0)
    both_share_the_model = {"model": ["m:1"], "scoring_batch": ["s/d/b"]}
    assert reason_for(entry, both_share_the_model) == "BatchScoringFailed: batch job Failed: boom"
    assert reason_for(entry, {"model": ["m:1"], "scoring_batch": ["s/d/a"]}) == "batch job ja is Running"
    assert reason_for(entry, {"model": ["m:9"]}) == tick.reason  # not this chain's: the run's own reason
    reconcile = entry_from("rollout.reconcile", "", {}, reaction.Outcome("skipped", "1 rollout(s) waiting", {
        "rollouts/ep": {"action": "Wait", "status": "baking", "model": "m:2", "endpoint": "ep", "reason": "",
                        "waiting": "at 10%: 1 of 10 requests served, waiting for the rest before advancing"}}),
        at=0.0)
    assert reason_for(reconcile, {"model": ["m:2"], "endpoint": ["ep"]}) == (
        "Wait -> baking: at 10%: 1 of 10 requests served, waiting for the rest before advancing")


NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


@pytest.mark.parametrize(("kind", "value", "env", "said"), [
    ("training", {"status": "collecting", "files": {"a": {}}, "first_seen": NOW - 600, "last_seen": NOW - 60},
     {"REFLEX_COMPLETION_MARKER": ""},
     "waiting until 22:17 UTC: complete once no file arrives for 300 s (1 file(s), the last at 22:12 UTC)"),
    ("training", {"status": "collecting", "files": {}, "first_seen": NOW - 900, "last_seen": NOW - 400},
     {"REFLEX_COMPLETION_MARKER": ""}, "quiet since 22:06 UTC: the next sweep completes it (0 file(s))"),
    ("training", {"status": "collecting", "files": {}, "first_seen": NOW - 86_400, "last_seen": NOW - 86_400}, {},
     "waiting for _SUCCESS since 2023-11-13 22:13 UTC (0 file(s), the last at 2023-11-13 22:13 UTC)"),
    ("training", {"status": "waiting", "reason": "no training slot: 2 of 2 running",
                  "history": [[NOW - 120, "waiting", "x"]]}, {}, "no training slot: 2 of 2 running (since 22:11 UTC)"),
    ("training", {"status": "starting", "lease": {"until": NOW + 60}}, {},
     "being started by a worker (lease until 22:14 UTC)"),
    ("training", {"status": "starting", "lease": {"until": NOW - 1}}, {},
     "its start was interrupted: the next sweep starts it again"),
    ("training", {"status": "submitted", "job": "j1", "submitted_at": NOW - 60}, {},
     "training job j1 running since 22:12 UTC"),
    ("training", {"status": "dry-run", "history": [[NOW, "dry-run", "x"]]}, {},
     "not trained: it completed during dry-run (22:13 UTC); nothing was submitted"),
    ("scoring", {"status": "complete", "history": [[NOW, "complete", "marker arrived"]]}, {},
     "complete since 22:13 UTC: the next tracker tick starts it"),
    ("scoring", {"status": "deploying", "deployment": "m-1", "history": [[NOW, "deploying", "x"]]}, {},
     "waiting for batch deployment m-1 (since 22:13 UTC)"),
    ("scoring", {"status": "no-champion", "reason": "no champion yet for model m: kept, scored once one exists",
                 "history": [[NOW, "no-champion", "x"]]}, {},
     "no champion yet for model m: kept, scored once one exists (since 22:13 UTC)"),
    ("scoring", {"status": "completed"}, {}, ""),
])
def test_what_an_unfinished_batch_waits_for(kind: str, value: dict[str, Any], env: dict[str, str],
                                             said: str) -> None:
    assert waiting_for(kind, value, make_settings(**env), NOW) == said


@pytest.mark.parametrize(("value", "note"), [
    ({"status": "baking", "history": [{"at": NOW - 60, "action": "Wait", "detail": "at 10%: 1 of 10 requests served"}]},
     "at 10%: 1 of 10 requests served (since 22:12 UTC)"),
    ({"status": "baking", "phase_started_at": NOW, "plan": {"bake_seconds": 600},
      "history": [{"at": NOW, "action": "SetTraffic", "detail": "traffic {...}"}]}, "baking until 22:23 UTC"),
    ({"status": "creating", "history": [{"at": NOW, "action": "CreateDeployment", "detail": "green beside blue"}]},
     "CreateDeployment: green beside blue (22:13 UTC)"),
    ({"status": "rolled_back", "reason": "smoke test failed: HTTP 500", "history": []},
     "smoke test failed: HTTP 500"),
    ({"status": "baking", "queued": {"model": "m", "version": "3"},
      "history": [{"at": NOW, "action": "Wait", "detail": "baking at 10% until 2023-11-14T22:23:20Z"}]},
     "superseded by m:3 (queued); baking at 10% until 2023-11-14T22:23:20Z (since 22:13 UTC)"),
])
def test_what_a_rollout_waits_for_or_why_it_ended(value: dict[str, Any], note: str) -> None:
    record = {"endpoint": "ep", "model": "m", "version": "2", "deployment": "m-v2", **value}
    assert rollout_note(Rollout.from_dict(record), NOW) == note


def test_an_unreadable_rollout_record_says_so() -> None:
    assert rollout_note(read({"status": "baking"}), NOW) == "unreadable rollout record"


def test_a_batch_with_no_usable_file_is_a_failure_naming_each_refused_file(world: World) -> None:
    raws = [world.lake.put("heart/b1/part-0.csv", b""), world.lake.put("heart/b1/notes.txt"),
            world.lake.put("heart/b1/_SUCCESS", b"")]
    assert [world.deliver(raw).status for raw in raws][-1] == "skipped"
    code, result = cli_json(world, "status")
    [failed] = result["failures"]
    assert code == 0 and (failed["kind"], failed["id"], failed["status"]) == (
        "training", f"{world.lake.name}/heart/b1", "skipped")
    assert failed["reason"].startswith("empty batch: no usable file (2 rejected): notes.txt: unreadable format")
    assert failed["reason"].endswith("; part-0.csv: zero bytes")


# ------------------------------------------------------------------------------ on the local stack
@pytest.fixture
def live(tmp_path: Path, blob_service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    yield from live_stack(tmp_path / "run", monkeypatch.setenv)  # blob_service: fails clearly without Azurite


@pytest.mark.stack
@pytest.mark.timeout(600)
def test_on_the_stack_a_batch_without_the_label_fails_and_status_and_explain_say_why(live: LiveStack) -> None:
    """Real processes: the host starts training, the job runner runs jobs/train/train.py, which refuses the
    data; the failure reaches `status` and `explain` with the script's own error line first."""
    container = live.deps.platform.blobs.get_container_client(live.deps.settings.data_container)
    rows = [{k: v for k, v in row.items() if k != LABEL} for row in generate(60, seed=3)]
    container.upload_blob("heart/nolabel/part-0.csv", to_csv_bytes(rows))
    container.upload_blob("heart/nolabel/_SUCCESS", b"")
    failed = wait_for("TrainingFailed", lambda: live.published("TrainingFailed"), timeout=300)
    job = failed[0]["data"]["job"]

    out = io.StringIO()
    assert main(["--json", "status"], deps=live.deps, stdout=out) == 0
    [failure] = [f for f in json.loads(out.getvalue())["failures"] if f["kind"] == "training"]
    assert failure["job"] == job and failure["id"].endswith("/heart/nolabel")
    assert failure["reason"].startswith(f"job failed: train.py: error: label column '{LABEL}' not found"), failure
    assert "(training script exited with code 2; log: " in failure["reason"]
    out = io.StringIO()
    assert main(["explain", job], deps=live.deps, stdout=out) == 0
    assert f"training failed: {failure['reason']}" in out.getvalue()
