"""`python -m reflex` in-process on Azurite state + ledger and the fake platform: every command and its bad input.

The chain tests drive the real reactions (tests/real_chain.py) and look at the result only through the CLI.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reflex.cli import main
from shared.core import reaction
from shared.core.deps import Deps, reset_deps
from shared.core.errors import PermanentError
from shared.core.ledger import REF_KINDS, BlobLedger
from shared.core.settings import reset_cache
from tests.conftest import Clock, make_deps, make_settings
from tests.real_chain import ENDPOINT, MODEL, Chain, World, make_world

FLAKY = "t.flaky"


@pytest.fixture(autouse=True)
def _handlers() -> Iterator[None]:
    def flaky(payload: Any, deps: Any) -> reaction.Outcome:
        if deps.state.get("fixture/fixed") is None:
            raise PermanentError("model registry is misconfigured")
        if not deps.state.claim(f"claims/{FLAKY}/{payload['n']}"):
            return reaction.Outcome("duplicate", f"item {payload['n']} already done", {"job": f"job-{payload['n']}"})
        return reaction.Outcome("acted", f"item {payload['n']} done", {"job": f"job-{payload['n']}"})

    reaction.HANDLERS[FLAKY] = flaky
    yield
    reaction.HANDLERS.pop(FLAKY, None)


@pytest.fixture
def world(container_factory: Callable[[str], Any], clock: Clock) -> World:
    return make_world(container_factory, clock, REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1")


def cli(deps: Deps | None, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), deps=deps, stdout=out)
    return code, out.getvalue()


def cli_json(deps: Deps | None, *argv: str) -> tuple[int, dict[str, Any]]:
    code, text = cli(deps, "--json", *argv)
    return code, json.loads(text)


def lineage(chain: Chain) -> dict[str, list[str]]:
    """The whole chain `explain` must find, in chain order: exactly this batch's uploads to the endpoint."""
    dataset, batch = chain.batch.split("/")[1:]
    return {"blob": chain.blobs, "batch": [chain.batch], "data": [f"{dataset}:{batch}"], "job": [chain.job],
            "model": [chain.model], "rollout": [f"{ENDPOINT}/{chain.model}"], "deployment": [chain.deployment],
            "endpoint": [ENDPOINT]}


def lineage_table(text: str) -> list[tuple[str, str]]:
    """The (kind, id) rows of the human `explain` output's lineage table (a blank kind repeats the one above)."""
    section = text.split("lineage (triggering data first):\n", 1)[1].split("\n\n", 1)[0]
    rows: list[tuple[str, str]] = []
    for line in section.splitlines()[1:]:  # after the header
        cells = line.split()
        rows.append((cells[0] if len(cells) == 2 else rows[-1][0], cells[-1]))
    return rows


# ----------------------------------------------------------------------------------------------- explain
def test_explain_the_endpoint_walks_back_to_the_uploaded_blobs(world: World) -> None:
    chain = world.chain("heart/b1")
    deps = world.deps
    code, result = cli_json(deps, "explain", ENDPOINT)
    assert code == 0 and result["kind"] == "endpoint"
    assert result["serving"] == {"deployment": chain.deployment, "model": f"{MODEL}:1",
                                 "traffic": {chain.deployment: 100}}
    training_kinds = [k for k in REF_KINDS if not k.startswith("scoring_")]  # nothing was scored
    assert list(result["lineage"]) == training_kinds and result["lineage"] == lineage(chain)
    reactions = [e["reaction"] for e in result["entries"]]
    assert reactions[:5] == ["data.arrival"] * 3 + ["registration.run_event", "rollout.model_registered"]
    assert set(reactions[5:]) == {"rollout.reconcile"}  # every tick that advanced this rollout
    assert result["tags"][f"model {MODEL}:1"]["reflex.parent"] == chain.job
    code, text = cli(deps, "explain", ENDPOINT)
    assert code == 0
    assert lineage_table(text) == [(kind, ident) for kind, ids in lineage(chain).items() for ident in ids]
    assert "Promote -> promoted" in text  # a reconcile tick's line says what it did to this chain's rollout


