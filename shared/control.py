"""The automation switches an operator flips: pause (kill switch) and dry-run.

Either comes from app settings (`REFLEX_PAUSED`, `REFLEX_DRY_RUN`: a redeploy) or from the state record
`control/automation` that the CLI writes with who and why (instant, no redeploy). Either one set is enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.state import utcnow_iso

if TYPE_CHECKING:
    from shared.deps import Deps

__all__ = ["CONTROL_KEY", "Control", "read_control", "write_control"]

CONTROL_KEY = "control/automation"


@dataclass(frozen=True)
class Control:
    paused: bool
    dry_run: bool
    by: str = ""
    why: str = ""
    at: str = ""
    source: str = "settings"


def read_control(deps: Deps) -> Control:
    stored = deps.state.get(CONTROL_KEY)
    value: dict[str, Any] = stored.value if stored else {}
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

    deps.state.update(CONTROL_KEY, change)
    return read_control(deps)
