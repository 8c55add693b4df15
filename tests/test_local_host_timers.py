"""Timers on their schedules: TimerRequest payloads, runOnStartup, and a failing run that does not stop them."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from local.host.index import FunctionEntry, build_index, load_app
from local.host.invoke import Invoker
from local.host.timers import TimerScheduler

HOSTAPP = Path(__file__).parent / "hostapp"


@pytest.fixture(scope="module")
def app_module() -> ModuleType:
    return load_app("function_app_fixture", HOSTAPP)[0]


@pytest.fixture
def records(app_module: ModuleType) -> list[dict[str, Any]]:
    app_module.RECORDS.clear()
    return app_module.RECORDS


def run_for(entries: dict[str, FunctionEntry], seconds: float) -> None:
    stop = threading.Event()
    scheduler = TimerScheduler(entries, Invoker(max_workers=2))
    scheduler.start(stop)
    time.sleep(seconds)
    stop.set()
    scheduler.join(5)


def test_timer_fires_on_its_schedule_with_a_timer_request(app_module: ModuleType, records: list) -> None:
    index = build_index(app_module.app, {"TEST_CONTAINER": "c", "TEST_SCHEDULE": "* * * * * *"})
    run_for({"on_timer": index["on_timer"]}, 2.6)
    assert 2 <= len(records) <= 3
    assert {(r["type"], r["past_due"]) for r in records} == {("TimerRequest", False)}
    assert all(datetime.fromisoformat(r["next"]).tzinfo == UTC for r in records)


def test_a_failing_timer_keeps_its_schedule(app_module: ModuleType, records: list,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTAPP_TIMER_FAIL", "1")
    index = build_index(app_module.app, {"TEST_CONTAINER": "c", "TEST_SCHEDULE": "* * * * * *"})
    run_for({"on_timer": index["on_timer"]}, 2.6)
    assert len(records) >= 2  # every run raised, the next ones still happened


def test_run_on_startup_runs_once_at_start() -> None:
    calls: list[Any] = []

    def yearly(timer: Any) -> None:
        calls.append(timer)

    entry = FunctionEntry(name="yearly", trigger_type="timerTrigger", arg_name="timer",
                          settings={"schedule": "0 0 0 1 1 *", "runOnStartup": True}, func=yearly)
    run_for({"yearly": entry}, 0.5)
    assert len(calls) == 1 and calls[0].past_due is False
    assert calls[0].schedule_status["Next"].startswith(f"{datetime.now(UTC).year + 1}-01-01T00:00:00")


def test_async_timer_function_is_awaited() -> None:
    calls: list[bool] = []

    async def tick(timer: Any) -> None:
        calls.append(timer.past_due)

    entry = FunctionEntry(name="tick", trigger_type="timerTrigger", arg_name="timer",
                          settings={"schedule": "* * * * * *"}, func=tick)
    run_for({"tick": entry}, 1.6)
    assert calls and set(calls) == {False}
