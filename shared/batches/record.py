"""The arrival record of one batch and its transitions, as pure functions for `StateStore.update` (CAS).

Why pure transitions: `update(key, fn)` may run `fn` several times when workers race, so each transition
takes the current record and returns the next one, or None when there is nothing to change (a redelivery).
That "None" is what makes 3000 deliveries of 1000 blobs write the record only 1000 times.

Record `arrivals/<container>/<dataset>/<batch>`::

    {"container", "dataset", "batch",
     "status": "collecting" | "complete" | "starting" | "waiting" | "submitted" | "trained" | "failed"
               | "skipped" | "dry-run" | "submit-failed",
     "lease": {"token", "until"} | null,                        held by the one worker starting the batch
     "files":    {"<file>": {"url", "etag", "size"}},          usable data (the manifest)
     "rejected": {"<file>": {"url", "etag", "size", "reason"}}, zero-byte, unreadable format, hidden
     "late_files": {"<file>": {"url", "etag", "size", "at"}},   arrived after completion: not trained on
     "marker": {"url", "etag"} | null,
     "first_seen", "last_seen", "completed_at": epoch seconds,
     "completing_event": id of the event (or "sweep:…") that completed it,
     "job", "data": {"name", "version", "path"}, "reason", "history": [[epoch, status, reason], …],
     "attempt": training attempt (absent: 1; `python -m reflex train` starts the next, shared/arrival/retry.py)}

Completion freezes the manifest from a listing of the batch folder (the storage is the truth: a marker can
be delivered before the files it follows), so a later delivery of a listed file is a duplicate, and a file
that is not in the frozen manifest is recorded as late and does not retrigger training.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.batches.formats import Purpose
from shared.batches.paths import BatchPath, file_problem

__all__ = ["BlobVersion", "OPEN_STATUSES", "add_blob", "complete", "set_status"]

OPEN_STATUSES = frozenset({"collecting", "complete", "starting", "waiting", "submitted"})


@dataclass(frozen=True)
class BlobVersion:
    """One version of one blob of a batch (from an event or a listing)."""

    file: str
    url: str
    etag: str
    size: int | None


def _new(path: BatchPath, now: float) -> dict[str, Any]:
    return {"container": path.container, "dataset": path.dataset, "batch": path.batch, "status": "collecting",
            "files": {}, "rejected": {}, "late_files": {}, "marker": None, "first_seen": now, "last_seen": now,
            "completed_at": None, "completing_event": "", "job": "", "data": None, "reason": "",
            "history": [[now, "collecting", "first blob"]]}


def _folder(path: BatchPath) -> str:
    return f"{path.dataset}/{path.batch}/"


def _entry(blob: BlobVersion) -> dict[str, Any]:
    return {"url": blob.url, "etag": blob.etag, "size": blob.size}


def _known(record: dict[str, Any], blob: BlobVersion) -> bool:
    return any((record.get(section) or {}).get(blob.file, {}).get("etag") == blob.etag
               for section in ("files", "rejected", "late_files"))


def add_blob(record: dict[str, Any] | None, path: BatchPath, blob: BlobVersion, now: float, *,
             purpose: Purpose = "training") -> tuple[dict[str, Any] | None, str]:
    """Record a data blob: (new record or None, what happened: added | rejected | late | duplicate).

    `purpose` picks the formats the batch's job reads (shared/batches/formats.py): training or batch scoring."""
    value = _new(path, now) if record is None else dict(record)
    if record is not None and _known(value, blob):
        return None, "duplicate"
    if value["status"] != "collecting":
        value["late_files"] = {**value.get("late_files", {}), blob.file: {**_entry(blob), "at": now}}
        return value, "late"
    problem = file_problem(blob.file, blob.size, purpose=purpose, folder=_folder(path))
    files, rejected = dict(value["files"]), dict(value["rejected"])
    files.pop(blob.file, None)
    rejected.pop(blob.file, None)
    if problem:
        rejected[blob.file] = {**_entry(blob), "reason": problem}
    else:
        files[blob.file] = _entry(blob)
    value.update(files=files, rejected=rejected, last_seen=now)
    return value, "rejected" if problem else "added"


def complete(record: dict[str, Any] | None, path: BatchPath, listing: Iterable[BlobVersion], now: float, *,
             event_id: str, marker: BlobVersion | None = None,
             purpose: Purpose = "training") -> tuple[dict[str, Any] | None, bool]:
    """Freeze the manifest from `listing` and mark the batch complete: (new record or None, transitioned).

    Only a record still collecting (or absent: the marker may be the first blob delivered) transitions.
    A marker seen again after completion changes nothing.
    """
    value = _new(path, now) if record is None else dict(record)
    if value["status"] != "collecting":
        return None, False
    files: dict[str, Any] = {}
    rejected: dict[str, Any] = {}
    for blob in listing:
        problem = file_problem(blob.file, blob.size, purpose=purpose, folder=_folder(path))
        if problem:
            rejected[blob.file] = {**_entry(blob), "reason": problem}
        else:
            files[blob.file] = _entry(blob)
    why = "marker arrived" if marker is not None else "quiet window passed"
    value.update(files=files, rejected=rejected, status="complete", completed_at=now, completing_event=event_id,
                 marker=None if marker is None else {"url": marker.url, "etag": marker.etag},
                 history=[*value.get("history", []), [now, "complete", why]])
    return value, True


def set_status(record: dict[str, Any] | None, status: str, now: float, *, allowed_from: Iterable[str],
               reason: str = "", **fields: Any) -> dict[str, Any] | None:
    """Move to `status` (with extra `fields`) when the current status is in `allowed_from`; else None."""
    if record is None or record.get("status") not in set(allowed_from):
        return None
    value = dict(record)
    value.update(fields, status=status, reason=reason)
    value["history"] = [*value.get("history", []), [now, status, reason]]
    return value
