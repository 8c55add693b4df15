"""Admission of training jobs: at most N Reflex jobs running, and an optional cap per UTC day. Pure.

Why a single admission record (`training/admission`, updated by compare-and-swap) rather than counting jobs
when a batch completes: two batches completing at the same moment would both count N-1 running and both
start. With one record, reserving a slot is the same atomic write that counts it. The record::

    {"running": {"<job name>": {"batch": "<arrival key>", "at": <epoch>}},
     "day": "YYYY-MM-DD", "started_today": <int>}

`reserve` is idempotent per job name (a redelivery finds its slot already taken and is admitted again, not
counted twice); `release` removes a job that reached a terminal state (RunCompleted, RunStatusChanged, or the
sweep's refresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["ADMISSION_KEY", "Admission", "release", "reserve", "utc_day"]

ADMISSION_KEY = "training/admission"


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str
    running: int
    started_today: int


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _current(record: dict[str, Any] | None, now: float) -> dict[str, Any]:
    value = dict(record or {})
    value["running"] = dict(value.get("running") or {})
    if value.get("day") != utc_day(now):
        value["day"], value["started_today"] = utc_day(now), 0
    value["started_today"] = int(value.get("started_today") or 0)
    return value


def reserve(record: dict[str, Any] | None, job: str, batch: str, now: float, *, max_concurrent: int,
            daily_cap: int) -> tuple[dict[str, Any] | None, Admission]:
    """(new record or None for no change, decision) for starting `job`; `daily_cap=0` means no cap."""
    value = _current(record, now)
    running, started = len(value["running"]), value["started_today"]
    if job in value["running"]:
        return None, Admission(True, "slot already reserved for this job", running, started)
    if running >= max_concurrent:
        return None, Admission(False, f"{running} Reflex training jobs running (maximum {max_concurrent})",
                               running, started)
    if daily_cap and started >= daily_cap:
        return None, Admission(False, f"daily training cap reached ({started}/{daily_cap} on {value['day']})",
                               running, started)
    value["running"][job] = {"batch": batch, "at": now}
    value["started_today"] = started + 1
    return value, Admission(True, "admitted", running + 1, started + 1)


def release(record: dict[str, Any] | None, jobs: set[str] | frozenset[str], now: float) -> dict[str, Any] | None:
    """The record without `jobs` (None when none of them held a slot)."""
    if not record or not jobs & set(record.get("running") or {}):
        return None
    value = _current(record, now)
    value["running"] = {k: v for k, v in value["running"].items() if k not in jobs}
    return value
