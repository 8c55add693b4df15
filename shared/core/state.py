"""Durable records in the app's own Blob Storage: idempotency claims, CAS-updated records, dead letters.

Why blobs: the Functions app already has a storage account, and Blob Storage gives the two primitives
exactly-once reactions need without another service:

* create-if-absent (`If-None-Match: *`): `claim(key)` has exactly one winner however many workers race;
* compare-and-swap (`If-Match: <etag>`): `update(key, fn)` re-reads and re-applies `fn` when it loses a race,
  so a concurrent write is never overwritten.

Persisted layout (one JSON blob per record, in `REFLEX_STATE_CONTAINER`)::

    claims/<reaction>/<key>          {"at": iso-time, ...}        who claimed what, first writer wins
    arrivals/<container>/<dataset>/<batch>   training batch (summary, status)      ArrivalRecord  (these three:
    scoring/<container>/<dataset>/<batch>    scoring batch (summary, plan)         ScoringRecord   shared/batches/
    retrains/<model>/<window>        one retraining per model and window          RetrainRecord   record.py)
    batchfiles/<batch key>/<file>/<etag>  one entry per delivered blob version    shared/batches/entries.py
    manifests/<batch key>/<digest>   a batch's manifest, frozen at completion     shared/batches/manifest.py
    training/admission               running training jobs, today's count         shared/batches/admission.py
    rollouts/<endpoint>              rollout record (plan, step, status)          shared/rollout/machine.py Rollout
    registrations/jobs/<job>         the gate's decision for a training job      shared/registration/records.py
    registrations/versions/<m>/<v>   the job that claimed a version (#18)        shared/registration/flow.py
    registrations/awaiting/<job>     an evaluation job a gate waits for          shared/core/unheard.py
    registrations/models/<model>     (before #18) a version counter, unused now  (Registration, VersionCounter,
    evaluations/outside/<m>/<v>      a model registered outside Reflex           OutsideEvaluation,
    evaluations/ready/<m>/<v>        ... that passed, for the reconciler         ReadyToRoll)
    discovered/models/<model>        newest version the reconciler handled       shared/rollout/discovery.py Handled
    drift/<model>                    where the drift check stands                shared/monitoring/records.py
    claims/drift/<model>/<window>    DriftDetected went out for the window       (DriftState, DriftReported,
    health/ended/<job>               when health first saw a job end badly       EndedJob)
    claims/health/<finding>          a health finding was published              shared/core/findings.py Reported
    deadletters/<yyyymmdd>/<time>-<id>  {"reaction", "event_id", "error", "error_type", "payload", "at"}
    held/<reaction>/<event id>       an event held while automation is paused     see shared/core/reaction.py
    control/automation               pause and dry-run switches                   see shared/core/control.py
    champions/<model>                champion pointer                             see shared/core/champion.py
    active/<record key>              the record is unfinished: the timers' scanned set   (the two indexes
    finished/<day>/<status>/<key>    the record finished that UTC day in that status   below, #17.2)
    control/active-index             the indexes were built over what was stored before them

Every record whose value has a top-level `status` carries it as blob metadata too (`reflexstatus`, on the same Put
Blob that writes the value), so `listing(prefix)` says each record's status without reading it (`reflex status`).

Timers read only what is active (#17.2): for the record kinds of `LIFECYCLES` (the one table of which statuses
finish a record), `create`/`replace`/`update` keep two small indexes beside the records. `active/<key>` exists
while the record is unfinished, so `active(prefix)` costs one listing plus one read per unfinished record, however
much history the prefix holds. `finished/<day>/<status>/<key>` is written the day a record finishes, so what
`reflex status` shows of the last days' failures (`finished_on(day, prefix, statuses)`) and what retention deletes
(`purge(retention_days)`) cost what those days and statuses hold. Crash safety, with no transaction across two
blobs: the active entry is written BEFORE a record becomes unfinished (and again after, against a concurrent
retire) and removed only AFTER it finished, by deleting it and re-reading the record (an entry removed under a
concurrent reopen is put back). An entry whose record is finished or absent (a crash between the two writes) is
repaired by the next scan that meets it.

`StateStore` holds the logic over eight small storage hooks; `BlobStateStore` implements them on
azure-storage-blob, `MemoryStateStore` in memory with the same semantics (conflicts included) for unit tests
and benchmarks of pure logic.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core.errors import TEXT_LIMIT, TransientError, map_azure_error, safe_text

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from shared.core.settings import Settings

__all__ = ["LIFECYCLES", "BlobStateStore", "Conflict", "Lifecycle", "Listed", "MemoryStateStore", "Record",
           "StateStore", "key_part", "lifecycle_of", "recent_day", "summary_of", "utcnow_iso"]

_SAFE_KEY = re.compile(r"^[A-Za-z0-9._=@:+~-]+(?:/[A-Za-z0-9._=@:+~-]+)*$")


class Conflict(TransientError):
    """A compare-and-swap or create lost its race too many times; the caller's redelivery retries."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=1.0)


