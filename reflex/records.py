"""What the state records say about failures and waits, in words an operator reads (for `status` and `explain`).

Why from the records: each reaction keeps its unit of work in one record (`arrivals/…` per training batch,
`retrains/…` per retraining window, `scoring/…` per scoring batch, `rollouts/<endpoint>` per rollout) with its
status, its reason and a history of `[epoch, status, reason]` (rollouts: `{"at", "action", "status",
"detail"}`). The batch side's records are read through their types (`RECORD_TYPES`, shared/batches/record.py).
So a failed job, a rolled-back rollout and what an unfinished batch waits for are all there, at the cost of
reading those records; no platform call is needed. Pure functions over record values, plus `read` that fetches
the records of several prefixes at once. Rollout records are read as `shared.rollout.machine.Rollout` (its
`from_dict` is the one reader of their keys); a record it refuses is shown as unreadable.

Times are UTC, as `12:03 UTC` (with the date when it is not today).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.batches.record import (
    ArrivalRecord,
    BatchRecord,
    RetrainRecord,
    ScoringRecord,
    StatusRecord,
    last_seen_slack,
)
from shared.rollout.machine import TERMINAL, Rollout
from shared.rollout.machine import read as read_rollout

if TYPE_CHECKING:
    from shared.core.settings import Settings
    from shared.core.state import Record, StateStore

__all__ = ["FAILED", "KINDS", "OPEN", "RECORD_TYPES", "chain_records", "failure", "newest_first", "read", "read_keys",
           "record_time", "rollout_note", "waiting_for", "when"]

# record prefix -> the kind of work it holds
KINDS: dict[str, str] = {"arrivals/": "training", "retrains/": "retraining", "scoring/": "scoring",
                         "rollouts/": "rollout"}
# statuses that mean the work failed, per kind (a rollout's `superseded` is no failure: a newer model won; a
# `skipped` batch had no usable file, so nothing was trained or scored on what was uploaded)
FAILED: dict[str, frozenset[str]] = {
    "training": frozenset({"failed", "submit-failed", "skipped"}),
    "retraining": frozenset({"failed"}),
    "scoring": frozenset({"failed", "skipped"}),
    "rollout": frozenset({"failed", "rolled_back"}),
}
# statuses of unfinished work, per kind (what `waiting_for` explains)
OPEN: dict[str, frozenset[str]] = {
    "training": frozenset({"collecting", "complete", "freezing", "starting", "waiting", "submitted", "dry-run"}),
    "retraining": frozenset({"pending", "waiting", "submitted"}),
    "scoring": frozenset({"collecting", "complete", "no-champion", "deploying", "submitted"}),
}
# the type of each kind's record, for the kinds of the batch side (a rollout record is read as it is)
RECORD_TYPES: dict[str, type[StatusRecord]] = {"training": ArrivalRecord, "retraining": RetrainRecord,
                                               "scoring": ScoringRecord}
_READERS = 8


def read(state: StateStore, prefixes: Sequence[str], *,
         newest: Mapping[str, int] | None = None) -> tuple[dict[str, list[Record]], dict[str, int]]:
    """The records under each prefix (records deleted meanwhile left out), and how many keys each prefix has.

    One listing per prefix, then the reads in parallel (Azure SDK clients are thread-safe: "Client instance
    methods are thread-safe", https://azure.github.io/azure-sdk/python_design.html#thread-safety), so the time
    `status` takes does not add up record by record. `newest` limits a prefix whose keys sort by time (the dead
    letters) to its last n records (0: none, only the count): their count is all `status` needs of the others."""
    limits = dict(newest or {})
    with ThreadPoolExecutor(min(_READERS, max(1, len(prefixes)))) as pool:
        listed = dict(zip(prefixes, pool.map(state.keys, prefixes), strict=True))
    counts = {p: len(listed[p]) for p in prefixes}
    keys = {p: listed[p][max(0, len(listed[p]) - limits[p]):] if p in limits else listed[p] for p in prefixes}
    found = read_keys(state, [k for p in prefixes for k in keys[p]])
    return {p: [found[k] for k in keys[p] if k in found] for p in prefixes}, counts


def read_keys(state: StateStore, keys: Sequence[str]) -> dict[str, Record]:
    """The records of `keys`, read in parallel (those deleted meanwhile left out)."""
    if not keys:
        return {}
    with ThreadPoolExecutor(min(_READERS, len(keys))) as pool:
        found = dict(zip(keys, pool.map(state.get, keys), strict=True))
    return {k: r for k, r in found.items() if r is not None}


def when(epoch: Any, now: float) -> str:
    """`12:03 UTC`, or `2026-11-30 12:03 UTC` when not on `now`'s UTC day; "" when unknown."""
    try:
        moment = datetime.fromtimestamp(float(epoch), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    today = datetime.fromtimestamp(now, UTC).date()
    return moment.strftime("%H:%M UTC" if moment.date() == today else "%Y-%m-%d %H:%M UTC")


def record_time(value: Mapping[str, Any]) -> float | None:
    """When the record last changed status: its last history entry (either history form)."""
    history = value.get("history") or []
    last = history[-1] if history else None
    if isinstance(last, Mapping):
        at = last.get("at")
    elif isinstance(last, Sequence) and not isinstance(last, str) and last:
        at = last[0]
    else:
        at = None
    try:
        return float(at) if at is not None else None
    except (TypeError, ValueError):
        return None


def _batch_id(batch: BatchRecord, key: str) -> str:
    return batch.batch_id if batch.container and batch.dataset and batch.batch else key.split("/", 1)[-1]


def _typed(kind: str, value: Mapping[str, Any]) -> StatusRecord | None:
    return RECORD_TYPES[kind].from_dict(value) if kind in RECORD_TYPES else None


def failure(kind: str, key: str, value: Mapping[str, Any]) -> dict[str, Any] | None:
    """The failure a record holds (kind, id, status, reason, time, job, model, url…), or None."""
    record = _typed(kind, value)
    status = record.status if record is not None else str(value.get("status") or "")
    if status not in FAILED.get(kind, ()):
        return None
    reason = (record.reason if record is not None else str(value.get("reason") or "")) or \
        f"{kind} {status} (no reason recorded)"
    rejected = [str(r.get("reason") or name) for name, r in sorted(record.rejected.items())
                if isinstance(r, Mapping)] if isinstance(record, BatchRecord) else []
    if status == "skipped" and rejected:  # which files, and why each was refused (shared/batches.file_problem)
        reason += ": " + "; ".join(rejected)
    found: dict[str, Any] = {"kind": kind, "record": key, "status": status, "reason": reason,
                             "at": record.changed_at if record is not None else record_time(value)}
    if kind == "rollout":
        rollout = read_rollout(value)
        if rollout is None:
            found.update(id=key.removeprefix("rollouts/"), reason=f"unreadable rollout record: {reason}")
        else:
            found.update(id=f"{rollout.endpoint or key.rsplit('/', 1)[-1]}/{rollout.ref}", model=rollout.ref,
                         deployment=rollout.deployment, endpoint=rollout.endpoint, evidence=dict(rollout.evidence))
    elif isinstance(record, RetrainRecord):
        found.update(id=key.removeprefix("retrains/"), batch=record.batch.removeprefix("arrivals/"), job=record.job,
                     trigger=record.trigger)
    elif isinstance(record, BatchRecord):
        found.update(id=_batch_id(record, key), job=record.job, url=record.job_url or "")
        if isinstance(record, ScoringRecord):
            found.update(model=record.model or "", output=record.output or "")
    return found


def waiting_for(kind: str, value: Mapping[str, Any], settings: Settings, now: float, *,
                files: int | None = None) -> str:
    """Why an unfinished batch or retraining has not moved on: what it waits for, since when; "" when done.
    `files`: how many files a collecting batch holds so far (`manifest.load`; a summary does not count them),
    else the count a record written before #17 holds, else not said."""
    record = RECORD_TYPES[kind].from_dict(value)
    status = record.status
    since = when(record.changed_at, now)
    if isinstance(record, BatchRecord) and status == "collecting":
        marker = settings.completion_marker
        legacy = record.legacy_files
        count = files if files is not None else None if legacy is None else len(legacy)
        first, last = when(record.first_seen, now), when(record.last_seen, now)
        held = "" if count is None else f"{count} file(s), "
        if marker:
            return f"waiting for {marker} since {first} ({held}the last at {last})"
        due = float(record.last_seen or now) + settings.quiet_seconds + last_seen_slack(settings.quiet_seconds)
        if due <= now:
            return f"quiet since {last}: the next sweep completes it" + ("" if count is None else f" ({count} file(s))")
        return (f"waiting until {when(due, now)}: complete once no file arrives for {settings.quiet_seconds} s "
                f"({held}the last at {last})")
    if status == "complete":
        starter = "the next tracker tick" if kind == "scoring" else "a redelivery or the next sweep"
        return f"complete since {since}: {starter} starts it"
    if isinstance(record, ArrivalRecord) and status == "starting":
        until = record.lease.until if record.lease else 0.0
        return (f"being started by a worker (lease until {when(until, now)})" if until > now
                else "its start was interrupted: the next sweep starts it again")
    if status in ("waiting", "pending", "no-champion", "freezing"):
        reason = record.reason
        return (f"{reason} (since {since})" if reason else f"{status} since {since}").strip()
    if isinstance(record, ScoringRecord) and status == "deploying":
        if not record.retry_due(now):  # a retry after a transient failure (shared/scoring/flow.py)
            return f"{record.reason} (since {since})"
        return f"waiting for batch deployment {record.deployment or '?'} (since {since})"
    if status == "submitted":
        job = record.job or "?"
        what = "batch job" if kind == "scoring" else "training job"
        return f"{what} {job} running since {when(record.submitted_at or record.changed_at, now)}"
    if status == "dry-run":
        return f"not trained: it completed during dry-run ({since}); nothing was submitted"
    return ""


def rollout_note(r: Rollout | None, now: float) -> str:
    """What an unfinished rollout waits for (its last Wait, since when), or why a finished one ended (None: the
    record is not a rollout, `shared.rollout.machine.read`)."""
    if r is None:
        return "unreadable rollout record"
    notes = []
    history = [h for h in r.history if isinstance(h, Mapping)]
    last = history[-1] if history else {}
    if r.queued:
        notes.append(f"superseded by {r.queued.get('model')}:{r.queued.get('version')} (queued)")
    if r.status in TERMINAL:
        notes.append(r.reason)
    elif last.get("action") == "Wait":
        notes.append(f"{last.get('detail', '')} (since {when(last.get('at'), now)})")
    elif r.status in ("baking", "mirroring"):
        seconds = r.plan.mirror_seconds if r.status == "mirroring" else r.plan.bake_seconds
        notes.append(f"baking until {when(r.phase_started_at + seconds, now)}")
    elif last:
        notes.append(f"{last.get('action', '')}: {last.get('detail', '')} ({when(last.get('at'), now)})")
    return "; ".join(n for n in notes if n)


def newest_first(found: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(found, key=lambda f: -(f.get("at") or 0.0))


def _keys_of(refs: Mapping[str, Sequence[str]]) -> list[tuple[str, str, str]]:
    """(kind, id, state key) of the records behind a chain's refs: its training and scoring batches, its
    rollouts (`rollouts/<endpoint>`: only while it still holds that rollout, checked by the caller)."""
    from shared.core.state import key_part

    found = []
    for kind, prefix, ref in (("training", "arrivals", "batch"), ("scoring", "scoring", "scoring_batch")):
        for ident in refs.get(ref, ()):
            parts = ident.split("/")
            if len(parts) == 3:
                found.append((kind, ident, f"{prefix}/" + "/".join(key_part(p) for p in parts)))
    for ident in refs.get("rollout", ()):
        endpoint, _, model = ident.partition("/")
        if endpoint and model:
            found.append(("rollout", ident, f"rollouts/{key_part(endpoint)}"))
    return found


def chain_records(state: StateStore, refs: Mapping[str, Sequence[str]], settings: Settings,
                  now: float) -> list[dict[str, Any]]:
    """Where each batch, scoring batch and rollout of a chain stands now, from its record: its status and,
    in one `detail`, the whole failure reason, what it waits for, or (scoring) the output it wrote."""
    wanted = _keys_of(refs)
    with ThreadPoolExecutor(min(_READERS, max(1, len(wanted)))) as pool:
        records = list(pool.map(lambda w: state.get(w[2]), wanted))
    rows = []
    for (kind, ident, key), record in zip(wanted, records, strict=True):
        if record is None:
            continue
        value = record.value
        rollout = read_rollout(value) if kind == "rollout" else None
        if kind == "rollout" and (rollout is None or ident.partition("/")[2] != rollout.ref):
            continue  # the endpoint's record holds a later rollout now
        batch = _typed(kind, value)
        status = batch.status if batch is not None else str(value.get("status") or "")
        found = failure(kind, key, value)
        if found:
            detail = found["reason"]
        elif kind == "rollout":
            detail = rollout_note(rollout, now)
        elif status in OPEN.get(kind, ()):
            detail = waiting_for(kind, value, settings, now)
        else:
            detail = batch.reason if batch is not None else str(value.get("reason") or "")
        row = {"kind": kind, "id": ident, "record": key, "status": status, "detail": detail,
               "at": batch.changed_at if batch is not None else record_time(value), "failed": found is not None}
        for name in ("job", "job_url", "model", "output"):  # an arrival record has no model or output
            shown = getattr(batch, name, None) if batch is not None else value.get(name)
            if shown:
                row[name] = shown
        if isinstance(batch, ScoringRecord) and status == "completed" and batch.output:
            row["detail"] = f"{detail}; output {batch.output}" if detail else f"output {batch.output}"
        rows.append(row)
    return rows
