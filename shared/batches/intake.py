"""Batch intake shared by the data and the scoring containers: where a BlobCreated event belongs, recording a
delivered blob, and completing a batch.

Why one place: training batches (shared/arrival/flow.py) and scoring batches (shared/scoring/flow.py) are
collected and completed by the same rule, and a batch must complete the same way whichever reaction holds it.
It completes exactly once (a CAS from `collecting` to `complete`, `BatchRecord.completed`) when its marker
arrives or, with no marker configured, when the sweep or tracker finds it quiet (`BatchRecord.quiet`).
Completion lists the batch folder, so the manifest is what storage holds even if the marker's event came
before the files it follows; it is stored once, apart (shared/batches/manifest.py).

Why a delivery costs the same whatever the batch size (#17): it writes its blob version's own entry
(shared/batches/entries.py, create-if-absent: a redelivery is one failed create) and reads the batch's small
summary; it writes the summary only when it creates it, when `last_seen` lags by more than
`record.last_seen_slack` (once per interval, however many workers deliver), or to list a late file. No
delivery rewrites a file list, so 16 workers on one batch do not queue on one blob.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.batches import entries, manifest
from shared.batches.formats import Purpose
from shared.batches.paths import BatchPath, PathProblem, file_problem, parse_blob_path
from shared.batches.record import BatchRecord, BlobVersion, arrived, as_update, complete
from shared.core import events
from shared.core.reaction import Outcome

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["Intake", "complete_batch", "locate_blob", "record_blob"]


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


@dataclass(frozen=True)
class Intake:
    """What one delivery of a data blob was (`record.arrived`): added | rejected | late | duplicate; whether
    the version is (or will be) worked on (`usable`: lineage links it to the batch); the batch's summary as this
    delivery left or found it."""

    what: str
    usable: bool
    batch: BatchRecord
    reason: str = ""  # why a rejected file is refused


def record_blob(deps: Deps, key: str, path: BatchPath, blob: BlobVersion, *, kind: type[BatchRecord],
                purpose: Purpose) -> Intake:
    """Record one delivery of a data blob in the batch at `key`, in a bounded number of small requests whatever
    the batch's size (see the module docstring): its entry (one conditional create), the summary (one read; a
    write only when it is created, `last_seen` is refreshed or a late file is listed), and for a batch already
    complete its manifest (read once per worker)."""
    now = deps.clock()
    reason = file_problem(blob.file, blob.size, purpose=purpose, folder=f"{path.dataset}/{path.batch}/") or ""
    new = entries.record(deps, key, blob, now, reason=reason)
    quiet = deps.settings.quiet_seconds

    def touch(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:  # also for a redelivery: its first delivery may have failed before creating it
            return kind.new(path, now).to_dict()
        seen = kind.from_dict(value).seen(now, quiet) if new else None
        return None if seen is None else seen.to_dict()

    stored = deps.state.update(key, touch)
    batch = kind.from_dict(stored.value) if stored is not None else kind.new(path, now)
    in_manifest = batch.status != "collecting" and manifest.load(deps, batch).holds(blob)
    what, usable = arrived(batch, blob, new=new, in_manifest=in_manifest, purpose=purpose)
    if what == "late":
        stored = deps.state.update(key, as_update(kind, lambda b: b.with_late(blob, now) if b else None))
        batch = kind.from_dict(stored.value) if stored is not None else batch
    return Intake(what, usable, batch, reason)


def complete_batch(deps: Deps, key: str, path: BatchPath, now: float, *, event_id: str, kind: type[BatchRecord],
                   purpose: Purpose, marker: BlobVersion | None = None) -> bool:
    """List the batch folder, store its manifest and complete the record at `key` with it: True for the one
    caller whose compare-and-swap made the transition (it starts the work), False when the batch was already
    complete."""
    current = deps.state.get(key)
    if current is not None and kind.from_dict(current.value).status != "collecting":
        return False
    frozen = manifest.freeze(manifest.list_batch(deps, path), purpose=purpose, folder=f"{path.dataset}/{path.batch}/")
    ref, created = manifest.store(deps, key, frozen)
    won: dict[str, bool] = {}

    def finish(value: dict[str, Any] | None) -> dict[str, Any] | None:
        new, won["it"] = complete(value, path, ref, frozen.rejected, now, event_id=event_id, marker=marker,
                                  kind=kind)
        return new

    stored = deps.state.update(key, finish)
    if not won.get("it") and created:  # another worker completed it with its own listing: ours is unused
        winner = kind.from_dict(stored.value).manifest if stored is not None else None
        if winner is None or winner.key != ref.key:
            deps.state.delete(ref.key)
    return won.get("it", False)
