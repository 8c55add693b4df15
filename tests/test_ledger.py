"""The lineage ledger: refs extraction (pure), append blobs on Azurite, queries, concurrency, a full chain."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from shared.core import reaction
from shared.core.ledger import MAX_BLOCKS, BlobLedger, MemoryLedger, entry_from, fit, items, matches, refs_from
from shared.core.state import BlobStateStore
from shared.rollout.flow import rollout_id
from tests.conftest import Clock, make_deps
from tests.real_chain import ENDPOINT, MODEL, make_world

DAY = 86_400
BLOB_URL = "http://127.0.0.1:10000/devstoreaccount1/c/d/b/x.csv"
DELIVERY = {"id": "e-blob", "eventType": "Microsoft.Storage.BlobCreated", "subject": "/blobServices/default/"
            "containers/c/blobs/d/b/x.csv", "eventTime": "2024-06-01T00:00:00Z", "dataVersion": "",
            "data": {"api": "PutBlob", "url": BLOB_URL, "eTag": '"0x1"', "contentLength": 10}}


@pytest.fixture
def store_and_ledger(container_factory: Callable[[str], Any], clock: Clock) -> tuple[BlobStateStore, BlobLedger]:
    container = container_factory("ledger")
    return BlobStateStore(container), BlobLedger(container, clock)


# ------------------------------------------------------------------------------------------- pure parts
def test_refs_accept_the_kinds_and_the_gate_s_model_version() -> None:
    refs = refs_from({"job": "j1", "model": "m", "model_version": 3, "data": "d:2",
                      "blob": ["https://a/c/x.csv", "https://a/c/y.csv"], "batch": "c/d/b1",
                      "endpoint": "ep", "deployment": "green", "rollout": "ep/m:3",
                      "dead_letter": "deadletters/x", "score": 0.9})
    assert refs == {"job": ["j1"], "model": ["m:3"], "data": ["d:2"], "blob": ["https://a/c/x.csv", "https://a/c/y.csv"],
                    "batch": ["c/d/b1"], "endpoint": ["ep"], "deployment": ["green"], "rollout": ["ep/m:3"],
                    "dead_letter": ["deadletters/x"]}
    assert refs_from({"model": "m", "model_version": "4"}) == {"model": ["m:4"]}
    # keys no reaction emits are no refs: they stay in the decision
    names = {"job_name": "j", "model_ref": "m:1", "blob_url": "https://a/c/z.csv", "rollout_key": "rollouts/ep"}
    assert refs_from(names) == {}
    line = entry_from("rollout.reconcile", "", {}, reaction.Outcome("acted", "", names), at=0.0)
    assert line["refs"] == {} and line["decision"] == names
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
    assert refs_from({}, DELIVERY) == {"blob": [BLOB_URL]}
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


def test_scoring_lines_name_scoring_things_apart_from_training_ones() -> None:
    """The same detail keys in a `scoring.*` line are the scoring batch, job and output; the batch endpoint and
    deployment stay in the decision; the model is the model that scored."""
    tracked = reaction.Outcome("acted", "BatchScoringFailed: batch job Failed", {
        "batch": "score/p/s1", "job": "reflex-score-1", "model": "m:2", "output": "azureml://o/1/",
        "endpoint": "reflex-batch", "deployment": "m-2", "record": "scoring/score/p/s1"})
    entry = entry_from("scoring.track", "", {"past_due": False}, tracked, at=0.0)
    assert entry["refs"] == {"scoring_batch": ["score/p/s1"], "scoring_job": ["reflex-score-1"], "model": ["m:2"],
                             "scoring_output": ["azureml://o/1/"]}
    assert entry["decision"] == {"endpoint": "reflex-batch", "deployment": "m-2", "record": "scoring/score/p/s1"}
    delivered = entry_from("scoring.blob", "e1", DELIVERY, reaction.Outcome("acted", "recorded", {"batch": "c/d/b"}),
                           at=0.0)
    assert delivered["refs"] == {"scoring_blob": [BLOB_URL], "scoring_batch": ["c/d/b"]}
    training = entry_from("data.arrival", "e1", DELIVERY, reaction.Outcome("acted", "recorded", {
        "batch": "c/d/b", "output": "x"}), at=0.0)
    assert training["refs"] == {"blob": [BLOB_URL], "batch": ["c/d/b"]} and training["decision"] == {
        "output": "x"}


def test_a_batch_named_by_its_arrival_record_key_is_that_batch() -> None:
    assert refs_from({"batch": ["arrivals/c/d/b1", "c/d/b1"]}) == {"batch": ["c/d/b1"]}


def test_explain_knows_every_kind_the_ledger_records() -> None:
    from reflex.explain import PRIORITY
    from shared.core.ledger import REF_KINDS

    assert sorted(PRIORITY) == sorted([*REF_KINDS, "event"])


def test_items_pair_each_item_of_a_run_with_its_refs_in_the_run_s_scope() -> None:
    tick = reaction.Outcome("skipped", "tracker", {
        "advanced": 0, "scoring/a": {"status": "skipped", "reason": "batch job j1 is Queued", "batch": "s/d/a",
                                     "job": "j1", "model": "m:1"},
        "links": [{"batch": "s/d/a", "job": "j1", "model": "m:1"}]})
    entry = entry_from("scoring.track", "", {}, tick, at=0.0)
    [(refs, item)] = items(entry)
    assert refs == {"scoring_batch": ["s/d/a"], "scoring_job": ["j1"], "model": ["m:1"]}
    assert item["reason"] == "batch job j1 is Queued" and entry["links"] == [refs]


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


# ------------------------------------------------------------------------- rolling over into parts
def _line(day: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {"at": f"{day}T00:00:00.000Z", "reaction": "r", "event_id": event_id, "refs": {}, **extra}


def _blocks(container: Any) -> dict[str, int]:
    """Committed blocks of every ledger blob, by name."""
    return {b.name: container.get_blob_client(b.name).get_blob_properties().append_blob_committed_block_count
            for b in container.list_blobs(name_starts_with="ledger/")}


def test_a_full_part_rolls_over_to_the_next_and_readers_see_every_part_newest_first(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    container = container_factory("ledger")
    ledger = BlobLedger(container, clock, max_blocks=3)
    assert BlobLedger(container, clock).max_blocks == MAX_BLOCKS == 50_000
    for i in range(8):
        ledger.append(_line("2023-11-13", f"y{i}"))  # yesterday: one part of 8 lines would be over the limit
    for i in range(11):
        ledger.append(_line("2023-11-14", f"t{i}", refs={"job": [f"j{i % 2}"]}))
    assert _blocks(container) == {
        "ledger/2023-11-13.jsonl": 3, "ledger/2023-11-13.1.jsonl": 3, "ledger/2023-11-13.2.jsonl": 2,
        "ledger/2023-11-14.jsonl": 3, "ledger/2023-11-14.1.jsonl": 3, "ledger/2023-11-14.2.jsonl": 3,
        "ledger/2023-11-14.3.jsonl": 2}
    assert sorted(ledger._days()) == ["2023-11-13", "2023-11-14"]
    today = [f"t{i}" for i in reversed(range(11))]
    assert [e["event_id"] for e in ledger.entries()] == today + [f"y{i}" for i in reversed(range(8))]
    assert [e["event_id"] for e in ledger.entries(days=1)] == today
    assert [e["event_id"] for e in ledger.find("job", "j1")] == [f"t{i}" for i in (9, 7, 5, 3, 1)]
    # a fresh writer (another process) finds the current part once and fills it before moving on
    other = BlobLedger(container, clock, max_blocks=3)
    other.append(_line("2023-11-14", "t11"))
    other.append(_line("2023-11-14", "t12"))
    assert _blocks(container)["ledger/2023-11-14.3.jsonl"] == 3
    assert _blocks(container)["ledger/2023-11-14.4.jsonl"] == 1
    # ...and when the highest part is already full it starts the next one without adding to it
    third = BlobLedger(container, clock, max_blocks=3)
    third.append(_line("2023-11-13", "y8"))  # 2023-11-13.2 had 2 blocks: now 3 (full)
    BlobLedger(container, clock, max_blocks=3).append(_line("2023-11-13", "y9"))
    assert _blocks(container)["ledger/2023-11-13.2.jsonl"] == 3
    assert _blocks(container)["ledger/2023-11-13.3.jsonl"] == 1
    assert [e["event_id"] for e in ledger.entries()][:3] == ["t12", "t11", "t10"]


def test_an_append_the_service_refuses_on_a_closed_part_is_retried_on_the_next(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    """A writer still on a part that the service refuses (full at 50,000 blocks, or sealed) loses no line."""
    container = container_factory("ledger")
    stale, other = BlobLedger(container, clock), BlobLedger(container, clock)
    stale.append(_line("2023-11-14", "a"))
    container.get_blob_client("ledger/2023-11-14.jsonl").seal_append_blob()  # no append accepted any more
    stale.append(_line("2023-11-14", "b"))   # refused (409 BlobIsSealed) -> part 1
    other.append(_line("2023-11-14", "c"))   # a new writer sees the sealed part and starts on part 1
    stale.append(_line("2023-11-14", "d"))
    assert _blocks(container) == {"ledger/2023-11-14.jsonl": 1, "ledger/2023-11-14.1.jsonl": 3}
    assert [e["event_id"] for e in stale.entries()] == ["d", "c", "b", "a"]


def test_concurrent_writers_across_part_boundaries_lose_nothing_and_write_nothing_twice(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    container = container_factory("ledger")
    writers, per_writer, limit = 6, 12, 5
    ledgers = [BlobLedger(container, clock, max_blocks=limit) for _ in range(writers)]  # several workers
    errors: list[BaseException] = []
    start = threading.Barrier(writers * 2)

    def write(w: int, ledger: BlobLedger) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                ledger.append(_line("2023-11-14", f"{w}-{i:02d}", refs={"job": [f"j{w}"]}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # two threads per BlobLedger: a worker's own threads share its remembered part
    threads = [threading.Thread(target=write, args=(w, ledgers[w % writers])) for w in range(writers * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = writers * 2 * per_writer
    ids = [e["event_id"] for e in ledgers[0].entries()]
    assert len(ids) == total and set(ids) == {f"{w}-{i:02d}" for w in range(writers * 2) for i in range(per_writer)}
    for w in range(writers * 2):  # each thread's lines come back in its own order, newest first
        assert [i for i in ids if i.startswith(f"{w}-")] == [f"{w}-{i:02d}" for i in reversed(range(per_writer))]
    blocks = _blocks(container)
    # parts are numbered without gaps, and no writer left a part before it held `limit` blocks (racing writers
    # may add blocks past it: the limit below the service's 50,000 is a target, see shared/core/ledger.py)
    parts = [blocks[f"ledger/2023-11-14.{n}.jsonl" if n else "ledger/2023-11-14.jsonl"] for n in range(len(blocks))]
    assert len(parts) >= 2 and sum(parts) == total
    assert all(count >= limit for count in parts[:-1]) and parts[-1] >= 1, parts
    assert len(ledgers[3].find("job", "j3")) == per_writer


def test_a_line_larger_than_a_block_is_shrunk_with_a_marker_not_refused(
        container_factory: Callable[[str], Any], clock: Clock) -> None:
    container = container_factory("ledger")
    ledger = BlobLedger(container, clock, max_line_bytes=64 * 1024)
    huge = entry_from("data.sweep", "e-big", None, reaction.Outcome("acted", "swept", {
        "blob": [f"https://a/c/part-{i:06d}.csv" for i in range(20_000)], "job": "j1",
        "files": 20_000, "listing": ["x" * 100] * 5_000}), at=clock())
    assert len(json.dumps(huge)) > 64 * 1024
    ledger.append(huge)
    ledger.append(_line("2023-11-14", "after"))
    raw = container.get_blob_client("ledger/2023-11-14.jsonl").download_blob().readall()
    first = raw.splitlines()[0]
    assert len(first) + 1 <= 64 * 1024
    got = next(e for e in ledger.entries() if e["event_id"] == "e-big")
    assert got["truncated"]["bytes"] > 64 * 1024 and "decision" in got["truncated"]["fields"]
    assert got["decision"]["files"] == 20_000 and got["decision"]["listing"].startswith("<truncated: ")
    assert got["refs"]["job"] == ["j1"] and got["refs"]["blob"][0] == "https://a/c/part-000000.csv"
    assert 0 < len(got["refs"]["blob"]) < 20_000 and got["status"] == "acted" and got["reason"] == "swept"
    assert [e["event_id"] for e in ledger.entries()] == ["after", "e-big"]


def test_fit_keeps_small_lines_as_they_are_and_always_fits_big_ones() -> None:
    small = {"at": "2023-11-14T00:00:00.000Z", "reaction": "r", "event_id": "e", "refs": {"job": ["j"]},
             "decision": {"k": 1}}
    assert fit(small, 4096) == small and "truncated" not in fit(small, 4096)
    cases = [
        {**small, "decision": {f"k{i}": i for i in range(5_000)}},                 # many small values
        {**small, "reason": "r" * 100_000},                                          # a huge reason
        {**small, **{k: "\U0001F600" * 50_000 for k in ("reason", "reaction", "status", "event_type")}},
        {**small, "links": [{"job": [f"j{i}-{k}" for k in range(50)]} for i in range(500)]},
        {**small, "refs": {"blob": ["u" * 50_000]}, "extra": {"deep": ["x"] * 10_000}},
        {**small, **{f"key{i}": "v" * 200 for i in range(200)}},                     # many unknown keys
    ]
    for case in cases:
        out = fit(case, 4096)
        line = json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n"
        assert len(line.encode()) <= 4096, sorted(out)
        assert out["truncated"]["bytes"] > 4096 and out["truncated"]["fields"]
        assert out["at"] == small["at"] and out["event_id"] == "e"
        assert out["reaction"] == case["reaction"] or ("reaction" in out["truncated"]["fields"]
                                                       and case["reaction"].startswith(out["reaction"][:-1]))
        assert len(out["truncated"]["fields"]) == len(set(out["truncated"]["fields"]))
    with pytest.raises(ValueError):
        MemoryLedger(lambda: 0.0, max_line_bytes=100)


# ------------------------------------------------------------------------------ the runner writes it
def test_every_run_appends_exactly_one_entry_held_and_dead_lettered_included(clock: Clock) -> None:
    ledger = MemoryLedger(clock)
    deps = make_deps(state=None, clock=clock, ledger=ledger)
    reaction.run("data.arrival", {"id": "bad", "eventType": "Microsoft.Storage.BlobCreated"}, event_id="bad", deps=deps)
    from shared.core.control import write_control

    write_control(deps, by="ops", why="t", paused=True)
    reaction.run("data.arrival", DELIVERY, event_id="e2", deps=deps)
    entries = list(ledger.entries())
    assert [(e["event_id"], e["status"]) for e in entries] == [("e2", "held"), ("bad", "dead-lettered")]
    assert entries[0]["refs"]["held"] and entries[1]["refs"]["dead_letter"]
    assert entries[0]["refs"]["blob"] == [BLOB_URL]  # found from the event itself


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
