"""Training a batch again, for an operator (`python -m reflex train BATCH`): a new attempt of the arrival flow.

Why: a batch that arrived while automation was in dry-run, or whose training failed (bad settings since fixed,
a compute that was missing, a job that crashed), would otherwise never be trained: its marker was consumed,
and a redelivery of it is rightly a duplicate.

How: one compare-and-swap moves the arrival record from `dry-run`, `failed` or `submit-failed` back to
`complete` with `attempt` incremented (`reopen`), and the very same `arrival.start_batch` the marker and the
sweep use takes it from there: start lease, admission (concurrency and daily cap; without a slot it waits for
the sweep, in arrival order), data asset, training job, lineage tags, record `submitted`, and the gate on
RunCompleted. The job name derives from the batch, its manifest and the attempt (`arrival.attempt_job_name`),
so an attempt has exactly one job however often it is started, and a new attempt never reuses a failed job.
Two operators asking at once: one CAS wins the new attempt, the other is told it is already under way.

Refused, with the reason: a batch still collecting (not complete), being started or training, already trained
(a new batch folder is the way to train on new data; scheduled retraining covers the same data), or one with no
usable file.

The same new attempt, without an operator, for a job that failed for a transient reason (`retry_transient`,
#18.3): the platform or a dependency was down, throttled or answered 5xx, as the platform reports the job's
failure (`Job.failure`). The record goes from `submitted` straight to `waiting` as the next attempt, with its
job name already the new attempt's (so nothing that closes the failed job can close the retry) and a
`not_before` time: 2, 4, 8 … minutes after the failure, at most an hour (shared/batches/retries.py), at most
REFLEX_TRANSIENT_RETRIES times per batch. The sweep starts it once that time has passed, through the same
admission and submission. A failure in the user's script or data, or one the platform does not classify, is
never retried this way.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from shared.arrival.flow import arrival_key, attempt_job_name, start_batch
from shared.batches import admission
from shared.batches.paths import BatchPath
from shared.batches.record import set_status
from shared.batches.retries import schedule_retry, utc_text
from shared.core.reaction import Outcome

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["REOPENABLE", "batch_key", "reopen", "retry_transient", "train_again"]

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


def _refusal(value: dict[str, Any], deps: Deps) -> str:
    status = value.get("status")
    job, why = value.get("job") or "", value.get("reason") or ""
    marker = deps.settings.completion_marker
    if status == "collecting":
        return ("not complete yet: it still collects files, waiting for its marker " + repr(marker) if marker else
                f"not complete yet: it completes after {deps.settings.quiet_seconds} s without new files")
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


def reopen(value: dict[str, Any] | None, now: float, *, token: str, by: str, why: str) -> dict[str, Any] | None:
    """The record moved back to `complete` as the next attempt (pure, for `StateStore.update`); None: no change."""
    if value is None or value.get("status") not in REOPENABLE or not value.get("files"):
        return None
    attempt = int(value.get("attempt") or 1) + 1
    return set_status({**value, "lease": None}, "complete", now, allowed_from=REOPENABLE,
                      reason=f"attempt {attempt} requested by {by}: {why}", attempt=attempt, reopened_by=token)


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
    value = record.value
    batch = f"{value['container']}/{value['dataset']}/{value['batch']}"
    if value.get("status") not in REOPENABLE or not value.get("files"):
        return Outcome("refused", f"batch {batch} is not trained again: {_refusal(value, deps)}",
                       {"batch": batch, "job": value.get("job", "")})
    token = uuid.uuid4().hex
    stored = deps.state.update(key, lambda v: reopen(v, deps.clock(), token=token, by=by, why=why))
    if stored is None or stored.value.get("reopened_by") != token:
        current = deps.state.get(key)
        status = current.value.get("status") if current else "gone"
        return Outcome("duplicate", f"batch {batch}: another request started its attempt "
                                    f"{current.value.get('attempt') if current else '?'} ({status})",
                       {"batch": batch})
    attempt = int(stored.value["attempt"])
    outcome = start_batch(key, deps, event_id=f"operator-train:{batch}:{attempt}")
    return Outcome(outcome.status, f"attempt {attempt} of batch {batch}: {outcome.reason}",
                   {**outcome.details, "attempt": attempt, "previous": value.get("status"),
                    "previous_job": value.get("job", ""), "previous_reason": value.get("reason", "")})


def retry_transient(deps: Deps, job: str, key: str, why: str) -> Outcome | None:
    """Schedule the next attempt of the batch at `key`, whose job `job` failed for a transient reason `why`.

    Returns "acted" (scheduled) or "duplicate" (a copy of the failure already scheduled it), or None when it
    is not retried: retries are off or used up, or `key` is not a batch record running `job`; then the caller
    reports the failure as final.
    """
    if not key.startswith("arrivals/"):
        return None
    limit = deps.settings.transient_retries

    def attempt(value: dict[str, Any], retry: int, at: float) -> dict[str, Any] | None:
        nxt = {**value, "attempt": int(value.get("attempt") or 1) + 1, "lease": None}
        batch = f"{value['container']}/{value['dataset']}/{value['batch']}"
        reason = (f"job {job} failed for a transient reason ({why}); attempt {nxt['attempt']} (retry {retry} of "
                  f"{limit}) starts after {utc_text(at)}")
        return set_status(nxt, "waiting", deps.clock(), allowed_from=("submitted",), reason=reason,
                          job=attempt_job_name(batch, nxt))

    scheduled = schedule_retry(deps, key, job, attempt)
    if scheduled is None:
        return None  # not retried: the caller reports the failure as final
    value, won = scheduled
    details = {"batch": key, "job": job, "next_job": value.get("job", ""), "attempt": value.get("attempt"),
               "not_before": value.get("not_before"), "retry": value.get("transient_retries")}
    if not won:
        return Outcome("duplicate", f"job {job}: its retry is already scheduled ({value.get('reason', '')})",
                       details)
    now = deps.clock()
    deps.state.update(admission.ADMISSION_KEY, lambda v: admission.release(v, {job}, now))
    return Outcome("acted", str(value.get("reason")), details)
