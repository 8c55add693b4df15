"""Retraining of an already-trained batch (drift or schedule), through the data-arrival path, once per window;
and the scheduled-retraining timer (`scheduled_retrain`).

Why here and not a new pipeline: a retrain is the same submission as the first training of a batch (same
data asset, admission rules, lineage tags, registration gate on RunCompleted), made by the same training
service (shared/batches/training.py `reserve_slot`, `training_request`, `submit`); only the trigger differs.
The job name is `paths.job_name(batch, manifest digest | trigger)`, so it differs from the batch's first job
and from a retrain with another trigger, and a repeated call finds the same job.

"Once per window": the record `retrains/<model>/<window>` (`RetrainRecord`, shared/batches/record.py) is created
with create-if-absent before anything is submitted; whoever creates it (the drift timer or the scheduled
retraining) is the only one that retrains in that window, the other sees it and stands down. The record keeps
status `pending` -> `waiting` (no training slot) -> `submitted`; a record left pending or waiting is resumed by
the next tick of either timer, so a transient failure does not lose the window's retraining.

Windows are UTC days (`window_id`): at most one retraining per model per day, whatever the schedules.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.batches import freeze, manifest
from shared.batches.paths import job_name, manifest_digest
from shared.batches.record import ArrivalRecord, RetrainRecord, as_update
from shared.batches.training import batch_data, latest_batch, reserve_slot, submit, training_request
from shared.core.errors import PermanentError
from shared.core.reaction import Outcome
from shared.core.state import key_part

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.core.deps import Deps

__all__ = ["WINDOW_SECONDS", "request_retrain", "resume_retrains", "retrain_job_name", "scheduled_retrain",
           "retrain_key", "start_training_for_batch", "window_id"]

log = logging.getLogger("reflex.retrain")

WINDOW_SECONDS = 86_400


def window_id(now: float, seconds: int = WINDOW_SECONDS) -> str:
    """The window a tick at `now` falls in: its start, floored to `seconds`, as compact UTC time."""
    start = int(now // seconds * seconds)
    return datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%MZ")


def retrain_key(model: str, window: str) -> str:
    return f"retrains/{key_part(model)}/{key_part(window)}"


def retrain_job_name(batch_id: str, files: Mapping[str, Mapping[str, Any]], trigger: str) -> str:
    """Deterministic, and different from the batch's first training job (whose digest has no trigger)."""
    return job_name(batch_id, f"{manifest_digest(files)}|{trigger}")


def start_training_for_batch(deps: Deps, batch_key: str, *, trigger: str, event_id: str,
                             retrain: str = "") -> tuple[str, str]:
    """Submit a training job over the complete batch `batch_key` for `trigger`: (status, job name).

    status is `submitted`, or `waiting` when admission has no slot or the batch's frozen copy is not complete yet
    (shared/batches/freeze.py; the caller keeps its record and retries).
    Idempotent: the same batch and trigger give the same job name, data asset and admission slot.

    Raises:
        PermanentError: the batch record is missing or has no usable files; the platform refused the job.
        TransientError: storage or platform hiccup: retry later.
    """
    record = deps.state.get(batch_key)
    batch = ArrivalRecord.from_dict(record.value) if record is not None else None
    if batch is None or not batch.file_count:
        raise PermanentError(f"cannot retrain: batch record {batch_key} is missing or has no usable files")
    job = retrain_job_name(batch.batch_id, manifest.load(deps, batch).files, trigger)
    data = batch.data or batch_data(deps, batch)
    if data.path == batch_data(deps, batch).path:  # trains on the frozen copy: freeze it first (#18.4)
        progress = freeze.advance(deps, batch)
        if progress.lost:
            raise PermanentError(f"cannot retrain {batch.batch_id}: {progress.reason}")
        if not progress.done:
            return "waiting", job
    if not reserve_slot(deps, job, retrain or batch_key).admitted:
        return "waiting", job
    request = training_request(deps, batch, batch_key, job, data, event_id, trigger=trigger,
                               parent=retrain or f"retrain:{batch_key}")
    submit(deps, batch, request, data)
    return "submitted", job


