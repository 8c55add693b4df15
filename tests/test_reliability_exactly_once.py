"""#18 item 1: exactly once per key, also concurrently, against real Azurite state.

Six threads deliver the same RunCompleted at once (Event Grid redelivers at least once, and a delivery that
times out overlaps with its retry): one registration, one `acted`, five `duplicate`, and the model's next job
gets the very next version. 32 writers on one record all succeed (the CAS backs off, jittered and bounded).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from shared.core import reaction
from shared.core.deps import Deps
from shared.core.errors import PermanentError, TransientError
from shared.core.state import BlobStateStore, Conflict, MemoryStateStore, StateStore
from shared.registration.flow import VERSION_LEASE_SECONDS, version_key
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.test_registration_flow import submit


def deliver_until_answered(event: dict[str, Any], deps: Deps, *, redeliveries: int = 50) -> reaction.Outcome:
    """One copy of `event` as Event Grid delivers it: a TransientError is answered by a redelivery."""
    for _ in range(redeliveries):
        try:
            return reaction.run("registration.run_event", event, event_id=event["id"], deps=deps)
        except TransientError:
            continue
    raise AssertionError(f"event {event['id']} still transient after {redeliveries} redeliveries")


def concurrently(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) on n threads released together by a barrier; results in index order, errors re-raised."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def deps(blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> Deps:
    return make_deps(make_settings(), state=blob_state, platform=fake_platform, clock=clock)


def test_six_concurrent_copies_of_one_run_completed_register_once(deps: Deps, fake_platform: FakePlatform) -> None:
    job = submit(fake_platform, "reflex-train-race-1")
    fake_platform.finish_job(job, metrics={"auc": 0.8, "n_test": 40})
    event = fake_platform.events[-1]
    outcomes = concurrently(6, lambda _: deliver_until_answered(event, deps))
    assert sorted(o.status for o in outcomes) == ["acted"] + ["duplicate"] * 5
    assert fake_platform.calls["register_model"] >= 1
    assert [(n, v) for (n, v) in fake_platform.models] == [("reflex-model", "1")]
    assert [e.type for e in deps.publisher.sent] == ["Reflex.ModelRegistered"]
    # the model's next job gets the very next version: nothing was moved by the copies of the first
    nxt = submit(fake_platform, "reflex-train-race-2", scored="reflex-model:1")
    fake_platform.finish_job(nxt, metrics={"auc": 0.9, "champion.auc": 0.8, "n_test": 40})
    assert deliver_until_answered(fake_platform.events[-1], deps).status == "acted"
    assert ("reflex-model", "2") in fake_platform.models


def test_32_writers_on_one_record_all_succeed(blob_state: BlobStateStore) -> None:
    """Every writer reads the same ETag first (a barrier inside the first `change`), so 31 lose the first round
    at once; each later loss means another writer won, so with the bound above the writer count all finish."""
    n = 32
    first_read = threading.Barrier(n)
    seen: set[int] = set()

    def write(i: int) -> None:
        def change(value: dict[str, Any] | None) -> dict[str, Any]:
            if i not in seen:
                seen.add(i)
                first_read.wait()
            return {"writers": sorted({*(value or {}).get("writers", []), i})}

        blob_state.update("contended/one-record", change)

    try:
        concurrently(n, write)
    except Conflict as exc:
        pytest.fail(f"a writer gave up: {exc}")
    stored = blob_state.get("contended/one-record")
    assert stored is not None and stored.value["writers"] == list(range(n))


class _AlwaysRaced(MemoryStateStore):
    """The in-memory store (same CAS semantics) where another writer always lands between read and replace."""

    def _replace(self, key: str, body: bytes, etag: str, **kwargs: Any) -> str | None:
        super()._replace(key, self._encode({"other": "writer"}), etag, **kwargs)
        return None


def test_cas_backoff_is_jittered_bounded_and_then_gives_up() -> None:
    store = _AlwaysRaced()
    slept: list[float] = []
    store.sleep = slept.append  # type: ignore[method-assign]
    store.create("r", {"n": 0})
    with pytest.raises(Conflict, match="lost 32 compare-and-swap races"):
        store.update("r", lambda v: {"n": 1})
    assert len(slept) == store.cas_attempts - 1   # no sleep after the last attempt
    for attempt, delay in enumerate(slept):
        step = min(store.cas_max_delay, store.cas_base_delay * 2**attempt)
        assert step / 2 <= delay <= step
    assert len({round(d, 6) for d in slept if d >= store.cas_max_delay / 2}) > 1  # jittered, not lock-step
    assert sum(slept) <= 27.0  # bounded: the whole wait fits inside Event Grid's 30 s delivery


def test_backoff_steps_double_up_to_the_cap() -> None:
    store = MemoryStateStore()
    store.random = lambda: 1.0  # type: ignore[method-assign]
    assert [store.backoff(a) for a in range(8)] == [0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0]
    store.random = lambda: 0.0  # type: ignore[method-assign]
    assert store.backoff(0) == 0.01 and store.backoff(20) == 0.5


def _finished(fake: FakePlatform, name: str, auc: float = 0.8) -> dict[str, Any]:
    submit(fake, name)
    fake.finish_job(name, metrics={"auc": auc, "n_test": 40})
    return fake.events[-1]


def test_a_refused_registration_leaves_nothing_that_blocks_the_next_job(deps: Deps,
                                                                       fake_platform: FakePlatform) -> None:
    first = _finished(fake_platform, "reflex-train-refused")
    fake_platform.inject("register_model", PermanentError("model reflex-model: the registry refused it"))
    assert reaction.run("registration.run_event", first, event_id=first["id"], deps=deps).status == \
        "dead-lettered"
    assert deps.state.get(version_key("reflex-model", "1")) is None  # the number went back
    nxt = _finished(fake_platform, "reflex-train-after-refusal")
    assert deliver_until_answered(nxt, deps).status == "acted"
    assert ("reflex-model", "1") in fake_platform.models  # the next job got the number, no gap


def test_a_transient_failure_keeps_the_number_for_the_retry(deps: Deps, fake_platform: FakePlatform) -> None:
    event = _finished(fake_platform, "reflex-train-throttled")
    fake_platform.inject("register_model", TransientError("throttled", retry_after=1.0), times=2)
    outcomes = [deliver_until_answered(event, deps) for _ in range(2)]
    assert [o.status for o in outcomes] == ["acted", "duplicate"]
    assert list(fake_platform.models) == [("reflex-model", "1")]


def test_a_live_claim_of_another_job_makes_the_next_wait_and_a_stale_one_is_taken_over(
        deps: Deps, fake_platform: FakePlatform, clock: Clock) -> None:
    # job A claimed 1 and crashed before registering (its claim is all that is left)
    deps.state.claim(version_key("reflex-model", "1"), {"job": "reflex-train-crashed", "since": clock()})
    event = _finished(fake_platform, "reflex-train-next")
    with pytest.raises(TransientError, match="claimed by job reflex-train-crashed"):
        reaction.run("registration.run_event", event, event_id=event["id"], deps=deps)
    clock.advance(VERSION_LEASE_SECONDS + 1)
    assert deliver_until_answered(event, deps).status == "acted"
    assert list(fake_platform.models) == [("reflex-model", "1")]
    stored = deps.state.get(version_key("reflex-model", "1"))
    assert stored is not None and stored.value["job"] == "reflex-train-next"
