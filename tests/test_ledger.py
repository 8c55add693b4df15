"""The lineage ledger: refs extraction (pure), append blobs on Azurite, queries, concurrency, a full chain."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from shared import reaction
from shared.ledger import BlobLedger, MemoryLedger, entry_from, matches, refs_from
from shared.rollout_flow import rollout_id
from shared.state import BlobStateStore
from tests.conftest import Clock, make_deps
from tests.real_chain import ENDPOINT, MODEL, make_world

DAY = 86_400
DELIVERY = {"name": "c/d/b/x.csv", "uri": "http://127.0.0.1:10000/devstoreaccount1/c/d/b/x.csv", "etag": "0x1",
            "length": 10}


@pytest.fixture
def store_and_ledger(container_factory: Callable[[str], Any], clock: Clock) -> tuple[BlobStateStore, BlobLedger]:
    container = container_factory("ledger")
    return BlobStateStore(container), BlobLedger(container, clock)


# ------------------------------------------------------------------------------------------- pure parts
def test_refs_accept_every_documented_alias_and_pairs() -> None:
    refs = refs_from({"job_name": "j1", "model_name": "m", "model_version": 3, "data_asset": "d:2",
                      "blobs": ["https://a/c/x.csv", "https://a/c/y.csv"], "batch_id": "c/d/b1",
                      "endpoint_name": "ep", "new_deployment": "green", "rollout_key": "rollouts/ep",
                      "dead_letter": "deadletters/x", "score": 0.9})
    assert refs == {"job": ["j1"], "model": ["m:3"], "data": ["d:2"], "blob": ["https://a/c/x.csv", "https://a/c/y.csv"],
                    "batch": ["c/d/b1"], "endpoint": ["ep"], "deployment": ["green"], "rollout": ["rollouts/ep"],
                    "dead_letter": ["deadletters/x"]}
    assert refs_from({"model": "m", "model_version": "4", "data_name": "heart", "data_version": "b2"}) == {
        "model": ["m:4"], "data": ["heart:b2"]}
    assert refs_from({"model": {"name": "m", "version": "5"}}) == {"model": ["m:5"]}
    assert refs_from({}) == {}
    # a bare model or data name is no ref (it would join every version's chain); an empty version neither
    assert refs_from({"model": "m", "data": "heart", "job": "j"}) == {"job": ["j"]}
    assert refs_from({"model": "m", "model_version": ""}) == {}


def test_refs_come_from_the_triggering_event_when_the_outcome_has_none() -> None:
    blob_event = {"id": "e1", "eventType": "Microsoft.Storage.BlobCreated", "data": {"url": "https://a/c/x.csv"}}
    run_event = {"id": "e2", "eventType": "Microsoft.MachineLearningServices.RunCompleted", "data": {"runId": "j9"}}
    model_event = {"id": "e3", "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
                   "data": {"ModelName": "m", "ModelVersion": 7}}
    assert refs_from({}, blob_event) == {"blob": ["https://a/c/x.csv"]}
    assert refs_from({}, run_event) == {"job": ["j9"]}
    assert refs_from({}, model_event) == {"model": ["m:7"]}
    assert refs_from({}, DELIVERY) == {"blob": [DELIVERY["uri"]]}
    assert refs_from({}, "not an event") == {}


def test_entry_keeps_decision_inputs_and_time() -> None:
    outcome = reaction.Outcome("skipped", "below the gate", {"job": "j1", "metric": "auc", "challenger": 0.7,
                                                             "champion": 0.8, "at": object()})
    entry = entry_from("registration", "e2", {"eventType": "X", "data": {}}, outcome, at=0.0)
    assert entry["at"] == "1970-01-01T00:00:00.000Z" and entry["event_type"] == "X"
    assert entry["refs"] == {"job": ["j1"]} and entry["decision"]["challenger"] == 0.7
    assert isinstance(entry["decision"]["at"], str)  # not JSON: stringified, never an append failure
    nested = entry_from("r", "", None, reaction.Outcome("acted", "", {"decision": {"k": 1}, "x": 2}), at=0.0)
    assert nested["decision"] == {"k": 1} and "links" not in nested


def test_links_are_groups_of_refs_found_by_matches_but_kept_apart() -> None:
    outcome = reaction.Outcome("acted", "sweep", {"started": 2, "links": [
        {"batch": "c/d/a", "job": "ja", "data": "d:a"}, {"batch": "c/d/b", "job": "jb"}, {"files": 3}]})
    entry = entry_from("data.sweep", "", {"past_due": False}, outcome, at=0.0)
    assert entry["refs"] == {} and entry["decision"] == {"started": 2}
    assert entry["links"] == [{"batch": ["c/d/a"], "data": ["d:a"], "job": ["ja"]}, {"batch": ["c/d/b"], "job": ["jb"]}]
    assert matches(entry, "job", "jb") and matches(entry, "batch", "c/d/a") and not matches(entry, "job", "jc")


def test_blob_urls_match_their_container_path_tail() -> None:
    entry = {"refs": {"blob": ["http://127.0.0.1:10000/devstoreaccount1/reflex-data/d/b/x.csv"]}, "event_id": "e"}
    assert matches(entry, "blob", "reflex-data/d/b/x.csv")
    assert not matches(entry, "blob", "d/b/y.csv")
    assert matches(entry, "event", "e") and not matches(entry, "job", "e")


# ------------------------------------------------------------------------------------ append blobs
def test_one_append_blob_per_day_queries_by_every_ref_and_days_bound(
        store_and_ledger: tuple[BlobStateStore, BlobLedger], clock: Clock) -> None:
    state, ledger = store_and_ledger
    assert list(ledger.entries()) == []
    ledger.append(entry_from("a", "e1", None, reaction.Outcome("acted", "", {"job": "j1", "blob": "u1"}),
                             at=clock()))
    clock.advance(DAY)
    ledger.append(entry_from("b", "e2", None, reaction.Outcome("acted", "", {"job": "j1", "model": "m:1"}),
                             at=clock()))
    ledger.append(entry_from("c", "e3", None, reaction.Outcome("skipped", "", {"endpoint": "ep"}), at=clock()))
    days = ledger._days()
    assert len(days) == 2
    props = ledger._container.get_blob_client(f"ledger/{days[0]}.jsonl").get_blob_properties()
    assert props.blob_type == "AppendBlob"
    assert [e["event_id"] for e in ledger.entries()] == ["e3", "e2", "e1"]  # newest first
    assert [e["event_id"] for e in ledger.find("job", "j1")] == ["e2", "e1"]
    assert [e["event_id"] for e in ledger.find("model", "m:1")] == ["e2"]
    assert [e["event_id"] for e in ledger.find("blob", "u1")] == ["e1"]
    assert [e["event_id"] for e in ledger.find("endpoint", "ep")] == ["e3"]
    assert [e["event_id"] for e in ledger.find("event", "e1")] == ["e1"]
    assert [e["event_id"] for e in ledger.find("job", "j1", days=1)] == ["e2"]  # yesterday is out of range
    assert state.keys("ledger/") == [f"ledger/{d}.jsonl" for d in sorted(days)]


def test_concurrent_appends_from_threads_lose_nothing(store_and_ledger: tuple[BlobStateStore, BlobLedger]) -> None:
    _, ledger = store_and_ledger
    threads, per_thread = 8, 15
    errors: list[BaseException] = []

    def write(t: int) -> None:
        try:
            for i in range(per_thread):
                ledger.append({"at": "2023-11-14T00:00:00.000Z", "reaction": "r", "event_id": f"{t}-{i}",
                               "refs": {"job": [f"j{t}"]}, "decision": {"pad": "x" * 200}})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    lines = ledger._day_lines("2023-11-14")
    assert len(lines) == threads * per_thread
    assert {json.loads(line)["event_id"] for line in lines} == {f"{t}-{i}" for t in range(threads)
                                                               for i in range(per_thread)}
    assert len(ledger.find("job", "j3", days=10_000)) == per_thread


def test_unreadable_lines_are_skipped_not_fatal(store_and_ledger: tuple[BlobStateStore, BlobLedger],
                                                clock: Clock) -> None:
    _, ledger = store_and_ledger
    ledger.append({"at": "2023-11-14T01:00:00.000Z", "event_id": "good", "refs": {}})
    ledger._container.get_blob_client("ledger/2023-11-14.jsonl").append_block(b"{torn line\n")
    assert [e["event_id"] for e in ledger.entries()] == ["good"]


# ------------------------------------------------------------------------------ the runner writes it
def test_every_run_appends_exactly_one_entry_held_and_dead_lettered_included(clock: Clock) -> None:
    ledger = MemoryLedger(clock)
    deps = make_deps(state=None, clock=clock, ledger=ledger)
    reaction.run("data.arrival", {"name": "", "uri": "", "etag": ""}, event_id="bad", deps=deps)
    from shared.control import write_control

    write_control(deps, by="ops", why="t", paused=True)
    reaction.run("data.arrival", DELIVERY, event_id="e2", deps=deps)
    entries = list(ledger.entries())
    assert [(e["event_id"], e["status"]) for e in entries] == [("e2", "held"), ("bad", "dead-lettered")]
    assert entries[0]["refs"]["held"] and entries[1]["refs"]["dead_letter"]
    assert entries[0]["refs"]["blob"] == [DELIVERY["uri"]]  # found from the event itself


def test_each_real_reaction_records_the_refs_that_link_the_chain(container_factory: Callable[[str], Any],
                                                                 clock: Clock) -> None:
    world = make_world(container_factory, clock)
    chain = world.chain("heart/b1")
    oldest_first = list(reversed(list(world.deps.ledger.entries())))
    refs = [(e["reaction"], e["status"], e["refs"], e.get("links")) for e in oldest_first]
    part0, part1, marker = chain.blobs
    rollout = rollout_id(world.rollout())
    group = {"model": [chain.model], "rollout": [rollout], "deployment": [chain.deployment], "endpoint": [ENDPOINT]}
    assert refs[:5] == [
        ("data.arrival", "acted", {"blob": [part0], "batch": [chain.batch]}, None),    # blob -> batch
        ("data.arrival", "acted", {"blob": [part1], "batch": [chain.batch]}, None),
        ("data.arrival", "acted", {"blob": [marker], "batch": [chain.batch], "data": ["heart:b1"],  # batch -> job
                                   "job": [chain.job]}, None),
        ("registration.run_event", "acted", {"job": [chain.job], "data": ["heart:b1"],  # job -> model
                                             "model": [chain.model]}, None),
        ("rollout.model_registered", "acted", group, None),  # model -> rollout, deployment, endpoint
    ]
    ticks = refs[5:]
    assert ticks and all(r[:3] == ("rollout.reconcile", "acted", {}) and r[3] == [group] for r in ticks)
    # the same ids are on the Azure ML assets (the tags Reflex puts there)
    assert world.platform.models[(MODEL, "1")].tags["reflex.parent"] == chain.job
    assert world.platform.jobs[chain.job].tags["reflex.event_id"] == oldest_first[2]["event_id"]