def test_explain_reads_a_ledger_rolled_over_into_parts_and_operator_notes_land_in_the_current_part(
        world: World) -> None:
    container = world.deps.ledger._container
    world.deps.ledger = BlobLedger(container, world.clock, max_blocks=2)  # parts of 2 lines
    chain = world.chain("heart/b1")
    parts = [b.name for b in container.list_blobs(name_starts_with="ledger/")]
    assert len(parts) >= 3 and all(".jsonl" in p for p in parts)
    code, result = cli_json(world.deps, "explain", ENDPOINT)
    assert code == 0 and result["lineage"] == lineage(chain)
    reactions = [e["reaction"] for e in result["entries"]]  # oldest first, across every part
    assert reactions[:5] == ["data.arrival"] * 3 + ["registration.run_event", "rollout.model_registered"]
    code, _ = cli_json(world.deps, "pause", "--why", "maintenance")
    assert code == 0
    newest = next(iter(world.deps.ledger.entries()))
    assert newest["reaction"] == "operator.pause" and newest["decision"]["why"] == "maintenance"


@pytest.mark.parametrize("which", ["model", "job", "blob", "blob path", "marker", "batch", "data", "rollout",
                                   "deployment", "event"])
def test_explain_from_each_kind_of_id_finds_the_whole_chain(world: World, which: str) -> None:
    chain = world.chain("heart/b1")
    registration = next(e for e in world.deps.ledger.entries() if e["reaction"] == "registration.run_event")
    ids = {"model": chain.model, "job": chain.job, "blob": chain.blobs[1],
           "blob path": chain.blobs[0].split("devstoreaccount1/")[1], "marker": chain.blobs[-1],
           "batch": chain.batch, "data": "heart:b1", "rollout": f"{ENDPOINT}/{chain.model}",
           "deployment": chain.deployment, "event": registration["event_id"]}
    code, result = cli_json(world.deps, "explain", ids[which])
    assert code == 0 and result["kind"] == {"blob path": "blob", "marker": "blob"}.get(which, which), result
    assert result["lineage"] == lineage(chain)


def test_an_endpoint_is_explained_by_the_model_it_serves_now_and_only_that_batch(world: World) -> None:
    first = world.chain("heart/b1")
    late = world.lake.put("heart/b1/part-9.csv")  # after the marker: recorded, never trained on
    assert world.deliver(late).status == "skipped"
    second = world.chain("heart/b2", auc=0.95)
    code, now = cli_json(world.deps, "explain", ENDPOINT)
    assert code == 0 and now["serving"]["model"] == f"{MODEL}:2" and now["lineage"] == lineage(second)
    code, before = cli_json(world.deps, "explain", first.blobs[0])  # forward from b1: not through the endpoint
    assert code == 0 and before["lineage"] == lineage(first)
    code, alone = cli_json(world.deps, "explain", late["data"]["url"])
    assert code == 0 and alone["lineage"] == {"blob": [late["data"]["url"]]}
    assert "late file" in alone["entries"][0]["reason"]


def test_a_sweep_that_starts_two_batches_keeps_their_chains_apart(container_factory: Callable[[str], Any],
                                                                  clock: Clock) -> None:
    world = make_world(container_factory, clock, REFLEX_COMPLETION_MARKER="", REFLEX_QUIET_SECONDS="60")
    a, b = (world.lake.put_many([f"heart/{batch}/part-{i}.csv" for i in range(2)]) for batch in ("a", "b"))
    assert [world.deliver(raw).status for raw in a + b] == ["acted"] * 4
    clock.advance(61)
    swept = world.run("data.sweep", {"past_due": False}, "")
    assert swept.status == "acted" and swept.details["started"] == 2
    jobs = {p.data_version: name for name, p in world.platform.job_requests.items()}
    for batch, raws in (("a", a), ("b", b)):
        code, result = cli_json(world.deps, "explain", jobs[batch])
        assert code == 0 and result["lineage"] == {"blob": [r["data"]["url"] for r in raws],
                                                   "batch": [f"{world.lake.name}/heart/{batch}"],
                                                   "data": [f"heart:{batch}"], "job": [jobs[batch]]}


def test_explain_bad_input(world: World) -> None:
    deps = world.deps
    code, result = cli_json(deps, "explain", "nothing-here")
    assert code == 2 and "ledger is empty" in result["message"]
    world.chain("heart/b1")
    code, result = cli_json(deps, "explain", "no-such-job")
    assert code == 2 and "no ledger entry" in result["message"]
    code, text = cli(deps, "explain", f"{MODEL}:99")
    assert code == 2 and text.startswith("error:")


