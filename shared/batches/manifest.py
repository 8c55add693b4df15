"""A batch's manifest: the files it is trained or scored on, frozen once at completion and stored apart.

Why apart: the manifest of a batch of 10,000 files is about 1.5 MB. Kept in the batch record (before #17) it
was read and rewritten by every delivery and read by every timer tick; stored as its own blob it is written
once, by the completing worker, and read only by what needs the file names: submitting the job (the AutoML
MLTable, the data asset's description), scoring job names, drift's file lists, the smoke test's first file,
retraining, `status` for the batches it shows. The summary (shared/batches/record.py `BatchRecord`) keeps what
the others need without reading it: the counts and the digest (job names) in `BatchRecord.manifest`.

Layout (in the state container)::

    manifests/<record key>/<digest>  {"record", "files": {"<file>": {"url", "etag", "size"}},
                                      "rejected": {"<file>": {"url", "etag", "size", "reason"}}, "digest"}

Keyed by its digest so two workers completing the same batch at once (the marker and the sweep) never
overwrite each other's manifest: each writes its own listing's, create-if-absent, and only the one the
completion compare-and-swap references counts (the loser removes its own). A stored manifest never changes,
so each worker keeps the ones it read (`load`'s cache): a worker reads a batch's manifest at most once.

`load(deps, record)` is the one way to the manifest, for every kind of record: a complete batch's stored one,
a record written before #17 (which holds it itself), and a batch still collecting (what its folder holds now:
what completion would freeze).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.batches.formats import Purpose
from shared.batches.paths import BatchPath, file_problem, manifest_digest
from shared.batches.record import BatchRecord, BlobVersion, ManifestRef, ScoringRecord
from shared.core.errors import PermanentError, map_azure_error

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["PREFIX", "Manifest", "freeze", "list_batch", "load", "manifest_key", "store"]

PREFIX = "manifests/"


@dataclass(frozen=True)
class Manifest:
    """The usable files of a batch and the rejected ones with their reasons, by file name within the folder."""

    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    rejected: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """`paths.manifest_digest` of the usable files: what job names are derived from."""
        return manifest_digest(self.files)

    def holds(self, blob: BlobVersion) -> bool:
        """This very version of the file is part of the manifest (usable or rejected)."""
        return any(section.get(blob.file, {}).get("etag") == blob.etag for section in (self.files, self.rejected))

    def to_dict(self, record_key: str) -> dict[str, Any]:
        return {"record": record_key, "files": dict(self.files), "rejected": dict(self.rejected),
                "digest": self.digest}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Manifest:
        files, rejected = value.get("files"), value.get("rejected")
        return cls(dict(files) if isinstance(files, Mapping) else {},
                   dict(rejected) if isinstance(rejected, Mapping) else {})


def _entry(blob: BlobVersion) -> dict[str, Any]:
    return {"url": blob.url, "etag": blob.etag, "size": blob.size}


def freeze(listing: Iterable[BlobVersion], *, purpose: Purpose, folder: str) -> Manifest:
    """The manifest of a folder listing (pure): each file usable, or rejected with why (`paths.file_problem`)."""
    files: dict[str, Any] = {}
    rejected: dict[str, Any] = {}
    for blob in listing:
        problem = file_problem(blob.file, blob.size, purpose=purpose, folder=folder)
        if problem:
            rejected[blob.file] = {**_entry(blob), "reason": problem}
        else:
            files[blob.file] = _entry(blob)
    return Manifest(files, rejected)


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


def manifest_key(record_key: str, digest: str) -> str:
    return f"{PREFIX}{record_key}/{digest[:32]}"


def store(deps: Deps, record_key: str, manifest: Manifest) -> tuple[ManifestRef, bool]:
    """Write the manifest frozen for the batch at `record_key` (create-if-absent): (its reference for the summary,
    whether this call created it)."""
    digest = manifest.digest
    key = manifest_key(record_key, digest)
    created = deps.state.create(key, manifest.to_dict(record_key)) is not None
    if created:
        _remember(deps, key, manifest)
    return ManifestRef(key, len(manifest.files), len(manifest.rejected), digest), created


# manifests this worker has read, per state store (they never change): most recent last
_CACHE: weakref.WeakKeyDictionary[Any, OrderedDict[str, Manifest]] = weakref.WeakKeyDictionary()
_CACHE_SIZE = 16
_LOCK = threading.Lock()


def _remember(deps: Deps, key: str, manifest: Manifest) -> None:
    with _LOCK:
        kept = _CACHE.setdefault(deps.state, OrderedDict())
        kept[key] = manifest
        kept.move_to_end(key)
        while len(kept) > _CACHE_SIZE:
            kept.popitem(last=False)


def _cached(deps: Deps, key: str) -> Manifest | None:
    with _LOCK:
        kept = _CACHE.get(deps.state)
        return None if kept is None else kept.get(key)


def load(deps: Deps, record: BatchRecord) -> Manifest:
    """The manifest of the batch `record` summarises (see the module docstring): read at most once per worker.

    Raises:
        PermanentError: the record references a manifest that is not stored (deleted by hand): it names it.
    """
    ref = record.manifest
    if ref is not None:
        found = _cached(deps, ref.key)
        if found is not None:
            return found
        stored = deps.state.get(ref.key)
        if stored is None:
            raise PermanentError(f"batch {record.batch_id}: its manifest {ref.key} is missing from the state "
                                 "container; upload the data as a new batch folder")
        found = Manifest.from_dict(stored.value)
        _remember(deps, ref.key, found)
        return found
    legacy = record.legacy_files
    if legacy is not None:  # written before #17: the record holds its manifest (or, collecting, what came so far)
        return Manifest(dict(legacy), dict(record.rejected))
    if record.status == "collecting" and record.container:
        purpose: Purpose = "scoring" if isinstance(record, ScoringRecord) else "training"
        return freeze(list_batch(deps, record.path), purpose=purpose, folder=record.folder)
    return Manifest({}, dict(record.rejected))
