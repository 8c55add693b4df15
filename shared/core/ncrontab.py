"""NCRONTAB schedules, the six-field cron dialect of Azure Functions timer triggers, in UTC.

The Functions host reads `{second} {minute} {hour} {day} {month} {day-of-week}` (day-of-week 0-6, 0 = Sunday)
with `*`, `*/n`, lists `a,b`, ranges `a-b` and stepped ranges `a-b/n`; months and days of the week may also be
named (`0 30 9 * Jan Mon`, as in the timer trigger docs): NCrontab (atifaziz/NCrontab,
NCrontab/CrontabFieldImpl.cs `ParseValue`) takes any case-insensitive prefix of the English name, the first
match winning. Unlike Vixie cron, NCrontab requires the day-of-month AND the day-of-week to match when both are
restricted; this parser does the same, so a schedule fires locally exactly when it would in Azure.

One parser for both uses: the local host's timers (local/host/timers.py) and the settings check at start
(shared/core/settings.py), so a schedule the settings accept is one the host can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Schedule", "next_occurrence", "parse"]

# (name, low, high) of the six fields, in order.
_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
           ("day-of-week", 0, 6))
_NAMES = {"month": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                    "October", "November", "December"),
          "day-of-week": ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")}
_MAX_YEARS = 8  # a schedule with no occurrence in this span (e.g. 30 February) never fires


@dataclass(frozen=True)
class Schedule:
    """The allowed values of each field of one parsed NCRONTAB expression."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    def day_matches(self, moment: datetime) -> bool:
        # Python: Monday = 0; NCRONTAB: Sunday = 0.
        return moment.day in self.days and (moment.weekday() + 1) % 7 in self.days_of_week


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"empty list item in the {name} field {text!r}")
        spec, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"bad step {step_text!r} in the {name} field {text!r}")
            step = int(step_text)
        if spec == "*":
            start, end = low, high
        elif "-" in spec:
            first, _, last = spec.partition("-")
            start, end = _number(first, name, low, high), _number(last, name, low, high)
            if start > end:
                raise ValueError(f"range {spec!r} runs backwards in the {name} field")
        else:
            start = _number(spec, name, low, high)
            end = high if step_text else start  # `a/n` means a, a+n, ... up to the field's maximum
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _number(text: str, name: str, low: int, high: int) -> int:
    if text and text[0].isalpha() and name in _NAMES:
        for index, full in enumerate(_NAMES[name]):
            if full.lower().startswith(text.lower()):
                return low + index
        raise ValueError(f"{text!r} is not a known name in the {name} field (use {', '.join(_NAMES[name])})")
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number in the {name} field")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}-{high} in the {name} field")
    return value


def parse(expression: str) -> Schedule:
    """Parse a six-field NCRONTAB expression; `ValueError` names the field that is wrong."""
    fields = expression.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(f"NCRONTAB needs 6 fields (second minute hour day month day-of-week), "
                         f"got {len(fields)} in {expression!r}")
    parsed = [_parse_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    return Schedule(expression, *parsed)


def next_occurrence(schedule: Schedule | str, after: datetime) -> datetime:
    """The first moment strictly after `after` (naive = UTC) that the schedule matches, as an aware UTC time."""
    sched = parse(schedule) if isinstance(schedule, str) else schedule
    moment = (after if after.tzinfo else after.replace(tzinfo=UTC)).astimezone(UTC)
    moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    limit = moment + timedelta(days=366 * _MAX_YEARS)
    while moment < limit:
        if moment.month not in sched.months:
            year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
            moment = moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
        elif not sched.day_matches(moment):
            moment = moment.replace(hour=0, minute=0, second=0) + timedelta(days=1)
        elif moment.hour not in sched.hours:
            moment = moment.replace(minute=0, second=0) + timedelta(hours=1)
        elif moment.minute not in sched.minutes:
            moment = moment.replace(second=0) + timedelta(minutes=1)
        elif moment.second not in sched.seconds:
            moment += timedelta(seconds=1)
        else:
            return moment
    raise ValueError(f"schedule {sched.expression!r} has no occurrence within {_MAX_YEARS} years of {after}")
