"""Data arrival: BlobCreated events -> one arrival record per batch -> one training start per completed batch.

Why this shape: Event Grid delivers at least once and in no particular order, and a dataset of 1000 files is
1000 events. Each delivery writes its blob version's own entry and reads the batch's small summary
(`ArrivalRecord`, shared/batches/record.py; shared/batches/intake.py `record_blob`): a bounded number of small
requests whatever the batch size, and a redelivered blob version changes nothing. The batch completes exactly once
(shared/batches/intake.py `complete_batch`) when its marker arrives or, with no marker configured, when the
sweep finds it quiet. The worker that made that transition starts training through the batch and training
service (shared/batches/training.py `start_batch`: admission, data asset, job), which the sweep, the
registration gate and retraining share.

Files arriving after completion are recorded as `late_files` and do not retrigger training (a new batch
folder is the way to train on new data). Everything that cannot train ends with its reason in the record and
in the outcome: unknown container, a blob outside a batch folder, zero-byte or unreadable files, an empty
batch. The sweep (`sweep`) also recovers a batch whose completing worker crashed before submitting, starts
batches waiting for a slot (a retry after a transient failure once its backoff has passed), continues freezing the
batches whose copy did not finish in one invocation (shared/batches/freeze.py), and hands jobs that
ended without an event reaching us to the reaction their event runs (shared/batches/training.py
`refresh_running`, shared/core/unheard.py).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from shared.batches import mltable
from shared.batches.intake import complete_batch, locate_blob, record_blob
from shared.batches.paths import BatchPath
from shared.batches.record import ArrivalRecord, BlobVersion, as_update
from shared.batches.training import STARTABLE, arrival_key, refresh_running, start_batch
from shared.core.errors import ReflexError, TransientError
from shared.core.reaction import Outcome, replaying
from shared.core.state import Record, key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["arrival_key", "handle_blob", "sweep"]

log = logging.getLogger("reflex.arrival")


# Usable blob versions this worker has already recorded, per state store: a redelivery of one of them is
# answered without a request. Safe because a recorded version's entry never goes away and it stays usable
# (a version listed at completion is in the manifest). Late and rejected versions are not kept here, so their
# (rare) redeliveries are never linked to the batch's lineage.
_RECORDED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_RECORDED_LIMIT = 200_000


def _recorded(deps: Deps) -> set[str]:
    known = _RECORDED.setdefault(deps.state, set())
    if len(known) > _RECORDED_LIMIT:
        known.clear()
    return known


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
    got = record_blob(deps, key, path, version, kind=ArrivalRecord, purpose="training")
    batch = got.batch
    if got.usable:
        known.add(blob.key)  # a manifest version: its redeliveries are answered without a request
    else:  # a late or rejected version (or its redelivery): not trained on
        details = not_trained
    if got.what == "duplicate":
        return Outcome("duplicate", f"{path.file} (etag {blob.etag}) already recorded", details)
    if got.what == "late":
        log.warning("late file %s for batch %s (already %s): recorded, not trained on", path.file, path.batch_id,
                    batch.status)
        return Outcome("skipped", f"late file: batch {path.batch_id} is already {batch.status}; recorded in "
                                  "late_files, not trained on (upload new data as a new batch folder)", not_trained)
    if got.what == "rejected":
        return Outcome("skipped", f"rejected: {got.reason}", not_trained)
    waits = (f"waiting for {marker}" if marker else
             f"complete once no file arrives for {deps.settings.quiet_seconds} s")
    return Outcome("acted", f"recorded {path.file} in batch {path.batch_id} (collecting; {waits})", details)


def _reopen_after_fix(key: str, deps: Deps) -> Record | None:
    """An operator replays the marker of a batch whose submission failed permanently (they fixed the cause):
    back to `complete`, so it starts again. Only for a replay (`reaction.replaying()`), never a redelivery.
    The record as it now is (reopened, or as another worker left it)."""
    now = deps.clock()
    return deps.state.update(key, as_update(ArrivalRecord, lambda r: r and r.with_status(
        "complete", now, allowed_from=("submit-failed",),
        reason="replayed by an operator after a failed submission")))


def _on_marker(key: str, path: BatchPath, marker: BlobVersion, event_id: str, deps: Deps) -> Outcome:
    current = deps.state.get(key)
    if current is not None and current.value["status"] == "submit-failed" and replaying():
        current = _reopen_after_fix(key, deps)
    batch = ArrivalRecord.from_dict(current.value) if current is not None else None
    if batch is not None and batch.status != "collecting":
        if batch.status not in STARTABLE:
            return Outcome("duplicate", f"batch {path.batch_id} is already {batch.status}",
                           {"batch": path.batch_id, "job": batch.job})
        return start_batch(key, deps, event_id=event_id)  # e.g. a redelivery after a transient failure
    if not complete_batch(deps, key, path, deps.clock(), event_id=event_id, kind=ArrivalRecord, purpose="training",
                          marker=marker):
        return Outcome("duplicate", f"batch {path.batch_id} was completed by another delivery",
                       {"batch": path.batch_id})
    return start_batch(key, deps, event_id=event_id)


def sweep(deps: Deps) -> Outcome:
    """Timer: refresh running jobs, complete quiet batches (no marker configured), start waiting batches."""
    released = refresh_running(deps)
    now = deps.clock()
    completed = started = 0
    waiting: list[tuple[float, str]] = []
    for record in deps.state.active("arrivals/"):  # unfinished batches only, whatever the history (#17.2)
        batch = ArrivalRecord.from_dict(record.value)
        if not deps.settings.completion_marker and batch.quiet(now, deps.settings.quiet_seconds):
            if complete_batch(deps, record.key, batch.path, now, event_id=f"sweep:{int(now)}", kind=ArrivalRecord,
                              purpose="training"):
                completed += 1
                waiting.append((now, record.key))
        elif not batch.retry_due(now):
            continue  # a retry waiting out its backoff: not due, and it must not hold up the batches behind it
        elif batch.status in ("waiting", "complete", "freezing") or (batch.status == "starting" and
                                                                    batch.lease_free(now)):
            waiting.append((float(batch.completed_at or 0), record.key))
    failed = 0
    links: list[dict[str, Any]] = []  # one lineage group per batch started, so batches never join chains
    items: dict[str, dict[str, Any]] = {}
    for _, key in sorted(waiting):
        try:
            outcome = start_batch(key, deps, event_id=f"sweep:{int(now)}")
        except ReflexError as exc:  # one bad batch must not stop the sweep; the next sweep retries transients
            failed += 1
            if not isinstance(exc, TransientError):
                deps.state.dead_letter("data.sweep", {"record": key}, exc, event_id=f"sweep-{key_part(key)}")
            log.warning("sweep could not start %s: %s", key, exc)
            continue
        refs = {k: outcome.details[k] for k in ("batch", "job", "data") if outcome.details.get(k)}
        # what this sweep did to each batch, for `explain` (a pass of freezing, a batch failed: its reason)
        items[key] = {"status": outcome.status, "reason": outcome.reason, **refs}
        if outcome.details.get("waiting"):
            break  # no slot left: the rest keep waiting, in arrival order
        started += outcome.status == "acted" and not outcome.details.get("freezing")
        links.append(refs)
    details = {"released": released, "completed": completed, "started": started, "failed": failed,
               "still_waiting": len(waiting) - started - failed, **items, "links": links}
    status = "acted" if (released or completed or started) else "skipped"
    return Outcome(status, f"sweep: {completed} batch(es) completed, {started} started, {released} slot(s) released",
                   details)
