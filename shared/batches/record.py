"""The stored records of the batch side, one type each, and their transitions, pure for `StateStore.update` (CAS).

Why typed records here: an arrival record is written by the arrival flow and the training service, closed by
the registration gate, and read by health, drift, retraining, `status` and `explain`; a scoring record by the
scoring flow, drift and health; a retraining record by the retraining timers and the training service. Each
has one owner type with explicit fields, `from_dict`/`to_dict`, and one place for keys it does not know
(`from_dict` keeps them in `extra`, `to_dict` writes them back unchanged, so a record written by a newer
Reflex survives an older one's compare-and-swap). They live in the shared batch service because the
reactions that read them may import each other only through it.

Why pure transitions: `update(key, fn)` may run `fn` several times when workers race, so each transition
takes the current record and returns the next one, or None when there is nothing to change (a redelivery).
That "None" is what makes 3000 deliveries of 1000 blobs write the record only 1000 times. `as_update` lifts
a transition over typed records to the dict function `StateStore.update` takes.

The stored JSON forms (fields present from creation are always written; the others once they are set)::

    arrivals/<container>/<dataset>/<batch>   ArrivalRecord
    {"container", "dataset", "batch",
     "status": "collecting" | "complete" | "freezing" | "starting" | "waiting" | "submitted" | "trained"
               | "failed" | "skipped" | "dry-run" | "submit-failed",   (freezing: shared/batches/freeze.py)
     "files":    {"<file>": {"url", "etag", "size"}},          usable data (the manifest)
     "rejected": {"<file>": {"url", "etag", "size", "reason"}}, zero-byte, unreadable format, hidden
     "late_files": {"<file>": {"url", "etag", "size", "at"}},   arrived after completion: not trained on
     "marker": {"url", "etag"} | null,
     "first_seen", "last_seen", "completed_at": epoch seconds,
     "completing_event": id of the event (or "sweep:…") that completed it,
     "job", "data": {"name", "version", "path"} | null, "reason", "history": [[epoch, status, reason], …],
     "lease": {"token", "until"},            once set: held by the one worker starting the batch (null: free)
     "submitted_at", "job_url",              once submitted
     "previous_job", "transient_retries", "not_before", "retried_by"
                                             a new attempt after a transient failure of previous_job, not
                                             started before not_before (shared/batches/retries.py)
     "attempt", "reopened_by"}               training attempt (absent: 1; `python -m reflex train` starts the
                                             next, shared/arrival/retry.py) and the request that opened it

    scoring/<container>/<dataset>/<batch>    ScoringRecord: the same batch fields (status "collecting" |
        "complete" | "no-champion" | "deploying" | "submitted" | "completed" | "failed" | "skipped"), and once
        planned "model", "deployment", "endpoint", "input", "output"; "submitted_at", "job_url", "finished_at";
        "previous": [{"model", "job", "output", "status", "reason"}, …] (earlier scorings of the batch)

    retrains/<model>/<window>                RetrainRecord
    {"model", "window", "trigger", "batch": arrival key, "event_id",
     "status": "pending" | "waiting" | "submitted" | "trained" | "failed", "job", "reason",
     "evidence": {…}, "history": [[epoch, status, reason], …]}

Completion freezes the manifest from a listing of the batch folder (the storage is the truth: a marker can
be delivered before the files it follows), so a later delivery of a listed file is a duplicate, and a file
that is not in the frozen manifest is recorded as late and does not retrigger training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

from shared.batches.formats import Purpose
from shared.batches.paths import BatchPath, file_problem

__all__ = ["ArrivalRecord", "BatchRecord", "BlobVersion", "DataRef", "Lease", "RetrainRecord", "ScoringRecord",
           "StatusRecord", "add_blob", "as_update", "complete"]

HistoryEntry = tuple[Any, ...]  # (epoch, status, reason)
Decoders = Mapping[str, Callable[[Any], Any]]  # field name -> how a stored value becomes the field's value


@dataclass(frozen=True)
class BlobVersion:
    """One version of one blob of a batch (from an event or a listing)."""

    file: str
    url: str
    etag: str
    size: int | None


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _history(value: Any) -> tuple[HistoryEntry, ...]:
    return tuple(tuple(entry) for entry in value or () if isinstance(entry, (list, tuple)))


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _encode(value: Any) -> Any:
    """A field's value in its JSON form (plain types first: this runs for every field of every CAS attempt)."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, tuple):  # history entries, earlier scorings
        return [list(v) if isinstance(v, tuple) else _encode(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value.to_dict()


_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    """A record type's stored fields (computed once per type: this runs on every CAS attempt)."""
    names = _NAMES.get(kind)
    if names is None:
        names = _NAMES[kind] = tuple(f.name for f in dataclasses.fields(kind) if f.name != "extra")
    return names


@dataclass(frozen=True)
class Lease:
    """The start lease of an arrival record: which worker may submit the batch, until when (epoch)."""

    token: str = ""
    until: float = 0.0

    @classmethod
    def from_dict(cls, value: Any) -> Lease | None:
        if not isinstance(value, Mapping):
            return None
        return cls(_text(value.get("token")), _float(value.get("until")) or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "until": self.until}


@dataclass(frozen=True)
class DataRef:
    """The Azure ML data asset a batch is registered as."""

    name: str
    version: str
    path: str

    @classmethod
    def from_dict(cls, value: Any) -> DataRef | None:
        if not isinstance(value, Mapping):
            return None
        return cls(_text(value.get("name")), _text(value.get("version")), _text(value.get("path")))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": self.path}

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class StatusRecord:
    """What every record of the batch side has: a status with its reason and history, and the job it started.

    Subclasses declare their fields; `_ALWAYS` names those written from creation (stored even when empty), the
    rest are written once set (not None). `_DECODE` reads a stored value into a field's type, tolerantly:
    records written by hand (tests, an operator) or by older versions may lack fields."""

    status: str = ""
    reason: str = ""
    job: str = ""
    history: tuple[HistoryEntry, ...] = ()
    submitted_at: float | None = None  # when its job was submitted (a retraining record has none: see history)
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    _ALWAYS: ClassVar[frozenset[str]] = frozenset({"status", "reason", "job", "history"})
    _DECODE: ClassVar[Decoders] = {"status": _text, "reason": _text, "job": _text,
                                                             "history": _history, "submitted_at": _float}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Self:
        """The record of a stored value: the one place unknown or legacy keys are handled (kept in `extra`)."""
        names = _field_names(cls)
        decode = cls._DECODE
        known = {k: decode[k](v) if k in decode else v for k, v in value.items() if k in names}
        return cls(**known, extra={k: v for k, v in value.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON form (see the module docstring)."""
        out: dict[str, Any] = {}
        always = self._ALWAYS
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if value is not None or name in always:
                out[name] = _encode(value)
        return {**out, **self.extra}

    def with_status(self, status: str, now: float, *, allowed_from: Iterable[str], reason: str = "",
                    **fields: Any) -> Self | None:
        """Moved to `status` (with extra `fields`, named as the type's fields) when the current status is in
        `allowed_from`; else None (no change)."""
        if self.status not in set(allowed_from):
            return None
        return dataclasses.replace(self, **fields, status=status, reason=reason,
                                   history=(*self.history, (now, status, reason)))

    @property
    def changed_at(self) -> float | None:
        """When the record last changed status: its last history entry."""
        last = self.history[-1] if self.history else ()
        return _float(last[0]) if last else None


R = TypeVar("R", bound=StatusRecord)


def as_update(kind: type[R], transition: Callable[[R | None], R | None]) -> Callable[[dict[str, Any] | None],
                                                                                     dict[str, Any] | None]:
    """`transition` over records of `kind` as the dict function `StateStore.update` takes (pure as it is)."""

    def update(value: dict[str, Any] | None) -> dict[str, Any] | None:
        new = transition(None if value is None else kind.from_dict(value))
        return None if new is None else new.to_dict()

    return update


@dataclass(frozen=True)
class BatchRecord(StatusRecord):
    """A batch folder being collected, completed and worked on (training or scoring: see the subclasses)."""

    container: str = ""
    dataset: str = ""
    batch: str = ""
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    rejected: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    late_files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    marker: Mapping[str, Any] | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    completed_at: float | None = None
    completing_event: str = ""
    data: DataRef | None = None
    job_url: str | None = None
    # a retry after a transient failure of `previous_job` (shared/batches/retries.py): not started before
    # `not_before`; `transient_retries` so far; `retried_by` the invocation that scheduled it
    previous_job: str | None = None
    transient_retries: int | None = None
    not_before: float | None = None
    retried_by: str | None = None

    _ALWAYS = StatusRecord._ALWAYS | {"container", "dataset", "batch", "files", "rejected", "late_files", "marker",
                                      "first_seen", "last_seen", "completed_at", "completing_event", "data"}
    _DECODE: ClassVar[Decoders] = {
        **StatusRecord._DECODE, "container": _text, "dataset": _text, "batch": _text, "files": _mapping,
        "rejected": _mapping, "late_files": _mapping, "first_seen": _float, "last_seen": _float,
        "completed_at": _float, "completing_event": _text, "data": DataRef.from_dict,
        "marker": lambda v: dict(v) if isinstance(v, Mapping) else None, "not_before": _float,
        "transient_retries": lambda v: int(v) if v else None}

    @classmethod
    def new(cls, path: BatchPath, now: float) -> Self:
        """The record of a batch whose first blob (or marker) just arrived."""
        return cls(container=path.container, dataset=path.dataset, batch=path.batch, status="collecting",
                   first_seen=now, last_seen=now, history=((now, "collecting", "first blob"),))

    def retry_due(self, now: float) -> bool:
        """Not a retry waiting out its backoff after a transient failure (shared/batches/retries.py)."""
        return self.not_before is None or self.not_before <= now

    @property
    def batch_id(self) -> str:
        """`<container>/<dataset>/<batch>`: how events, tags, the ledger and operators name the batch."""
        return f"{self.container}/{self.dataset}/{self.batch}"

    @property
    def path(self) -> BatchPath:
        return BatchPath(self.container, self.dataset, self.batch, "")

    @property
    def folder(self) -> str:
        return f"{self.dataset}/{self.batch}/"

    def quiet(self, now: float, quiet_seconds: float) -> bool:
        """Still collecting and no file arrived for `quiet_seconds` (completes it when no marker is used)."""
        return self.status == "collecting" and now - float(self.last_seen or 0.0) >= quiet_seconds

    def _known(self, blob: BlobVersion) -> bool:
        return any(section.get(blob.file, {}).get("etag") == blob.etag
                   for section in (self.files, self.rejected, self.late_files))

    def with_blob(self, blob: BlobVersion, now: float, *, purpose: Purpose) -> tuple[Self | None, str]:
        """Record a data blob: (new record or None, what happened: added | rejected | late | duplicate)."""
        if self._known(blob):
            return None, "duplicate"
        if self.status != "collecting":
            return dataclasses.replace(self, late_files={**self.late_files, blob.file: {**_entry(blob), "at": now}}
                                       ), "late"
        problem = file_problem(blob.file, blob.size, purpose=purpose, folder=self.folder)
        files, rejected = dict(self.files), dict(self.rejected)
        files.pop(blob.file, None)
        rejected.pop(blob.file, None)
        if problem:
            rejected[blob.file] = {**_entry(blob), "reason": problem}
        else:
            files[blob.file] = _entry(blob)
        return dataclasses.replace(self, files=files, rejected=rejected, last_seen=now), \
            "rejected" if problem else "added"

    def completed(self, listing: Iterable[BlobVersion], now: float, *, event_id: str,
                  marker: BlobVersion | None = None, purpose: Purpose) -> Self | None:
        """The manifest frozen from `listing` and the batch complete; None unless it is still collecting."""
        if self.status != "collecting":
            return None
        files: dict[str, Any] = {}
        rejected: dict[str, Any] = {}
        for blob in listing:
            problem = file_problem(blob.file, blob.size, purpose=purpose, folder=self.folder)
            if problem:
                rejected[blob.file] = {**_entry(blob), "reason": problem}
            else:
                files[blob.file] = _entry(blob)
        why = "marker arrived" if marker is not None else "quiet window passed"
        return dataclasses.replace(
            self, files=files, rejected=rejected, status="complete", completed_at=now, completing_event=event_id,
            marker=None if marker is None else {"url": marker.url, "etag": marker.etag},
            history=(*self.history, (now, "complete", why)))


def _entry(blob: BlobVersion) -> dict[str, Any]:
    return {"url": blob.url, "etag": blob.etag, "size": blob.size}


@dataclass(frozen=True)
class ArrivalRecord(BatchRecord):
    """`arrivals/<container>/<dataset>/<batch>`: a training batch (its start lease and training attempt)."""

    lease: Lease | None = None
    attempt: int | None = None
    reopened_by: str | None = None

    _DECODE: ClassVar[Decoders] = {**BatchRecord._DECODE, "lease": Lease.from_dict,
                                   "attempt": lambda v: int(v) if v else None}

    @property
    def attempt_number(self) -> int:
        return int(self.attempt or 1)

    def lease_free(self, now: float) -> bool:
        """No worker holds the start lease now (never taken, handed back, or expired: its worker crashed)."""
        return self.lease is None or self.lease.until <= now


@dataclass(frozen=True)
class ScoringRecord(BatchRecord):
    """`scoring/<container>/<dataset>/<batch>`: a batch to score, its plan (model, deployment, job, paths)."""

    model: str | None = None
    deployment: str | None = None
    endpoint: str | None = None
    input: str | None = None
    output: str | None = None
    finished_at: float | None = None
    previous: tuple[Mapping[str, Any], ...] | None = None

    _DECODE: ClassVar[Decoders] = {**BatchRecord._DECODE, "finished_at": _float,
                                   "previous": lambda v: tuple(dict(p) for p in v if isinstance(p, Mapping))
                                   if v else None}


@dataclass(frozen=True)
class RetrainRecord(StatusRecord):
    """`retrains/<model>/<window>`: the one retraining of a model in a window. Here, beside the arrival record,
    because the training service closes it when its job ends (`training.mark_job_finished`)."""

    model: str = ""
    window: str = ""
    trigger: str = ""
    batch: str = ""  # the arrival key of the batch retrained on
    event_id: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)

    _ALWAYS = StatusRecord._ALWAYS | {"model", "window", "trigger", "batch", "event_id", "evidence"}
    _DECODE: ClassVar[Decoders] = {**StatusRecord._DECODE, "model": _text, "window": _text, "trigger": _text,
                                   "batch": _text, "event_id": _text, "evidence": _mapping}


B = TypeVar("B", bound=BatchRecord)


def add_blob(record: Mapping[str, Any] | None, path: BatchPath, blob: BlobVersion, now: float, *,
             purpose: Purpose = "training", kind: type[BatchRecord] = ArrivalRecord,
             ) -> tuple[dict[str, Any] | None, str]:
    """Record a data blob in the stored batch record (`kind`, created if absent): (new value or None, what
    happened: added | rejected | late | duplicate). `purpose` picks the formats the batch's job reads
    (shared/batches/formats.py): training or batch scoring."""
    current = kind.new(path, now) if record is None else kind.from_dict(record)
    new, what = current.with_blob(blob, now, purpose=purpose)
    return (None if new is None else new.to_dict()), what


def complete(record: Mapping[str, Any] | None, path: BatchPath, listing: Iterable[BlobVersion], now: float, *,
             event_id: str, marker: BlobVersion | None = None, purpose: Purpose = "training",
             kind: type[BatchRecord] = ArrivalRecord) -> tuple[dict[str, Any] | None, bool]:
    """Freeze the manifest from `listing` and mark the batch complete: (new value or None, transitioned).

    Only a record still collecting (or absent: the marker may be the first blob delivered) transitions.
    A marker seen again after completion changes nothing.
    """
    current = kind.new(path, now) if record is None else kind.from_dict(record)
    new = current.completed(listing, now, event_id=event_id, marker=marker, purpose=purpose)
    return (None if new is None else new.to_dict()), new is not None
