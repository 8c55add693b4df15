"""Data arrival: BlobCreated events -> one arrival record per batch -> one data asset version and one training job.

Why this shape: Event Grid delivers at least once and in no particular order, and a dataset of 1000 files is
1000 events. Each delivery does one compare-and-swap on the batch's record (`shared/batches/record.py`); a
redelivered blob version changes nothing. The batch completes exactly once (a CAS from `collecting` to
`complete`) when its marker arrives or, with no marker configured, when the sweep finds it quiet; completion
lists the batch folder, so the manifest is what storage holds even if the marker's event came first. The
worker that made that transition starts training: admission (concurrency and daily cap, one CAS on
`training/admission`), data asset `<dataset>:<batch>` and a job whose name derives from the batch and its
manifest, so a retry or a racing sweep finds the same asset and job instead of creating new ones.

Files arriving after completion are recorded as `late_files` and do not retrigger training (a new batch
folder is the way to train on new data). Everything that cannot train ends with its reason in the record and
in the outcome: unknown container, a blob outside a batch folder, zero-byte or unreadable files, an empty
batch. The sweep (`sweep`) also recovers a batch whose completing worker crashed before submitting, starts
batches waiting for a slot, and releases slots of jobs that ended without an event reaching us.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.batches import admission, mltable
from shared.batches.paths import (
    BatchPath,
    PathProblem,
    asset_path,
    data_asset_name,
    data_asset_version,
    job_name,
    manifest_digest,
    parse_blob_path,
)
from shared.batches.record import BlobVersion, add_blob, complete, set_status
from shared.core import champion as champions
from shared.core import events
from shared.core.errors import PermanentError, ReflexError, TransientError, map_azure_error
from shared.core.platform import REFLEX_TAG, TrainingRequest
from shared.core.reaction import Outcome, replaying
from shared.core.state import Record, key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["CLAIM_LEASE_SECONDS", "arrival_key", "attempt_job_name", "handle_blob", "list_batch", "mark_job_finished",
           "start_batch", "sweep"]

log = logging.getLogger("reflex.arrival")

# how long a worker may hold a batch's start lease; after that (it crashed) a redelivery or the sweep takes over
CLAIM_LEASE_SECONDS = 120.0


# Manifest blob versions this worker has already recorded, per state store: a redelivery of one of them is
# answered without reading the (possibly large) arrival record. Safe because a recorded version never leaves
# its record. Late and rejected versions are not kept here, so their (rare) redeliveries are never linked to
# the batch's lineage.
_RECORDED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_RECORDED_LIMIT = 200_000


def _recorded(deps: Deps) -> set[str]:
    known = _RECORDED.setdefault(deps.state, set())
    if len(known) > _RECORDED_LIMIT:
        known.clear()
    return known


def arrival_key(path: BatchPath) -> str:
    return f"arrivals/{key_part(path.container)}/{key_part(path.dataset)}/{key_part(path.batch)}"


def list_batch(deps: Deps, path: BatchPath) -> list[BlobVersion]:
    """Every blob of the batch folder as storage holds it now (one paged list call), marker excluded."""
    container = deps.blobs.get_container_client(path.container)
    prefix = f"{path.dataset}/{path.batch}/"
    marker = deps.settings.completion_marker
    try:
        found = list(container.list_blobs(name_starts_with=prefix))
    except Exception as exc:
        raise map_azure_error(exc, f"listing {path.batch_id}") from exc
    base = container.url.rstrip("/")
    return [BlobVersion(b.name[len(prefix):], f"{base}/{quote(b.name)}", str(b.etag).strip('"'), b.size)
            for b in found if not (marker and b.name[len(prefix):] == marker)]


def locate_blob(raw: Any, container: str, role: str) -> tuple[events.BlobCreated, BatchPath, BlobVersion] | Outcome:
    """A BlobCreated event placed in its batch folder, or the skip outcome saying why it has none.

    Shared by the data and the scoring containers (`role` names which, in the reason). Skipped, never guessed at:
    an event whose `data.api` does not complete a blob (the subscription filters these out too; a Data Lake
    `CreateFile` announces an empty file still being written), a blob of another container, and one outside a
    `<dataset>/<batch>/` folder.
    """
    blob = events.blob_created(raw)
    if not blob.completes_blob:
        return Outcome("skipped", f"data.api {blob.api!r} does not complete a blob (acted on: "
                                  f"{', '.join(sorted(events.BLOB_COMPLETING_APIS))}); a later event announces it",
                       {"blob": blob.url})
    if blob.container != container:
        return Outcome("skipped", f"container {blob.container!r} is not the {role} container {container!r}",
                       {"blob": blob.url})
    try:
        path = parse_blob_path(blob.container, blob.blob_name)
    except PathProblem as exc:
        return Outcome("skipped", str(exc), {"blob": blob.url})
    return blob, path, BlobVersion(path.file, blob.url, blob.etag, blob.content_length)


def handle_blob(raw: Any, deps: Deps) -> Outcome:
    """One BlobCreated event: record the blob in its batch, complete the batch on its marker, start training once."""
    located = locate_blob(raw, deps.settings.data_container, "data")
    if isinstance(located, Outcome):
        return located
    blob, path, version = located
    key = arrival_key(path)
    marker = deps.settings.completion_marker
    if marker and path.file == marker:
        return _on_marker(key, path, version, blob.id, deps)
    if path.file == mltable.MLTABLE:
        return Outcome("skipped", "Reflex's own MLTable file for AutoML (shared/batches/mltable.py), not data",
                       {"blob": blob.url, "batch": path.batch_id})
    # lineage: a blob that is (or will be) trained on links to its batch; a late or rejected one does not
    details = {"blob": blob.url, "batch": path.batch_id, "file": path.file, "record": key}
    not_trained = {"blob": blob.url, "file": path.file, "record": key}
    known = _recorded(deps)
    if blob.key in known:
        return Outcome("duplicate", f"{path.file} (etag {blob.etag}) already recorded", details)
    happened: dict[str, str] = {}

    def record(current: dict[str, Any] | None) -> dict[str, Any] | None:
        new, what = add_blob(current, path, version, deps.clock())
        happened["what"] = what
        return new

    stored = deps.state.update(key, record)
    what = happened["what"]
    value = stored.value if stored else {}
    status = value.get("status", "?")
    if (value.get("files") or {}).get(path.file, {}).get("etag") == blob.etag:
        known.add(blob.key)  # a manifest version: its redeliveries are answered without reading the record
    elif what == "duplicate":  # a redelivered late or rejected version: still not trained on
        details = not_trained
    if what == "duplicate":
        return Outcome("duplicate", f"{path.file} (etag {blob.etag}) already recorded", details)
    if what == "late":
        log.warning("late file %s for batch %s (already %s): recorded, not trained on", path.file, path.batch_id,
                    status)
        return Outcome("skipped", f"late file: batch {path.batch_id} is already {status}; recorded in late_files, "
                                  "not trained on (upload new data as a new batch folder)", not_trained)
    if what == "rejected":
        reason = stored.value["rejected"][path.file]["reason"] if stored else what
        return Outcome("skipped", f"rejected: {reason}", not_trained)
    count = len(stored.value["files"]) if stored else 0
    waits = (f"waiting for {marker}" if marker else
             f"complete once no file arrives for {deps.settings.quiet_seconds} s")
    return Outcome("acted", f"recorded {path.file} in batch {path.batch_id} ({count} files, collecting; {waits})",
                   details)


def _reopen_after_fix(key: str, deps: Deps) -> Record | None:
    """An operator replays the marker of a batch whose submission failed permanently (they fixed the cause):
    back to `complete`, so it starts again. Only for a replay (`reaction.replaying()`), never a redelivery.
    The record as it now is (reopened, or as another worker left it)."""
    now = deps.clock()
    return deps.state.update(key, lambda v: set_status(
        v, "complete", now, allowed_from=("submit-failed",),
        reason="replayed by an operator after a failed submission"))


def _on_marker(key: str, path: BatchPath, marker: BlobVersion, event_id: str, deps: Deps) -> Outcome:
    current = deps.state.get(key)
    if current is not None and current.value["status"] == "submit-failed" and replaying():
        current = _reopen_after_fix(key, deps)
    if current is not None and current.value["status"] != "collecting":
        value = current.value
        if value["status"] not in STARTABLE:
            return Outcome("duplicate", f"batch {path.batch_id} is already {value['status']}",
                           {"batch": path.batch_id, "job": value.get("job", "")})
        return start_batch(key, deps, event_id=event_id)  # e.g. a redelivery after a transient failure
    listing = list_batch(deps, path)
    won: dict[str, bool] = {}

    def finish(value: dict[str, Any] | None) -> dict[str, Any] | None:
        new, transitioned = complete(value, path, listing, deps.clock(), event_id=event_id, marker=marker)
        won["it"] = transitioned
        return new

    deps.state.update(key, finish)
    if not won["it"]:
        return Outcome("duplicate", f"batch {path.batch_id} was completed by another delivery",
                       {"batch": path.batch_id})
    return start_batch(key, deps, event_id=event_id)


def _training_request(value: Mapping[str, Any], key: str, event_id: str, deps: Deps) -> TrainingRequest:
    s = deps.settings
    data = value["data"]
    trigger = f"blob:{value['container']}/{value['dataset']}/{value['batch']}"
    tags = {REFLEX_TAG: "true", "reflex.trigger": trigger, "reflex.event_id": event_id,
            "reflex.data": f"{data['name']}:{data['version']}", "reflex.batch": key, "reflex.parent": f"arrival:{key}"}
    champion = ""
    if s.training_mode == "command" and not s.eval_data:
        # the job scores the champion on its own holdout, so the gate compares both on the same rows
        found = champions.find(deps, s.model_name)
        champion = found.ref if found else ""
        tags["reflex.eval.champion"] = champion or "none"
    return TrainingRequest(
        job_name=value["job"], experiment_name=s.experiment_name, data_name=data["name"],
        data_version=data["version"], mode=s.training_mode, task=s.task, label_column=s.label_column,
        compute=s.training_compute, environment=s.training_environment, tags=tags,
        display_name=f"{value['dataset']}/{value['batch']}", code=s.training_code,
        primary_metric=s.automl_primary_metric, timeout_minutes=s.automl_timeout_minutes,
        max_trials=s.automl_max_trials, early_stopping=s.automl_early_stopping, champion_model=champion)


STARTABLE = ("complete", "waiting", "starting")


def attempt_job_name(batch_id: str, value: Mapping[str, Any]) -> str:
    """The job of the record's attempt: the first from the batch and its manifest, a later one (an operator's
    `python -m reflex train`, shared/arrival/retry.py) from the attempt number too, so it never reuses a job."""
    digest = manifest_digest(value["files"])
    attempt = int(value.get("attempt") or 1)
    return job_name(batch_id, digest if attempt <= 1 else f"{digest}|attempt-{attempt}")


def _lease(key: str, token: str, now: float, deps: Deps) -> dict[str, Any] | None:
    """Take the batch's start lease (CAS to `starting`): the one worker that may submit it now, or None."""

    def take(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or value.get("status") not in STARTABLE:
            return None
        lease = value.get("lease") or {}
        if value["status"] == "starting" and float(lease.get("until", 0)) > now:
            return None
        return {**value, "status": "starting", "lease": {"token": token, "until": now + CLAIM_LEASE_SECONDS}}

    stored = deps.state.update(key, take)
    if stored is None or (stored.value.get("lease") or {}).get("token") != token:
        return None
    return stored.value


def _move(key: str, token: str, status: str, deps: Deps, *, reason: str, **fields: Any) -> bool:
    """Leave `starting` for `status`, only while this invocation still holds the lease."""
    now = deps.clock()

    def change(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or (value.get("lease") or {}).get("token") != token:
            return None
        return set_status({**value, "lease": None}, status, now, allowed_from=("starting",), reason=reason,
                          **fields)

    stored = deps.state.update(key, change)
    return stored is not None and stored.value.get("status") == status and stored.value.get("lease") is None


def start_batch(key: str, deps: Deps, *, event_id: str) -> Outcome:
    """Start training for a complete (or waiting) batch: admission, data asset, job.

    Idempotent and exclusive: a lease on the record (status `starting`, expiring after CLAIM_LEASE_SECONDS)
    lets one worker at a time submit; a transient failure hands the lease back, so a redelivery or the sweep
    finishes the job, and the deterministic names make a repeated submission find the same asset and job.
    """
    from shared.core.control import read_control

    record = deps.state.get(key)
    if record is None:
        raise PermanentError(f"arrival record {key} vanished")
    batch_id = f"{record.value['container']}/{record.value['dataset']}/{record.value['batch']}"
    token = uuid.uuid4().hex
    value = _lease(key, token, deps.clock(), deps) if record.value["status"] in STARTABLE else None
    if value is None:
        current = deps.state.get(key)
        status = current.value["status"] if current else "gone"
        return Outcome("duplicate", f"batch {batch_id} is {status}" + (
            " (another worker is starting it)" if status == "starting" else ""),
            {"batch": batch_id, "job": current.value.get("job", "") if current else ""})
    if not value["files"]:
        reason = f"empty batch: no usable file ({len(value['rejected'])} rejected)"
        if _move(key, token, "skipped", deps, reason=reason):
            deps.publisher.publish("TrainingSkipped", batch_id, {"batch": batch_id, "reason": reason,
                                                                 "rejected": value["rejected"]})
        return Outcome("skipped", reason, {"batch": batch_id, "record": key})
    name, version = data_asset_name(value["dataset"]), data_asset_version(value["batch"])
    job = attempt_job_name(batch_id, value)
    data = {"name": name, "version": version,
            "path": asset_path(deps.settings.data_datastore, value["dataset"], value["batch"])}
    details = {"batch": batch_id, "job": job, "data": f"{name}:{version}", "files": len(value["files"]),
               "record": key}
    if read_control(deps).dry_run:
        _move(key, token, "dry-run", deps, reason="dry run: would register data and submit", job=job, data=data)
        return Outcome("dry-run", f"would register {name}:{version} and submit {job}", details)
    now = deps.clock()
    decision: dict[str, admission.Admission] = {}

    def reserve(current: dict[str, Any] | None) -> dict[str, Any] | None:
        new, decision["it"] = admission.reserve(current, job, key, now,
                                                max_concurrent=deps.settings.max_concurrent_training,
                                                daily_cap=deps.settings.daily_training_cap)
        return new

    deps.state.update(admission.ADMISSION_KEY, reserve)
    if not decision["it"].admitted:
        why = decision["it"].reason
        _move(key, token, "waiting", deps, reason=why, job=job, data=data)
        return Outcome("acted", f"batch {batch_id} complete, waiting for the sweep: {why}",
                       {**details, "waiting": True})
    return _submit(key, token, {**value, "job": job, "data": data}, event_id, deps, details)


def _submit(key: str, token: str, value: dict[str, Any], event_id: str, deps: Deps,
            details: dict[str, Any]) -> Outcome:
    job, data = value["job"], value["data"]
    request = _training_request(value, key, event_id, deps)
    try:
        mltable.for_batch(deps.settings, value)   # AutoML reads an mltable asset: its MLTable file first
        deps.platform.register_data(name=data["name"], version=data["version"], path=data["path"],
                                    tags=dict(request.tags),
                                    description=f"batch {details['batch']} ({len(value['files'])} files)")
        submitted = deps.platform.submit_training(request)
    except PermanentError as exc:
        now, why = deps.clock(), str(exc)
        deps.state.update(admission.ADMISSION_KEY, lambda v: admission.release(v, {job}, now))
        if _move(key, token, "submit-failed", deps, reason=why, job=job, data=data):
            deps.publisher.publish("TrainingFailed", details["batch"], {**details, "stage": "submit", "error": why})
        raise
    except BaseException:
        _move(key, token, "complete", deps, reason="start interrupted: retried by redelivery or the sweep")
        raise
    if _move(key, token, "submitted", deps, reason="training submitted", job=job, data=data,
             submitted_at=deps.clock(), job_url=submitted.url):
        deps.publisher.publish("TrainingSubmitted", details["batch"], {**details, "job_url": submitted.url,
                                                                      "event_id": event_id, "mode": request.mode})
    return Outcome("acted", f"submitted {job} on {data['name']}:{data['version']}", details)


def mark_job_finished(deps: Deps, job: str, batch_key: str, status: str, reason: str, *,
                      parent: str = "") -> None:
    """Release the job's training slot and close the records that started it (`trained` or `failed`): its
    arrival record, and the retraining record (`retrains/…`) when a retraining started it (`parent`, the
    job's `reflex.parent` tag; the sweep passes the admission owner, which is that same key)."""
    now = deps.clock()
    deps.state.update(admission.ADMISSION_KEY, lambda v: admission.release(v, {job}, now))
    for key in dict.fromkeys((batch_key, parent)):
        if key.startswith(("arrivals/", "retrains/")):
            deps.state.update(key, lambda v: set_status(
                v, status, now, allowed_from=("submitted", "waiting", "complete"), reason=reason)
                if v is not None and v.get("job") == job else None)


def _refresh_running(deps: Deps) -> int:
    """Release slots whose job ended (or was never created) without an event reaching us."""
    record = deps.state.get(admission.ADMISSION_KEY)
    released = 0
    for job, info in dict((record.value if record else {}).get("running") or {}).items():
        found = deps.platform.get_job(job)
        if found is None and deps.clock() - float(info.get("at") or 0) > CLAIM_LEASE_SECONDS:
            mark_job_finished(deps, job, str(info.get("batch", "")), "failed", "job not found on the platform")
            released += 1
        elif found is not None and found.terminal:
            status = "trained" if found.status == "Completed" else "failed"
            mark_job_finished(deps, job, str(info.get("batch", "")), status, f"job {found.status} (sweep)")
            released += 1
    return released


def sweep(deps: Deps) -> Outcome:
    """Timer: refresh running jobs, complete quiet batches (no marker configured), start waiting batches."""
    released = _refresh_running(deps)
    now = deps.clock()
    quiet = deps.settings.quiet_seconds
    completed = started = 0
    waiting: list[tuple[float, str]] = []
    for record in deps.state.records("arrivals/"):
        value = record.value
        status = value.get("status")
        if status == "collecting" and not deps.settings.completion_marker and now - value["last_seen"] >= quiet:
            path = BatchPath(value["container"], value["dataset"], value["batch"], "")
            listing = list_batch(deps, path)
            event_id = f"sweep:{int(now)}"
            stored = deps.state.update(record.key, lambda v, p=path, ls=listing, e=event_id: complete(
                v, p, ls, now, event_id=e)[0])
            if stored is not None and stored.value.get("completing_event") == event_id:
                completed += 1
                waiting.append((now, record.key))
        elif status in ("waiting", "complete") or (
                status == "starting" and float((value.get("lease") or {}).get("until", 0)) <= now):
            waiting.append((float(value.get("completed_at") or 0), record.key))
    failed = 0
    links: list[dict[str, Any]] = []  # one lineage group per batch started, so batches never join chains
    for _, key in sorted(waiting):
        try:
            outcome = start_batch(key, deps, event_id=f"sweep:{int(now)}")
        except ReflexError as exc:  # one bad batch must not stop the sweep; the next sweep retries transients
            failed += 1
            if not isinstance(exc, TransientError):
                deps.state.dead_letter("data.sweep", {"record": key}, exc, event_id=f"sweep-{key_part(key)}")
            log.warning("sweep could not start %s: %s", key, exc)
            continue
        if outcome.details.get("waiting"):
            break  # no slot left: the rest keep waiting, in arrival order
        started += outcome.status == "acted"
        links.append({k: outcome.details[k] for k in ("batch", "job", "data") if outcome.details.get(k)})
    details = {"released": released, "completed": completed, "started": started, "failed": failed,
               "still_waiting": len(waiting) - started - failed, "links": links}
    status = "acted" if (released or completed or started) else "skipped"
    return Outcome(status, f"sweep: {completed} batch(es) completed, {started} started, {released} slot(s) released",
                   details)