@dataclass(frozen=True)
class Record:
    """One stored record: its key, its JSON value and the ETag that a later replace must match."""

    key: str
    value: dict[str, Any]
    etag: str


@dataclass(frozen=True)
class Listed:
    """A key as a listing shows it: the record's `status` (None when it has none, or was stored before records
    carried it) and when it last changed (epoch seconds; None when unknown)."""

    key: str
    status: str | None
    modified: float | None


# Blob metadata name: "Metadata names must adhere to the naming rules for C# identifiers" (Naming and Referencing
# Containers, Blobs, and Metadata, https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-
# containers--blobs--and-metadata); values travel as x-ms-meta-* headers, so the summary is short ASCII.
_STATUS_META = "reflexstatus"


def summary_of(value: Mapping[str, Any]) -> dict[str, str]:
    """What a listing carries of a record: its top-level `status`, when it is a short ASCII string."""
    status = value.get("status")
    if isinstance(status, str) and status.isascii() and 0 < len(status) <= 64 and status.isprintable():
        return {_STATUS_META: status}
    return {}


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def key_part(text: object, *, limit: int = 120) -> str:
    """A blob-name-safe key segment for `text`: kept readable when it is safe, else a stable hash suffix.

    Any value is taken (an event id may arrive as a number, a list or NaN, #18): it is keyed by its text, and
    lone surrogates are hashed as they are (`surrogatepass`), so two different ids never share a key.
    """
    text = text if isinstance(text, str) else str(text)
    cleaned = re.sub(r"[^A-Za-z0-9._=@:+-]", "_", text[:limit])[:limit] or "_"
    if cleaned == text:
        return text
    return f"{cleaned}~{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def _check_key(key: str) -> str:
    if len(key) > 1000 or not _SAFE_KEY.fullmatch(key):
        raise ValueError(f"unsafe state key {key!r}: build segments with key_part()")
    return key


@dataclass(frozen=True)
class Lifecycle:
    """Which statuses of one record kind are finished, and which of those the timers still watch until a watcher
    `settle`s the record (its outcome known but not yet reported)."""

    finished: frozenset[str]
    held: frozenset[str] = frozenset()

    def scanned(self, status: object) -> bool:
        """In the timers' scanned set: unfinished (any status not known to finish, so a new one is safe), or
        finished but held for a watcher."""
        return isinstance(status, str) and (status not in self.finished or status in self.held)

    def ended(self, status: object) -> bool:
        return isinstance(status, str) and status in self.finished

    def enters(self, before: object, after: object) -> bool:
        """A move from `before` to `after` puts the record in the scanned set: from outside it, or out of a held
        status (whose watcher may have settled it already) into an unfinished one."""
        return self.scanned(after) and (not self.scanned(before) or (before in self.held and after not in self.held))


# The one table of finished statuses, per record prefix (the statuses are those of the record types: #17.2).
# Everything else a record of the kind can be is unfinished: a timer still acts on it or waits for it.
#   arrivals/  ArrivalRecord (shared/batches/record.py): collecting, complete, freezing, starting, waiting,
#              submitted are unfinished (freezing: shared/batches/freeze.py, the sweep runs its next pass);
#              trained, failed, skipped, dry-run, submit-failed finished (dry-run and submit-failed are reopened
#              only by an operator: `reflex train`, a marker replay; a reopen re-enters the index).
#              `failed` is held: health asks the platform about a failed job until it knows the failure was
#              reported (TrainingFailed, or its own finding), then settles it (shared/monitoring/health.py).
#   scoring/   ScoringRecord: collecting, complete, no-champion, deploying, submitted unfinished; completed,
#              failed, skipped finished (the scheduled re-scoring reopens a completed or failed one).
#   retrains/  RetrainRecord: pending, waiting, submitted unfinished; trained, failed finished.
# Not here: rollouts/<endpoint> (one record per endpoint, history under endpoints/<endpoint>/rollouts/: the
# reconciler is flat in history already), and records that are deleted once done (registrations/awaiting/,
# evaluations/ready/, health/ended/).
LIFECYCLES: Mapping[str, Lifecycle] = {
    "arrivals/": Lifecycle(frozenset({"trained", "failed", "skipped", "dry-run", "submit-failed"}),
                           held=frozenset({"failed"})),
    "scoring/": Lifecycle(frozenset({"completed", "failed", "skipped"})),
    "retrains/": Lifecycle(frozenset({"trained", "failed"})),
}
ACTIVE_PREFIX = "active/"
FINISHED_PREFIX = "finished/"
INDEX_MARKER = "control/active-index"
DAY_SECONDS = 86_400


