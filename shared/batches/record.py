"""The stored records of the batch side, one type each, and their transitions, pure for `StateStore.update` (CAS).

Why typed records here: an arrival record is written by the arrival flow and the training service, closed by
the registration gate, and read by health, drift, retraining, `status` and `explain`; a scoring record by the
scoring flow, drift and health; a retraining record by the retraining timers and the training service. Each
has one owner type with explicit fields, `from_dict`/`to_dict`, and one place for keys it does not know
(`from_dict` keeps them in `extra`, `to_dict` writes them back unchanged, so a record written by a newer
Reflex survives an older one's compare-and-swap). They live in the shared batch service because the
reactions that read them may import each other only through it.

Why pure transitions: `update(key, fn)` may run `fn` several times when workers race, so each transition
takes the current record and returns the next one, or None when there is nothing to change (a redelivery, or
a file arriving while `last_seen` is fresh enough). That "None" is what keeps a batch of 10,000 files from
writing its summary 10,000 times: a delivery writes its own entry (shared/batches/entries.py) and touches the
summary only to refresh `last_seen` once per `last_seen_slack`. `as_update` lifts a transition over typed
records to the dict function `StateStore.update` takes.

The stored JSON forms (fields present from creation are always written; the others once they are set)::

    arrivals/<container>/<dataset>/<batch>   ArrivalRecord
    {"container", "dataset", "batch",
     "status": "collecting" | "complete" | "freezing" | "starting" | "waiting" | "submitted" | "trained"
               | "failed" | "skipped" | "dry-run" | "submit-failed",   (freezing: shared/batches/freeze.py)
     "rejected": {"<file>": {"url", "etag", "size", "reason"}}, zero-byte, unreadable format, hidden: the
                                             first REJECTED_KEPT of the manifest's, set at completion
     "late_files": {"<file>": {"url", "etag", "size", "at"}},   arrived after completion: not trained on (the
                                             first LATE_KEPT; every one has its entry)
     "manifest": {"key", "files", "rejected", "digest"},       once complete: where the frozen manifest is
                                             stored (manifests/…), its counts and digest (which also names the
                                             batch's frozen copy, .reflex-frozen/…/<digest16>/)
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

    batchfiles/<record key>/<file>@<etag>    one entry per delivered blob version (shared/batches/entries.py)
    manifests/<record key>/<digest>          the manifest frozen at completion (shared/batches/manifest.py)

A record written before #17 held the manifest itself (`"files": {...}`, and every rejected file); it is read
as it is (`files` stays in `extra`, `manifest.load` reads it there) and completes into the new form.

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
from shared.batches.paths import BatchPath, file_problem, manifest_digest

__all__ = ["LATE_KEPT", "REJECTED_KEPT", "ArrivalRecord", "BatchRecord", "BlobVersion", "DataRef", "Lease",
           "ManifestRef", "RetrainRecord", "ScoringRecord", "StatusRecord", "arrived", "as_update", "complete",
           "last_seen_slack"]

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
class ManifestRef:
    """Where a completed batch's frozen manifest is stored (`manifests/…`, shared/batches/manifest.py) and what
    the summary needs of it without reading it: how many usable and rejected files, and its digest (job names)."""

    key: str
    files: int
    rejected: int
    digest: str

    @classmethod
    def from_dict(cls, value: Any) -> ManifestRef | None:
        if not isinstance(value, Mapping) or not value.get("key"):
            return None
        return cls(_text(value.get("key")), int(value.get("files") or 0), int(value.get("rejected") or 0),
                   _text(value.get("digest")))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "files": self.files, "rejected": self.rejected, "digest": self.digest}


# The summary keeps the first of these by name (all of them: the batch's entries and manifest): a batch of
# 10,000 zero-byte or late files must not make the record every worker reads large again.
REJECTED_KEPT = 20
LATE_KEPT = 100
# last_seen is refreshed only when it is older than this fraction of REFLEX_QUIET_SECONDS (one write per
# interval however many files arrive), and the quiet window is lengthened by as much, so it never closes early.
LAST_SEEN_FRACTION = 1 / 60
# the legacy sections: a record written before #17 held its manifest itself; they stay in `extra`
LEGACY_FILES = "files"


def last_seen_slack(quiet_seconds: float) -> float:
    """How far `last_seen` may lag the newest file (see LAST_SEEN_FRACTION)."""
    return float(quiet_seconds) * LAST_SEEN_FRACTION


@dataclass(frozen=True)
class BatchRecord(StatusRecord):
    """A batch folder being collected, completed and worked on (training or scoring: see the subclasses).

    The summary of the batch, never its file list: each delivered blob version is an entry of its own
    (shared/batches/entries.py) and the manifest frozen at completion is a blob of its own, referenced by
    `manifest` (shared/batches/manifest.py `load` reads it). `rejected` and `late_files` keep the first
    REJECTED_KEPT and LATE_KEPT files for the operator's view; a record written before #17 still holds its whole
    manifest (`files`, kept in `extra`; `manifest.load` reads it from there)."""

    container: str = ""
    dataset: str = ""
    batch: str = ""
    rejected: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    late_files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    marker: Mapping[str, Any] | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    completed_at: float | None = None
    completing_event: str = ""
    manifest: ManifestRef | None = None
    data: DataRef | None = None
    job_url: str | None = None
    # a retry after a transient failure of `previous_job` (shared/batches/retries.py): not started before
    # `not_before`; `transient_retries` so far; `retried_by` the invocation that scheduled it
    previous_job: str | None = None
    transient_retries: int | None = None
    not_before: float | None = None
    retried_by: str | None = None

    _ALWAYS = StatusRecord._ALWAYS | {"container", "dataset", "batch", "rejected", "late_files", "marker",
                                      "first_seen", "last_seen", "completed_at", "completing_event", "data"}
    _DECODE: ClassVar[Decoders] = {
        **StatusRecord._DECODE, "container": _text, "dataset": _text, "batch": _text,
        "rejected": _mapping, "late_files": _mapping, "first_seen": _float, "last_seen": _float,
        "completed_at": _float, "completing_event": _text, "data": DataRef.from_dict,
        "manifest": ManifestRef.from_dict,
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

    @property
    def legacy_files(self) -> Mapping[str, Mapping[str, Any]] | None:
        """The manifest a record written before #17 holds itself (None for a summary)."""
        value = self.extra.get(LEGACY_FILES)
        return value if isinstance(value, Mapping) else None

    @property
    def file_count(self) -> int:
        """How many usable files the frozen manifest has (0 while collecting: they are counted at completion)."""
        if self.manifest is not None:
            return self.manifest.files
        return len(self.legacy_files or {})

    @property
    def rejected_count(self) -> int:
        return self.manifest.rejected if self.manifest is not None else len(self.rejected)

    @property
    def digest(self) -> str:
        """The frozen manifest's digest (`paths.manifest_digest`), without reading the manifest."""
        if self.manifest is not None:
            return self.manifest.digest
        return manifest_digest(self.legacy_files or {})

    def quiet(self, now: float, quiet_seconds: float) -> bool:
        """Still collecting and no file arrived for `quiet_seconds` (completes it when no marker is used).
        `last_seen` may lag the newest file by `last_seen_slack` (it is refreshed only that often), so the
        window waits that much longer: it never closes early."""
        return self.status == "collecting" and \
            now - float(self.last_seen or 0.0) >= quiet_seconds + last_seen_slack(quiet_seconds)

    def seen(self, now: float, quiet_seconds: float) -> Self | None:
        """`last_seen` moved to `now` when a new file arrives and it lags by more than `last_seen_slack`;
        None otherwise (the write most deliveries skip)."""
        if self.status != "collecting" or now - float(self.last_seen or 0.0) <= last_seen_slack(quiet_seconds):
            return None
        return dataclasses.replace(self, last_seen=now)

    def with_late(self, blob: BlobVersion, now: float) -> Self | None:
        """A file that arrived after completion listed in `late_files` (the first LATE_KEPT of them; its entry
        records every one); None when it is listed already or the list is full."""
        if self.late_files.get(blob.file, {}).get("etag") == blob.etag or len(self.late_files) >= LATE_KEPT:
            return None
        return dataclasses.replace(self, late_files={**self.late_files, blob.file: {**_entry(blob), "at": now}})

    def completed(self, manifest: ManifestRef, rejected: Mapping[str, Mapping[str, Any]], now: float, *,
                  event_id: str, marker: BlobVersion | None = None) -> Self | None:
        """Complete, with the manifest frozen at completion (stored apart: `manifest`); None unless it is still
        collecting. A legacy record's own manifest is dropped: the stored manifest replaces it."""
        if self.status != "collecting":
            return None
        why = "marker arrived" if marker is not None else "quiet window passed"
        kept = {name: rejected[name] for name in sorted(rejected)[:REJECTED_KEPT]}
        return dataclasses.replace(
            self, manifest=manifest, rejected=kept, status="complete", completed_at=now, completing_event=event_id,
            marker=None if marker is None else {"url": marker.url, "etag": marker.etag},
            extra={k: v for k, v in self.extra.items() if k != LEGACY_FILES},
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


def arrived(batch: BatchRecord, blob: BlobVersion, *, new: bool, in_manifest: bool, purpose: Purpose,
            ) -> tuple[str, bool]:
    """What one delivery of `blob` is, and whether it is (or will be) trained or scored on:
    (added | rejected | late | duplicate, usable).

    `new`: this delivery created the version's entry (its first); `in_manifest`: the version is in the batch's
    frozen manifest (asked only once the batch is complete). While collecting, a usable new version is added and
    an unusable one rejected; after completion a version the manifest holds is a duplicate and any other is late
    (recorded, never trained on); a version seen before is a duplicate either way."""
    if batch.status == "collecting":
        usable = not file_problem(blob.file, blob.size, purpose=purpose, folder=batch.folder)
        return ("added" if usable else "rejected") if new else "duplicate", usable
    if in_manifest:
        return "duplicate", True
    return ("late" if new else "duplicate"), False


def complete(record: Mapping[str, Any] | None, path: BatchPath, manifest: ManifestRef,
             rejected: Mapping[str, Mapping[str, Any]], now: float, *, event_id: str,
             marker: BlobVersion | None = None, kind: type[BatchRecord] = ArrivalRecord,
             ) -> tuple[dict[str, Any] | None, bool]:
    """Mark the batch complete with its stored manifest: (new value or None, transitioned).

    Only a record still collecting (or absent: the marker may be the first blob delivered) transitions.
    A marker seen again after completion changes nothing.
    """
    current = kind.new(path, now) if record is None else kind.from_dict(record)
    new = current.completed(manifest, rejected, now, event_id=event_id, marker=marker)
    return (None if new is None else new.to_dict()), new is not None
