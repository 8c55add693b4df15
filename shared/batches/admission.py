"""Admission of training jobs: at most N Reflex jobs running, and an optional cap per UTC day. Pure.

Why a single admission record (`training/admission`, updated by compare-and-swap) rather than counting jobs
when a batch completes: two batches completing at the same moment would both count N-1 running and both
start. With one record, reserving a slot is the same atomic write that counts it. The record
(`AdmissionRecord`, the one reader and writer of its stored form)::

    {"running": {"<job name>": {"batch": "<arrival or retraining key>", "at": <epoch>}},
     "day": "YYYY-MM-DD", "started_today": <int>}

`reserve` is idempotent per job name (a redelivery finds its slot already taken and is admitted again, not
counted twice); `release` removes a job that reached a terminal state (RunCompleted, RunStatusChanged, or the
sweep's refresh).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

__all__ = ["ADMISSION_KEY", "Admission", "AdmissionRecord", "Slot", "release", "reserve", "utc_day"]

ADMISSION_KEY = "training/admission"


@dataclass(frozen=True)
class Admission:
    """The decision on one job: admitted or why not, with the counts it was taken on."""

    admitted: bool
    reason: str
    running: int
    started_today: int


@dataclass(frozen=True)
class Slot:
    """One running job's slot: the record that started it (arrival or retraining key) and since when."""

    batch: str = ""
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "at": self.at}


@dataclass(frozen=True)
class AdmissionRecord:
    """`training/admission`, the one record counting Reflex's training jobs (see the module docstring)."""

    running: Mapping[str, Slot] = field(default_factory=dict)
    day: str = ""
    started_today: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> AdmissionRecord:
        """The record of a stored value (None: no record yet); the one place unknown keys are handled."""
        value = value or {}
        running = {str(job): Slot(str(info.get("batch") or ""), float(info.get("at") or 0.0))
                   for job, info in dict(value.get("running") or {}).items() if isinstance(info, Mapping)}
        return cls(running, str(value.get("day") or ""), int(value.get("started_today") or 0),
                   {k: v for k, v in value.items() if k not in ("running", "day", "started_today")})

    def to_dict(self) -> dict[str, Any]:
        return {"running": {job: slot.to_dict() for job, slot in self.running.items()}, "day": self.day,
                "started_today": self.started_today, **self.extra}

    def on(self, now: float) -> AdmissionRecord:
        """The record as of `now`'s UTC day (a new day starts its count at 0)."""
        day = utc_day(now)
        return self if self.day == day else replace(self, day=day, started_today=0)


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def reserve(record: Mapping[str, Any] | None, job: str, batch: str, now: float, *, max_concurrent: int,
            daily_cap: int) -> tuple[dict[str, Any] | None, Admission]:
    """(new record or None for no change, decision) for starting `job`; `daily_cap=0` means no cap."""
    value = AdmissionRecord.from_dict(record).on(now)
    running, started = len(value.running), value.started_today
    if job in value.running:
        return None, Admission(True, "slot already reserved for this job", running, started)
    if running >= max_concurrent:
        return None, Admission(False, f"{running} Reflex training jobs running (maximum {max_concurrent})",
                               running, started)
    if daily_cap and started >= daily_cap:
        return None, Admission(False, f"daily training cap reached ({started}/{daily_cap} on {value.day})",
                               running, started)
    value = replace(value, running={**value.running, job: Slot(batch, now)}, started_today=started + 1)
    return value.to_dict(), Admission(True, "admitted", running + 1, started + 1)


def release(record: Mapping[str, Any] | None, jobs: set[str] | frozenset[str], now: float) -> dict[str, Any] | None:
    """The record without `jobs` (None when none of them held a slot)."""
    value = AdmissionRecord.from_dict(record)
    if not jobs & set(value.running):
        return None
    value = value.on(now)
    return replace(value, running={k: v for k, v in value.running.items() if k not in jobs}).to_dict()
