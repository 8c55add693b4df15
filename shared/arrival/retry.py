"""Training a batch again, for an operator (`python -m reflex train BATCH`): a new attempt of the arrival flow.

Why: a batch that arrived while automation was in dry-run, or whose training failed (bad settings since fixed,
a compute that was missing, a job that crashed), would otherwise never be trained: its marker was consumed,
and a redelivery of it is rightly a duplicate.

How: one compare-and-swap moves the arrival record from `dry-run`, `failed` or `submit-failed` back to
`complete` with `attempt` incremented (`reopen`), and the very same `start_batch` the marker and the sweep use
(shared/batches/training.py) takes it from there: start lease, admission (concurrency and daily cap; without a
slot it waits for the sweep, in arrival order), data asset, training job, lineage tags, record `submitted`, and
the gate on RunCompleted. The job name derives from the batch, its manifest and the attempt
(`training.attempt_job_name`), so an attempt has exactly one job however often it is started, and a new attempt
never reuses a failed job. Two operators asking at once: one CAS wins the new attempt, the other is told it is
already under way.

Refused, with the reason: a batch still collecting (not complete), being started or training, already trained
(a new batch folder is the way to train on new data; scheduled retraining covers the same data), or one with no
usable file.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from shared.batches.paths import BatchPath
from shared.batches.record import ArrivalRecord, as_update
from shared.batches.training import arrival_key, start_batch
from shared.core.reaction import Outcome

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["REOPENABLE", "batch_key", "reopen", "train_again"]

REOPENABLE = ("dry-run", "failed", "submit-failed")


def batch_key(deps: Deps, text: str) -> str:
    """The arrival record key of BATCH as an operator writes it: `arrivals/<container>/<dataset>/<batch>`,
    `<container>/<dataset>/<batch>` (as `status` and `explain` show it) or `<dataset>/<batch>` (data container)."""
    value = text.strip().strip("/").removeprefix("arrivals/")
    parts = value.split("/")
    if len(parts) == 2:
        parts = [deps.settings.data_container, *parts]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{text!r}: expected <dataset>/<batch> or <container>/<dataset>/<batch>")
    return arrival_key(BatchPath(parts[0], parts[1], parts[2], ""))


def _refusal(batch: ArrivalRecord, deps: Deps) -> str:
    status, job, why = batch.status, batch.job, batch.reason
    marker = deps.settings.completion_marker
    if status == "collecting":
        return ("not complete yet: it still collects files, waiting for its marker " + repr(marker) if marker else
                f"not complete yet: it completes after {deps.settings.quiet_seconds} s without new files")
    if status == "freezing":
        return f"its recorded files are being copied for training ({why}); the sweep goes on with it"
    if status in ("complete", "starting"):
        return "its training is being started right now (the sweep finishes a start that was interrupted)"
    if status == "waiting":
        return f"it waits for a training slot ({why}); the sweep starts it when one frees up"
    if status == "submitted":
        return f"it is training: job {job} is running"
    if status == "trained":
        return (f"it is already trained (job {job}); put new data in a new batch folder to train on it, or let "
                "scheduled retraining train this data again")
    if status == "skipped":
        return f"it has nothing to train on: {why}"
    return f"its status is {status!r}"


def reopen(batch: ArrivalRecord | None, now: float, *, token: str, by: str, why: str) -> ArrivalRecord | None:
    """The record moved back to `complete` as the next attempt (pure, for `StateStore.update` through
    `as_update`); None: no change."""
    if batch is None or batch.status not in REOPENABLE or not batch.file_count:
        return None
    attempt = batch.attempt_number + 1
    return batch.with_status("complete", now, allowed_from=REOPENABLE, reason=f"attempt {attempt} requested by "
                             f"{by}: {why}", lease=None, attempt=attempt, reopened_by=token)


def train_again(deps: Deps, key: str, *, by: str, why: str) -> Outcome:
    """Start a new training attempt of the batch at `key` (see the module docstring).

    Returns "refused" with the reason when the batch cannot be trained again, "duplicate" when another request
    just started the new attempt, else the arrival flow's outcome ("acted": submitted, or waiting for a slot).

    Raises:
        PermanentError: the platform refused the data asset or the job (the record says `submit-failed`).
        TransientError: storage or the platform did not answer; the sweep finishes the start.
    """
    record = deps.state.get(key)
    if record is None:
        return Outcome("refused", f"no batch {key.removeprefix('arrivals/')}: Reflex never saw a file of it "
                                  "(see `python -m reflex status`, or upload it with `python -m reflex upload`)")
    found = ArrivalRecord.from_dict(record.value)
    batch = found.batch_id
    if found.status not in REOPENABLE or not found.file_count:
        return Outcome("refused", f"batch {batch} is not trained again: {_refusal(found, deps)}",
                       {"batch": batch, "job": found.job})
    token = uuid.uuid4().hex
    stored = deps.state.update(key, as_update(ArrivalRecord, lambda r: reopen(r, deps.clock(), token=token, by=by,
                                                                              why=why)))
    reopened = ArrivalRecord.from_dict(stored.value) if stored else None
    if reopened is None or reopened.reopened_by != token:
        current = deps.state.get(key)
        latest = ArrivalRecord.from_dict(current.value) if current else None
        return Outcome("duplicate", f"batch {batch}: another request started its attempt "
                                    f"{latest.attempt if latest else '?'} ({latest.status if latest else 'gone'})",
                       {"batch": batch})
    attempt = reopened.attempt_number
    outcome = start_batch(key, deps, event_id=f"operator-train:{batch}:{attempt}")
    return Outcome(outcome.status, f"attempt {attempt} of batch {batch}: {outcome.reason}",
                   {**outcome.details, "attempt": attempt, "previous": found.status,
                    "previous_job": found.job, "previous_reason": found.reason})
