"""What the state records say about failures and waits, in words an operator reads (for `status` and `explain`).

Why from the records: each reaction keeps its unit of work in one record (`arrivals/…` per training batch,
`retrains/…` per retraining window, `scoring/…` per scoring batch, `rollouts/<endpoint>` per rollout) with its
status, its reason and a history of `[epoch, status, reason]` (rollouts: `{"at", "action", "status",
"detail"}`). So a failed job, a rolled-back rollout and what an unfinished batch waits for are all there, at the
cost of reading those records; no platform call is needed. Pure functions over record values, plus `read` that
fetches the records of several prefixes at once.

Times are UTC, as `12:03 UTC` (with the date when it is not today).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.core.settings import Settings
    from shared.core.state import Record, StateStore

__all__ = ["FAILED", "KINDS", "OPEN", "chain_records", "failure", "newest_first", "read", "read_keys", "record_time",
           "rollout_note", "waiting_for", "when"]

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
    "training": frozenset({"collecting", "complete", "starting", "waiting", "submitted", "dry-run"}),
    "retraining": frozenset({"pending", "waiting", "submitted"}),
    "scoring": frozenset({"collecting", "complete", "no-champion", "deploying", "submitted"}),
}
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


def _batch_id(value: Mapping[str, Any], key: str) -> str:
    if value.get("container") and value.get("dataset") and value.get("batch"):
        return f"{value['container']}/{value['dataset']}/{value['batch']}"
    return key.split("/", 1)[-1]


def failure(kind: str, key: str, value: Mapping[str, Any]) -> dict[str, Any] | None:
    """The failure a record holds (kind, id, status, reason, time, job, model, url…), or None."""
    status = str(value.get("status") or "")
    if status not in FAILED.get(kind, ()):
        return None
    reason = str(value.get("reason") or "") or f"{kind} {status} (no reason recorded)"
    rejected = [str(r.get("reason") or name) for name, r in sorted((value.get("rejected") or {}).items())
                if isinstance(r, Mapping)]
    if status == "skipped" and rejected:  # which files, and why each was refused (shared/batches.file_problem)
        reason += ": " + "; ".join(rejected)
    found: dict[str, Any] = {"kind": kind, "record": key, "status": status, "reason": reason,
                             "at": record_time(value)}
    if kind == "rollout":
        found.update(id=f"{value.get('endpoint', key.rsplit('/', 1)[-1])}/{value.get('model')}:{value.get('version')}",
                     model=f"{value.get('model')}:{value.get('version')}", deployment=value.get("deployment", ""),
                     endpoint=value.get("endpoint", ""), evidence=value.get("evidence") or {})
    elif kind == "retraining":
        found.update(id=key.removeprefix("retrains/"), batch=str(value.get("batch", "")).removeprefix("arrivals/"),
                     job=value.get("job", ""), trigger=value.get("trigger", ""))
    else:
        found.update(id=_batch_id(value, key), job=value.get("job", ""), url=value.get("job_url", ""))
        if kind == "scoring":
            found.update(model=value.get("model", ""), output=value.get("output", ""))
    return found


def waiting_for(kind: str, value: Mapping[str, Any], settings: Settings, now: float) -> str:
    """Why an unfinished batch or retraining has not moved on: what it waits for, since when; "" when done."""
    status = str(value.get("status") or "")
    since = when(record_time(value), now)
    if status == "collecting":
        marker = settings.completion_marker
        files = len(value.get("files") or {})
        first, last = when(value.get("first_seen"), now), when(value.get("last_seen"), now)
        if marker:
            return f"waiting for {marker} since {first} ({files} file(s), the last at {last})"
        due = float(value.get("last_seen") or now) + settings.quiet_seconds
        if due <= now:
            return f"quiet since {last}: the next sweep completes it ({files} file(s))"
        return (f"waiting until {when(due, now)}: complete once no file arrives for {settings.quiet_seconds} s "
                f"({files} file(s), the last at {last})")
    if status == "complete":
        starter = "the next tracker tick" if kind == "scoring" else "a redelivery or the next sweep"
        return f"complete since {since}: {starter} starts it"
    if status == "starting":
        until = float((value.get("lease") or {}).get("until") or 0)
        return (f"being started by a worker (lease until {when(until, now)})" if until > now
                else "its start was interrupted: the next sweep starts it again")
    if status in ("waiting", "pending", "no-champion"):
        reason = str(value.get("reason") or "")
        return (f"{reason} (since {since})" if reason else f"{status} since {since}").strip()
    if status == "deploying":
        return f"waiting for batch deployment {value.get('deployment', '?')} (since {since})"
    if status == "submitted":
        job = value.get("job") or "?"
        what = "batch job" if kind == "scoring" else "training job"
        return f"{what} {job} running since {when(value.get('submitted_at') or record_time(value), now)}"
    if status == "dry-run":
        return f"not trained: it completed during dry-run ({since}); nothing was submitted"
    return ""


def rollout_note(value: Mapping[str, Any], now: float) -> str:
    """What an unfinished rollout waits for (its last Wait, since when), or why a finished one ended."""
    notes = []
    if value.get("operator_rollback"):
        notes.append("operator rollback requested")
    status = str(value.get("status") or "")
    history = [h for h in value.get("history") or () if isinstance(h, Mapping)]
    last = history[-1] if history else {}
    queued = value.get("queued") or {}
    if queued:
        notes.append(f"superseded by {queued.get('model')}:{queued.get('version')} (queued)")
    if status in ("done", "rolled_back", "failed", "superseded"):
        if value.get("reason"):
            notes.append(str(value["reason"]))
    elif last.get("action") == "Wait":
        notes.append(f"{last.get('detail', '')} (since {when(last.get('at'), now)})")
    elif status in ("baking", "mirroring"):
        plan = value.get("plan") or {}
        seconds = plan.get("mirror_seconds" if status == "mirroring" else "bake_seconds")
        started = value.get("phase_started_at")
        if seconds is not None and started is not None:
            notes.append(f"baking until {when(float(started) + float(seconds), now)}")
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
        if kind == "rollout" and ident.partition("/")[2] != f"{value.get('model')}:{value.get('version')}":
            continue  # the endpoint's record holds a later rollout now
        status = str(value.get("status") or "")
        found = failure(kind, key, value)
        if found:
            detail = found["reason"]
        elif kind == "rollout":
            detail = rollout_note(value, now)
        elif status in OPEN.get(kind, ()):
            detail = waiting_for(kind, value, settings, now)
        else:
            detail = str(value.get("reason") or "")
        row = {"kind": kind, "id": ident, "record": key, "status": status, "detail": detail,
               "at": record_time(value), "failed": found is not None}
        for name in ("job", "job_url", "model", "output"):
            if value.get(name):
                row[name] = value[name]
        if kind == "scoring" and status == "completed" and value.get("output"):
            row["detail"] = f"{detail}; output {value['output']}" if detail else f"output {value['output']}"
        rows.append(row)
    return rows
