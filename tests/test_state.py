"""Durable state: the same contract on the Azurite-backed store and the in-memory one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from shared.core.state import Conflict, MemoryStateStore, StateStore, key_part


@pytest.fixture(params=["azurite", "memory"])
def store(request: pytest.FixtureRequest) -> StateStore:
    if request.param == "memory":
        return MemoryStateStore()
    return request.getfixturevalue("blob_state")


def test_claim_has_one_winner(store: StateStore) -> None:
    assert store.claim("claims/r/k1", {"by": "a"}) is True
    assert store.claim("claims/r/k1", {"by": "b"}) is False
    assert store.get("claims/r/k1").value["by"] == "a"  # type: ignore[union-attr]


def test_concurrent_claims_from_threads_one_winner(store: StateStore) -> None:
    wins: list[int] = []
    barrier = threading.Barrier(12)

    def worker(i: int) -> None:
        barrier.wait()
        if store.claim("claims/race/one", {"by": i}):
            wins.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("claims/race/one").value["by"] == wins[0]  # type: ignore[union-attr]


def test_replace_is_compare_and_swap(store: StateStore) -> None:
    first = store.create("rec/a", {"n": 1})
    assert first is not None and store.create("rec/a", {"n": 9}) is None
    second = store.replace(first, {"n": 2})
    with pytest.raises(Conflict):
        store.replace(first, {"n": 3})  # stale etag: someone else wrote since
    assert store.get("rec/a").value == {"n": 2}  # type: ignore[union-attr]
    assert second.etag != first.etag


def test_update_retries_lost_races_and_never_loses_an_increment(store: StateStore) -> None:
    def bump(value: dict[str, Any] | None) -> dict[str, Any]:
        return {"n": (value or {"n": 0})["n"] + 1}

    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        for _ in range(5):
            store.update("rec/counter", bump, attempts=50)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("rec/counter").value == {"n": 30}  # type: ignore[union-attr]


def test_update_none_leaves_record(store: StateStore) -> None:
    store.create("rec/keep", {"v": 1})
    before = store.get("rec/keep")
    after = store.update("rec/keep", lambda v: None)
    assert after == before


def test_update_reports_conflict_after_attempts(store: StateStore) -> None:
    store.create("rec/hot", {"n": 0})
    original = store._replace  # type: ignore[attr-defined]

    def always_stale(key: str, body: bytes, etag: str, **meta: Any) -> str | None:
        return None

    store._replace = always_stale  # type: ignore[method-assign]
    try:
        with pytest.raises(Conflict, match="lost 3"):
            store.update("rec/hot", lambda v: {"n": 1}, attempts=3)
    finally:
        store._replace = original  # type: ignore[method-assign]


def test_delete_with_and_without_etag(store: StateStore) -> None:
    rec = store.create("rec/d", {"x": 1})
    assert rec is not None
    newer = store.replace(rec, {"x": 2})
    assert store.delete("rec/d", rec.etag) is False  # stale
    assert store.delete("rec/d", newer.etag) is True
    assert store.delete("rec/d") is False
    assert store.get("rec/d") is None


def test_listing_by_prefix(store: StateStore) -> None:
    for k in ("rollouts/a", "rollouts/b", "arrivals/x/y/z"):
        store.create(k, {"k": k})
    assert store.keys("rollouts/") == ["rollouts/a", "rollouts/b"]
    assert [r.value["k"] for r in store.records("arrivals/")] == ["arrivals/x/y/z"]


def test_dead_letters_round_trip(store: StateStore) -> None:
    payload = {"id": "e1", "eventType": "x", "data": {"nested": [1, 2]}}
    key = store.dead_letter("rollout.model_registered", payload, ValueError("bad version"), event_id="e1",
                            context={"endpoint": "ep"})
    key2 = store.dead_letter("rollout.model_registered", payload, "second failure", event_id="e1")
    letters = store.dead_letters()
    assert {r.key for r in letters} == {key, key2}
    first = next(r for r in letters if r.key == key).value
    assert first["payload"] == payload and first["error"] == "bad version" and first["error_type"] == "ValueError"
    assert first["reaction"] == "rollout.model_registered" and first["at"].endswith("Z")
    assert first["context"] == {"endpoint": "ep"}


def test_unsafe_keys_are_refused_and_key_part_makes_them_safe(store: StateStore) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        store.get("claims/a b")
    part = key_part("ds/batch 1?")
    assert "/" not in part and " " not in part and part != key_part("ds/batch 2?")
    assert key_part("plain-name_1.csv") == "plain-name_1.csv"
    store.claim(f"claims/{part}")


def test_records_skip_deleted_between_list_and_read() -> None:
    store = MemoryStateStore()
    store.create("p/a", {})
    store.create("p/b", {})
    it = store.records("p/")
    first = next(it)
    store.delete("p/b")
    rest: list[Any] = list(it)
    assert first.key == "p/a" and rest == []


def test_blob_state_container_is_created_once(container_factory: Callable[[str], Any]) -> None:
    from shared.core.state import BlobStateStore

    container = container_factory("ensure")
    container.delete_container()
    store = BlobStateStore(container)
    store.ensure()
    store.ensure()
    assert store.claim("claims/x")


def test_a_listing_shows_each_record_s_status_without_reading_it(store: StateStore) -> None:
    store.create("work/a", {"status": "collecting", "files": {"x.csv": {}}})
    store.create("work/b", {"no": "status"})
    store.claim("work/c")
    store.update("work/a", lambda v: {**(v or {}), "status": "trained"})
    listed = store.listing("work/")
    assert [(i.key, i.status) for i in listed] == [("work/a", "trained"), ("work/b", None), ("work/c", None)]
    assert all(i.modified is not None for i in listed)
    assert [i.key for i in store.listing("nothing/")] == []
