"""`explain ID --timeline`: a chain's spans laid out in time, with the waits between them named.

Where the time of a chain goes is mostly where nothing of Reflex runs: a job queued, then training; a new
deployment being provisioned; a canary baking. The reactions themselves take seconds. So the timeline shows
each span (start offset from the chain's first span, duration, name, its key attributes, nested under its
parent) and, between them, every stretch of at least `min_gap_s` when no span of the chain ran, named from what
the chain was waiting for then: the rollout's wait reasons (shared/rollout/machine.py `Wait`: "baking at 10%
until …", "new deployment … is Creating: waiting until it is Succeeded"), the batch's ("waiting for _SUCCESS")
and the job's phases (local/job_trace.py: `queued`, then `training`). It ends with where the time went, each
instant counted once under what was happening then.

Finding the chain's spans: the trace ids Reflex recorded for it (the W3C `traceparent` in the job and model tags
`reflex.traceparent`, the rollout record's `trace`, `Reflex.*` event data: anything under a key naming a trace),
plus the spans of other traces that link to them (a timer tick advancing the chain). When no record names a trace
(spans from before tracing, a chain whose records are gone), any span with an attribute equal to one of the
chain's ids (blob, batch, job, model, rollout, …; never the endpoint, which every chain shares) brings its trace
in. The span file is read once, streaming: spans of other traces wait in a bounded window (`PENDING_LIMIT`) in
case a later span of theirs turns out to belong to the chain.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.core.trace_file import SpanFileStats, SpanRecord, read_spans, trace_id_of

__all__ = ["PENDING_LIMIT", "Found", "Row", "chain_timeline", "collect", "gap_name", "layout", "render", "time_spent",
           "trace_ids_in"]

PENDING_LIMIT = 20_000  # spans of not (yet) matching traces held while the file is read
MATCH_KINDS = ("blob", "batch", "data", "job", "model", "rollout", "deployment", "scoring_blob", "scoring_batch",
               "scoring_job", "scoring_output")  # shared/core/ledger.py REF_KINDS less `endpoint`
_CLIENT = 3  # trace.proto SPAN_KIND_CLIENT: an outgoing call (azure-core's HTTP spans)
_WORK = {"training", "scoring", "evaluation", "running"}  # local/job_trace.py WORK_NAMES
# what the chain waited for, from the words Reflex's own wait reasons use; the first rule that matches names it
_GAP_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bake", re.compile(r"\bbak(e|ing)\b|\bmirror", re.I)),
    ("provisioning", re.compile(r"\b(Creating|Updating|Scaling|provision\w*|smoke)\b|deployment .* is ", re.I)),
    ("waiting for canary requests", re.compile(r"requests served|waiting for the rest", re.I)),
    ("retention of the old deployment", re.compile(r"keeping .* at 0%|retain", re.I)),
    ("batch completing", re.compile(r"_SUCCESS|marker|quiet|collecting|more blobs", re.I)),
    ("training", re.compile(r"\b(training|job .* (Running|Queued|NotStarted|Starting|Preparing))\b", re.I)),
)
_TIME_ORDER = ("queueing", "training", "scoring", "evaluation", "reactions", "calls")


# ------------------------------------------------------------------------------------------------ finding
def trace_ids_in(value: Any, *, under_trace_key: bool = False, depth: int = 0) -> set[str]:
    """Trace ids found under any key naming a trace (`traceparent`, `trace_id`, `reflex.traceparent`, …) in a
    record, a tag set or a ledger line, however deep (to 6 levels)."""
    found: set[str] = set()
    if depth > 6:
        return found
    if isinstance(value, Mapping):
        for key, item in value.items():
            found |= trace_ids_in(item, under_trace_key=under_trace_key or "trace" in str(key).lower(),
                                  depth=depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            found |= trace_ids_in(item, under_trace_key=under_trace_key, depth=depth + 1)
    elif under_trace_key and (trace_id := trace_id_of(value)):
        found.add(trace_id)
    return found


@dataclass
class Found:
    """The chain's spans and how they were found."""

    spans: list[SpanRecord] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)  # in the order they were first seen
    by_attribute: list[str] = field(default_factory=list)  # those found by an id in an attribute, not a record
    linked: int = 0  # spans of other traces (timer ticks) linking to the chain
    stats: SpanFileStats = field(default_factory=SpanFileStats)
    evicted: int = 0  # spans that left the pending window unmatched


def _mentions(attributes: Mapping[str, Any], ids: set[str]) -> bool:
    for value in attributes.values():
        if isinstance(value, str) and value in ids:
            return True
        if isinstance(value, list) and any(isinstance(v, str) and v in ids for v in value):
            return True
    return False


