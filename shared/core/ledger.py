"""The lineage ledger: one append-only line per reaction run, so an operator can ask "why?" and "what then?".

Why a ledger beside the state records: state records are current (a rollout record says where a rollout *is*),
the ledger is history (what each reaction decided, from which event, touching which asset). With the same ids
in the tags Reflex puts on Azure ML assets (`reflex.event_id`, `reflex.parent`, `reflex.data`), one can walk
from an endpoint's traffic back to the blob that caused it, and forward from a blob to everything it caused.

Storage: Azure *append blobs* in the state container, one JSON line per entry, one blob per UTC day
(`ledger/2026-11-21.jsonl`) until it is full, then *parts* `ledger/2026-11-21.1.jsonl`, `.2.jsonl`, ... An
append blob holds at most 50,000 committed blocks (Azure refuses the next with 409 `BlockCountExceedsLimit`)
and a block is at most 4 MiB (100 MiB from service version 2022-11-02; the ledger keeps to 4 MiB). Writing
costs ONE `append_block` per reaction in the steady state (a part is created once, by the first append that
finds it missing); each block is appended atomically, so concurrent workers never interleave or overwrite
lines. No append lists blobs: each writer remembers its day's current part (found once per day per process by
one listing and one properties read), and moves to the next part when an append answers with a committed
block count at the limit, or when Azure refuses an append as over the limit or to a sealed blob (that append
is then retried on the next part, so a worker whose part another worker just filled loses nothing and writes
nothing twice; sealing a part, e.g. for retention, is also how an operator can close it).
A limit below Azure's (the `max_blocks` constructor argument, for tests) is a target, not a wall: no writer
leaves a part before it holds that many blocks, but appends racing at the boundary may land past it (on Azure
one per racing append; more on Azurite, whose reported count lags under concurrency); at Azure's limit the
service itself refuses.

Reading lists the day files (newest first, bounded by `days`), reads each day's parts in order and filters:
newest first is the last line of the day's highest part. A line that would not fit in one block (a huge
`decision` or list of refs) is shrunk, never refused: see `fit` and the `truncated` marker below.

An entry::

    {"at": iso-time, "reaction": "rollout.model_registered", "event_id": "...", "event_type": "...",
     "status": "acted|skipped|duplicate|held|dry-run|dead-lettered", "reason": "...",
     "refs": {"blob": [...], "batch": [...], "data": [...], "job": [...], "model": [...],
              "endpoint": [...], "deployment": [...], "rollout": [...], "dead_letter": [...], "held": [...]},
     "links": [{"batch": [...], "job": [...]}, ...],       only when the run handled several items
     "decision": {...the other details: the decision's inputs...},
     "truncated": {"bytes": n, "fields": [...]}}            only when the line was too large for one block

`truncated` says the line was shrunk to fit one append block (`bytes`: the size it had; `fields`: what was cut:
"decision" keeps its small values and replaces the others with "<truncated: n bytes>" or is emptied, "refs" and
"links" keep the first ids of each kind, "reason" and the other strings are cut short).

Refs are taken from `Outcome.details` (and from the triggering event itself, so a skipped or dead-lettered
event is still findable by its blob/job/model). Reactions put, in `Outcome.details`, under the kind's own name
(a string, or a list of strings; `REF_KINDS` and `OTHER_REFS` are the one declaration of the accepted keys):

    blob        blob URL(s) the work came from
    batch       "<container>/<dataset>/<batch>"            (its arrival record key
                                                            `arrivals/<container>/<dataset>/<batch>` is read as it)
    data        data asset "name:version" (or {"name", "version"})
    job         Azure ML job name
    model       model "name:version" (or {"name", "version"}; or the bare name with its version under
                `model_version`, `MODEL_VERSION`, as the registration gate reports it)
    endpoint    online/batch endpoint name
    deployment  deployment name
    rollout     rollout id "<endpoint>/<model>:<version>"
    dead_letter, held                                      the dead letter or held event a run wrote

A run that handled several independent items at once (the sweep starting several batches, the reconcile
timer advancing the rollouts of several endpoints) puts one mapping per item, with the keys above, in
`details["links"]`. Each becomes one group of refs in the entry's `links`; the walk (`reflex/explain.py`)
follows a group only as a whole, so two batches started by the same sweep never join each other's chains.

A model or data ref is "name:version": a bare name (a registration that registered nothing) is no ref.
Everything else in `details` is kept as `decision` (the inputs and result of the pure decision). A nested
`details["decision"]` mapping is used as is. Values are stringified when they are not JSON.

Scoring is kept apart from training. Batch scoring reactions (`scoring.*`) use the same keys for their own
things (the scoring batch, the batch job, its output folder), but those are not training data, jobs or
deployments: in their lines `blob`, `batch` and `job` become `scoring_blob`, `scoring_batch` and `scoring_job`,
`output` becomes `scoring_output`, `model` stays `model` (the champion that scored), and the batch endpoint and
deployment stay in `decision` (`SCOPES`). The chain order puts them after the model they use, so walking back
from a scoring batch reaches the model that scored it and that model's training data, and walking forward from
a model reaches what it scored, never mixing the two kinds of batch.

What a run did to each item, and what an item waits for: a run that handled several items puts one mapping per
item in `details` (the reconciler: `{<record>: {"action", "status", "reason", "waiting", <refs>}}`), kept in
`decision`; `items(entry)` pairs each with its refs, so `explain` shows, for the chain asked about, that item's
action, status and reason, and a wait's reason (`waiting`) rather than the run's summary.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.core.errors import safe_json, safe_text

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, ContainerClient

    from shared.core.deps import Deps
    from shared.core.reaction import Outcome
    from shared.core.settings import Settings

__all__ = ["MAX_BLOCKS", "MAX_BLOCK_BYTES", "MODEL_VERSION", "OTHER_REFS", "REF_KINDS", "SCOPES", "BlobLedger",
           "Ledger", "MemoryLedger", "entry_from", "fit", "group_matches", "items", "matches", "parse_line",
           "ref_groups", "refs_from", "scope_of"]

PREFIX = "ledger/"
SUFFIX = ".jsonl"
MAX_BLOCKS = 50_000  # committed blocks in one append blob: Azure refuses the next one (409 BlockCountExceedsLimit)
MAX_BLOCK_BYTES = 4 * 1024 * 1024  # one append block: 4 MiB (the limit before service version 2022-11-02)
# the service refuses another block: the part is at its block limit, or sealed (read-only for good)
_FULL = ("BlockCountExceedsLimit", "BlobIsSealed")
_MIN_LINE_BYTES = 4096  # room for the fields `fit` never drops
_SMALL = 256  # a decision value (as JSON) or a string field at most this long survives `fit` as is
_KEPT = ("at", "reaction", "event_id", "event_type", "status", "reason")
_ID_TEXT = 256  # an event id (shared.core.reaction.event_id_of keeps them within 200)
_REF_TEXT = 2048  # one ref id: a blob URL is at most ~1,100 characters (a 1,024-character name and the account)
_REFS_PER_KIND = 1000

# upstream -> downstream: the order of the chain (explain walks back against it and forward along it)
REF_KINDS: tuple[str, ...] = ("blob", "batch", "data", "job", "model", "scoring_blob", "scoring_batch", "scoring_job",
                              "scoring_output", "rollout", "deployment", "endpoint")
OTHER_REFS: tuple[str, ...] = ("dead_letter", "held")  # refs outside the chain: what a run wrote aside
MODEL_VERSION = "model_version"  # beside a bare `model` name (the registration gate: "model": "m", "model_version")
_ARRIVAL_PREFIX = "arrivals/"  # shared/batches/training.py `arrival_key`: arrivals/<container>/<dataset>/<batch>
_KINDS = (*REF_KINDS, *OTHER_REFS)
_CONSUMED = {*_KINDS, MODEL_VERSION, "links"}

# reaction-name prefix -> what each ref kind of its lines becomes (kinds not named stay in `decision`)
SCOPES: dict[str, Mapping[str, str]] = {
    "scoring.": {"blob": "scoring_blob", "batch": "scoring_batch", "job": "scoring_job", "output": "scoring_output",
                 "model": "model", "scoring_blob": "scoring_blob", "scoring_batch": "scoring_batch",
                 "scoring_job": "scoring_job", "scoring_output": "scoring_output"},
}


def scope_of(reaction: str) -> Mapping[str, str] | None:
    """How the refs of `reaction`'s lines are renamed (see the module docstring), or None: taken as they are."""
    return next((scope for prefix, scope in SCOPES.items() if reaction.startswith(prefix)), None)