# ------------------------------------------------------------------------------------------------ status
def test_status_shows_endpoints_rollouts_batches_failures_and_the_switches(world: World) -> None:
    deps = world.deps
    first = world.chain("heart/b1")
    world.chain("heart/b2", auc=0.95, upto="rolling")
    rollout = world.roll_until_split()
    assert world.deliver(world.lake.put("heart/b3/part-0.csv")).status == "acted"  # collecting, no marker yet
    reaction.run(FLAKY, {"n": 1}, event_id="ev-flaky", deps=deps)
    code, result = cli_json(deps, "status")
    assert code == 0
    [endpoint] = result["endpoints"]
    traffic = world.platform.get_endpoint(ENDPOINT).traffic
    assert sorted((d["name"], d["model"], d["state"], d["traffic"]) for d in endpoint["deployments"]) == sorted([
        (first.deployment, f"{MODEL}:1", "Succeeded", traffic[first.deployment]),
        (rollout.deployment, f"{MODEL}:2", "Succeeded", traffic[rollout.deployment])])
    assert [(r["model"], r["version"], r["status"]) for r in result["rollouts"]] == [(MODEL, "2", rollout.status)]
    [pending] = result["pending_batches"]  # b1 and b2 are trained or training
    assert pending["key"] == f"arrivals/{world.lake.name}/heart/b3" and list(pending["files"]) == ["part-0.csv"]
    assert result["dead_letters"] == 1 and "misconfigured" in result["recent_failures"][0]["error"]
    assert result["automation"]["paused"] is False and result["local_host"]["up"] is False
    code, text = cli(deps, "status")
    assert code == 0 and f"{traffic[rollout.deployment]}%" in text and rollout.status in text and "running" in text


# ---------------------------------------------------------------------------------- dead letters, replay
def test_a_dead_lettered_run_event_is_replayed_to_completion_once_its_cause_is_fixed(world: World) -> None:
    deps, platform = world.deps, world.platform
    raws = world.upload("heart/b1")
    job = str([world.deliver(raw) for raw in raws][-1].details["job"])
    # the Functions identity lacks the role to register models: Azure ML refuses both deliveries of the event
    platform.inject("register_model", PermanentError(
        "AuthorizationFailed: the client has no permission to perform action "
        "'Microsoft.MachineLearningServices/workspaces/models/versions/write'"), times=2)
    run_completed = world.finish(job, 0.9)
    failed = [world.run("registration.run_event", run_completed, run_completed["id"]) for _ in range(2)]
    # one dead letter per event id (#18): the redelivery fails the same way and is told it is already kept
    assert [o.status for o in failed] == ["dead-lettered", "duplicate"] and not platform.models
    code, listed = cli_json(deps, "dead-letters")
    letters = listed["dead_letters"]
    assert code == 0 and [x["reaction"] for x in letters] == ["registration.run_event"]
    assert all("AuthorizationFailed" in x["error"] and x["event_id"] == run_completed["id"] for x in letters)
    # the operator assigns the role; Azure ML now accepts the registration (the letter is found by its event id)
    code, result = cli_json(deps, "replay", run_completed["id"])
    assert code == 0 and result["replayed"][0]["status"] == "acted"
    assert list(platform.models) == [(MODEL, "1")] and platform.models[(MODEL, "1")].job_name == job
    assert deps.state.dead_letters() == [] and platform.calls["register_model"] == 3
    assert [e.type for e in deps.publisher.sent].count("Reflex.ModelRegistered") == 1
    # the chain goes on from the replayed registration; explain shows the failures on the way
    model_event = world.last_event("ModelRegistered")
    assert world.run("rollout.model_registered", model_event, model_event["id"]).status == "acted"
    assert world.roll_out().status == "done"
    code, result = cli_json(deps, "explain", ENDPOINT)
    assert code == 0 and result["lineage"]["blob"] == [r["data"]["url"] for r in raws]
    assert result["lineage"]["job"] == [job] and result["lineage"]["model"] == [f"{MODEL}:1"]
    assert [e["status"] for e in result["entries"] if e["reaction"] == "registration.run_event"] == [
        "dead-lettered", "duplicate", "acted"]


def test_a_failed_training_submission_is_replayed_after_the_fix(world: World) -> None:
    """The compute is missing: the batch's submission fails permanently and its marker is dead-lettered;
    redeliveries stay duplicates. The operator creates the compute and replays: the batch trains."""
    deps, platform = world.deps, world.platform
    platform.inject("submit_training", PermanentError("compute cpu-cluster does not exist"))
    outcomes = [world.deliver(raw) for raw in world.upload("heart/b9")]
    assert outcomes[-1].status == "dead-lettered" and not platform.jobs
    (letter,) = cli_json(deps, "dead-letters")[1]["dead_letters"]
    code, result = cli_json(deps, "replay", letter["id"])
    assert code == 0 and result["replayed"][0]["status"] == "acted", result
    assert len(platform.jobs) == 1 and deps.state.dead_letters() == []


