"""The runner: every event ends as acted, skipped, held or dead-lettered; transient errors go back to the host."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.core import reaction
from shared.core.control import read_control, write_control
from shared.core.errors import PermanentError, TransientError
from shared.core.events import InvalidEvent, parse
from shared.core.ledger import MemoryLedger
from tests.conftest import make_deps, make_settings


@pytest.fixture(autouse=True)
def _handlers() -> Any:
    saved = dict(reaction.HANDLERS)

    @reaction.handler("test.echo")
    def echo(payload: Any, deps: Any) -> reaction.Outcome:
        event = parse(payload)
        if event.data.get("fail") == "permanent":
            raise PermanentError(f"model {event.subject} is unknown")
        if event.data.get("fail") == "transient":
            raise TransientError("throttled", retry_after=3)
        if event.data.get("fail") == "bug":
            raise KeyError("oops")
        return reaction.Outcome("acted", "echoed", {"subject": event.subject})

    yield
    reaction.HANDLERS.clear()
    reaction.HANDLERS.update(saved)


def _event(**data: Any) -> dict[str, Any]:
    return {"id": "ev-1", "eventType": "Test.Thing", "subject": "s1", "data": data}


def test_acted() -> None:
    out = reaction.run("test.echo", _event(), event_id="ev-1", deps=make_deps())
    assert out.status == "acted" and out.details["subject"] == "s1"


def test_permanent_error_dead_letters_with_original_payload() -> None:
    deps = make_deps()
    payload = _event(fail="permanent")
    out = reaction.run("test.echo", payload, event_id="ev-1", deps=deps)
    assert out.status == "dead-lettered" and "unknown" in out.reason
    [letter] = deps.state.dead_letters()
    assert letter.value["payload"] == payload and letter.value["error_type"] == "PermanentError"
    assert letter.key == out.details["dead_letter"]


def test_invalid_event_dead_letters_naming_the_field() -> None:
    deps = make_deps()
    out = reaction.run("test.echo", {"id": "ev-9"}, event_id="ev-9", deps=deps)
    assert out.status == "dead-lettered" and "eventType" in out.reason
    assert deps.state.dead_letters()[0].value["error_type"] == InvalidEvent.__name__


def test_transient_error_is_reraised_and_nothing_dead_lettered() -> None:
    deps = make_deps()
    with pytest.raises(TransientError):
        reaction.run("test.echo", _event(fail="transient"), event_id="ev-1", deps=deps)
    assert deps.state.dead_letters() == []


def test_unexpected_exception_is_dead_lettered_not_raised() -> None:
    deps = make_deps()
    out = reaction.run("test.echo", _event(fail="bug"), event_id="ev-1", deps=deps)
    assert out.status == "dead-lettered" and "KeyError" in out.reason


def test_pause_holds_events_for_replay_and_resume_lets_them_run() -> None:
    deps = make_deps()
    write_control(deps, by="ops", why="incident 42", paused=True)
    out = reaction.run("test.echo", _event(), event_id="ev-1", deps=deps)
    assert out.status == "held"
    held = deps.state.get(out.details["held"])
    assert held is not None and held.value["payload"] == _event()
    assert read_control(deps).by == "ops"
    write_control(deps, by="ops", why="fixed", paused=False)
    assert reaction.run("test.echo", held.value["payload"], event_id="ev-1", deps=deps).status == "acted"


def test_pause_by_setting_skips_timers() -> None:
    deps = make_deps(make_settings(REFLEX_PAUSED="true"))
    out = reaction.run("test.echo", _event(), event_id="", deps=deps)
    assert out.status == "skipped" and "paused" in out.reason


def test_ledger_sees_every_outcome_and_cannot_break_a_reaction() -> None:
    seen: list[tuple[str, str]] = []

    class DownLedger(MemoryLedger):
        def record(self, reaction: str, event_id: str, payload: Any, outcome: Any, deps: Any) -> dict[str, Any]:
            seen.append((reaction, outcome.status))
            raise RuntimeError("ledger down")

    out = reaction.run("test.echo", _event(), event_id="ev-1", deps=make_deps(ledger=DownLedger(time.time)))
    assert out.status == "acted" and seen == [("test.echo", "acted")]


def test_control_is_read_once_per_window_not_per_event() -> None:
    from shared.core.state import MemoryStateStore

    class CountingStore(MemoryStateStore):
        reads = 0

        def _read(self, key: str) -> tuple[bytes, str] | None:
            if key == "control/automation":
                CountingStore.reads += 1
            return super()._read(key)

    deps = make_deps(state=CountingStore())
    for _ in range(50):
        assert reaction.run("test.echo", _event(), event_id="ev-1", deps=deps).status == "acted"
    assert CountingStore.reads == 1
    write_control(deps, by="ops", why="stop", paused=True)  # the writing process sees it at once
    assert reaction.run("test.echo", _event(), event_id="ev-2", deps=deps).status == "held"


def test_control_flipped_by_another_process_applies_after_the_window(
        blob_state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.core import control
    from shared.core.state import BlobStateStore

    worker = make_deps(state=blob_state)
    operator = make_deps(state=BlobStateStore(blob_state._container))
    assert not read_control(worker).paused
    write_control(operator, by="ops", why="incident", paused=True)
    monkeypatch.setattr(control, "CACHE_SECONDS", 0.0)
    assert read_control(worker).paused
