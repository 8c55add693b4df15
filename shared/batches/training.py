"""Training a batch: admission, data asset and job, for the first training and for retraining, and closing it.

Why one service: four reactions train or close training, and must do it the same way. The arrival flow starts
a batch once it completes (`start_batch`, also the sweep and an operator's `python -m reflex train`), the
retraining timers train an already-trained batch again (shared/monitoring/retrain.py), the registration gate
closes a batch when its run ends (`mark_job_finished`, or `retries.retry_training` when the job failed for a
transient reason), and the arrival sweep hands jobs that ended without an event reaching us to the gate's own
reaction (`refresh_running`). All of them reserve a slot in the one admission
record (`reserve_slot`, shared/batches/admission.py: concurrency and daily cap, one CAS), build the same
request with the same lineage tags (`training_request`), and submit through `submit`: the MLTable file
AutoML needs, data asset `<dataset>:<batch>`, job. Job names derive from the batch and its manifest (and the
attempt or the retraining trigger), so a retry or a racing sweep finds the same asset and job instead of
creating new ones.

`start_batch` is idempotent and exclusive: a lease on the arrival record (status `starting`, expiring after
CLAIM_LEASE_SECONDS) lets one worker at a time submit; a transient failure hands the lease back, so a
redelivery or the sweep finishes the job.

A batch trains on exactly what it recorded (#18.4): before admission, `start_batch` freezes the manifest, a
server-side copy of each recorded blob version into `.reflex-frozen/…` (shared/batches/freeze.py), and the data
asset and the AutoML MLTable point at that frozen folder, never at the live batch folder. Freezing is bounded
per invocation: a batch not frozen yet waits as `freezing` (lease handed back) and the sweep runs the next pass;
a recorded version that is gone fails the batch, saying which file and to upload a new batch folder.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import TYPE_CHECKING, Any

from shared.batches import admission, freeze, manifest, mltable
from shared.batches.paths import BatchPath, data_asset_name, data_asset_version, job_name
from shared.batches.record import ArrivalRecord, DataRef, Lease, RetrainRecord, as_update
from shared.core import champion as champions
from shared.core import trace
from shared.core.errors import PermanentError
from shared.core.platform import REFLEX_TAG, Job, TrainingRequest
from shared.core.reaction import Outcome
from shared.core.state import Record, key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["CLAIM_LEASE_SECONDS", "RETRAINABLE", "STARTABLE", "arrival_key", "attempt_job_name", "batch_data",
           "latest_batch", "mark_job_finished", "refresh_running", "release_slot", "reserve_slot", "start_batch",
           "submit", "training_request"]

log = logging.getLogger("reflex.training")

# how long a worker may hold a batch's start lease; after that (it crashed) a redelivery or the sweep takes over
CLAIM_LEASE_SECONDS = 120.0
STARTABLE = ("complete", "freezing", "waiting", "starting")
# arrival statuses whose manifest is frozen and non-empty enough to train on again
RETRAINABLE = frozenset({"trained", "submitted", "complete", "waiting", "failed"})


def arrival_key(path: BatchPath) -> str:
    """The state key of a training batch's `ArrivalRecord`: `arrivals/<container>/<dataset>/<batch>`."""
    return f"arrivals/{key_part(path.container)}/{key_part(path.dataset)}/{key_part(path.batch)}"


def batch_data(deps: Deps, batch: ArrivalRecord) -> DataRef:
    """The data asset a batch is registered as: `<dataset>:<batch>` (AML-safe forms, shared/batches/paths.py)
    on the batch's frozen folder in the data datastore (shared/batches/freeze.py), not the live batch folder."""
    return DataRef(data_asset_name(batch.dataset), data_asset_version(batch.batch),
                   freeze.frozen_path(deps.settings.data_datastore, batch))


