"""`python -m reflex` in-process on Azurite state + ledger and the fake platform: every command and its bad input."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reflex.cli import main
from shared import reaction
from shared.deps import Deps, reset_deps
from shared.errors import PermanentError
from shared.ledger import BlobLedger
from shared.settings import reset_cache
from shared.state import BlobStateStore
from testing.fake_platform import FakePlatform
from tests import chain_handlers
from tests.chain_handlers import ARRIVAL, ENDPOINT, MODEL, blob_delivery, run_chain
from tests.conftest import Clock, make_deps, make_settings

FLAKY = "t.flaky"


@pytest.fixture(autouse=True)
def _handlers() -> Iterator[None]:
    def flaky(payload: Any, deps: Any) -> reaction.Outcome:
        if deps.state.get("fixture/fixed") is None:
            raise PermanentError("model registry is misconfigured")
        if not deps.state.claim(f"claims/{FLAKY}/{payload['n']}"):
            return reaction.Outcome("duplicate", f"item {payload['n']} already done", {"job": f"job-{payload['n']}"})
        return reaction.Outcome("acted", f"item {payload['n']} done", {"job": f"job-{payload['n']}"})

    gen = chain_handlers.install()
    next(gen)
    reaction.HANDLERS[FLAKY] = flaky
    yield
    next(gen, None)


@pytest.fixture
def env(container_factory: Callable[[str], Any], clock: Clock) -> tuple[Deps, FakePlatform]:
    container = container_factory("cli")
    platform = FakePlatform(clock=clock)
    settings = make_settings(REFLEX_ENDPOINTS=f"{MODEL}={ENDPOINT}", REFLEX_LOCAL_HOST_URL="http://127.0.0.1:1")
    deps = make_deps(settings, state=BlobStateStore(container), platform=platform, clock=clock,
                     ledger=BlobLedger(container, clock))
    return deps, platform


def cli(deps: Deps | None, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), deps=deps, stdout=out)
    return code, out.getvalue()


def cli_json(deps: Deps | None, *argv: str) -> tuple[int, dict[str, Any]]:
    code, text = cli(deps, "--json", *argv)
    return code, json.loads(text)


CHAIN = ["reflex-data/heart/b1/part-0.csv", "reflex-data/heart/b1/_SUCCESS"]


# ----------------------------------------------------------------------------------------------- explain
def test_explain_the_endpoint_walks_back_to_the_uploaded_blobs(env: tuple[Deps, FakePlatform]) -> None:
    deps, platform = env
    run_chain(deps, platform, CHAIN)
    code, result = cli_json(deps, "explain", ENDPOINT)
    assert code == 0 and result["kind"] == "endpoint"
    assert result["serving"] == {"deployment": "v1", "model": f"{MODEL}:1", "traffic": {"v1": 100}}
    lineage = result["lineage"]
    assert list(lineage) == ["blob", "batch", "data", "job", "model", "rollout", "deployment", "endpoint"]
    assert [u.split("devstoreaccount1/")[1] for u in lineage["blob"]] == CHAIN
    assert lineage["job"] == ["reflex-heart-b1"] and lineage["model"] == [f"{MODEL}:1"]
    assert [e["reaction"] for e in result["entries"]] == [ARRIVAL, ARRIVAL, "t.registration", "t.rollout"]
    assert result["tags"][f"model {MODEL}:1"]["reflex.parent"] == "reflex-heart-b1"
    code, text = cli(deps, "explain", ENDPOINT)
    assert code == 0 and "reflex-data/heart/b1/part-0.csv" in text and "t.registration" in text


@pytest.mark.parametrize("which", ["model", "job", "blob", "batch", "deployment", "event"])
def test_explain_from_each_kind_of_id_finds_the_whole_chain(env: tuple[Deps, FakePlatform], which: str) -> None:
    deps, platform = env
    outcomes = run_chain(deps, platform, CHAIN)
    ids = {"model": f"{MODEL}:1", "job": "reflex-heart-b1", "blob": blob_delivery(CHAIN[0])["uri"],
           "batch": "reflex-data/heart/b1", "deployment": "v1",
           "event": next(e for e in deps.ledger.entries() if e["reaction"] == "t.registration")["event_id"]}
    code, result = cli_json(deps, "explain", ids[which])
    assert code == 0 and result["kind"] == which, result
    assert result["lineage"]["job"] == ["reflex-heart-b1"]
    assert result["lineage"]["endpoint"] == [ENDPOINT] and result["lineage"]["model"] == [f"{MODEL}:1"]
    assert blob_delivery(CHAIN[0])["uri"] in result["lineage"]["blob"]
    assert outcomes[-1].status == "acted"


def test_explain_forward_from_a_blob_does_not_join_other_chains_through_the_endpoint(
        env: tuple[Deps, FakePlatform]) -> None:
    deps, platform = env
    run_chain(deps, platform, CHAIN)
    run_chain(deps, platform, ["reflex-data/heart/b2/_SUCCESS"])
    code, first = cli_json(deps, "explain", blob_delivery(CHAIN[0])["uri"])
    assert code == 0 and first["lineage"]["model"] == [f"{MODEL}:1"] and first["lineage"]["job"] == [
        "reflex-heart-b1"]
    code, now = cli_json(deps, "explain", ENDPOINT)
    assert now["serving"]["model"] == f"{MODEL}:2" and now["lineage"]["batch"] == ["reflex-data/heart/b2"]


def test_explain_bad_input(env: tuple[Deps, FakePlatform]) -> None:
    deps, platform = env
    code, result = cli_json(deps, "explain", "nothing-here")
    assert code == 2 and "ledger is empty" in result["message"]
    run_chain(deps, platform, CHAIN)
    code, result = cli_json(deps, "explain", "no-such-job")
    assert code == 2 and "no ledger entry" in result["message"]
    code, text = cli(deps, "explain", f"{MODEL}:99")
    assert code == 2 and text.startswith("error:")


# ------------------------------------------------------------------------------------------------ status
def test_status_shows_endpoints_rollouts_batches_failures_and_the_switches(env: tuple[Deps, FakePlatform]) -> None:
    deps, platform = env
    run_chain(deps, platform, CHAIN)
    deps.state.create(f"rollouts/{ENDPOINT}", {"status": "baking", "step": 1, "model": f"{MODEL}:2",
                                               "deployment": "v2"})
    deps.state.create("arrivals/reflex-data/heart/b3", {"status": "waiting", "blobs": ["a", "b"]})
    deps.state.create("arrivals/reflex-data/heart/b1", {"status": "submitted", "blobs": ["a"]})
    reaction.run(FLAKY, {"n": 1}, event_id="ev-flaky", deps=deps)
    code, result = cli_json(deps, "status")
    assert code == 0
    [endpoint] = result["endpoints"]
    assert endpoint["deployments"] == [{"name": "v1", "model": f"{MODEL}:1", "state": "Succeeded", "traffic": 100,
                                        "mirror": 0}]
    assert [r["step"] for r in result["rollouts"]] == [1]
    assert [p["key"] for p in result["pending_batches"]] == ["arrivals/reflex-data/heart/b3"]
    assert result["dead_letters"] == 1 and "misconfigured" in result["recent_failures"][0]["error"]
    assert result["automation"]["paused"] is False and result["local_host"]["up"] is False
    code, text = cli(deps, "status")
    assert code == 0 and "100%" in text and "baking" in text and "running" in text


# ---------------------------------------------------------------------------------- dead letters, replay
def test_replay_a_dead_letter_after_its_cause_is_fixed(env: tuple[Deps, FakePlatform]) -> None:
    deps, _ = env
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


def test_replay_of_work_already_done_says_so_and_all_replays_everything(env: tuple[Deps, FakePlatform]) -> None:
    deps, _ = env
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


def test_replay_bad_input(env: tuple[Deps, FakePlatform]) -> None:
    deps, _ = env
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
def test_pause_holds_every_reaction_and_resume_replays_them_with_nothing_lost(env: tuple[Deps, FakePlatform]) -> None:
    deps, platform = env
    deps.state.create("fixture/fixed", {"ok": True})
    code, _ = cli(deps, "pause", "--why", "bad data upstream", "--by", "alice")
    assert code == 0
    held = [reaction.run(ARRIVAL, blob_delivery(name), event_id=f"blob-{i}", deps=deps)
            for i, name in enumerate(["reflex-data/heart/b1/_SUCCESS", "reflex-data/heart/b2/_SUCCESS"])]
    held.append(reaction.run(FLAKY, {"n": 3}, event_id="ev-3", deps=deps))
    assert [o.status for o in held] == ["held"] * 3 and platform.jobs == {}
    code, status = cli_json(deps, "status")
    assert status["automation"]["paused"] is True and status["automation"]["by"] == "alice" and status["held"] == 3
    code, result = cli_json(deps, "resume", "--why", "fixed upstream", "--by", "bob")
    assert code == 0 and sorted(r["status"] for r in result["replayed"]) == ["acted"] * 3
    assert deps.state.keys("held/") == [] and set(platform.jobs) == {"reflex-heart-b1", "reflex-heart-b2"}
    assert reaction.run(FLAKY, {"n": 4}, event_id="ev-4", deps=deps).status == "acted"  # running again
    notes = {e["reaction"]: e["decision"] for e in deps.ledger.entries() if e["reaction"].startswith("operator.")}
    assert notes["operator.pause"] == {"by": "alice", "why": "bad data upstream"}
    assert notes["operator.resume"] == {"by": "bob", "why": "fixed upstream"}
    code, result = cli_json(deps, "resume")  # nothing held: fine
    assert code == 0 and result["replayed"] == []


def test_resume_cannot_override_the_paused_app_setting(clock: Clock) -> None:
    deps = make_deps(make_settings(REFLEX_PAUSED="true"), clock=clock)
    code, result = cli_json(deps, "resume", "--by", "bob")
    assert code == 1 and result["source"] == "settings"


def test_dry_run_switch(env: tuple[Deps, FakePlatform]) -> None:
    deps, _ = env
    code, result = cli_json(deps, "dry-run", "on", "--why", "rehearsal", "--by", "carol")
    assert code == 0 and result["dry_run"] is True
    code, status = cli_json(deps, "status")
    assert status["automation"]["dry_run"] is True
    code, result = cli_json(deps, "dry-run", "off")
    assert code == 0 and result["dry_run"] is False
    assert [e["decision"]["dry_run"] for e in deps.ledger.entries() if e["reaction"] == "operator.dry_run"] == [
        False, True]


# ------------------------------------------------------------------------------------------- rollback
def test_rollback_without_the_rollout_flow_marks_the_rollout_record(env: tuple[Deps, FakePlatform],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shared.rollout_flow", None)  # a version without the rollout flow
    deps, _ = env
    code, result = cli_json(deps, "rollback", ENDPOINT, "--why", "latency", "--by", "dave")
    assert code == 2 and "no rollout" in result["message"]
    deps.state.create(f"rollouts/{ENDPOINT}", {"status": "baking", "step": 1})
    code, result = cli_json(deps, "rollback", ENDPOINT, "--why", "latency", "--by", "dave")
    assert code == 0 and result["status"] == "acted"
    record = deps.state.get(f"rollouts/{ENDPOINT}")
    assert record is not None and record.value["operator_rollback"]["by"] == "dave"
    assert record.value["status"] == "baking"  # the reconciler acts on it, not the CLI
    assert deps.ledger.find("endpoint", ENDPOINT)[0]["reaction"] == "operator.rollback"


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


def test_rollback_through_the_rollout_flow_restores_the_previous_traffic(env: tuple[Deps, FakePlatform]) -> None:
    """Runs once the rollout reaction (shared/rollout_flow.py) is merged: the CLI uses its own `roll_back`."""
    flow = pytest.importorskip("shared.rollout_flow")
    machine = pytest.importorskip("shared.rollout_machine")
    deps, platform = env
    run_chain(deps, platform, CHAIN)                       # v1 serves 100%
    run_chain(deps, platform, ["reflex-data/heart/b2/_SUCCESS"])  # v2 now serves 100% (test stand-in)
    platform.set_traffic(ENDPOINT, {"v1": 50, "v2": 50})   # mid-rollout of v2
    rollout = machine.Rollout(endpoint=ENDPOINT, model=MODEL, version="2", deployment="v2",
                              plan=machine.Plan.from_dict({}) if hasattr(machine, "Plan") else None,
                              created_at=deps.clock(), status="baking", previous="v1",
                              previous_traffic={"v1": 100})
    deps.state.create(flow.rollout_key(ENDPOINT), rollout.to_dict())
    code, result = cli_json(deps, "rollback", ENDPOINT, "--why", "latency", "--by", "dave")
    assert code == 0 and result["status"] == "acted", result
    assert platform.get_endpoint(ENDPOINT).traffic["v1"] == 100
    record = deps.state.get(flow.rollout_key(ENDPOINT))
    assert record is not None and record.value["status"] == "rolled_back" and "dave" in record.value["reason"]
    code, result = cli_json(deps, "rollback", ENDPOINT, "--why", "again")
    assert code == 2 and "nothing in progress" in result["message"]
