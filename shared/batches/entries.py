"""One entry per delivered blob version of a batch: how intake costs the same per file whatever the batch size.

Why entries: before #17 one record per batch held its whole manifest and was rewritten (compare-and-swap) for
every new file, so a batch of N files cost O(N^2) bytes and its workers queued on one blob (10,000 blobs, each
delivered 3x: 21.8 events/s, 4.5 GB read and as much written, unfinished after 9 minutes). Now a new version
costs one create-if-absent of its own small blob, and a redelivery one failed create (or nothing at all, from
the worker's cache in shared/arrival/flow.py). Entries never contend: each is written by whichever delivery comes
first, once. The create is `StateStore.create`: Put Blob with `If-None-Match: *`, "perform the operation only if
the resource does not exist, and fail the operation if it does exist" (Specifying conditional headers for Blob
service operations,
https://learn.microsoft.com/rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations);
azure-storage-blob sends it for `upload_blob(overwrite=False)` and raises the 409 as
`ResourceExistsError` (azure/storage/blob/_upload_helpers.py, `upload_block_blob`), which the store turns into None.

Why Blob Storage prefixes rather than Azure Table Storage (which #17 suggests and Azurite serves on 10002): the
two primitives needed are the ones `StateStore` already has on Blob Storage (create-if-absent and a prefix
listing), so no new dependency (azure-data-tables), no second emulator service to run and no second
data-plane role to grant the app's identity; and each entry is one Put Blob of a few hundred bytes, what a
table insert would cost too. The entries are a durable account of what was delivered and when; the manifest
itself is frozen from a listing of the batch folder at completion (shared/batches/manifest.py), never from
the entries, because storage is the truth (a marker may be delivered before the files it follows).

Layout (in the state container)::

    batchfiles/<record key>/<file>/<etag>    {"file", "url", "etag", "size", "at", "reason"?}

`<record key>` is the batch's `arrivals/…` or `scoring/…` key, `<file>` and `<etag>` are `key_part` segments
(never containing "/", so two versions never share a name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.core.state import key_part

if TYPE_CHECKING:
    from shared.batches.record import BlobVersion
    from shared.core.deps import Deps

__all__ = ["PREFIX", "entry_key", "read", "record"]

PREFIX = "batchfiles/"


def entry_key(record_key: str, file: str, etag: str) -> str:
    """The state key of one blob version's entry in the batch at `record_key`."""
    return f"{PREFIX}{record_key}/{key_part(file, limit=200)}/{key_part(etag, limit=80)}"


def record(deps: Deps, record_key: str, blob: BlobVersion, now: float, *, reason: str = "") -> bool:
    """Write the entry of `blob` once: True for the delivery that created it (the version's first), False for
    every later one (one failed conditional create: nothing is read or rewritten)."""
    value: dict[str, Any] = {"file": blob.file, "url": blob.url, "etag": blob.etag, "size": blob.size, "at": now}
    if reason:
        value["reason"] = reason
    return deps.state.create(entry_key(record_key, blob.file, blob.etag), value) is not None


def read(deps: Deps, record_key: str, file: str, etag: str) -> dict[str, Any] | None:
    """The entry of one blob version, or None when it was never delivered."""
    found = deps.state.get(entry_key(record_key, file, etag))
    return None if found is None else found.value