def test_replay_before_the_fix_fails_again_and_keeps_one_letter(world: World) -> None:
    deps = world.deps
    out = reaction.run(FLAKY, {"n": 7}, event_id="ev-7", deps=deps)
    assert out.status == "dead-lettered"
    code, listed = cli_json(deps, "dead-letters")
    [letter] = listed["dead_letters"]
    assert code == 0 and letter["error_type"] == "PermanentError" and letter["payload"] == {"n": 7}
    code, result = cli_json(deps, "replay", letter["id"])  # cause not fixed: fails again, one letter remains
    assert code == 1 and result["replayed"][0]["status"] == "dead-lettered"
    assert len(deps.state.dead_letters()) == 1
    deps.state.create("fixture/fixed", {"ok": True})
    code, text = cli(deps, "replay", "ev-7")  # by event id
    assert code == 0 and "done: item 7 done" in text
    assert deps.state.dead_letters() == []
    assert [e["status"] for e in deps.ledger.find("job", "job-7")] == ["acted"]
    notes = [e for e in deps.ledger.entries() if e["reaction"] == "operator.replay"]
    assert [n["status"] for n in notes] == ["acted", "dead-lettered"] and notes[0]["decision"]["by"]


def test_replay_all_replays_everything(world: World) -> None:
    deps = world.deps
    deps.state.create("fixture/fixed", {"ok": True})
    assert reaction.run(FLAKY, {"n": 1}, event_id="ev-1", deps=deps).status == "acted"
    deps.state.dead_letter(FLAKY, {"n": 1}, "timeout talking to the registry", event_id="ev-1")
    deps.state.dead_letter(FLAKY, {"n": 2}, "timeout talking to the registry", event_id="ev-2")
    code, result = cli_json(deps, "replay", "--all")
    assert code == 0
    assert {(r["event_id"], r["status"]) for r in result["replayed"]} == {("ev-1", "duplicate"), ("ev-2", "acted")}
    assert deps.state.dead_letters() == []
    code, text = cli(deps, "replay", "--all")
    assert code == 0 and "no dead-lettered events" in text


def test_replay_bad_input(world: World) -> None:
    deps = world.deps
    code, result = cli_json(deps, "replay", "deadletters/nope")
    assert code == 2 and "no dead letter" in result["message"]
    code, _ = cli(deps, "replay")
    assert code == 2
    deps.state.dead_letter("gone.reaction", {}, "x", event_id="ev-x")
    code, result = cli_json(deps, "replay", "ev-x")
    assert code == 1 and result["replayed"][0]["status"] == "error" and len(deps.state.dead_letters()) == 1
    cli(deps, "pause", "--why", "incident", "--by", "ops")
    code, text = cli(deps, "replay", "ev-x")
    assert code == 1 and "resume" in text