def _consumed(scope: Mapping[str, str] | None) -> set[str]:
    """The `details` keys that become refs (and so leave `decision`) under `scope`."""
    if scope is None:
        return _CONSUMED
    kept = {kind for kind in _KINDS if kind not in scope}
    return (_CONSUMED - kept) | {"output"}


def _strings(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):  # e.g. {"name": "m", "version": "3"}
        name, version = value.get("name"), value.get("version")
        return [f"{name}:{version}"] if name and version else []
    if isinstance(value, Iterable):
        return [s for item in value for s in _strings(item)]
    return [str(value)]


def _add(refs: dict[str, list[str]], kind: str, values: Iterable[str]) -> None:
    for value in values:
        if value and value not in refs.setdefault(kind, []):
            refs[kind].append(value)


def _event_refs(payload: Any) -> dict[str, list[str]]:
    """Refs visible in the triggering event itself (an Event Grid or CloudEvents dict)."""
    refs: dict[str, list[str]] = {}
    if not isinstance(payload, Mapping):
        return refs
    data = payload.get("data")
    data = data if isinstance(data, Mapping) else {}
    lowered = {str(k).lower(): v for k, v in data.items()}
    event_type = str(payload.get("eventType") or payload.get("type") or "")
    if event_type.endswith("BlobCreated") and lowered.get("url"):
        _add(refs, "blob", _strings(lowered["url"]))
    if event_type.startswith("Microsoft.MachineLearningServices.Run") and lowered.get("runid"):
        _add(refs, "job", _strings(lowered["runid"]))
    if lowered.get("modelname") and lowered.get("modelversion") is not None:
        _add(refs, "model", [f"{lowered['modelname']}:{lowered['modelversion']}"])
    return refs


