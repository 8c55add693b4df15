"""Trying a batch's job again after a transient failure: when, how often, and the one compare-and-swap that
moves a batch record (training or scoring) to its next attempt (#18.3).

Why one place: training batches (`retry_training`, called by the registration gate when a training job
failed) and scoring batches (shared/scoring/flow.py) follow the same rule. A job that failed because a
dependency was down (the platform or storage unreachable, throttled, 5xx, as the platform reports the job's
failure: `Job.failure`) is run again as a new attempt, 2, 4, 8 … minutes later (at most an hour), at most
REFLEX_TRANSIENT_RETRIES times per batch; the record carries `previous_job`, `transient_retries` and
`not_before`, and nothing starts it before that time.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from shared.batches import training
from shared.batches.record import ArrivalRecord, BatchRecord, as_update
from shared.core.reaction import Outcome

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["RETRY_BASE_SECONDS", "RETRY_MAX_SECONDS", "retry_delay", "retry_training", "schedule_retry", "utc_text"]

B = TypeVar("B", bound=BatchRecord)

RETRY_BASE_SECONDS = 120.0    # a dependency down for a while (a restart, a throttling window) is back by then
RETRY_MAX_SECONDS = 3600.0


def retry_delay(retries_so_far: int) -> float:
    """Seconds before the next attempt after `retries_so_far` earlier transient retries: 120, 240, 480 … 3600."""
    return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** min(retries_so_far, 20))


def schedule_retry(deps: Deps, key: str, job: str, kind: type[B], build: Callable[[B, int, float], B | None]
                   ) -> tuple[B, bool] | None:
    """One compare-and-swap moving the batch record at `key`, still `submitted` with `job`, to its next attempt
    after a transient failure of `job`: `build(record, retry number, not-before time)` gives the new record, to
    which the retry's bookkeeping is added (`previous_job`, `transient_retries`, `not_before`). Shared by
    training batches and scoring batches.

    Returns (the record, whether this call moved it: False for a copy that found it moved), or None when the
    record is not retried (REFLEX_TRANSIENT_RETRIES used up or 0, or it no longer runs `job`).
    """
    limit = deps.settings.transient_retries
    now = deps.clock()
    token = uuid.uuid4().hex

    def change(batch: B | None) -> B | None:
        if batch is None or batch.status != "submitted" or batch.job != job:
            return None
        done = batch.transient_retries or 0
        at = now + retry_delay(done)
        new = build(batch, done + 1, at) if done < limit else None
        return None if new is None else dataclasses.replace(new, previous_job=job, transient_retries=done + 1,
                                                            not_before=at, retried_by=token)

    stored = deps.state.update(key, as_update(kind, change))
    batch = kind.from_dict(stored.value) if stored else None
    if batch is None or batch.previous_job != job:
        return None
    return batch, batch.retried_by == token


def retry_training(deps: Deps, job: str, key: str, why: str) -> Outcome | None:
    """Schedule the next attempt of the training batch at `key`, whose job `job` failed for a transient reason
    `why`: straight from `submitted` to `waiting` as the next attempt, its job name already the new attempt's
    (so nothing that closes the failed job can close the retry), its slot released; the sweep starts it once
    `not_before` has passed, through the same admission and submission.

    Returns "acted" (scheduled) or "duplicate" (a copy of the failure already scheduled it), or None when it
    is not retried: retries are off or used up, or `key` is not a batch record running `job` (a retraining's
    job, say); then the caller reports the failure as final.
    """
    if not key.startswith("arrivals/"):
        return None
    limit = deps.settings.transient_retries

    def attempt(batch: ArrivalRecord, retry: int, at: float) -> ArrivalRecord | None:
        nxt = dataclasses.replace(batch, attempt=batch.attempt_number + 1, lease=None)
        reason = (f"job {job} failed for a transient reason ({why}); attempt {nxt.attempt} (retry {retry} of "
                  f"{limit}) starts after {utc_text(at)}")
        return nxt.with_status("waiting", deps.clock(), allowed_from=("submitted",), reason=reason,
                               job=training.attempt_job_name(nxt))

    scheduled = schedule_retry(deps, key, job, ArrivalRecord, attempt)
    if scheduled is None:
        return None
    batch, won = scheduled
    details = {"batch": key, "job": job, "next_job": batch.job, "attempt": batch.attempt,
               "not_before": batch.not_before, "retry": batch.transient_retries}
    if not won:
        return Outcome("duplicate", f"job {job}: its retry is already scheduled ({batch.reason})", details)
    training.release_slot(deps, job)
    return Outcome("acted", batch.reason, details)


def utc_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