def request_retrain(deps: Deps, *, model: str, window: str, trigger: str, event_id: str,
                    evidence: dict[str, Any] | None = None) -> Outcome:
    """Retrain the latest complete batch for `trigger`, unless this window already has a retraining."""
    found = latest_batch(deps)
    if found is None:
        return Outcome("skipped", "no complete training batch to retrain on", {"window": window})
    batch_key, _ = found
    key = retrain_key(model, window)
    now = deps.clock()
    created = deps.state.create(key, RetrainRecord(
        model=model, window=window, trigger=trigger, batch=batch_key, event_id=event_id, status="pending",
        evidence=dict(evidence or {}), history=((now, "pending", trigger),)).to_dict())
    if created is None:
        existing = deps.state.get(key)
        by = RetrainRecord.from_dict(existing.value).trigger or "?" if existing else "?"
        return Outcome("duplicate", f"window {window} already has a retraining (by {by})",
                       {"window": window, "record": key})
    return _advance(deps, key)


def _advance(deps: Deps, key: str) -> Outcome:
    record = deps.state.get(key)
    if record is None:
        return Outcome("skipped", f"retrain record {key} vanished")
    retraining = RetrainRecord.from_dict(record.value)
    details = {"window": retraining.window, "record": key, "batch": retraining.batch, "trigger": retraining.trigger}
    if retraining.status not in ("pending", "waiting"):
        return Outcome("duplicate", f"retraining of window {retraining.window} is already {retraining.status}",
                       {**details, "job": retraining.job})
    now = deps.clock()
    try:
        status, job = start_training_for_batch(deps, retraining.batch, trigger=retraining.trigger,
                                               event_id=retraining.event_id, retrain=key)
    except PermanentError as exc:
        why = str(exc)
        deps.state.update(key, as_update(RetrainRecord, lambda r: r and r.with_status(
            "failed", now, allowed_from=("pending", "waiting"), reason=why)))
        deps.publisher.publish("TrainingFailed", retraining.batch, {**details, "stage": "submit", "error": why})
        return Outcome("skipped", f"retraining could not be submitted: {why}", details)
    reason = "training submitted" if status == "submitted" else "no training slot: the next tick retries"
    deps.state.update(key, as_update(RetrainRecord, lambda r: r and r.with_status(
        status, now, allowed_from=("pending", "waiting"), reason=reason, job=job)))
    if status == "submitted":
        deps.publisher.publish("TrainingSubmitted", retraining.batch, {**details, "job": job})
        return Outcome("acted", f"retraining {job} submitted for window {retraining.window}",
                       {**details, "job": job})
    return Outcome("acted", f"retraining {job} waits for a training slot", {**details, "job": job, "waiting": True})


def resume_retrains(deps: Deps) -> list[Outcome]:
    """Retry retrainings left pending (a crash or transient failure) or waiting for a slot."""
    outcomes = []
    for record in deps.state.active("retrains/"):  # unfinished retrainings only (#17.2)
        if RetrainRecord.from_dict(record.value).status in ("pending", "waiting"):
            outcomes.append(_advance(deps, record.key))
    return outcomes


def scheduled_retrain(deps: Deps) -> Outcome:
    """Timer: retrain the latest complete batch once per window, unless drift already retrained in it."""
    from shared.core.control import read_control

    if not deps.settings.retrain_enabled:
        log.info("scheduled retraining is disabled")
        return Outcome("skipped", "scheduled retraining is disabled (REFLEX_RETRAIN_ENABLED=false)")
    resume_retrains(deps)
    window = window_id(deps.clock())
    if read_control(deps).dry_run:
        return Outcome("dry-run", f"would retrain the latest batch for window {window}")
    return request_retrain(deps, model=deps.settings.model_name, window=window,
                           trigger=f"schedule:{window}", event_id=f"schedule:{window}")