def lifecycle_of(key: str) -> Lifecycle | None:
    """The lifecycle of the record at `key`, or None for a kind the indexes do not track."""
    return LIFECYCLES.get(key.split("/", 1)[0] + "/")


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def recent_day(now: float, days: int) -> str:
    """The first UTC day (yyyy-mm-dd) of the last `days` days up to `now`, today included."""
    return _day(now - (max(1, days) - 1) * DAY_SECONDS)


def _status(value: Mapping[str, Any] | None) -> object:
    return None if value is None else value.get("status")


class StateStore(ABC):
    """Claims, records and dead letters over five storage hooks. Values are JSON objects."""

    # ---- hooks: bodies are bytes, etags opaque strings; `meta` is the record's summary (`summary_of`), kept where
    # a listing returns it without reading the record
    @abstractmethod
    def _create(self, key: str, body: bytes, *, meta: Mapping[str, str] | None = None) -> str | None:
        """Write only if absent; the new etag, or None when the key already exists."""

    @abstractmethod
    def _read(self, key: str) -> tuple[bytes, str] | None:
        """Body and etag, or None when absent."""

    @abstractmethod
    def _replace(self, key: str, body: bytes, etag: str, *, meta: Mapping[str, str] | None = None) -> str | None:
        """Write only if the stored etag still equals `etag`; the new etag, or None on mismatch/absence."""

    @abstractmethod
    def _delete(self, key: str, etag: str | None) -> bool:
        """Delete (only at `etag` when given); False when absent or the etag no longer matches."""

    @abstractmethod
    def _keys(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix`, in name order."""

    @abstractmethod
    def _listing(self, prefix: str) -> Iterator[Listed]:
        """Keys under `prefix` in name order, each with its summary and last-modified time, from listings only."""

    @abstractmethod
    def _put(self, key: str, body: bytes, *, meta: Mapping[str, str] | None = None) -> str:
        """Write unconditionally (the small index entries: the last writer wins, which is all they need)."""

    @abstractmethod
    def _stat(self, key: str) -> tuple[Listed, str] | None:
        """The key's summary and last change with its etag, without its body; None when absent."""

    @abstractmethod
    def _prefixes(self, prefix: str) -> list[str]:
        """The next level of "folders" under `prefix` (each ending in "/"), in name order, from listings only."""

    # ---- logic
    @staticmethod
    def _encode(value: Mapping[str, Any]) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()

    def claim(self, key: str, value: Mapping[str, Any] | None = None) -> bool:
        """Create-if-absent: True for exactly one caller per key, False for every later one."""
        body = dict(value or {})
        body.setdefault("at", utcnow_iso())
        return self._create(_check_key(key), self._encode(body), meta=summary_of(body)) is not None

    def get(self, key: str) -> Record | None:
        found = self._read(_check_key(key))
        if found is None:
            return None
        body, etag = found
        return Record(key, json.loads(body), etag)

    def create(self, key: str, value: Mapping[str, Any]) -> Record | None:
        """Write a new record; None when one already exists (the caller reads it instead)."""
        lifecycle = lifecycle_of(_check_key(key))
        if lifecycle is not None and lifecycle.scanned(_status(value)):
            self._enter(key)  # before the record exists: a crash now leaves an entry the next scan drops
        etag = self._create(key, self._encode(value), meta=summary_of(value))
        if etag is None:
            return None
        if lifecycle is not None:
            self._moved(key, lifecycle, None, _status(value))
        return Record(key, dict(value), etag)

    def replace(self, record: Record, value: Mapping[str, Any]) -> Record:
        """Compare-and-swap against `record.etag`.

        Raises:
            Conflict: someone else wrote the record since it was read (re-read and decide again).
        """
        lifecycle = lifecycle_of(record.key)
        before, after = _status(record.value), _status(value)
        if lifecycle is not None and lifecycle.enters(before, after):
            self._enter(record.key)  # reopened: in the scanned set before it is unfinished
        etag = self._replace(record.key, self._encode(value), record.etag, meta=summary_of(value))
        if etag is None:
            raise Conflict(f"state record {record.key} changed since it was read")
        if lifecycle is not None:
            self._moved(record.key, lifecycle, before, after)
        return Record(record.key, dict(value), etag)

    # ---- the active and finished indexes (#17.2; the module docstring says why they are crash-safe)
    # `clock` dates the finished entries and retention (an attribute so tests move it).
    clock: Callable[[], float] = staticmethod(time.time)
    _indexed = False

    def _enter(self, key: str) -> None:
        self._put(ACTIVE_PREFIX + key, b"{}")

    def _finish(self, key: str, status: object, at: float | None = None, *, only_new: bool = False) -> None:
        body = {"key": key, "status": status, "at": utcnow_iso()}
        entry = f"{FINISHED_PREFIX}{_day(self.clock() if at is None else at)}/{key_part(str(status))}/{key}"
        (self._create if only_new else self._put)(entry, self._encode(body), meta=summary_of(body))

    def _moved(self, key: str, lifecycle: Lifecycle, before: object, after: object) -> None:
        """After a write that moved the record from status `before` to `after`: keep both indexes true."""
        if lifecycle.enters(before, after):
            self._enter(key)  # again: a retire that ran between the first entry and the write removed it
        if lifecycle.ended(after) and not lifecycle.ended(before):
            self._finish(key, after)
        if lifecycle.scanned(before) and not lifecycle.scanned(after):
            self._retire(key)

    def _retire(self, key: str, settled: str | None = None) -> None:
        """Remove the record's active entry, then put it back if the record was reopened meanwhile (its writer
        put the entry before and after its write; either landed before this re-read, or after the delete).
        `settled`: the etag of the held record a watcher is done with; unchanged since, it stays out."""
        self._delete(ACTIVE_PREFIX + key, None)
        current = self.get(key)
        lifecycle = lifecycle_of(key)
        if current is not None and lifecycle is not None and lifecycle.scanned(_status(current.value)) and (
                current.etag != settled):
            self._enter(key)

    def _ensure_index(self) -> None:
        """Build the indexes over records stored before them, once per store (`control/active-index` says done)."""
        if self._indexed:
            return
        if self._read(INDEX_MARKER) is None:
            self.reindex()
        self._indexed = True

    def reindex(self) -> int:
        """Put every tracked record in the index its status says, from listings (records stored without their
        status in the listing are read), then mark the indexes built; how many records were indexed.
        Idempotent: run again (e.g. after restoring records by hand) it changes nothing that is right."""
        done = 0
        for prefix, lifecycle in LIFECYCLES.items():
            for item in self._listing(prefix):
                status: object = item.status
                if status is None:
                    found = self.get(item.key)
                    status = _status(found.value) if found is not None else None
                if lifecycle.scanned(status):  # create-if-absent: an entry a writer put stays as it is
                    self._create(ACTIVE_PREFIX + item.key, b"{}")
                if lifecycle.ended(status):
                    self._finish(item.key, status, item.modified, only_new=True)
                done += isinstance(status, str)
        self._put(INDEX_MARKER, self._encode({"at": utcnow_iso(), "records": done}))
        return done

    def active(self, prefix: str) -> Iterator[Record]:
        """The unfinished records under `prefix` (a kind of `LIFECYCLES`), and those held for a watcher: one
        listing of `active/<prefix>` and one read per record, whatever the prefix's history holds.

        An entry whose record is finished or absent (a writer crashed between its two writes) is repaired here:
        the finished entry written, the active one removed."""
        if lifecycle_of(prefix) is None:
            raise ValueError(f"{prefix!r} is not a record kind with an active index ({', '.join(LIFECYCLES)})")
        self._ensure_index()
        for entry in self._keys(ACTIVE_PREFIX + prefix):
            key = entry[len(ACTIVE_PREFIX):]
            record = self.get(key)
            lifecycle = lifecycle_of(key)
            status = None if record is None else _status(record.value)
            if record is not None and lifecycle is not None and lifecycle.scanned(status):
                yield record
                continue
            if lifecycle is not None and lifecycle.ended(status):
                self._finish(key, status)
            self._retire(key)

    def settle(self, key: str) -> bool:
        """A watcher is done with a record held in the scanned set (e.g. health has seen a failed job's failure
        reported): it leaves the set. False when the record is not (or no longer) finished: it stays."""
        record = self.get(key)
        lifecycle = lifecycle_of(key)
        if record is None or lifecycle is None or not lifecycle.ended(_status(record.value)):
            return False
        self._retire(key, settled=record.etag)
        return True

    def finished_days(self) -> list[str]:
        """The UTC days (yyyy-mm-dd) that have finished records, oldest first: one listing."""
        return [p[len(FINISHED_PREFIX):].rstrip("/") for p in self._prefixes(FINISHED_PREFIX)]

    def finished_on(self, day: str, prefix: str, statuses: Collection[str] | None = None) -> list[Listed]:
        """The records under `prefix` that finished on `day`, each with the status it finished in and when; with
        `statuses`, only those that finished in one of them (`reflex status` lists the failures of a day, never
        its thousand trained batches): one listing of the day's statuses, then one per status read."""
        head = f"{FINISHED_PREFIX}{day}/"
        wanted = None if statuses is None else {key_part(status) for status in statuses}
        found: list[Listed] = []
        for folder in self._prefixes(head):
            status = folder[len(head):-1]
            if wanted is None or status in wanted:
                found.extend(Listed(item.key[len(folder):], status, item.modified)
                             for item in self._listing(folder + prefix))
        return found

    def finished_since(self, prefix: str, since: float) -> Iterator[Record]:
        """The records under `prefix` that finished on `since`'s UTC day or later (each once, as it is now)."""
        first = _day(since)
        seen: set[str] = set()
        for day in reversed(self.finished_days()):
            if day < first:
                break
            for item in self.finished_on(day, prefix):
                if item.key not in seen:
                    seen.add(item.key)
                    record = self.get(item.key)
                    if record is not None:
                        yield record

    def newest(self, prefix: str, at: Callable[[Record], float | None]) -> Record | None:
        """The record under `prefix` with the largest `at(record)` (None: not a candidate), among the unfinished
        and the finished ones, reading finished days newest first and stopping at a day that ends before the best
        candidate found: a record finishes after the moment `at` gives (its completion), so no earlier day can
        hold a newer one. Usually one day's records."""
        best: tuple[float, str, Record] | None = None

        def consider(record: Record) -> None:
            nonlocal best
            moment = at(record)
            if moment is not None and (best is None or (moment, record.key) > (best[0], best[1])):
                best = (moment, record.key, record)

        for record in self.active(prefix):
            consider(record)
        for day in reversed(self.finished_days()):
            if best is not None and day < _day(best[0]):
                break
            for item in self.finished_on(day, prefix):
                found = self.get(item.key)
                if found is not None:
                    consider(found)
        return None if best is None else best[2]

    def recent_finished(self, prefix: str, days: int) -> list[Listed]:
        """What finished under `prefix` in the last `days` UTC days (today included), newest day first: one
        listing per day that has finished records."""
        first = recent_day(self.clock(), days)
        return [item for day in reversed(self.finished_days()) if day >= first
                for item in self.finished_on(day, prefix)]

    def active_listing(self, prefix: str) -> list[Listed]:
        """The active index under `prefix` from its listing alone (`active` reads and repairs): each record key
        with when its entry was last put (status None: the entry does not carry it)."""
        self._ensure_index()
        return [Listed(item.key[len(ACTIVE_PREFIX):], None, item.modified)
                for item in self._listing(ACTIVE_PREFIX + prefix)]

    def purge(self, retention_days: int, *, keep: Callable[[], Iterable[str]] = tuple,
              companions: Callable[[str], Iterable[str]] = lambda key: ()) -> int:
        """Delete the records that finished more than `retention_days` ago, by day: the cost is what expired
        (one listing of days when nothing did). `keep()` (asked only when a day expired) names records kept
        whatever their age. A record changed since its day (reopened, or written while finished) is not deleted:
        its entry moves to the day of its last change. `companions(key)` names key prefixes that belong to a
        record and go with it (a batch's per-file entries and stored manifest, shared/batches/retention.py): they
        are deleted after the record, so a crash between leaves only blobs no record names, never a record
        whose parts are gone. How many records were deleted."""
        cutoff = self.clock() - retention_days * DAY_SECONDS
        expired = [day for day in self.finished_days() if day < _day(cutoff)]
        if not expired:
            return 0
        kept = set(keep())
        purged = 0
        for day in expired:
            for entry in self._keys(f"{FINISHED_PREFIX}{day}/"):
                key = entry[len(FINISHED_PREFIX) + len(day) + 1:].split("/", 1)[-1]  # after <day>/<status>/
                stat = self._stat(key)
                lifecycle = lifecycle_of(key)
                if stat is not None and lifecycle is not None and lifecycle.ended(stat[0].status):
                    listed, etag = stat
                    if key in kept or (listed.modified is not None and listed.modified >= cutoff):
                        self._finish(key, listed.status, listed.modified if key not in kept else None)
                    elif self._delete(key, etag):
                        self._delete(ACTIVE_PREFIX + key, None)  # a held record a watcher never settled
                        for prefix in companions(key):
                            for part in list(self._keys(prefix)):
                                self._delete(part, None)
                        purged += 1
                    else:
                        continue  # written meanwhile: the next purge decides again
                self._delete(entry, None)
        return purged

    # CAS backoff (#18: 16-32 writers on one record gave up after 8 tries). Every lost race means another
    # writer's update landed, so N writers of one update each finish within N attempts: 32 covers 32 writers.
    # Between attempts: exponential backoff with "equal jitter" (half the step fixed, half random, so writers
    # that lost together spread out) doubling from 20 ms to 1 s; the worst case is about 26 s of sleeping,
    # inside Event Grid's 30 s. Measured beside the old policy (bench/cas_contention.py, 32 writers each
    # updating 20 times without pause, Azurite on a machine at load 12): 0 and 4 of 640 updates gave up (then
    # left to redelivery) against 141 and 214, in fewer CAS attempts; a 0.5 s cap let 5 give up (shorter
    # waits keep more of the writers colliding).
    # `sleep` and `random` are attributes so tests inject them.
    cas_attempts = 32
    cas_base_delay = 0.02
    cas_max_delay = 1.0
    sleep: Callable[[float], None] = staticmethod(time.sleep)
    random: Callable[[], float] = staticmethod(lambda: uuid.uuid4().int % 10_000 / 10_000)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after losing race number `attempt` (0-based): within [step/2, step], step doubling
        from `cas_base_delay` up to `cas_max_delay`."""
        step = min(self.cas_max_delay, self.cas_base_delay * 2 ** min(attempt, 30))
        return step / 2 + self.random() * step / 2

    def update(self, key: str, change: Callable[[dict[str, Any] | None], Mapping[str, Any] | None], *,
               attempts: int | None = None) -> Record | None:
        """Apply `change(current_value_or_None)` atomically, retrying on lost races with a jittered backoff.

        `change` returns the new value, or None to leave the record as it is (then the current record is
        returned). It may run several times, so it must be pure.

        Raises:
            Conflict: the race was lost `attempts` (default `cas_attempts`) times in a row.
        """
        attempts = self.cas_attempts if attempts is None else attempts
        _check_key(key)
        for attempt in range(attempts):
            current = self.get(key)
            new = change(None if current is None else dict(current.value))
            if new is None:
                return current
            if current is None:
                created = self.create(key, new)
                if created is not None:
                    return created
            else:
                try:
                    return self.replace(current, new)
                except Conflict:
                    pass
            if attempt + 1 < attempts:
                self.sleep(self.backoff(attempt))
        raise Conflict(f"state record {key}: lost {attempts} compare-and-swap races in a row")

    def delete(self, key: str, etag: str | None = None) -> bool:
        deleted = self._delete(_check_key(key), etag)
        if deleted and lifecycle_of(key) is not None:
            self._retire(key)
        return deleted

    def keys(self, prefix: str = "") -> list[str]:
        return list(self._keys(prefix))

    def listing(self, prefix: str = "") -> list[Listed]:
        """Every key under `prefix` with its record's status and last change, without reading one record (one
        listing request per 5,000 keys on Blob Storage): so `reflex status` reads only the records it shows."""
        return list(self._listing(prefix))

    def records(self, prefix: str = "") -> Iterator[Record]:
        """Every record under `prefix` (for the timers that sweep); records deleted meanwhile are skipped."""
        for key in self._keys(prefix):
            record = self.get(key)
            if record is not None:
                yield record

    def dead_letter(self, reaction: str, payload: Any, error: BaseException | str, *, event_id: str = "",
                    context: Mapping[str, Any] | None = None, key: str | None = None) -> str:
        """Keep an event that could not be handled, with its original payload, the error and the time.

        `key`: write the letter there, once (create-if-absent: a second call keeps the first letter);
        shared/core/reaction.py passes the key it claimed for the event id, so a redelivery writes no second letter.
        """
        now = datetime.now(UTC)
        ident = key_part(event_id or uuid.uuid4().hex, limit=60)
        fixed = key is not None
        key = _check_key(key) if key is not None else f"deadletters/{now:%Y%m%d}/{now:%H%M%S%f}-{reaction}-{ident}"
        body = {
            "reaction": reaction, "event_id": event_id, "at": utcnow_iso(),
            "error": safe_text(error, 4 * TEXT_LIMIT),
            "error_type": type(error).__name__ if isinstance(error, BaseException) else "",
            "payload": payload, "context": dict(context or {}),
        }
        if self._create(key, self._encode(body)) is None and not fixed:  # same microsecond and id: keep both
            key = f"{key}-{uuid.uuid4().hex[:8]}"
            self._create(key, self._encode(body))
        return key

    def dead_letters(self) -> list[Record]:
        return list(self.records("deadletters/"))


class MemoryStateStore(StateStore):
    """In-process store with the blob store's semantics (create-if-absent, etag CAS), thread-safe."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, str]] = {}
        self._meta: dict[str, tuple[dict[str, str], float]] = {}
        self._lock = threading.Lock()

    def _create(self, key: str, body: bytes, *, meta: Mapping[str, str] | None = None) -> str | None:
        with self._lock:
            if key in self._data:
                return None
            return self._write(key, body, meta)

    def _read(self, key: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self._data.get(key)

    def _replace(self, key: str, body: bytes, etag: str, *, meta: Mapping[str, str] | None = None) -> str | None:
        with self._lock:
            current = self._data.get(key)
            if current is None or current[1] != etag:
                return None
            return self._write(key, body, meta)

    def _delete(self, key: str, etag: str | None) -> bool:
        with self._lock:
            current = self._data.get(key)
            if current is None or (etag is not None and current[1] != etag):
                return False
            del self._data[key]
            self._meta.pop(key, None)  # a deleted key keeps no metadata behind
            return True

    def _keys(self, prefix: str) -> Iterator[str]:
        with self._lock:
            keys = sorted(k for k in self._data if k.startswith(prefix))
        return iter(keys)

    def _listing(self, prefix: str) -> Iterator[Listed]:
        with self._lock:
            found = sorted(k for k in self._data if k.startswith(prefix))
            listed = [Listed(k, self._meta[k][0].get(_STATUS_META), self._meta[k][1]) for k in found]
        return iter(listed)

    def _put(self, key: str, body: bytes, *, meta: Mapping[str, str] | None = None) -> str:
        with self._lock:
            return self._write(key, body, meta)

    def _write(self, key: str, body: bytes, meta: Mapping[str, str] | None) -> str:
        """Store `body` under a new ETag, with its metadata and time (the caller holds the lock)."""
        etag = uuid.uuid4().hex
        self._data[key] = (body, etag)
        self._meta[key] = (dict(meta or {}), time.time())
        return etag

    def _stat(self, key: str) -> tuple[Listed, str] | None:
        with self._lock:
            if key not in self._data:
                return None
            meta, modified = self._meta[key]
            return Listed(key, meta.get(_STATUS_META), modified), self._data[key][1]

    def _prefixes(self, prefix: str) -> list[str]:
        with self._lock:
            found = {prefix + k[len(prefix):].split("/", 1)[0] + "/" for k in self._data
                     if k.startswith(prefix) and "/" in k[len(prefix):]}
        return sorted(found)


class BlobStateStore(StateStore):
    """Records as JSON blobs; conditional headers make claims and updates atomic across workers."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    @classmethod
    def from_service(cls, service: Any, settings: Settings) -> BlobStateStore:
        """The store in `REFLEX_STATE_CONTAINER` of `service` (a BlobServiceClient: shared/core/deps.py builds it),
        its container created if missing."""
        store = cls(service.get_container_client(settings.state_container))
        store.ensure()
        return store

    def ensure(self) -> None:
        """Create the container if it is missing (idempotent)."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self._container.create_container()
        except ResourceExistsError:
            pass
        except Exception as exc:
            raise map_azure_error(exc, f"state container {self._container.container_name}") from exc

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        try:
            return fn()
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            raise
        except Exception as exc:
            raise map_azure_error(exc, f"state {what}") from exc

    def _create(self, key: str, body: bytes, *, meta: Mapping[str, str] | None = None) -> str | None:
        from azure.core.exceptions import ResourceExistsError

        blob = self._container.get_blob_client(key)
        try:  # metadata rides on the same Put Blob (x-ms-meta-*): no extra request
            props = self._call(key, lambda: blob.upload_blob(body, overwrite=False, metadata=dict(meta or {})))
        except ResourceExistsError:
            return None
        return props["etag"]

    def _read(self, key: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._container.get_blob_client(key)
        try:
            downloader = self._call(key, blob.download_blob)
        except ResourceNotFoundError:
            return None
        return downloader.readall(), downloader.properties.etag

    def _replace(self, key: str, body: bytes, etag: str, *, meta: Mapping[str, str] | None = None) -> str | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self._container.get_blob_client(key)
        try:  # Put Blob replaces the metadata with what it sends: the summary always matches the body
            props = self._call(key, lambda: blob.upload_blob(
                body, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified,
                metadata=dict(meta or {})))
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return props["etag"]

    def _delete(self, key: str, etag: str | None) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self._container.get_blob_client(key)
        kwargs: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            self._call(key, lambda: blob.delete_blob(**kwargs))
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def _keys(self, prefix: str) -> Iterator[str]:
        return iter([b.name for b in self._call(prefix or "list", lambda: list(
            self._container.list_blobs(name_starts_with=prefix or None)))])

    def _listing(self, prefix: str) -> Iterator[Listed]:
        """List Blobs with `include=metadata` (https://learn.microsoft.com/rest/api/storageservices/list-blobs;
        azure-storage-blob `ContainerClient.list_blobs(include=["metadata"])`, "Options include: 'snapshots',
        'metadata', ..."): each BlobProperties carries `metadata` and `last_modified`, so no record is read."""
        blobs = self._call(prefix or "list", lambda: list(
            self._container.list_blobs(name_starts_with=prefix or None, include=["metadata"])))
        return iter([Listed(b.name, (b.metadata or {}).get(_STATUS_META),
                            b.last_modified.timestamp() if b.last_modified else None) for b in blobs])

    def _put(self, key: str, body: bytes, *, meta: Mapping[str, str] | None = None) -> str:
        blob = self._container.get_blob_client(key)
        props = self._call(key, lambda: blob.upload_blob(body, overwrite=True, metadata=dict(meta or {})))
        return str(props["etag"])

    def _stat(self, key: str) -> tuple[Listed, str] | None:
        """Get Blob Properties (https://learn.microsoft.com/rest/api/storageservices/get-blob-properties: the
        metadata, Last-Modified and ETag of a blob, no body); azure-storage-blob `BlobClient.get_blob_properties`."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._container.get_blob_client(key)
        try:
            props = self._call(key, blob.get_blob_properties)
        except ResourceNotFoundError:
            return None
        modified = props.last_modified.timestamp() if props.last_modified else None
        return Listed(key, (props.metadata or {}).get(_STATUS_META), modified), str(props.etag)

    def _prefixes(self, prefix: str) -> list[str]:
        """List Blobs with a delimiter (https://learn.microsoft.com/rest/api/storageservices/list-blobs,
        "Delimiter ... the operation returns a BlobPrefix element in the response body that acts as a placeholder
        for all blobs whose names begin with the same substring up to the appearance of the delimiter character";
        azure-storage-blob `ContainerClient.walk_blobs`): one entry per day of the finished index, not per record."""
        from azure.storage.blob import BlobPrefix

        items = self._call(prefix, lambda: list(self._container.walk_blobs(name_starts_with=prefix, delimiter="/")))
        return [item.name for item in items if isinstance(item, BlobPrefix)]
