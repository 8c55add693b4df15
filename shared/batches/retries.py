"""Trying a batch's job again after a transient failure: when, how often, and the one compare-and-swap that
moves a batch record (training or scoring) to its next attempt (#18.3).

Why one place: training batches (shared/arrival/retry.py `retry_transient`) and scoring batches
(shared/scoring/flow.py) follow the same rule. A job that failed because a dependency was down (the platform or
storage unreachable, throttled, 5xx, as the platform reports the job's failure: `Job.failure`) is run again as
a new attempt, 2, 4, 8 … minutes later (at most an hour), at most REFLEX_TRANSIENT_RETRIES times per batch; the
record carries `previous_job`, `transient_retries` and `not_before`, and nothing starts it before that time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["RETRY_BASE_SECONDS", "RETRY_MAX_SECONDS", "retry_delay", "schedule_retry", "utc_text"]

RETRY_BASE_SECONDS = 120.0    # a dependency down for a while (a restart, a throttling window) is back by then
RETRY_MAX_SECONDS = 3600.0


def retry_delay(retries_so_far: int) -> float:
    """Seconds before the next attempt after `retries_so_far` earlier transient retries: 120, 240, 480 … 3600."""
    return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** min(retries_so_far, 20))


def schedule_retry(deps: Deps, key: str, job: str,
                   build: Callable[[dict[str, Any], int, float], dict[str, Any] | None]
                   ) -> tuple[dict[str, Any], bool] | None:
    """One compare-and-swap moving the record at `key`, still `submitted` with `job`, to its next attempt after
    a transient failure of `job`: `build(record, retry number, not-before time)` gives the new record, to which
    the retry's bookkeeping is added (`previous_job`, `transient_retries`, `not_before`). Shared by training
    batches and scoring batches.

    Returns (the record, whether this call moved it: False for a copy that found it moved), or None when the
    record is not retried (REFLEX_TRANSIENT_RETRIES used up or 0, or it no longer runs `job`).
    """
    limit = deps.settings.transient_retries
    now = deps.clock()
    token = uuid.uuid4().hex

    def change(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or value.get("status") != "submitted" or value.get("job") != job:
            return None
        done = int(value.get("transient_retries") or 0)
        at = now + retry_delay(done)
        new = build(value, done + 1, at) if done < limit else None
        return None if new is None else {**new, "previous_job": job, "transient_retries": done + 1,
                                         "not_before": at, "retried_by": token}

    stored = deps.state.update(key, change)
    value = stored.value if stored else {}
    if value.get("previous_job") != job:
        return None
    return value, value.get("retried_by") == token


def utc_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