def training_request(deps: Deps, batch: ArrivalRecord, key: str, job: str, data: DataRef, event_id: str, *,
                     trigger: str = "", parent: str = "") -> TrainingRequest:
    """The job that trains `batch` (arrival key `key`) on `data`, with Reflex's lineage tags. A retraining names
    its `trigger` (in the tags and the display name) and its record as `parent`; a first training has neither."""
    s = deps.settings
    tags = {REFLEX_TAG: "true", "reflex.trigger": trigger or f"blob:{batch.batch_id}", "reflex.event_id": event_id,
            "reflex.data": data.ref, "reflex.batch": key, "reflex.parent": parent or f"arrival:{key}",
            **trace.tags()}  # reflex.traceparent: the run's event continues this reaction's trace
    champion = ""
    if s.training_mode == "command" and not s.eval_data:
        # the job scores the champion on its own holdout, so the gate compares both on the same rows
        found = champions.find(deps, s.model_name)
        champion = found.ref if found else ""
        tags["reflex.eval.champion"] = champion or "none"
    display = f"{batch.dataset}/{batch.batch}" + (f" ({trigger})" if trigger else "")
    return TrainingRequest(
        job_name=job, experiment_name=s.experiment_name, data_name=data.name,
        data_version=data.version, mode=s.training_mode, task=s.task, label_column=s.label_column,
        compute=s.training_compute, environment=s.training_environment, tags=tags,
        display_name=display, code=s.training_code,
        primary_metric=s.automl_primary_metric, timeout_minutes=s.automl_timeout_minutes,
        max_trials=s.automl_max_trials, early_stopping=s.automl_early_stopping, champion_model=champion)


def attempt_job_name(batch: ArrivalRecord) -> str:
    """The job of the record's attempt: the first from the batch and its manifest, a later one (an operator's
    `python -m reflex train`, shared/arrival/retry.py) from the attempt number too, so it never reuses a job."""
    digest = batch.digest  # the frozen manifest's (stored in the summary: no read)
    attempt = batch.attempt_number
    return job_name(batch.batch_id, digest if attempt <= 1 else f"{digest}|attempt-{attempt}")


def reserve_slot(deps: Deps, job: str, owner: str) -> admission.Admission:
    """Reserve `job`'s slot in the admission record for the record `owner` (arrival or retraining key)."""
    now = deps.clock()
    decision: dict[str, admission.Admission] = {}

    def reserve(current: dict[str, Any] | None) -> dict[str, Any] | None:
        new, decision["it"] = admission.reserve(current, job, owner, now,
                                                max_concurrent=deps.settings.max_concurrent_training,
                                                daily_cap=deps.settings.daily_training_cap)
        return new

    deps.state.update(admission.ADMISSION_KEY, reserve)
    return decision["it"]


def release_slot(deps: Deps, job: str) -> None:
    now = deps.clock()
    deps.state.update(admission.ADMISSION_KEY, lambda v: admission.release(v, {job}, now))


def submit(deps: Deps, batch: ArrivalRecord, request: TrainingRequest, data: DataRef) -> Job:
    """Submit a job whose slot is reserved: its MLTable file (AutoML reads an mltable asset) in the folder the data
    asset points at, its data asset, the job. Idempotent by name. A permanent refusal releases the slot before
    it propagates.

    Raises:
        PermanentError: the platform refused the data asset or the job.
        TransientError: storage or the platform did not answer (the slot stays: the retry takes it again).
    """
    try:
        mltable.for_batch(deps, batch, data.path)
        deps.platform.register_data(name=data.name, version=data.version, path=data.path, tags=dict(request.tags),
                                    description=f"batch {batch.batch_id} ({batch.file_count} files)")
        return deps.platform.submit_training(request)
    except PermanentError:
        release_slot(deps, request.job_name)
        raise


def _lease(key: str, token: str, now: float, deps: Deps) -> ArrivalRecord | None:
    """Take the batch's start lease (CAS to `starting`): the one worker that may submit it now, or None."""

    def take(batch: ArrivalRecord | None) -> ArrivalRecord | None:
        if batch is None or batch.status not in STARTABLE:
            return None
        if batch.status == "starting" and not batch.lease_free(now):
            return None
        if not batch.retry_due(now):
            return None  # a retry after a transient failure waits out its backoff (shared/batches/retries.py)
        return dataclasses.replace(batch, status="starting", lease=Lease(token, now + CLAIM_LEASE_SECONDS))

    stored = deps.state.update(key, as_update(ArrivalRecord, take))
    batch = None if stored is None else ArrivalRecord.from_dict(stored.value)
    return batch if batch is not None and batch.lease is not None and batch.lease.token == token else None