def collect(path: str | Path, trace_ids: Iterable[str], ids: Iterable[str], *,
            pending_limit: int = PENDING_LIMIT) -> Found:
    """The spans of the chain's traces in `path`: one streaming pass (see the module docstring)."""
    found = Found()
    wanted = {t.lower() for t in trace_ids}
    found.trace_ids = sorted(wanted)
    specific = {str(i) for i in ids if i}
    pending: OrderedDict[str, list[SpanRecord]] = OrderedDict()
    held = 0
    only_if = None
    if not specific:  # only the known traces: a line that does not hold one of their ids is not even decoded
        needles = [t.encode() for t in wanted] + [t.upper().encode() for t in wanted]
        only_if = (lambda raw: any(n in raw for n in needles)) if needles else (lambda raw: False)
    for span in read_spans(path, found.stats, only_if=only_if):
        if span.trace_id in wanted:
            found.spans.append(span)
            continue
        if specific and _mentions(span.attributes, specific):
            wanted.add(span.trace_id)
            found.trace_ids.append(span.trace_id)
            found.by_attribute.append(span.trace_id)
            earlier = pending.pop(span.trace_id, [])
            held -= len(earlier)
            found.spans.extend(earlier)
            found.spans.append(span)
            continue
        if any(t in wanted for t, _ in span.links):
            found.spans.append(span)
            found.linked += 1
            continue
        if not specific:
            continue  # nothing else can bring this span's trace in
        pending.setdefault(span.trace_id, []).append(span)
        held += 1
        while held > pending_limit and pending:
            _, dropped = pending.popitem(last=False)
            held -= len(dropped)
            found.evicted += len(dropped)
    unique = {(s.trace_id, s.span_id): s for s in found.spans}  # a span exported twice counts once
    found.spans = list(unique.values())
    return found


