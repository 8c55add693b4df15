"""NCRONTAB parsing and next occurrences, as the Functions host's timer trigger reads schedules (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.core.ncrontab import next_occurrence, parse


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("schedule", "after", "expected"), [
    ("0 */5 * * * *", utc(2024, 6, 1, 12, 0, 0), utc(2024, 6, 1, 12, 5, 0)),
    ("0 */5 * * * *", utc(2024, 6, 1, 12, 3, 59), utc(2024, 6, 1, 12, 5, 0)),
    ("0 */5 * * * *", utc(2024, 6, 1, 23, 58, 0), utc(2024, 6, 2, 0, 0, 0)),
    # 3 AM every Sunday (2024-06-02 is a Sunday)
    ("0 0 3 * * 0", utc(2024, 6, 1, 12, 0, 0), utc(2024, 6, 2, 3, 0, 0)),
    ("0 0 3 * * 0", utc(2024, 6, 2, 3, 0, 0), utc(2024, 6, 9, 3, 0, 0)),
    ("*/15 * * * * *", utc(2024, 6, 1, 12, 0, 0), utc(2024, 6, 1, 12, 0, 15)),
    ("*/15 * * * * *", utc(2024, 6, 1, 12, 0, 50), utc(2024, 6, 1, 12, 1, 0)),
    # ranges: 9-17 on weekdays, at the top of the hour
    ("0 0 9-17 * * 1-5", utc(2024, 6, 1, 10, 0, 0), utc(2024, 6, 3, 9, 0, 0)),   # Saturday -> Monday 9:00
    ("0 0 9-17 * * 1-5", utc(2024, 6, 3, 17, 0, 0), utc(2024, 6, 4, 9, 0, 0)),
    # lists
    ("0 15,45 * * * *", utc(2024, 6, 1, 12, 16, 0), utc(2024, 6, 1, 12, 45, 0)),
    ("0 0 0 1,15 * *", utc(2024, 6, 2, 0, 0, 0), utc(2024, 6, 15, 0, 0, 0)),
    # stepped range and stepped start
    ("0 10-30/10 * * * *", utc(2024, 6, 1, 12, 20, 0), utc(2024, 6, 1, 12, 30, 0)),
    ("0 10-30/10 * * * *", utc(2024, 6, 1, 12, 30, 0), utc(2024, 6, 1, 13, 10, 0)),
    ("5/20 * * * * *", utc(2024, 6, 1, 12, 0, 6), utc(2024, 6, 1, 12, 0, 25)),
    # month and year rollover, leap day
    ("0 0 0 1 1 *", utc(2024, 6, 1), utc(2025, 1, 1)),
    ("0 0 12 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29, 12)),
    # day-of-month AND day-of-week must both match (NCrontab, unlike Vixie cron): Friday the 13th
    ("0 0 0 13 * 5", utc(2024, 1, 1), utc(2024, 9, 13)),
    # named months and days, as in the timer trigger docs' "0 30 9 * Jan Mon" (any case, any prefix of the name)
    ("0 30 9 * Jan Mon", utc(2024, 6, 1), utc(2025, 1, 6, 9, 30)),
    ("0 30 9 * * mon-fri", utc(2024, 6, 1, 10, 0, 0), utc(2024, 6, 3, 9, 30)),
    ("0 0 0 1 MARCH *", utc(2024, 6, 1), utc(2025, 3, 1)),
    # sub-second and naive inputs
    ("* * * * * *", datetime(2024, 6, 1, 12, 0, 0, 900_000), utc(2024, 6, 1, 12, 0, 1)),
])
def test_next_occurrence(schedule: str, after: datetime, expected: datetime) -> None:
    assert next_occurrence(schedule, after) == expected


def test_result_is_strictly_after_and_aware() -> None:
    got = next_occurrence(parse("0 0 * * * *"), utc(2024, 6, 1, 12, 0, 0))
    assert got == utc(2024, 6, 1, 13, 0, 0)
    assert got.tzinfo is not None


def test_parsed_field_values() -> None:
    sched = parse("0,30 */20 1-3 1 1-12/6 0,6")
    assert sched.seconds == {0, 30}
    assert sched.minutes == {0, 20, 40}
    assert sched.hours == {1, 2, 3}
    assert sched.months == {1, 7}
    assert sched.days_of_week == {0, 6}


@pytest.mark.parametrize(("schedule", "message"), [
    ("0 */5 * * *", "6 fields"),            # five-field cron needs the leading seconds
    ("0 0 0 * * * *", "6 fields"),
    ("60 * * * * *", "second"),
    ("0 0 24 * * *", "hour"),
    ("0 0 0 0 * *", "day"),
    ("0 0 0 * 13 *", "month"),
    ("0 0 0 * * 7", "day-of-week"),
    ("0 */0 * * * *", "step"),
    ("0 30-10 * * * *", "backwards"),
    ("0 a * * * *", "not a number"),
    ("0 1,,2 * * * *", "empty"),
    ("0 0 0 * Foo *", "not a known name"),
    ("0 0 Mon * * *", "not a number"),           # names only in the month and day-of-week fields
])
def test_invalid_schedules_name_the_problem(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(schedule)


def test_impossible_schedule_raises() -> None:
    with pytest.raises(ValueError, match="no occurrence"):
        next_occurrence("0 0 0 30 2 *", utc(2024, 1, 1))