def _move(key: str, token: str, status: str, deps: Deps, *, reason: str, **fields: Any) -> bool:
    """Leave `starting` for `status`, only while this invocation still holds the lease."""
    now = deps.clock()

    def change(batch: ArrivalRecord | None) -> ArrivalRecord | None:
        if batch is None or batch.lease is None or batch.lease.token != token:
            return None
        return batch.with_status(status, now, allowed_from=("starting",), reason=reason, lease=None, **fields)

    stored = deps.state.update(key, as_update(ArrivalRecord, change))
    batch = None if stored is None else ArrivalRecord.from_dict(stored.value)
    return batch is not None and batch.status == status and batch.lease is None


def _freeze(key: str, token: str, batch: ArrivalRecord, deps: Deps, details: dict[str, Any]) -> Outcome | None:
    """One bounded pass of freezing the batch's manifest (shared/batches/freeze.py) under the start lease: None
    once it is frozen (the caller goes on to admission), else the outcome of this pass (still `freezing`, or
    `failed` because a recorded version is gone).

    Raises:
        TransientError: storage did not answer; the lease is handed back (status `freezing`) for the next pass.
    """
    from shared.core.errors import TransientError

    try:
        progress = freeze.advance(deps, batch)
    except TransientError:
        _move(key, token, "freezing", deps, reason="freezing interrupted by storage: the next pass resumes")
        raise
    except PermanentError as exc:  # a stranger in the frozen folder, or the identity lacks a role: no pass can go
        # on until an operator fixes it; then a new attempt (shared/arrival/retry.py) freezes what is still missing
        progress = freeze.Progress(freeze.frozen_folder(batch), batch.file_count, lost={"(frozen folder)": str(exc)})
        blocked = f"freezing stopped: {exc}; fix that, then train it again: python -m reflex train {batch.batch_id}"
    else:
        blocked = ""
    info = {**details, "frozen": progress.frozen, "folder": progress.folder}
    if progress.lost:
        reason = blocked or progress.reason
        if _move(key, token, "failed", deps, reason=reason):
            deps.publisher.publish("TrainingFailed", batch.batch_id, {**info, "stage": "freeze", "error": reason,
                                                                      "lost": dict(progress.lost)})
        return Outcome("skipped", f"not trained: {reason}", {**info, "lost": dict(progress.lost)})
    if not progress.done:
        _move(key, token, "freezing", deps, reason=progress.reason)
        return Outcome("acted", progress.reason, {**info, "freezing": True})
    return None


def start_batch(key: str, deps: Deps, *, event_id: str) -> Outcome:
    """Start training for a complete (or waiting) batch: admission, data asset, job (see the module docstring)."""
    from shared.core.control import read_control

    record = deps.state.get(key)
    if record is None:
        raise PermanentError(f"arrival record {key} vanished")
    found = ArrivalRecord.from_dict(record.value)
    batch_id = found.batch_id
    token = uuid.uuid4().hex
    batch = _lease(key, token, deps.clock(), deps) if found.status in STARTABLE else None
    if batch is None:
        stored = deps.state.get(key)
        current = ArrivalRecord.from_dict(stored.value) if stored else None
        status = current.status if current else "gone"
        return Outcome("duplicate", f"batch {batch_id} is {status}" + (
            " (another worker is starting it)" if status == "starting" else ""),
            {"batch": batch_id, "job": current.job if current else ""})
    if not batch.file_count:
        reason = f"empty batch: no usable file ({batch.rejected_count} rejected)"
        if _move(key, token, "skipped", deps, reason=reason):
            deps.publisher.publish("TrainingSkipped", batch_id, {"batch": batch_id, "reason": reason,
                                                                 "rejected": dict(manifest.load(deps, batch).rejected)})
        return Outcome("skipped", reason, {"batch": batch_id, "record": key})
    data = batch_data(deps, batch)
    job = attempt_job_name(batch)
    details = {"batch": batch_id, "job": job, "data": data.ref, "files": batch.file_count, "record": key}
    if read_control(deps).dry_run:
        _move(key, token, "dry-run", deps, reason="dry run: would register data and submit", job=job, data=data)
        return Outcome("dry-run", f"would register {data.ref} and submit {job}", details)
    frozen = _freeze(key, token, batch, deps, details)
    if frozen is not None:
        return frozen
    decision = reserve_slot(deps, job, key)
    if not decision.admitted:
        _move(key, token, "waiting", deps, reason=decision.reason, job=job, data=data)
        return Outcome("acted", f"batch {batch_id} complete, waiting for the sweep: {decision.reason}",
                       {**details, "waiting": True})
    request = training_request(deps, batch, key, job, data, event_id)
    try:
        submitted = submit(deps, batch, request, data)
    except PermanentError as exc:
        why = str(exc)
        if _move(key, token, "submit-failed", deps, reason=why, job=job, data=data):
            deps.publisher.publish("TrainingFailed", batch_id, {**details, "stage": "submit", "error": why})
        raise
    except BaseException:
        _move(key, token, "complete", deps, reason="start interrupted: retried by redelivery or the sweep")
        raise
    if _move(key, token, "submitted", deps, reason="training submitted", job=job, data=data,
             submitted_at=deps.clock(), job_url=submitted.url):
        deps.publisher.publish("TrainingSubmitted", batch_id, {**details, "job_url": submitted.url,
                                                               "event_id": event_id, "mode": request.mode})
    return Outcome("acted", f"submitted {job} on {data.ref}", details)