def refs_from(details: Mapping[str, Any], payload: Any = None, *,
              scope: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """The ids an outcome touched, by kind (see the module docstring for the accepted keys); `scope`
    (`scope_of(reaction)`) renames them for a reaction whose things are not training's."""
    refs = _scoped(_refs_from(details, payload), scope)
    if scope is not None and "output" in details:
        _add(refs, scope["output"], _strings(details["output"]))
    return {k: v for k, v in refs.items() if v}


def _scoped(refs: dict[str, list[str]], scope: Mapping[str, str] | None) -> dict[str, list[str]]:
    if scope is None:
        return refs
    scoped: dict[str, list[str]] = {}
    for kind, values in refs.items():
        if kind in scope:
            _add(scoped, scope[kind], values)
    return scoped


def _refs_from(details: Mapping[str, Any], payload: Any) -> dict[str, list[str]]:
    refs = _event_refs(payload)
    for kind in _KINDS:
        if kind in details:
            _add(refs, kind, _strings(details[kind]))
    name, version = details.get("model"), details.get(MODEL_VERSION)
    if isinstance(name, str) and name and ":" not in name and version not in (None, ""):
        _add(refs, "model", [f"{name}:{version}"])
    for kind in ("data", "model"):  # a bare name is no ref: it would join every version's chain
        refs[kind] = [v for v in refs.get(kind, ()) if ":" in v]
    if refs.get("batch"):  # a batch named by its arrival record's key (the `reflex.batch` tag) is that batch
        batches = refs.pop("batch")
        _add(refs, "batch", [b.removeprefix(_ARRIVAL_PREFIX) for b in batches])
    return {k: v for k, v in refs.items() if v}


def _links(details: Mapping[str, Any], scope: Mapping[str, str] | None) -> list[dict[str, list[str]]]:
    links = details.get("links")
    if not isinstance(links, Iterable) or isinstance(links, (str, Mapping)):
        return []
    groups = [refs_from(link, scope=scope) for link in links if isinstance(link, Mapping)]
    return [g for g in groups if g]


def ref_groups(entry: Mapping[str, Any]) -> list[Mapping[str, list[str]]]:
    """The entry's refs, then each of its `links` groups: the sets of ids that belong to one chain."""
    links = entry.get("links")
    return [entry.get("refs") or {}, *(g for g in (links if isinstance(links, list) else ()) if isinstance(g, Mapping))]


def items(entry: Mapping[str, Any]) -> list[tuple[dict[str, list[str]], Mapping[str, Any]]]:
    """The per-item mappings of a run that handled several (its `decision` values that name refs), each with
    its refs, read with the entry's scope: what the run did to each item (see the module docstring)."""
    decision = entry.get("decision")
    if not isinstance(decision, Mapping):
        return []
    scope = scope_of(str(entry.get("reaction") or ""))
    found = []
    for item in decision.values():
        if isinstance(item, Mapping):
            refs = refs_from(item, scope=scope)
            if refs:
                found.append((refs, item))
    return found


def _jsonable(value: Any) -> Any:
    """A decision as the ledger keeps it: bounded and encodable (`shared.core.errors.safe_json`: strings of at most
    `TEXT_LIMIT` characters, lone surrogates escaped, nesting cut), so no event field can make a line huge (#18:
    a 1 MB field made a 2.4 MB line) or unwritable."""
    return safe_json(value)


def entry_from(reaction: str, event_id: str, payload: Any, outcome: Outcome, *, at: float) -> dict[str, Any]:
    """The ledger line for one reaction run (pure: no I/O)."""
    details = dict(outcome.details or {})
    scope = scope_of(reaction)
    decision = details.get("decision")
    if not isinstance(decision, Mapping):
        consumed = _consumed(scope)
        decision = {k: v for k, v in details.items() if k not in consumed}
    event_type = ""
    if isinstance(payload, Mapping):
        event_type = str(payload.get("eventType") or payload.get("type") or "")
    entry = {
        "at": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "reaction": reaction, "event_id": safe_text(event_id, _ID_TEXT), "event_type": safe_text(event_type, _SMALL),
        "status": outcome.status, "reason": safe_text(outcome.reason),
        "refs": _bounded_refs(refs_from(details, payload, scope=scope)), "decision": _jsonable(dict(decision)),
    }
    links = [_bounded_refs(group) for group in _links(details, scope)]
    if links:
        entry["links"] = links
    return entry


def _bounded_refs(refs: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Refs as a line keeps them: each id through `safe_text` (a blob URL is at most ~1,100 characters; an id from
    a hostile event may be 1 MB) and at most `_REFS_PER_KIND` of each kind."""
    return {kind: [safe_text(v, _REF_TEXT) for v in values[:_REFS_PER_KIND]] for kind, values in refs.items()}


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One ledger line as an entry; None for a line that is not a JSON object (unreadable lines are skipped).

    A line written before lines were bounded may hold a lone surrogate (`\\ud800` in JSON), which no terminal can
    print: it is read as the escaped text that lines hold now."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict):
        return None
    escaped = (b"\\ud" in line) if isinstance(line, bytes) else ("\\ud" in line)
    return safe_json(entry, limit=MAX_BLOCK_BYTES) if escaped else entry


def _same(stored: str, wanted: str) -> bool:
    """Ids match exactly; blob ids also match between a URL and its `container/path` tail."""
    if stored == wanted:
        return True
    a, b = stored.rstrip("/"), wanted.rstrip("/")
    return ("/" in a and "/" in b) and (a.endswith("/" + b) or b.endswith("/" + a))


def matches(entry: Mapping[str, Any], kind: str, value: str) -> bool:
    """Whether `entry` refers to `value` as a `kind` ("event" matches the event id)."""
    if kind == "event":
        return entry.get("event_id") == value
    return any(group_matches(group, kind, value) for group in ref_groups(entry))


def group_matches(group: Mapping[str, Any], kind: str, value: str) -> bool:
    """Whether one group of refs (see `ref_groups`) refers to `value` as a `kind`."""
    return any(_same(stored, value) for stored in group.get(kind, ()))


def _encode(entry: Mapping[str, Any]) -> bytes:
    return (json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode()


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def _trim_refs(refs: Any, keep: int) -> Any:
    if not isinstance(refs, Mapping):
        return {}
    return {kind: [str(v)[:_SMALL * 4] for v in values[:keep]] if isinstance(values, list) else values
            for kind, values in refs.items()}


def _cut(text: str) -> str:
    """`text` cut to at most `_SMALL` bytes as JSON (non-ASCII characters take up to 12), marked with "…"."""
    text = text[:_SMALL]
    while _size(text) > _SMALL:
        text = text[:len(text) // 2]
    return text + "…"


def fit(entry: Mapping[str, Any], max_bytes: int = MAX_BLOCK_BYTES) -> dict[str, Any]:
    """`entry`, shrunk if its line would exceed `max_bytes`, with a `truncated` marker saying what was cut (pure).

    In order, until the line fits: the decision keeps its small values (the others become "<truncated: n bytes>");
    refs and links keep the first ids of each kind (halving down to one); the decision is emptied; long strings are
    cut; at last only `at`, `reaction`, `event_id`, `event_type`, `status` and `reason` remain. A line is never
    refused for size.
    """
    line = _encode(entry)
    if len(line) <= max_bytes:
        return dict(entry)
    out: dict[str, Any] = json.loads(line)
    cut: list[str] = []
    out["truncated"] = {"bytes": len(line), "fields": cut}

    def fits() -> bool:
        return len(_encode(out)) <= max_bytes

    decision = out.get("decision")
    if isinstance(decision, dict) and decision:
        small = {k: v if _size(v) <= _SMALL else f"<truncated: {_size(v)} bytes>" for k, v in decision.items()}
        if small != decision:
            cut.append("decision")
            out["decision"] = small
            if fits():
                return out
    refs, links = out.get("refs"), out.get("links")
    groups = [refs, *(links if isinstance(links, list) else [])]
    longest = max((len(v) for g in groups if isinstance(g, Mapping) for v in g.values() if isinstance(v, list)),
                  default=0)
    if longest:
        cut.extend(["refs", "links"] if isinstance(links, list) else ["refs"])
        keep = longest
        while keep > 1:
            keep //= 2
            out["refs"] = _trim_refs(refs, keep)
            if isinstance(links, list):
                out["links"] = [_trim_refs(g, keep) for g in links[:keep]]
            if fits():
                return out
    if out.get("decision"):
        cut.extend([] if "decision" in cut else ["decision"])
        out["decision"] = {}
        if fits():
            return out
    for key in [k for k in out if k not in ("refs", "links", "decision", "truncated")]:
        value = out[key]
        if _size(value) > _SMALL:
            name = key if key in _KEPT else "other"
            cut.extend([] if name in cut else [name])
            out[key] = _cut(value) if isinstance(value, str) else f"<truncated: {_size(value)} bytes>"
    if fits():
        return out
    cut.extend(k for k in ("refs", "links", "other") if k not in cut)
    out = {**{k: out[k] for k in _KEPT if k in out}, "refs": {}, "decision": {}, "truncated": out["truncated"]}
    return out


class Ledger(ABC):
    """Append entries; read them newest first within `days` of `clock()`. A line is at most `max_line_bytes`
    (larger entries are shrunk by `fit`, never refused)."""

    def __init__(self, clock: Callable[[], float], *, max_line_bytes: int = MAX_BLOCK_BYTES) -> None:
        if max_line_bytes < _MIN_LINE_BYTES:
            raise ValueError(f"max_line_bytes must be at least {_MIN_LINE_BYTES}")
        self.clock = clock
        self.max_line_bytes = max_line_bytes

    @abstractmethod
    def append(self, entry: Mapping[str, Any]) -> None:
        """Append one entry (one storage write)."""

    @abstractmethod
    def _day_lines(self, day: str) -> list[str]:
        """The JSON lines of one UTC day (`YYYY-MM-DD`), oldest first; empty when there are none."""

    @abstractmethod
    def _days(self) -> list[str]:
        """Every day that has entries."""

    def record(self, reaction: str, event_id: str, payload: Any, outcome: Outcome, deps: Deps) -> dict[str, Any]:
        """Build and append the entry for one reaction run (what `shared.core.reaction` calls after each run)."""
        entry = entry_from(reaction, event_id, payload, outcome, at=deps.clock())
        self.append(entry)
        return entry

    def note(self, reaction: str, status: str, reason: str, *, refs: Mapping[str, Any] | None = None,
             decision: Mapping[str, Any] | None = None, event_id: str = "") -> dict[str, Any]:
        """Append an operator action (pause, resume, replay, rollback) with who and why in `decision`."""
        entry = {"at": datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"), "reaction": reaction, "event_id": event_id, "event_type": "Reflex.Operator",
            "status": status, "reason": reason, "refs": refs_from(dict(refs or {})),
            "decision": _jsonable(dict(decision or {}))}
        self.append(entry)
        return entry

    def entries(self, *, days: int = 7) -> Iterator[dict[str, Any]]:
        """Entries of the last `days` UTC days (today included), newest first; unreadable lines are skipped."""
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        oldest = (today - timedelta(days=max(days, 1) - 1)).isoformat()
        for day in sorted((d for d in self._days() if d >= oldest), reverse=True):
            for line in reversed(self._day_lines(day)):
                entry = parse_line(line)
                if entry is not None:
                    yield entry

    def find(self, kind: str, value: str, *, days: int = 7) -> list[dict[str, Any]]:
        """Entries that refer to `value` as a `kind` (blob, batch, data, job, model, endpoint, deployment,
        rollout, dead_letter, held, or "event" for the event id), newest first."""
        return [e for e in self.entries(days=days) if matches(e, kind, value)]

    def _line(self, entry: Mapping[str, Any]) -> bytes:
        line = _encode(entry)
        return line if len(line) <= self.max_line_bytes else _encode(fit(entry, self.max_line_bytes))

    def _day_of(self, entry: Mapping[str, Any]) -> str:
        at = str(entry.get("at") or "")
        return at[:10] if len(at) >= 10 else datetime.fromtimestamp(self.clock(), UTC).date().isoformat()


class MemoryLedger(Ledger):
    """In-process ledger with the same reading rules, for unit tests."""

    def __init__(self, clock: Callable[[], float], *, max_line_bytes: int = MAX_BLOCK_BYTES) -> None:
        super().__init__(clock, max_line_bytes=max_line_bytes)
        self._lines: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def append(self, entry: Mapping[str, Any]) -> None:
        with self._lock:
            self._lines.setdefault(self._day_of(entry), []).append(self._line(entry).decode().rstrip("\n"))

    def _day_lines(self, day: str) -> list[str]:
        with self._lock:
            return list(self._lines.get(day, []))

    def _days(self) -> list[str]:
        with self._lock:
            return list(self._lines)


def _part_name(day: str, part: int) -> str:
    return f"{PREFIX}{day}{SUFFIX}" if part == 0 else f"{PREFIX}{day}.{part}{SUFFIX}"


def _parse_part(name: str) -> tuple[str, int] | None:
    """(day, part) of `ledger/<day>.jsonl` (part 0) or `ledger/<day>.<n>.jsonl` (n >= 1); None for other names."""
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        return None
    day, _, part = name[len(PREFIX):-len(SUFFIX)].partition(".")
    if not day:
        return None
    if not part:
        return day, 0
    return (day, int(part)) if part.isdigit() and int(part) > 0 else None


class BlobLedger(Ledger):
    """Append blobs `ledger/<YYYY-MM-DD>.jsonl`, then `ledger/<YYYY-MM-DD>.<n>.jsonl` once a part holds
    `max_blocks` blocks, in the state container: one `append_block` per entry (see the module docstring)."""

    def __init__(self, container: ContainerClient, clock: Callable[[], float], *, max_blocks: int = MAX_BLOCKS,
                 max_line_bytes: int = MAX_BLOCK_BYTES) -> None:
        super().__init__(clock, max_line_bytes=max_line_bytes)
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        self._container = container
        self.max_blocks = max_blocks
        self._part: dict[str, int] = {}  # day -> the part this writer appends to (only moves forward)
        self._lock = threading.Lock()

    @classmethod
    def from_service(cls, service: Any, settings: Settings, clock: Callable[[], float]) -> BlobLedger:
        """The ledger in `REFLEX_STATE_CONTAINER` of `service` (a BlobServiceClient: shared/core/deps.py builds it)."""
        return cls(service.get_container_client(settings.state_container), clock)

    def append(self, entry: Mapping[str, Any]) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            HttpResponseError,
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        from shared.core.errors import map_azure_error

        day, line = self._day_of(entry), self._line(entry)
        try:
            part, created = self._current_part(day), False
            while True:
                blob = self._container.get_blob_client(_part_name(day, part))
                try:
                    result = blob.append_block(line)
                except ResourceNotFoundError:  # a new part: create the append blob once, then append
                    if created:
                        raise
                    try:
                        blob.create_append_blob(match_condition=MatchConditions.IfMissing)
                    except (ResourceExistsError, ResourceModifiedError):
                        pass  # another worker created it meanwhile
                    created = True
                    continue
                except HttpResponseError as exc:
                    if getattr(exc, "error_code", None) not in _FULL:
                        raise
                    part, created = self._advance(day, part), False  # another worker filled it: retry on the next
                    continue
                count = result.get("blob_committed_block_count")
                if isinstance(count, (int, str)) and int(count) >= self.max_blocks:
                    self._advance(day, part)  # this line filled it: the next entry goes to the next part
                return
        except Exception as exc:
            raise map_azure_error(exc, f"ledger {day}") from exc

    def _current_part(self, day: str) -> int:
        """The part to append to: remembered, else found once (the day's highest part; the next if it is full)."""
        with self._lock:
            if day in self._part:
                return self._part[day]
        from azure.core.exceptions import ResourceNotFoundError

        part = max(self._parts(day).get(day, [0]))
        try:
            props = self._container.get_blob_client(_part_name(day, part)).get_blob_properties()
        except ResourceNotFoundError:
            props = None
        if props is not None and ((props.append_blob_committed_block_count or 0) >= self.max_blocks
                                  or props.is_append_blob_sealed):
            part += 1
        with self._lock:
            part = self._part[day] = max(part, self._part.get(day, 0))
            for old in sorted(self._part)[:-3]:  # keep the last few days only
                if old != day:
                    del self._part[old]
        return part

    def _advance(self, day: str, full: int) -> int:
        with self._lock:
            part = self._part[day] = max(self._part.get(day, 0), full + 1)
            return part

    def _parts(self, day: str | None = None) -> dict[str, list[int]]:
        """Parts by day (ascending), from one listing (of one day when `day` is given)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            names = [b.name for b in self._container.list_blobs(name_starts_with=PREFIX + (f"{day}." if day else ""))]
        except ResourceNotFoundError:
            return {}
        parts: dict[str, list[int]] = {}
        for parsed in filter(None, map(_parse_part, names)):
            if day is None or parsed[0] == day:
                parts.setdefault(parsed[0], []).append(parsed[1])
        return {d: sorted(p) for d, p in parts.items()}

    def _day_lines(self, day: str) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        lines: list[str] = []
        for part in self._parts(day).get(day, []):
            try:
                body = _read_appended(self._container.get_blob_client(_part_name(day, part)))
            except ResourceNotFoundError:
                continue
            lines.extend(line for line in body.decode("utf-8", errors="replace").splitlines() if line.strip())
        return lines

    def _days(self) -> list[str]:
        return list(self._parts())


def _read_appended(blob: BlobClient, *, attempts: int = 3) -> bytes:
    """The whole of an append blob that other workers may be appending to while it is read.

    `download_blob` reads a large blob in chunks and sends the first answer's ETag as `If-Match` with every later
    chunk (azure-storage-blob `_download.py`, `_initial_request`), so an append between two chunks fails the read
    with `ResourceModifiedError` (412 ConditionNotMet): `explain` crashed on the day's ledger while Reflex ran
    (#18). An append blob only grows and each line is one atomically committed block, so the bytes up to the
    length seen are final: on that error the prefix is read range by range (each range one request of at most
    `MAX_BLOCK_BYTES`, so no condition is sent), a range that still races is read again.
    """
    from azure.core.exceptions import ResourceModifiedError

    try:
        return blob.download_blob().readall()
    except ResourceModifiedError:
        pass
    size = blob.get_blob_properties().size or 0
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        length = min(MAX_BLOCK_BYTES, size - offset)
        for attempt in range(attempts):
            try:
                chunks.append(blob.download_blob(offset=offset, length=length).readall())
                break
            except ResourceModifiedError:
                if attempt == attempts - 1:
                    raise
        offset += length
    return b"".join(chunks)
