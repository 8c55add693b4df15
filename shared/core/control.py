"""The automation switches an operator flips: pause (kill switch) and dry-run.

Either comes from app settings (`REFLEX_PAUSED`, `REFLEX_DRY_RUN`: a redeploy) or from the state record
`control/automation` that the CLI writes with who and why (no redeploy). Either one set is enough.

The runner asks before every event, so a burst of 1000 blobs delivered three times would read the record
3000 times. A worker keeps what it read for `CACHE_SECONDS`: a switch flipped elsewhere takes effect within
that time, and at once in the process that flipped it.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.core.state import utcnow_iso

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.state import StateStore

__all__ = ["CONTROL_KEY", "Control", "read_control", "write_control"]

CONTROL_KEY = "control/automation"
CACHE_SECONDS = 5.0
_cache: weakref.WeakKeyDictionary[StateStore, tuple[float, dict[str, Any] | None]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Control:
    paused: bool
    dry_run: bool
    by: str = ""
    why: str = ""
    at: str = ""
    source: str = "settings"


def _stored(state: StateStore) -> dict[str, Any] | None:
    cached = _cache.get(state)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    record = state.get(CONTROL_KEY)
    value = None if record is None else dict(record.value)
    _cache[state] = (time.monotonic(), value)
    return value


def read_control(deps: Deps) -> Control:
    stored = _stored(deps.state)
    value: dict[str, Any] = stored or {}
    paused = deps.settings.paused or bool(value.get("paused"))
    dry_run = deps.settings.dry_run or bool(value.get("dry_run"))
    source = "settings" if (deps.settings.paused or deps.settings.dry_run) else ("operator" if stored else "default")
    return Control(paused, dry_run, str(value.get("by", "")), str(value.get("why", "")), str(value.get("at", "")),
                   source)


def write_control(deps: Deps, *, by: str, why: str, paused: bool | None = None,
                  dry_run: bool | None = None) -> Control:
    """Set the stored switches (compare-and-swap, so two operators never overwrite each other silently)."""

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        value = dict(current or {"paused": False, "dry_run": False})
        if paused is not None:
            value["paused"] = paused
        if dry_run is not None:
            value["dry_run"] = dry_run
        value.update(by=by, why=why, at=utcnow_iso())
        return value

    _cache.pop(deps.state, None)
    deps.state.update(CONTROL_KEY, change)
    _cache.pop(deps.state, None)
    return read_control(deps)