def mark_job_finished(deps: Deps, job: str, batch_key: str, status: str, reason: str, *,
                      parent: str = "") -> None:
    """Release the job's training slot and close the records that started it (`trained` or `failed`): its
    arrival record, and the retraining record (`retrains/…`) when a retraining started it (`parent`, the
    job's `reflex.parent` tag; the sweep passes the admission owner, which is that same key)."""
    now = deps.clock()
    release_slot(deps, job)
    for key in dict.fromkeys((batch_key, parent)):
        kind: type[ArrivalRecord] | type[RetrainRecord] | None = (
            ArrivalRecord if key.startswith("arrivals/") else RetrainRecord if key.startswith("retrains/") else None)
        if kind is not None:
            deps.state.update(key, as_update(kind, lambda r: r.with_status(
                status, now, allowed_from=("submitted", "waiting", "complete"), reason=reason)
                if r is not None and r.job == job else None))


def refresh_running(deps: Deps) -> int:
    """Handle jobs that ended (or were never created) without an event reaching us, and release their slots:
    how many were released.

    A job that ended is handed to the reaction its own event runs (`shared.core.unheard`: the gate for a
    Completed job, TrainingFailed or a retry for a failed one), never closed here: closing a Completed job's
    batch as `trained` without the gate lost its model (#18). That reaction releases the slot and closes the
    records; what it leaves open (it skipped the job, or dead-lettered it) is closed here with its reason. A
    reaction that fails for a transient reason leaves the slot taken: the next sweep tries again. The
    evaluation jobs gates wait for hold no slot; they are found through the gates' markers."""
    from shared.core import unheard
    from shared.core.errors import TransientError

    record = deps.state.get(admission.ADMISSION_KEY)
    released = 0
    for job, slot in admission.AdmissionRecord.from_dict(record.value if record else None).running.items():
        found = deps.platform.get_job(job)
        if found is None and deps.clock() - slot.at > CLAIM_LEASE_SECONDS:
            mark_job_finished(deps, job, slot.batch, "failed", "job not found on the platform")
            released += 1
        elif found is not None and found.terminal:
            try:
                outcome = unheard.handle(deps, found)
            except TransientError as exc:
                log.warning("sweep: job %s ended unheard; its reaction will be retried: %s", job, exc)
                continue
            if outcome.status == "held":
                continue  # paused: the job's reaction runs on resume, its slot stays taken until then
            status = "trained" if found.status == "Completed" else "failed"
            mark_job_finished(deps, job, slot.batch, status,
                              f"job {found.status}, found by the sweep: {outcome.status}: {outcome.reason}")
            released += 1
    for name in unheard.awaited_evaluations(deps):
        evaluated = deps.platform.get_job(name)
        if evaluated is not None and evaluated.terminal:
            try:
                unheard.handle(deps, evaluated)
            except TransientError as exc:
                log.warning("sweep: evaluation job %s ended unheard; its reaction will be retried: %s", name, exc)
    return released


def latest_batch(deps: Deps) -> tuple[str, ArrivalRecord] | None:
    """The most recently completed training batch with usable files: (arrival key, record), or None.

    Read from the unfinished batches and the finished ones newest day first (`StateStore.newest`), not from
    every batch ever recorded (#17.2)."""
    def completed(record: Record) -> float | None:
        batch = ArrivalRecord.from_dict(record.value)
        return float(batch.completed_at or 0) if batch.status in RETRAINABLE and batch.file_count else None

    found = deps.state.newest(f"arrivals/{key_part(deps.settings.data_container)}/", completed)
    return None if found is None else (found.key, ArrivalRecord.from_dict(found.value))