# ------------------------------------------------------------------------------ pause, resume, dry-run
def test_pause_holds_every_reaction_and_resume_replays_them_with_nothing_lost(world: World) -> None:
    deps, platform = world.deps, world.platform
    first = world.chain("heart/b1", upto="registered")  # its ModelRegistered not delivered yet
    model_event = world.last_event("ModelRegistered")
    b2 = [world.deliver(raw) for raw in world.upload("heart/b2")]
    run_completed = world.finish(str(b2[-1].details["job"]), 0.95)  # its RunCompleted not delivered yet
    code, _ = cli(deps, "pause", "--why", "bad data upstream", "--by", "alice")
    assert code == 0
    before = (set(platform.jobs), set(platform.models), set(platform.endpoints))
    b3_uploads = world.upload("heart/b3")
    held = [world.deliver(raw) for raw in b3_uploads]
    held.append(world.run("registration.run_event", run_completed, run_completed["id"]))
    held.append(world.run("rollout.model_registered", model_event, model_event["id"]))
    timers = [world.run("data.sweep", {"past_due": False}, ""), world.tick()]
    assert [o.status for o in held] == ["held"] * 5 and [o.status for o in timers] == ["skipped"] * 2
    assert (set(platform.jobs), set(platform.models), set(platform.endpoints)) == before
    code, status = cli_json(deps, "status")
    assert status["automation"]["paused"] is True and status["automation"]["by"] == "alice" and status["held"] == 5
    code, result = cli_json(deps, "resume", "--why", "fixed upstream", "--by", "bob")
    assert code == 0 and deps.state.keys("held/") == []
    replayed = {(r["reaction"], r["event_id"]): r["status"] for r in result["replayed"]}
    held_ids = {e["event_id"] for e in deps.ledger.entries() if e["status"] == "held"}
    assert {event_id for _, event_id in replayed} == held_ids and len(replayed) == 5
    assert set(replayed.values()) <= {"acted", "duplicate"}  # files after their marker are already in its manifest
    assert replayed[("registration.run_event", run_completed["id"])] == "acted"
    assert replayed[("rollout.model_registered", model_event["id"])] == "acted"
    # nothing lost: b3 trained on both its files, b2's model registered, model 1's rollout under way
    [job3] = [n for n, r in platform.job_requests.items() if r.data_version == "b3"]
    assert set(platform.models) == {(MODEL, "1"), (MODEL, "2")} and world.rollout().model == MODEL
    assert world.rollout().version == first.model.split(":")[1]
    code, b3 = cli_json(deps, "explain", job3)
    assert code == 0 and sorted(b3["lineage"]["blob"]) == sorted(raw["data"]["url"] for raw in b3_uploads)
    notes = {e["reaction"]: e["decision"] for e in deps.ledger.entries() if e["reaction"].startswith("operator.")}
    assert notes["operator.pause"] == {"by": "alice", "why": "bad data upstream"}
    assert notes["operator.resume"] == {"by": "bob", "why": "fixed upstream"}
    code, result = cli_json(deps, "resume")  # nothing held: fine
    assert code == 0 and result["replayed"] == []


def test_resume_cannot_override_the_paused_app_setting(clock: Clock) -> None:
    deps = make_deps(make_settings(REFLEX_PAUSED="true"), clock=clock)
    code, result = cli_json(deps, "resume", "--by", "bob")
    assert code == 1 and result["source"] == "settings"


def test_dry_run_switch(world: World) -> None:
    deps = world.deps
    code, result = cli_json(deps, "dry-run", "on", "--why", "rehearsal", "--by", "carol")
    assert code == 0 and result["dry_run"] is True
    code, status = cli_json(deps, "status")
    assert status["automation"]["dry_run"] is True
    code, result = cli_json(deps, "dry-run", "off")
    assert code == 0 and result["dry_run"] is False
    assert [e["decision"]["dry_run"] for e in deps.ledger.entries() if e["reaction"] == "operator.dry_run"] == [
        False, True]


# ------------------------------------------------------------------------------------------- rollback
# ------------------------------------------------------------------------------------- stack not running
@pytest.fixture
def clean_env() -> Iterator[None]:
    saved = dict(os.environ)
    reset_cache()
    reset_deps()
    yield
    os.environ.clear()
    os.environ.update(saved)
    reset_cache()
    reset_deps()


def test_storage_not_running_names_it_and_how_to_start_it(clean_env: None) -> None:
    os.environ["AzureWebJobsStorage"] = (  # noqa: SIM112 - the Functions host spells it so"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
                                         "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOt"
                                         "r/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;")
    code, result = cli_json(None, "dead-letters")
    assert code == 3 and result["part"] == "Azurite (storage)" and "make stack" in result["message"]


def test_mlflow_not_running_names_it(clean_env: None) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:1"
    os.environ["REFLEX_STATE_CONTAINER"] = "reflex-cli-test-state"
    code, text = cli(None, "status")
    assert code == 3 and "MLflow tracking server" in text and "make stack" in text


def test_rollback_through_the_rollout_flow_restores_the_previous_traffic(world: World) -> None:
    deps, platform = world.deps, world.platform
    first = world.chain("heart/b1")                          # model 1 serves 100%
    second = world.chain("heart/b2", auc=0.95, upto="rolling")  # model 2's rollout starts
    new = world.roll_until_split()
    assert new.ref == second.model
    code, result = cli_json(deps, "rollback", ENDPOINT, "--why", "latency", "--by", "dave")
    assert code == 0 and result["status"] == "acted", result
    ep = platform.get_endpoint(ENDPOINT)
    assert ep is not None and ep.traffic[first.deployment] == 100 and not ep.traffic.get(new.deployment)
    record = world.rollout()
    assert record is not None and record.status == "rolled_back" and "dave" in record.reason
    code, result = cli_json(deps, "rollback", ENDPOINT, "--why", "again")
    assert code == 2 and "nothing in progress" in result["message"]
