"""Walk the ledger from any id to the chain it belongs to: back to the triggering data, forward to its effects.

Pure over a list of ledger entries (newest first, as `Ledger.entries` yields them), so it is tested without
storage. The chain's order is `shared.core.ledger.REF_KINDS` (blob -> batch -> data -> job -> model -> rollout ->
deployment -> endpoint). Walking back from an id follows the refs of earlier kinds found in the entries that
mention it; walking forward follows later kinds. An entry's refs come in groups (`shared.core.ledger.ref_groups`:
its own refs, and one group per item of a run that handled several, such as a sweep starting two batches);
only the group that mentions the id is followed, so such a run does not join the chains of its items. An
endpoint is shared by every model it ever served, so it is never walked through: explaining an endpoint starts
from the model it serves now (or served last).

What a chain's jobs read (`trained_blobs`, the one reader of records here): a batch's job reads its frozen copy
(shared/batches/freeze.py), so the blobs that trained are the copies, each with the source blob and the ETag of
the version it copied; a file added or overwritten after completion is never among them. A blob URL in the
ledger names the live blob, which a later overwrite reuses: the ETag is what says which version trained.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.core.ledger import REF_KINDS, group_matches, items, matches, ref_groups
from shared.core.ledger_index import EntrySource, MemoryEntrySource

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["Chain", "PRIORITY", "detect_kinds", "reason_for", "trained_blobs", "walk"]

# which kind an ambiguous id is taken as, when the ledger knows it under several (a scoring job is also seen by
# the registration gate as a run, which it skips: the scoring kinds come first)
PRIORITY: tuple[str, ...] = ("endpoint", "model", "scoring_job", "job", "deployment", "rollout", "data",
                             "scoring_batch", "batch", "scoring_output", "scoring_blob", "blob", "event")
_SHARED_KINDS = ("endpoint", "model")  # ids many items of one run share: they pick an item only when nothing else does
_MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*:[0-9]+$")


@dataclass
class Chain:
    """The lineage found: ids by kind (chain order) and the ledger entries involved (oldest first)."""

    refs: dict[str, list[str]] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add_ref(self, kind: str, value: str) -> bool:
        values = self.refs.setdefault(kind, [])
        if value in values:
            return False
        values.append(value)
        return True

    def ordered_refs(self) -> dict[str, list[str]]:
        return {k: self.refs[k] for k in REF_KINDS if self.refs.get(k)}


def detect_kinds(entries: Sequence[Mapping[str, Any]], value: str, *, endpoints: Sequence[str] = ()) -> list[str]:
    """The kinds `value` is known as, most specific first (empty when the ledger never saw it)."""
    found = {kind for kind in PRIORITY for e in entries if matches(e, kind, value)}
    if value in endpoints:
        found.add("endpoint")
    if value.startswith(("http://", "https://")):
        found &= {"blob", "scoring_blob"}
        found |= set() if found else {"blob"}
    elif _MODEL_REF.match(value) and not found:
        found.add("model")
    return [k for k in PRIORITY if k in found]


def reason_for(entry: Mapping[str, Any], refs: Mapping[str, Sequence[str]]) -> str:
    """The entry's reason, whole; for a run that handled several items (the reconciler, the scoring tracker),
    what it did to this chain's item: its action and status, and what it waits for or why it ended."""
    best: tuple[int, Mapping[str, Any]] | None = None
    for item_refs, item in items(entry):
        shared = specific = 0
        for kind, values in item_refs.items():
            if set(values) & set(refs.get(kind, ())):
                if kind in _SHARED_KINDS:
                    shared += 1
                else:
                    specific += 1
        rank = 2 if specific else 1 if shared else 0
        if rank and (best is None or rank > best[0]):
            best = (rank, item)
    if best is None:
        return str(entry.get("reason") or "")
    item = best[1]
    why = str(item.get("waiting") or item.get("reason") or "")
    if item.get("action"):
        return f"{item['action']} -> {item.get('status', '')}" + (f": {why}" if why else "")
    return why or str(item.get("status") or entry.get("reason") or "")


