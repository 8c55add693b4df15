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

Every record whose value has a top-level `status` carries it as blob metadata too (`reflexstatus`, on the same Put
Blob that writes the value), so `listing(prefix)` says each record's status without reading it (`reflex status`).

`StateStore` holds the logic over five small storage hooks; `BlobStateStore` implements them on
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core.errors import TEXT_LIMIT, TransientError, map_azure_error, safe_text

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from shared.core.settings import Settings

__all__ = ["BlobStateStore", "Conflict", "Listed", "MemoryStateStore", "Record", "StateStore", "key_part", "summary_of",
           "utcnow_iso"]

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
        etag = self._create(_check_key(key), self._encode(value), meta=summary_of(value))
        return None if etag is None else Record(key, dict(value), etag)

    def replace(self, record: Record, value: Mapping[str, Any]) -> Record:
        """Compare-and-swap against `record.etag`.

        Raises:
            Conflict: someone else wrote the record since it was read (re-read and decide again).
        """
        etag = self._replace(record.key, self._encode(value), record.etag, meta=summary_of(value))
        if etag is None:
            raise Conflict(f"state record {record.key} changed since it was read")
        return Record(record.key, dict(value), etag)

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
        return self._delete(_check_key(key), etag)

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
            etag = uuid.uuid4().hex
            self._data[key] = (body, etag)
            self._meta[key] = (dict(meta or {}), time.time())
            return etag

    def _read(self, key: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self._data.get(key)

    def _replace(self, key: str, body: bytes, etag: str, *, meta: Mapping[str, str] | None = None) -> str | None:
        with self._lock:
            current = self._data.get(key)
            if current is None or current[1] != etag:
                return None
            new = uuid.uuid4().hex
            self._data[key] = (body, new)
            self._meta[key] = (dict(meta or {}), time.time())
            return new

    def _delete(self, key: str, etag: str | None) -> bool:
        with self._lock:
            current = self._data.get(key)
            if current is None or (etag is not None and current[1] != etag):
                return False
            del self._data[key]
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