# ------------------------------------------------------------------------------------------------ layout
@dataclass
class Row:
    """One line of the timeline: a span, or a gap (no span of the chain running) with what it waited for."""

    kind: str  # "span" | "gap"
    depth: int
    start_ns: int
    end_ns: int
    name: str
    detail: str = ""
    category: str = ""
    trace_id: str = ""
    folded: bool = False  # an outgoing call counted on its parent's line rather than shown on its own

    @property
    def seconds(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


def _category(span: SpanRecord) -> str:
    phase = span.attributes.get("reflex.phase")
    if phase == "queued":
        return "queueing"
    if phase == "running":
        return span.name if span.name in _WORK else "training"
    if _is_call(span):
        return "calls"
    if "reflex.job.kind" in span.attributes:
        return "job"
    return "reactions"


_SKIP = {"reflex.phase", "reflex.job.queued_seconds", "reflex.job.running_seconds", "reflex.job.kind"}
# what a line shows first (the ledger's ref kinds as trace.py names them, then the rest in the span's order)
_FIRST = ("reflex.outcome", "reflex.reason", "reflex.job.status", "reflex.batch", "reflex.job", "reflex.model",
          "reflex.rollout", "reflex.deployment", "reflex.scoring_batch", "reflex.scoring_job")
_HTTP = ("http.request.method", "http.method", "url.full", "http.url", "http.response.status_code",
         "http.status_code")


def _short(value: Any, limit: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _detail(span: SpanRecord, limit: int = 130) -> str:
    """The span's key attributes: Reflex's own (`reflex.*`, shortened), an HTTP call's method, URL and status,
    and an error's message."""
    keys = sorted((k for k, v in span.attributes.items()
                   if k.startswith("reflex.") and k not in _SKIP and v not in ("", None, [])),
                  key=lambda k: _FIRST.index(k) if k in _FIRST else len(_FIRST))
    parts = [f"{k.removeprefix('reflex.')}={_short(_text(span.attributes[k]), 80 if k == 'reflex.reason' else 40)}"
             for k in keys]
    parts += [_short(span.attributes[k], 60) for k in _HTTP if k in span.attributes]
    if span.status_code == 2:
        parts.insert(0, f"ERROR {_short(span.status_message, 60)}".rstrip())
    return _short(" ".join(parts), limit)


def _texts(span: SpanRecord) -> str:
    return " ".join(str(v) for v in span.attributes.values() if isinstance(v, str)) + " " + span.status_message


def gap_name(before: SpanRecord | None, after: SpanRecord | None, reason: str = "",
             earlier: Sequence[SpanRecord] = ()) -> str:
    """What the chain waited for between `before` (the last span to end) and `after` (the next to start).

    The job's end before a reaction is the run event's delivery; otherwise the words of the wait name it, by
    the first rule that matches: the ledger's reason at the gap's start (`reason`), then the attributes of
    `before`, then of the spans that ended just before it (`earlier`, newest first: a timer's own span ends
    after the step it ran)."""
    if before is not None and _category(before) in (*_WORK, "job", "queueing") and after is not None \
            and _category(after) == "reactions":
        return "run event delivery"
    if after is not None and _category(after) in ("queueing", "job"):
        return "job submission"
    spans = [s for s in (before, *earlier) if s is not None]
    for text in (reason, *(_texts(s) for s in spans)):
        for name, pattern in _GAP_RULES:
            if text and pattern.search(text):
                return name
    return "waiting"


def _order(spans: Sequence[SpanRecord]) -> list[tuple[int, SpanRecord]]:
    """(depth, span) in time order, a parent before the children that start with it; depth is the nesting by
    parent within the set (a span whose parent is not in it, a remote caller or a timer tick, is at depth 0)."""
    by_id = {s.span_id: s for s in spans}
    depths: dict[str, int] = {}

    def depth(span: SpanRecord) -> int:
        path: list[str] = []
        current: SpanRecord | None = span
        while current is not None and current.span_id not in depths and current.span_id not in path:
            path.append(current.span_id)
            parent = by_id.get(current.parent_id)
            current = parent if parent is not current else None
        base = depths.get(current.span_id, -1) if current is not None else -1  # -1 also ends a parent cycle
        for offset, span_id in enumerate(reversed(path)):
            depths[span_id] = base + 1 + offset
        return depths[span.span_id]

    placed = [(depth(s), s) for s in spans]
    return sorted(placed, key=lambda ds: (ds[1].start_ns, ds[0], -ds[1].end_ns, ds[1].name))


def _reason_at(reasons: Sequence[tuple[float, str]], at_ns: int) -> str:
    """The newest ledger reason written by the gap's start (lines are written as a reaction ends)."""
    best = ""
    for at, text in reasons:
        if at * 1e9 <= at_ns + 5e8:
            best = text
    return best


def layout(spans: Sequence[SpanRecord], *, reasons: Sequence[tuple[float, str]] = (),
           min_gap_s: float = 1.0) -> list[Row]:
    """The rows of the timeline: spans in time order, nested by parent, and before a span the gap it ends (no
    span of the chain running for `min_gap_s` or more), named by `gap_name`. `reasons`: the chain's ledger lines
    as (epoch seconds, reason)."""
    reasons = sorted(reasons)
    ordered = _order([s for s in spans if s.end_ns >= s.start_ns > 0])
    gaps: dict[str, Row] = {}  # span id -> the gap it ends
    covered_to, last = 0, None
    ended: list[SpanRecord] = []  # the spans that ended within a second of the newest end, newest last
    for _, span in ordered:
        if last is not None and span.start_ns - covered_to >= min_gap_s * 1e9:
            recent = [s for s in reversed(ended) if s is not last and s.end_ns >= covered_to - 1e9]
            name = gap_name(last, span, _reason_at(reasons, covered_to), recent)
            gaps[span.span_id] = Row("gap", 0, covered_to, span.start_ns, name, category=name)
        ended = [s for s in ended if s.end_ns >= max(covered_to, span.end_ns) - 1e9] + [span]
        ended.sort(key=lambda s: s.end_ns)
        if span.end_ns > covered_to:
            covered_to, last = span.end_ns, span
    # a reaction's calls (azure-core's spans: the SDK method and its HTTP request) are many and short: counted
    # on the line of the reaction that made them, each outermost call once
    by_id = {s.span_id: s for _, s in ordered}
    calls: dict[str, list[SpanRecord]] = {}
    folded: set[str] = set()
    for _, span in ordered:
        parent = by_id.get(span.parent_id)
        if not _is_call(span) or parent is None:
            continue
        owner: SpanRecord | None = parent
        while owner is not None and _is_call(owner):
            owner = by_id.get(owner.parent_id)
        if owner is None:
            continue
        folded.add(span.span_id)
        if not _is_call(parent):
            calls.setdefault(owner.span_id, []).append(span)
    rows: list[Row] = []
    for depth, span in ordered:
        if (gap := gaps.get(span.span_id)) is not None:
            gap.depth = depth
            rows.append(gap)
        detail = _detail(span)
        if made := calls.get(span.span_id):
            seconds = sum(c.duration_ns for c in made) / 1e9
            detail = f"{len(made)} call(s) {seconds:.3f}s" + (f"; {detail}" if detail else "")
        rows.append(Row("span", depth, span.start_ns, span.end_ns, span.name, detail, _category(span),
                        span.trace_id, span.span_id in folded))
    return rows


def _is_call(span: SpanRecord) -> bool:
    """An outgoing call: a client span, or any span of an Azure SDK (azure-core's tracer scopes are named after
    its modules, `azure.core.tracing.ext.opentelemetry_span` / the SDK library's name)."""
    return span.kind == _CLIENT or span.scope.startswith("azure")


def time_spent(rows: Sequence[Row]) -> dict[str, float]:
    """Seconds per category, each instant counted once: a job's phases before HTTP calls before reactions
    (a reaction waits on its calls), gaps by their name; the rest of the time between spans is `waiting`."""
    rank = {c: i for i, c in enumerate(_TIME_ORDER)}
    events: list[tuple[int, int, str]] = []
    for row in rows:
        if row.end_ns > row.start_ns and row.category != "job":
            events += [(row.start_ns, 1, row.category), (row.end_ns, -1, row.category)]
    events.sort()
    active: dict[str, int] = {}
    spent: dict[str, float] = {}
    previous: int | None = None
    for at, delta, category in events:
        if previous is not None and at > previous:
            live = [c for c, n in active.items() if n > 0]
            if live:
                pick = min(live, key=lambda c: (rank.get(c, len(rank)), c))
                spent[pick] = spent.get(pick, 0.0) + (at - previous) / 1e9
            else:
                spent["waiting"] = spent.get("waiting", 0.0) + (at - previous) / 1e9
        active[category] = active.get(category, 0) + delta
        previous = at
    return {k: round(v, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(rows: Sequence[Row], *, calls: bool = False) -> list[str]:
    """Human lines: `+offset  duration  name  detail`, nested by two spaces per level; gaps in brackets. A
    reaction's outgoing calls are counted on its line (`calls=True` shows each)."""
    if not rows:
        return ["(no spans)"]
    origin = min(r.start_ns for r in rows)
    end = max(r.end_ns for r in rows)
    lines = [f"from {_utc(origin)}, {(end - origin) / 1e9:.1f} s in all"]
    for row in rows:
        if row.folded and not calls:
            continue
        label = f"[{row.name}]" if row.kind == "gap" else row.name
        offset = f"+{(row.start_ns - origin) / 1e9:.3f}s"
        lines.append(f"  {offset:>11} {row.seconds:9.3f}s  {'  ' * row.depth}{label}"
                     + (f"  {row.detail}" if row.detail else ""))
    return lines


def _epoch(at: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def chain_timeline(path: str | Path, *, refs: Mapping[str, Sequence[str]], entries: Sequence[Mapping[str, Any]],
                   records: Sequence[Any] = (), min_gap_s: float = 1.0, calls: bool = False) -> dict[str, Any]:
    """The timeline of a chain `explain` walked: its trace ids from `entries` (ledger lines, each with its
    `chain_reason`) and `records` (tags, stored records), its ids from `refs`; rows, time spent, what was read."""
    known = trace_ids_in([*entries, *records])
    # the chain's ids in span attributes only when no record names its trace: a timer tick's own span names the
    # rollouts it advanced too, and its trace is not the chain's (it links to it)
    ids = [] if known else [v for kind in MATCH_KINDS for v in refs.get(kind, ())]
    found = collect(path, known, ids)
    reasons = [(at, str(e.get("chain_reason") or e.get("reason") or "")) for e in entries
               if (at := _epoch(e.get("at"))) is not None]
    rows = layout(found.spans, reasons=reasons, min_gap_s=min_gap_s)
    origin = min((r.start_ns for r in rows), default=0)
    traces = list(dict.fromkeys(s.trace_id for s in found.spans))
    return {"file": str(path), "trace_ids": traces, "found_by_attribute": [t for t in found.by_attribute
                                                                            if t in traces],
            "spans": sum(1 for r in rows if r.kind == "span"), "linked": found.linked,
            "rows": [{"kind": r.kind, "depth": r.depth, "offset_s": round((r.start_ns - origin) / 1e9, 3),
                      "seconds": round(r.seconds, 3), "name": r.name, "detail": r.detail, "category": r.category,
                      "trace_id": r.trace_id, "folded": r.folded} for r in rows],
            "time_spent": time_spent(rows), "lines": render(rows, calls=calls),
            "read": {"lines": found.stats.lines, "damaged": found.stats.damaged,
                     "torn_tail": found.stats.torn_tail, "evicted": found.evicted}}