def walk(entries: Sequence[Mapping[str, Any]] | EntrySource, kind: str, value: str) -> Chain:
    """Everything upstream and downstream of `value` (a `kind` id, or "event" for an event id).

    `entries` is the ledger's entries newest first, or a source that finds them by id (the ledger's index,
    shared/core/ledger_index.py): either way each node of the chain costs a lookup, never a pass over the ledger.
    """
    source = MemoryEntrySource(entries) if isinstance(entries, Sequence) else entries
    chain = Chain()
    involved: dict[int, Mapping[str, Any]] = {}
    if kind == "event":
        mentions = [(p, e) for p, e in source.find([value])[value] if e.get("event_id") == value]
        starts = [(k, v) for _, e in mentions for group in ref_groups(e)
                  for k, vs in group.items() if k in REF_KINDS for v in vs]
        involved.update(mentions)
    else:
        starts = [(kind, value)]
    for start_kind, start_value in starts:
        chain.add_ref(start_kind, start_value)
        _walk(source, [(start_kind, start_value)], -1, chain, involved)
        downstream = _walk(source, [(start_kind, start_value)], 1, chain, involved)
        # what else fed the same effects (the other blobs of the batch a blob belongs to), never via an endpoint
        _walk(source, [n for n in downstream if n[0] != "endpoint" and n != (start_kind, start_value)], -1, chain,
              involved)
    for k, v in starts:  # a blob asked for by its `container/path` tail is listed once, by its URL
        if any(o != v and group_matches({k: [o]}, k, v) for o in chain.refs.get(k, ())):
            chain.refs[k].remove(v)
    # oldest first; entries of the same instant keep the ledger's order (it is newest first)
    def when(position: int) -> tuple[str, int]:
        return str(involved[position].get("at", "")), -position

    chain.entries = [dict(involved[p]) for p in sorted(involved, key=when)]  # the caller's to annotate
    first_seen: dict[tuple[str, str], int] = {}
    for position, entry in enumerate(chain.entries):
        for group in ref_groups(entry):
            for k, values in group.items():
                for v in values:
                    first_seen.setdefault((k, v), position)
    unseen = len(chain.entries)

    def order(kind: str) -> Callable[[str], int]:
        return lambda value: first_seen.get((kind, value), unseen)

    chain.refs = {k: sorted(vs, key=order(k)) for k, vs in chain.refs.items()}
    return chain


def _walk(source: EntrySource, starts: list[tuple[str, str]], direction: int, chain: Chain,
          involved: dict[int, Mapping[str, Any]]) -> set[tuple[str, str]]:
    """Follow refs from `starts` in one direction (-1 upstream, 1 downstream); the (kind, id) nodes reached.

    Breadth first, one `find` per round for every node of the round, so an index answers a round in one go."""
    frontier = list(starts)
    seen: set[tuple[str, str]] = set()
    while frontier:
        nodes = [n for n in dict.fromkeys(frontier) if n not in seen]
        seen.update(nodes)
        frontier = []
        # never walk through an endpoint, nor back from one: it joins unrelated chains
        followed = [(k, v) for k, v in nodes if not (k == "endpoint" and ((k, v) not in starts or direction < 0))]
        found = source.find({v for _, v in followed}) if followed else {}
        for k, v in followed:
            rank = REF_KINDS.index(k)
            for position, entry in found[v]:
                for group in ref_groups(entry):
                    if not group_matches(group, k, v):
                        continue
                    involved[position] = entry
                    for k2, values in group.items():
                        if k2 not in REF_KINDS or (REF_KINDS.index(k2) - rank) * direction <= 0:
                            continue
                        for v2 in values:
                            chain.add_ref(k2, v2)
                            frontier.append((k2, v2))
    return seen


def trained_blobs(deps: Deps, refs: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """The blobs the jobs of a chain's training and scoring batches read: per manifest file the frozen copy, the
    source blob and the source version's ETag. A batch submitted before Reflex froze batches read its live
    folder: its recorded blobs are listed with `frozen` empty (what trained is what the folder held then)."""
    from shared.batches import manifest
    from shared.batches.freeze import frozen_blobs, reads_frozen
    from shared.batches.record import ArrivalRecord, BatchRecord, ScoringRecord
    from shared.core.state import key_part

    found: list[dict[str, str]] = []
    for kind, prefix, record_type in (("batch", "arrivals", ArrivalRecord), ("scoring_batch", "scoring",
                                                                            ScoringRecord)):
        for ident in refs.get(kind, ()):
            parts = ident.split("/")
            stored = deps.state.get(f"{prefix}/" + "/".join(key_part(p) for p in parts)) if len(parts) == 3 \
                else None
            batch: BatchRecord | None = record_type.from_dict(stored.value) if stored is not None else None
            if batch is None or batch.submitted_at is None:
                continue  # not submitted: nothing was read
            if reads_frozen(deps.settings, batch):
                url = deps.blobs.get_container_client(batch.container).url
                found += [{"batch": ident, **blob} for blob in frozen_blobs(deps, batch, url)]
            else:
                found += [{"batch": ident, "file": name, "frozen": "", "source": str(entry.get("url", "")),
                           "source_etag": str(entry.get("etag", ""))}
                          for name, entry in sorted(manifest.load(deps, batch).files.items())]
    return found
