"""Timer triggers on their NCRONTAB schedules (UTC), one thread per timer, never overlapping itself.

As in the host, the next occurrence is computed after a run completes, `runOnStartup` runs the function
once when the host starts, and `IsPastDue` is set when an invocation starts later than its scheduled time
(by more than `PAST_DUE_SECONDS`). A failing run is logged and the schedule continues. Not copied: the
singleton lock across hosts and `useMonitor` persistence of schedule status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from local.host.index import FunctionEntry
from local.host.invoke import Invoker, decode_timer
from shared.core import ncrontab

__all__ = ["PAST_DUE_SECONDS", "TimerScheduler"]

PAST_DUE_SECONDS = 1.0
logger = logging.getLogger("reflex.host")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TimerScheduler:
    """Runs every timerTrigger entry on its schedule until stopped."""

    def __init__(self, entries: Mapping[str, FunctionEntry], invoker: Invoker, *,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self._invoker = invoker
        self._clock = clock
        self.timers = [(entry, ncrontab.parse(entry.settings["schedule"]))
                       for entry in entries.values() if entry.trigger_type == "timerTrigger"]
        self._threads: list[threading.Thread] = []

    def start(self, stop: threading.Event) -> None:
        for entry, schedule in self.timers:
            thread = threading.Thread(target=self._loop, args=(entry, schedule, stop), daemon=True,
                                      name=f"reflex-host-timer-{entry.name}")
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self, entry: FunctionEntry, schedule: ncrontab.Schedule, stop: threading.Event) -> None:
        last: datetime | None = None  # the last scheduled time that ran
        if entry.settings.get("runOnStartup"):
            now = self._clock()
            self._invoker.invoke(entry, decode_timer(past_due=False, next_=ncrontab.next_occurrence(schedule, now)),
                                 event_id=f"timer@{now.isoformat()}")
            last = now
        while not stop.is_set():
            now = self._clock()
            due = ncrontab.next_occurrence(schedule, max(now, last) if last else now)
            if stop.wait(max(0.0, (due - self._clock()).total_seconds())):
                return
            started = self._clock()
            past_due = (started - due).total_seconds() > PAST_DUE_SECONDS
            following = ncrontab.next_occurrence(schedule, due)
            self._invoker.invoke(entry, decode_timer(past_due=past_due, last=last, next_=following),
                                 event_id=f"timer@{due.isoformat()}")
            last = due
