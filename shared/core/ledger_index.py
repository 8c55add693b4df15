"""Ledger entries by the ids they record, read at the cost of the answer, not of the ledger (`reflex explain`).

Why an index: the ledger (shared/core/ledger.py) is one append blob per UTC day; explaining one id by scanning it
costs the whole day (42 s and 257 MiB for 100k lines, #17), though a chain is a few dozen lines.

Why built on first read, not at write time: a write-time index would cost every reaction one more write per id it
touches (a sweep or tracker tick names many), on the path whose storage requests #17 counts and within Event
Grid's 30 s; the ledger is read rarely, by an operator. So the first reader of a day's part indexes it once and
stores the index beside it; later readers read the index and only the lines the answer needs:

    ledger-index/shards/<day>.<part>/<start>-<end>/<n>.json   {key: [[offset, length], ...]}: the lines of bytes
                                                              [start, end) of part `<part>` of `<day>`, by key
    ledger-index/segments/<day>.<part>/<start>-<end>.<shards>     {"lines", ...}: written last, so a segment is
                                                              used only once every shard of it is stored; one
                                                              listing of these markers finds every segment

A segment is immutable: an append blob's committed bytes never change ("Updating or deleting of existing blocks is
not supported", AppendBlobClient, https://learn.microsoft.com/dotnet/api/azure.storage.blobs.specialized.
appendblobclient; REST: Append Block), and every append is one whole line (shared/core/ledger.py). The
index of a part is the chain of segments from byte 0; what lies beyond it (lines appended since, including those
appended while a segment was being built: a segment ends where the download that built it ended) is the part's
*tail*, read with one ranged download (Get Blob with `x-ms-range`; azure-storage-blob
`download_blob(offset=, length=)`) and searched in memory; a tail of `TAIL_BYTES` or more becomes a new segment,
so no reader re-reads it. Concurrent readers may build the same segment: identical blobs, no harm.

Keys: an id without "/" is its own key; an id with "/" (a blob URL, a batch, a rollout) is keyed by its last two
segments, which is what `shared.core.ledger._same` needs (a URL matches its `container/path` tail: both share their
last two segments); an event id is keyed as itself. An index answers *candidates*: the caller keeps those whose
refs really match (`ledger.matches`, `ledger.group_matches`), so a shared key costs a line read, never a wrong link.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.core.ledger import PREFIX, SUFFIX, parse_line, ref_groups

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from shared.core.ledger import Ledger

__all__ = ["INDEX_PREFIX", "SEGMENTS_PREFIX", "SHARDS_PREFIX", "TAIL_BYTES", "BlobEntrySource", "EntrySource",
           "LedgerIndexer", "MemoryEntrySource", "entry_keys", "index_key", "source_for"]

INDEX_PREFIX = "ledger-index/"
SEGMENTS_PREFIX = INDEX_PREFIX + "segments/"
SHARDS_PREFIX = INDEX_PREFIX + "shards/"
TAIL_BYTES = 1 << 20  # an unindexed tail this long is indexed by the reader that finds it
_LINES_PER_SHARD = 400  # a segment has about this many lines per shard (at most MAX_SHARDS shards)
MAX_SHARDS = 256
_GAP = 64 * 1024  # wanted lines closer than this are read in one ranged download
# every read is a range of at most one block's size, below the SDK's single-request size (`max_single_get_size`,
# 32 MiB): a larger download goes in chunks that send the first answer's ETag as If-Match, which an append in
# between fails with ResourceModifiedError (see shared.core.ledger `_read_appended`). Bytes below the size the
# listing reported are final, so ranges need no condition; what was appended since is read next time.
_RANGE = 4 * 1024 * 1024
_WORKERS = 8

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()

Found = list[tuple[int, Mapping[str, Any]]]  # (position: smaller is newer, entry), the ledger's newest-first order


def _map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """`fn` over `items`, in parallel on one pool kept for the process (a walk asks many small rounds: starting
    threads per round would cost more than the reads); a single item runs here. `fn` must not call `_map` itself
    (the pool is bounded: tasks waiting on tasks queued behind them would wait for ever)."""
    global _POOL
    if len(items) <= 1:
        return [fn(i) for i in items]
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_WORKERS, thread_name_prefix="ledger-index")
    return list(_POOL.map(fn, items))


def index_key(value: str) -> str:
    """The key an id is indexed and looked up under (see the module docstring)."""
    trimmed = value.rstrip("/")
    return "/".join(trimmed.split("/")[-2:]) if "/" in trimmed else value


def entry_keys(entry: Mapping[str, Any]) -> set[str]:
    """Every key of one entry: its ids of every group, and its event id."""
    keys = {index_key(v) for group in ref_groups(entry) for values in group.values()
            for v in (values if isinstance(values, list) else ()) if isinstance(v, str) and v}
    if entry.get("event_id"):
        keys.add(str(entry["event_id"]))
    return keys


class EntrySource(Protocol):
    """Where `reflex.explain.walk` finds the entries that mention an id."""

    def find(self, values: Iterable[str]) -> dict[str, Found]:
        """For each value, the entries that may mention it (any kind, or as event id), newest first."""
        ...

    def empty(self) -> bool:
        """Whether the window holds no entry at all."""
        ...


class MemoryEntrySource:
    """Entries in memory (newest first, as `Ledger.entries` yields them), inverted once: O(entries + answer)."""

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self._entries = entries
        self._postings: dict[str, list[int]] = {}
        for position, entry in enumerate(entries):
            for key in entry_keys(entry):
                self._postings.setdefault(key, []).append(position)

    def find(self, values: Iterable[str]) -> dict[str, Found]:
        return {v: [(p, self._entries[p]) for p in self._postings.get(index_key(v), ())] for v in values}

    def empty(self) -> bool:
        return not self._entries


@dataclass
class _Part:
    day: str
    part: int
    name: str
    size: int
    segments: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, shards) from byte 0
    tail: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)  # key -> (offset, entry)

    @property
    def covered(self) -> int:
        return self.segments[-1][1] if self.segments else 0

    def position(self, offset: int) -> int:
        """Smaller is newer: later days, later parts, later offsets first (`Ledger.entries`' order)."""
        return -(date.fromisoformat(self.day).toordinal() * 10**16 + self.part * 10**12 + offset)

    def folder(self) -> str:
        return f"{SHARDS_PREFIX}{self.day}.{self.part}/"

    def marker_folder(self) -> str:
        return f"{SEGMENTS_PREFIX}{self.day}.{self.part}/"


def _parse_part(name: str) -> tuple[str, int] | None:
    stem = name[len(PREFIX):-len(SUFFIX)] if name.startswith(PREFIX) and name.endswith(SUFFIX) else ""
    day, _, part = stem.partition(".")
    if not day or (part and not (part.isdigit() and int(part) > 0)):
        return None
    try:
        date.fromisoformat(day)
    except ValueError:
        return None
    return day, int(part or 0)


def _parse_marker(name: str) -> tuple[str, int, int, int] | None:
    """(marker folder, start, end, shards) of a segment marker's name `<folder>/<start>-<end>.<shards>`."""
    folder, _, leaf = name.rpartition("/")
    span, _, shards = leaf.partition(".")
    start, _, end = span.partition("-")
    if start.isdigit() and end.isdigit() and shards.isdigit():
        return folder + "/", int(start), int(end), int(shards)
    return None


def _lines(body: bytes, base: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(offset, length, entry) of each whole JSON line of `body`, which starts at byte `base` of its part."""
    at = 0
    while at < len(body):
        end = body.find(b"\n", at)
        if end < 0:
            return
        raw = body[at:end]
        entry = parse_line(raw) if raw.strip() else None
        if entry is not None:
            yield base + at, end + 1 - at, entry
        at = end + 1


class BlobEntrySource:
    """The entries of a `BlobLedger`'s window through its stored index (built here on first read)."""

    def __init__(self, container: ContainerClient, *, days: int, today: date, tail_bytes: int = TAIL_BYTES) -> None:
        self._container = container
        self._tail_bytes = tail_bytes
        oldest = (today - timedelta(days=max(days, 1) - 1)).isoformat()
        self._shards: dict[tuple[str, int, int], dict[str, list[list[int]]]] = {}
        self._built: dict[tuple[str, int], dict[str, Any]] = {}  # lines this reader has read already
        parts, index = _map(lambda f: f(), [lambda: self._list_parts(PREFIX),
                                             lambda: self._list_index(SEGMENTS_PREFIX)])  # the two listings at once
        self._parts = [p for p in parts if p.day >= oldest]
        self._load_segments([name for name, _ in index])
        for part in self._parts:  # one after the other: each reads its ranges (and writes its shards) on the pool
            if part.size > part.covered:
                self._read_tail(part)

    # ---- building
    def _list_parts(self, prefix: str) -> list[_Part]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            listed = list(self._container.list_blobs(name_starts_with=prefix))
        except ResourceNotFoundError:
            return []
        parts = []
        for blob in listed:
            parsed = _parse_part(blob.name)
            if parsed:
                parts.append(_Part(parsed[0], parsed[1], blob.name, int(blob.size or 0)))
        return parts

    def _list_index(self, prefix: str) -> list[tuple[str, datetime | None]]:
        """The segment markers under `prefix`: (name, when it was written)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return [(b.name, b.last_modified) for b in self._container.list_blobs(name_starts_with=prefix)]
        except ResourceNotFoundError:
            return []

    def _load_segments(self, names: Sequence[str]) -> None:
        """Each part's chain of finished segments from byte 0, from the listing (the marker names the shards).
        From each start the longest segment is taken: a merged one (`LedgerIndexer`) supersedes the chain it
        merged."""
        done: dict[str, dict[int, tuple[int, int]]] = {}  # marker folder -> start -> (end, shards)
        for name in names:
            parsed = _parse_marker(name)
            if parsed:
                folder, start, end, shards = parsed
                spans = done.setdefault(folder, {})
                if end > spans.get(start, (0, 0))[0]:
                    spans[start] = (end, shards)
        for part in self._parts:
            spans, at = done.get(part.marker_folder(), {}), 0
            while at in spans and at < spans[at][0] <= part.size:
                part.segments.append((at, *spans[at]))
                at = spans[at][0]

    def _read_json(self, name: str) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            value = json.loads(self._container.get_blob_client(name).download_blob().readall())
        except (ResourceNotFoundError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _read_tail(self, part: _Part, *, force: bool = False) -> None:
        """Read the part beyond its index, up to the size its listing gave, in ranges read in parallel; a long tail
        (or any, with `force`) becomes a stored segment (lines appended after the listing are the next reader's
        tail)."""
        from azure.core.exceptions import ResourceNotFoundError

        start = part.covered
        blob = self._container.get_blob_client(part.name)
        pieces = [(o, min(_RANGE, part.size - o)) for o in range(start, part.size, _RANGE)]
        try:
            body = b"".join(_map(lambda r: blob.download_blob(offset=r[0], length=r[1]).readall(), pieces))
        except ResourceNotFoundError:
            return
        body = body[: body.rfind(b"\n") + 1]  # whole lines only (every append is one, but be strict)
        found = list(_lines(body, start))
        if body and (force or len(body) >= self._tail_bytes):
            tables = self._build(found)
            self._store_segment(part, start, start + len(body), tables, lines=len(found))
            part.segments.append((start, start + len(body), len(tables)))
            for number, table in enumerate(tables):  # kept: this reader does not download them again
                self._shards[(part.name, start, number)] = table
            return  # the lines are not kept: the answer reads the few it needs
        for offset, _length, entry in found:
            for key in entry_keys(entry):
                part.tail.setdefault(key, []).append((offset, entry))

    @staticmethod
    def _shard_count(lines: int) -> int:
        return max(1, min(MAX_SHARDS, lines // _LINES_PER_SHARD))

    @staticmethod
    def _shard_of(key: str, shards: int) -> int:
        return zlib.crc32(key.encode()) % shards

    def _build(self, found: Sequence[tuple[int, int, dict[str, Any]]]) -> list[dict[str, list[list[int]]]]:
        shards = self._shard_count(len(found))
        tables: list[dict[str, list[list[int]]]] = [{} for _ in range(shards)]
        for offset, length, entry in found:
            for key in entry_keys(entry):
                tables[self._shard_of(key, shards)].setdefault(key, []).append([offset, length])
        return tables

    def _store_segment(self, part: _Part, start: int, end: int, tables: Sequence[dict[str, list[list[int]]]], *,
                       lines: int) -> None:
        folder = f"{part.folder()}{start}-{end}/"

        def put(item: tuple[int, dict[str, list[list[int]]]]) -> None:
            body = json.dumps(item[1], separators=(",", ":")).encode()
            self._container.get_blob_client(f"{folder}{item[0]}.json").upload_blob(body, overwrite=True)

        _map(put, list(enumerate(tables)))
        done = {"lines": lines, "shards": len(tables), "part": part.name, "start": start, "end": end,
                "at": datetime.now(UTC).isoformat(timespec="seconds")}
        self._container.get_blob_client(f"{part.marker_folder()}{start}-{end}.{len(tables)}").upload_blob(
            json.dumps(done).encode(), overwrite=True)

    # ---- reading
    def _shard(self, part: _Part, start: int, end: int, number: int) -> dict[str, list[list[int]]]:
        cached = self._shards.get((part.name, start, number))
        if cached is None:
            cached = self._read_json(f"{part.folder()}{start}-{end}/{number}.json") or {}
            self._shards[(part.name, start, number)] = cached
        return cached

    def find(self, values: Iterable[str]) -> dict[str, Found]:
        wanted = {v: index_key(v) for v in values}
        keys = set(wanted.values())
        needed = {(p.name, s, e, self._shard_of(k, n)) for p in self._parts for s, e, n in p.segments for k in keys}
        by_name = {p.name: p for p in self._parts}
        missing = [n for n in needed if (n[0], n[1], n[3]) not in self._shards]
        _map(lambda n: self._shard(by_name[n[0]], n[1], n[2], n[3]), missing)
        spans: dict[str, set[tuple[int, int]]] = {}
        for part in self._parts:
            for start, end, shards in part.segments:
                for key in keys:
                    for offset, length in self._shard(part, start, end, self._shard_of(key, shards)).get(key, ()):
                        spans.setdefault(part.name, set()).add((offset, length))
        lines = self._read_lines(spans)
        result: dict[str, Found] = {}
        for value, key in wanted.items():
            found: Found = []
            for part in self._parts:
                for start, end, shards in part.segments:
                    for offset, _length in self._shard(part, start, end, self._shard_of(key, shards)).get(key, ()):
                        entry = lines.get((part.name, offset))
                        if entry is not None:
                            found.append((part.position(offset), entry))
                found.extend((part.position(offset), entry) for offset, entry in part.tail.get(key, ()))
            result[value] = sorted(found, key=lambda f: f[0])
        return result

    def _read_lines(self, spans: Mapping[str, set[tuple[int, int]]]) -> dict[tuple[str, int], dict[str, Any]]:
        """The wanted lines, nearby ones in one ranged download each; lines this reader indexed come from memory."""
        built = self._built  # lines this reader indexed or read already
        out: dict[tuple[str, int], dict[str, Any]] = {}
        ranges: list[tuple[str, int, int, list[tuple[int, int]]]] = []
        for name, wanted in spans.items():
            todo = sorted(s for s in wanted if (name, s[0]) not in built)
            out.update({(name, s[0]): built[(name, s[0])] for s in wanted if (name, s[0]) in built})
            for offset, length in todo:
                if ranges and ranges[-1][0] == name and offset - ranges[-1][2] <= _GAP \
                        and offset + length - ranges[-1][1] <= _RANGE:
                    last = ranges[-1]
                    ranges[-1] = (name, last[1], max(last[2], offset + length), [*last[3], (offset, length)])
                else:
                    ranges.append((name, offset, offset + length, [(offset, length)]))

        def fetch(r: tuple[str, int, int, list[tuple[int, int]]]) -> list[tuple[tuple[str, int], dict[str, Any]]]:
            name, start, end, members = r
            body = self._container.get_blob_client(name).download_blob(offset=start, length=end - start).readall()
            got = []
            for offset, length in members:
                entry = parse_line(body[offset - start: offset - start + length])
                if entry is not None:
                    got.append(((name, offset), entry))
            return got

        for got in _map(fetch, ranges):
            out.update(got)
            built.update(got)
        return {k: dict(v) for k, v in out.items()}

    def empty(self) -> bool:
        return not any(p.size for p in self._parts)


class LedgerIndexer(BlobEntrySource):
    """What the `ledger_index` timer does (shared/handlers.py `monitoring.ledger_index`): index the recent days'
    tails before an operator asks, so that `explain`'s first read of a day costs the answer, not the day.

    Why a timer and not the first reader alone (#17: "the first read of a 100k-line day built its index in
    7.69 s"): a reader that finds a day unindexed must read all of it; a tick that indexes what was appended since
    the last one costs what was written since, which is the active work, and the reader then reads the index and a
    tail under `TAIL_BYTES`. Per tick, with nothing to index: two listings per day of `days` (the day's parts and
    its segment markers, each under the day's own prefix, so history does not enter).

    Segments of a day are merged: a day indexed tick by tick is a chain of many segments, and each costs a reader
    one shard download per id it looks up. A chain longer than `max_chain`, or any chain of a finished day (a day
    before today, whose tail is indexed whatever its length), is merged into one segment from byte 0, which
    `_load_segments` prefers (the longest from each start). The segments it supersedes are deleted `grace_s` after
    the merged marker was written, never at once: a reader that listed the old chain just before is still reading
    its shards (a missing shard reads as empty).
    """

    def __init__(self, container: ContainerClient, *, today: date, now: datetime, days: int = 2,
                 tail_bytes: int = TAIL_BYTES, max_chain: int = 8, grace_s: float = 900.0) -> None:
        self._container = container
        self._tail_bytes = tail_bytes
        self._shards = {}
        self._built = {}
        self._max_chain = max(1, max_chain)
        self._grace = timedelta(seconds=grace_s)
        self._now = now
        self._today = today.isoformat()
        wanted = [(today - timedelta(days=n)).isoformat() for n in range(max(1, days))]
        listings = _map(lambda f: f(), [*(lambda d=d: self._list_parts(f"{PREFIX}{d}") for d in wanted),
                                        *(lambda d=d: self._list_index(f"{SEGMENTS_PREFIX}{d}.") for d in wanted)])
        self._parts = [p for parts in listings[:len(wanted)] for p in parts if p.day in wanted]
        self._markers: list[tuple[str, datetime | None]] = [m for names in listings[len(wanted):] for m in names]
        self._load_segments([name for name, _ in self._markers])

    def run(self) -> dict[str, int]:
        """Index, merge and clean up: the parts seen and how many segments were built, merged and removed."""
        done = {"parts": len(self._parts), "built": 0, "merged": 0, "removed": 0}
        for part in self._parts:
            finished = part.day < self._today
            left = part.size - part.covered
            if left > 0 and (left >= self._tail_bytes or finished):
                before = len(part.segments)
                self._read_tail(part, force=True)
                done["built"] += len(part.segments) - before
            if (len(part.segments) > self._max_chain or (finished and len(part.segments) > 1)) \
                    and self._merge(part):
                done["merged"] += 1
            done["removed"] += self._remove_superseded(part)
        return done

    def _merge(self, part: _Part) -> bool:
        """One segment for the part's whole chain, from the chain's shards (the ledger is not read again). Strict,
        unlike a reader: a shard that cannot be read leaves the chain as it is (False), as a merged segment missing
        its lines would supersede the chain that has them."""
        needed = [(s, e, n) for s, e, shards in part.segments for n in range(shards)]

        def table(t: tuple[int, int, int]) -> dict[str, list[list[int]]] | None:
            cached = self._shards.get((part.name, t[0], t[2]))
            return cached if cached is not None else self._read_json(f"{part.folder()}{t[0]}-{t[1]}/{t[2]}.json")

        tables = _map(table, needed)
        if any(t is None for t in tables):
            return False
        postings: dict[str, list[list[int]]] = {}
        offsets: set[int] = set()
        for got in tables:  # segments in byte order, so each key's postings stay in byte order
            for key, spans in (got or {}).items():
                postings.setdefault(key, []).extend(spans)
                offsets.update(span[0] for span in spans)
        shards = self._shard_count(len(offsets))
        merged: list[dict[str, list[list[int]]]] = [{} for _ in range(shards)]
        for key, spans in postings.items():
            merged[self._shard_of(key, shards)][key] = sorted(spans)
        end = part.covered
        self._store_segment(part, 0, end, merged, lines=len(offsets))
        part.segments = [(0, end, shards)]
        return True

    def _remove_superseded(self, part: _Part) -> int:
        """Delete the markers and shards of segments a longer one covers, once that one is `grace_s` old."""
        written = dict(self._markers)
        removed = 0
        for name in written:
            parsed = _parse_marker(name)
            if not parsed or parsed[0] != part.marker_folder() or parsed[1:] in part.segments:
                continue
            _folder, start, end, shards = parsed
            cover = next((f"{part.marker_folder()}{s}-{e}.{n}" for s, e, n in part.segments if s <= start and end <= e),
                         None)
            at = written.get(cover) if cover else None
            if at is None or self._now - at < self._grace:
                continue  # not covered by the chain read, or covered by a segment too recent
            self._container.delete_blob(name)  # the marker first: no reader lists the segment from now on
            _map(self._delete_if_there, [f"{part.folder()}{start}-{end}/{n}.json" for n in range(shards)])
            removed += 1
        return removed

    def _delete_if_there(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._container.delete_blob(name)
        except ResourceNotFoundError:
            pass


def index_recent(ledger: Ledger, *, now: datetime | None = None) -> dict[str, int] | None:
    """One `ledger_index` tick over a `BlobLedger` (None for another ledger: nothing stored to index).

    The day comes from the ledger's clock (it names the parts); `now`, which ages segment markers for deletion,
    defaults to the wall clock, as it is compared with the storage service's Last-Modified times."""
    from shared.core.ledger import BlobLedger

    if not isinstance(ledger, BlobLedger):
        return None
    today = datetime.fromtimestamp(ledger.clock(), UTC).date()
    return LedgerIndexer(ledger._container, today=today, now=now or datetime.now(UTC)).run()


def source_for(ledger: Ledger, *, days: int, tail_bytes: int = TAIL_BYTES) -> EntrySource:
    """The index of a `BlobLedger` in the window of `days` UTC days; other ledgers (memory) inverted in memory."""
    from shared.core.ledger import BlobLedger

    if isinstance(ledger, BlobLedger):
        today = datetime.fromtimestamp(ledger.clock(), UTC).date()
        # the ledger's own container (same layer): the index lives beside the parts it indexes
        return BlobEntrySource(ledger._container, days=days, today=today, tail_bytes=tail_bytes)
    return MemoryEntrySource(list(ledger.entries(days=days)))
