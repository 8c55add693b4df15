"""Batch intake shared by the data and the scoring containers: where a BlobCreated event belongs, what a batch
folder holds now, and completing a batch.

Why one place: training batches (shared/arrival/flow.py) and scoring batches (shared/scoring/flow.py) are
collected and completed by the same rule, and a batch must complete the same way whichever reaction holds it.
It completes exactly once (a CAS from `collecting` to `complete`, `BatchRecord.completed`) when its marker
arrives or, with no marker configured, when the sweep or tracker finds it quiet (`BatchRecord.quiet`).
Completion lists the batch folder, so the manifest is what storage holds even if the marker's event came
before the files it follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.batches.formats import Purpose
from shared.batches.paths import BatchPath, PathProblem, parse_blob_path
from shared.batches.record import BatchRecord, BlobVersion, complete
from shared.core import events
from shared.core.errors import map_azure_error
from shared.core.reaction import Outcome

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["complete_batch", "list_batch", "locate_blob"]


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


def complete_batch(deps: Deps, key: str, path: BatchPath, now: float, *, event_id: str, kind: type[BatchRecord],
                   purpose: Purpose, marker: BlobVersion | None = None) -> bool:
    """List the batch folder and complete the record at `key` from it: True for the one caller whose
    compare-and-swap made the transition (it starts the work), False when the batch was already complete."""
    listing = list_batch(deps, path)
    won: dict[str, bool] = {}

    def finish(value: dict[str, Any] | None) -> dict[str, Any] | None:
        new, won["it"] = complete(value, path, listing, now, event_id=event_id, marker=marker, purpose=purpose,
                                  kind=kind)
        return new

    deps.state.update(key, finish)
    return won.get("it", False)
