"""Retraining of an already-trained batch (drift or schedule), through the data-arrival path, once per window.

Why here and not a new pipeline: a retrain is the same submission as the first training of a batch (same
data asset, admission rules, lineage tags, registration gate on RunCompleted); only the trigger differs. The
job name is `batches.job_name(batch, manifest digest | trigger)`, so it differs from the batch's first job and
from a retrain with another trigger, and a repeated call finds the same job.

"Once per window": the record `retrains/<model>/<window>` is created with create-if-absent before anything is
submitted; whoever creates it (the drift timer or the scheduled retraining) is the only one that retrains in
that window, the other sees it and stands down. The record keeps status `pending` -> `waiting` (no training
slot) -> `submitted`; a record left pending or waiting is resumed by the next tick of either timer, so a
transient failure does not lose the window's retraining.

Windows are UTC days (`window_id`): at most one retraining per model per day, whatever the schedules.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.batches import admission, mltable
from shared.batches.latest import latest_batch
from shared.batches.paths import asset_path, data_asset_name, data_asset_version, job_name, manifest_digest
from shared.batches.record import set_status
from shared.core.errors import PermanentError
from shared.core.reaction import Outcome
from shared.core.state import key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["WINDOW_SECONDS", "request_retrain", "resume_retrains", "retrain_job_name",
           "retrain_key", "start_training_for_batch", "window_id"]

log = logging.getLogger("reflex.retrain")

WINDOW_SECONDS = 86_400


def window_id(now: float, seconds: int = WINDOW_SECONDS) -> str:
    """The window a tick at `now` falls in: its start, floored to `seconds`, as compact UTC time."""
    start = int(now // seconds * seconds)
    return datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%MZ")


def retrain_key(model: str, window: str) -> str:
    return f"retrains/{key_part(model)}/{key_part(window)}"


def retrain_job_name(batch_id: str, files: dict[str, Any], trigger: str) -> str:
    """Deterministic, and different from the batch's first training job (whose digest has no trigger)."""
    return job_name(batch_id, f"{manifest_digest(files)}|{trigger}")


def start_training_for_batch(deps: Deps, batch_key: str, *, trigger: str, event_id: str,
                             retrain: str = "") -> tuple[str, str]:
    """Submit a training job over the complete batch `batch_key` for `trigger`: (status, job name).

    status is `submitted`, or `waiting` when admission has no slot (the caller keeps its record and retries).
    Idempotent: the same batch and trigger give the same job name, data asset and admission slot.

    Raises:
        PermanentError: the batch record is missing or has no usable files; the platform refused the job.
        TransientError: storage or platform hiccup: retry later.
    """
    from shared.arrival.flow import _training_request  # the first training's request, so lineage tags match

    record = deps.state.get(batch_key)
    if record is None or not record.value.get("files"):
        raise PermanentError(f"cannot retrain: batch record {batch_key} is missing or has no usable files")
    value = record.value
    batch_id = f"{value['container']}/{value['dataset']}/{value['batch']}"
    job = retrain_job_name(batch_id, value["files"], trigger)
    data = value.get("data") or {"name": data_asset_name(value["dataset"]),
                                 "version": data_asset_version(value["batch"]),
                                 "path": asset_path(deps.settings.data_datastore, value["dataset"], value["batch"])}
    now = deps.clock()
    decision: dict[str, admission.Admission] = {}

    def reserve(current: dict[str, Any] | None) -> dict[str, Any] | None:
        new, decision["it"] = admission.reserve(current, job, retrain or batch_key, now,
                                                max_concurrent=deps.settings.max_concurrent_training,
                                                daily_cap=deps.settings.daily_training_cap)
        return new

    deps.state.update(admission.ADMISSION_KEY, reserve)
    if not decision["it"].admitted:
        return "waiting", job
    request = _training_request({**value, "job": job, "data": data}, batch_key, event_id, deps)
    tags = {**request.tags, "reflex.trigger": trigger, "reflex.parent": retrain or f"retrain:{batch_key}"}
    request = dataclasses.replace(request, tags=tags, display_name=f"{request.display_name} ({trigger})")
    try:
        mltable.for_batch(deps.settings, value)   # AutoML reads an mltable asset: its MLTable file first
        deps.platform.register_data(name=data["name"], version=data["version"], path=data["path"], tags=tags,
                                    description=f"batch {batch_id}")
        deps.platform.submit_training(request)
    except PermanentError:
        deps.state.update(admission.ADMISSION_KEY, lambda v: admission.release(v, {job}, deps.clock()))
        raise
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
    created = deps.state.create(key, {"model": model, "window": window, "trigger": trigger, "batch": batch_key,
                                      "event_id": event_id, "status": "pending", "job": "", "reason": "",
                                      "evidence": dict(evidence or {}), "history": [[now, "pending", trigger]]})
    if created is None:
        existing = deps.state.get(key)
        by = existing.value.get("trigger", "?") if existing else "?"
        return Outcome("duplicate", f"window {window} already has a retraining (by {by})",
                       {"window": window, "record": key})
    return _advance(deps, key)


def _advance(deps: Deps, key: str) -> Outcome:
    record = deps.state.get(key)
    if record is None:
        return Outcome("skipped", f"retrain record {key} vanished")
    value = record.value
    details = {"window": value["window"], "record": key, "batch": value["batch"], "trigger": value["trigger"]}
    if value.get("status") not in ("pending", "waiting"):
        return Outcome("duplicate", f"retraining of window {value['window']} is already {value.get('status')}",
                       {**details, "job": value.get("job", "")})
    now = deps.clock()
    try:
        status, job = start_training_for_batch(deps, value["batch"], trigger=value["trigger"],
                                               event_id=value["event_id"], retrain=key)
    except PermanentError as exc:
        why = str(exc)
        deps.state.update(key, lambda v: set_status(v, "failed", now, allowed_from=("pending", "waiting"),
                                                    reason=why))
        deps.publisher.publish("TrainingFailed", value["batch"], {**details, "stage": "submit", "error": why})
        return Outcome("skipped", f"retraining could not be submitted: {why}", details)
    reason = "training submitted" if status == "submitted" else "no training slot: the next tick retries"
    deps.state.update(key, lambda v: set_status(v, status, now, allowed_from=("pending", "waiting"), reason=reason,
                                                job=job))
    if status == "submitted":
        deps.publisher.publish("TrainingSubmitted", value["batch"], {**details, "job": job})
        return Outcome("acted", f"retraining {job} submitted for window {value['window']}", {**details, "job": job})
    return Outcome("acted", f"retraining {job} waits for a training slot", {**details, "job": job, "waiting": True})


def resume_retrains(deps: Deps) -> list[Outcome]:
    """Retry retrainings left pending (a crash or transient failure) or waiting for a slot."""
    outcomes = []
    for record in deps.state.records("retrains/"):
        if record.value.get("status") in ("pending", "waiting"):
            outcomes.append(_advance(deps, record.key))
    return outcomes
