"""`python -m reflex status`: the switches, the endpoints, every unfinished piece of work with what it waits for,
and every failure with its reason.

Failures come from where each reaction leaves them: a training job that failed or could not be submitted (its
arrival or retraining record), a scoring job or batch deployment that failed (its scoring record), a rollout
rolled back or failed (its rollout record, with the reason and the evidence), and the dead letters (events that
could not be handled at all). Waits are the unfinished records, each with what it waits for
(`reflex.records.waiting_for`, `rollout_note`). All of it is read from the state records in one parallel pass
(`reflex.records.read`); the platform is asked only for the configured endpoints' traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from reflex.records import (
    FAILED,
    KINDS,
    OPEN,
    RECORD_TYPES,
    failure,
    newest_first,
    read,
    read_keys,
    rollout_note,
    waiting_for,
    when,
)
from reflex.stack import reachable
from shared.batches import manifest
from shared.batches.record import BatchRecord, StatusRecord
from shared.core.control import read_control
from shared.core.errors import ReflexError
from shared.core.state import Listed, lifecycle_of, recent_day
from shared.rollout.machine import Rollout
from shared.rollout.machine import read as read_rollout

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.state import Record

__all__ = ["RECENT_FAILURES", "SHOWN_FAILURES", "gather", "render"]

SHOWN_FAILURES = 15  # in the text output; --json has every one read
RECENT_FAILURES = 100  # failed records read, newest first (by their last change); older ones are only counted
RECENT_DAYS = 7  # failures shown are those finished in the last days (the finished index); `--all`: every one


class Out(Protocol):
    def text(self, line: str = "") -> None: ...
    def table(self, rows: Sequence[Sequence[Any]], headers: Sequence[str], *, indent: str = "  ") -> None: ...


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _step(rollout: Rollout | None) -> str:
    """Where a rollout is: "phase 1 (50%)" from the rollout record's phase and plan."""
    if rollout is None:
        return ""
    if rollout.phase < 0:
        return "mirror"
    steps = rollout.plan.steps
    return f"phase {rollout.phase}" + (f" ({steps[rollout.phase]}%)" if rollout.phase < len(steps) else "")


def _endpoints(deps: Deps) -> list[dict[str, Any]]:
    endpoints = []
    for model, name in sorted(deps.settings.endpoints.items(), key=lambda kv: kv[1]):
        endpoint = deps.platform.get_endpoint(name)
        deployments = [] if endpoint is None else [
            {"name": d.name, "model": d.model, "state": d.state, "traffic": endpoint.traffic.get(d.name, 0),
             "mirror": endpoint.mirror.get(d.name, 0)} for d in endpoint.deployments]
        endpoints.append({"endpoint": name, "serves": model, "state": endpoint.state if endpoint else "absent",
                          "deployments": deployments})
    return endpoints


def _history(deps: Deps) -> dict[str, list[Listed]]:
    """`--all`: every record under each kind's prefix, from listings (each key with its record's status)."""
    with ThreadPoolExecutor(len(KINDS)) as pool:
        return dict(zip(KINDS, pool.map(deps.state.listing, KINDS), strict=True))


def _recent(deps: Deps) -> dict[str, list[Listed]]:
    """The unfinished records (the active index) and what finished in the last `RECENT_DAYS` days (the finished
    index), by prefix: a few listings whatever the history holds (#17.2, #17.5). An unfinished record's status
    is read with it; a finished one's comes with its listing entry."""
    state = deps.state
    tracked = [prefix for prefix in KINDS if lifecycle_of(prefix) is not None]
    days = [day for day in state.finished_days() if day >= recent_day(state.clock(), RECENT_DAYS)]
    with ThreadPoolExecutor(max(1, len(tracked) + len(days) + 1)) as pool:
        active = pool.map(state.active_listing, tracked)
        shown = {status for kind in KINDS.values() for status in (*FAILED.get(kind, ()), *OPEN.get(kind, ()))}
        finished = pool.map(lambda day: state.finished_on(day, "", shown), days)  # failures, dry-runs: no history
        rollouts = pool.submit(state.listing, "rollouts/")
        ended: dict[str, Listed] = {}  # the newest finished entry of each record
        for items in finished:
            for item in items:
                if item.key not in ended or (item.modified or 0) >= (ended[item.key].modified or 0):
                    ended[item.key] = item
        listings: dict[str, list[Listed]] = {prefix: [] for prefix in KINDS}
        listings["rollouts/"] = rollouts.result()
        for prefix, entries in zip(tracked, active, strict=True):
            for entry in entries:
                last = ended.get(entry.key)
                if last is None or (entry.modified or 0) > (last.modified or 0):
                    ended.pop(entry.key, None)  # unfinished, or reopened after it finished: read it
                    listings[prefix].append(entry)
        for item in ended.values():  # finished (a failed one held for health too), with its status
            prefix = item.key.split("/", 1)[0] + "/"
            if prefix in listings:
                listings[prefix].append(item)
    return listings


def _active(deps: Deps, result: dict[str, Any], everything: bool) -> dict[str, list[Record]]:
    """The records `status` shows, by prefix: unfinished ones, the live rollouts and the newest failures.

    Chosen from the indexes (`_recent`), or with `everything` from listings of all the history (`_history`):
    each candidate with its record's status and last change, so finished history costs at most a listing
    entry, not a read. A record stored before records carried their status in the listing is read, as before.
    Failures past the newest `RECENT_FAILURES` are counted in `result["failures_total"]`, not read.
    """
    listings = _history(deps) if everything else _recent(deps)
    wanted: dict[str, list[str]] = {}
    failed: list[tuple[float, str, str]] = []
    for prefix, kind in KINDS.items():
        keep = wanted.setdefault(prefix, [])
        for item in listings[prefix]:
            if kind == "rollout":
                if item.key.count("/") == 1:  # rollouts/<endpoint>: one per endpoint, always shown
                    keep.append(item.key)
            elif item.status is None or item.status in OPEN[kind]:
                keep.append(item.key)
            elif item.status in FAILED[kind]:
                failed.append((item.modified or 0.0, prefix, item.key))
    failed.sort(reverse=True)
    result["failures_total"] = len(failed)
    result["failures_window_days"] = None if everything else RECENT_DAYS
    for _, prefix, key in failed[:RECENT_FAILURES]:
        wanted[prefix].append(key)
    found = read_keys(deps.state, [k for keys in wanted.values() for k in keys])
    return {prefix: [found[k] for k in sorted(keys) if k in found] for prefix, keys in wanted.items()}


def _manifest(deps: Deps, work: StatusRecord) -> manifest.Manifest | None:
    """An unfinished batch's files (`manifest.load`: the frozen manifest, or what a collecting batch's folder
    holds now), or None for other records and when storage cannot say (the row is shown without them)."""
    if not isinstance(work, BatchRecord):
        return None
    try:
        return manifest.load(deps, work)
    except ReflexError:
        return None


def gather(deps: Deps, *, everything: bool = False) -> dict[str, Any]:
    """Everything `status` shows, as JSON-ready data: the failures of the last `RECENT_DAYS` days, or with
    `everything` (`status --all`) of all the history the state still holds."""
    now = deps.clock()
    control = read_control(deps)
    result: dict[str, Any] = {"automation": {"paused": control.paused, "dry_run": control.dry_run,
                                             "by": control.by, "why": control.why, "at": control.at,
                                             "source": control.source}}
    result["endpoints"] = _endpoints(deps)
    with ThreadPoolExecutor(2) as pool:  # the dead letters and the work records at once: each is a few round trips
        letters_read = pool.submit(read, deps.state, ["deadletters/", "held/"],
                                   newest={"deadletters/": SHOWN_FAILURES, "held/": 0})
        active = _active(deps, result, everything)
        records, counts = letters_read.result()
    records.update(active)
    rollouts = [{"key": r.key, **r.value, "note": rollout_note(read_rollout(r.value), now)}
                for r in records["rollouts/"] if r.key.count("/") == 1]  # rollouts/<endpoint>: the live records
    result["rollouts"] = rollouts
    pending, failures = [], []
    for prefix, kind in KINDS.items():
        for record in records[prefix]:
            work = RECORD_TYPES[kind].from_dict(record.value) if kind in RECORD_TYPES else None
            if work is not None and work.status in OPEN[kind]:
                held = _manifest(deps, work)
                shown = {} if held is None else {"files": dict(held.files), "rejected": dict(held.rejected)}
                pending.append({"key": record.key, "kind": kind, **work.to_dict(), **shown,
                                "waiting_for": waiting_for(kind, record.value, deps.settings, now,
                                                           files=None if held is None else len(held.files))})
            status = work.status if work is not None else record.value.get("status")
            if status in FAILED[kind] and (kind != "rollout" or record.key.count("/") == 1):
                found = failure(kind, record.key, record.value)
                if found:
                    failures.append(found)
    letters = records["deadletters/"]
    for letter in letters:
        v = letter.value
        failures.append({"kind": "dead letter", "id": letter.key.removeprefix("deadletters/"),
                         "record": letter.key, "status": "dead-lettered", "reaction": v.get("reaction"),
                         "event_id": v.get("event_id"), "reason": f"{v.get('reaction')}: {v.get('error')}",
                         "at": _epoch(v.get("at"))})
    result["pending_batches"] = pending
    result["failures"] = newest_first(failures)
    result["dead_letters"] = counts["deadletters/"]  # all of them: `dead-letters` lists them
    result["held"] = counts["held/"]
    result["recent_failures"] = [{"key": r.key, "reaction": r.value.get("reaction"), "at": r.value.get("at"),
                                  "error": r.value.get("error")} for r in letters[-5:]]
    if deps.settings.platform == "local":
        host_problem = reachable(deps.settings.local_host_url, timeout=1.0)
        result["local_host"] = {"url": deps.settings.local_host_url, "up": host_problem is None}
    result["now"] = now
    return result


def render(result: Mapping[str, Any], out: Out) -> None:
    """The human form of `gather`'s result."""
    now = float(result["now"])
    control = result["automation"]
    by = f", by {control['by']}: {control['why']}" if control["by"] else ""
    out.text(f"automation: {'PAUSED' if control['paused'] else 'running'}"
             f"{', DRY-RUN' if control['dry_run'] else ''} (source: {control['source']}{by})")
    endpoints = result["endpoints"]
    out.text("\nendpoints:")
    out.table([(e["endpoint"], e["state"], d["name"], d["model"], d["state"], f"{d['traffic']}%",
                f"{d['mirror']}%" if d["mirror"] else "") for e in endpoints for d in e["deployments"]]
              if any(e["deployments"] for e in endpoints) else
              [(e["endpoint"], e["state"], "-", e["serves"], "", "", "") for e in endpoints],
              ("ENDPOINT", "STATE", "DEPLOYMENT", "MODEL", "DEP.STATE", "TRAFFIC", "MIRROR"))
    out.text("\nrollouts:")
    shown = [(r, read_rollout(r)) for r in result["rollouts"]]  # each row is its record, with "key" and "note"
    out.table([(r["key"].removeprefix("rollouts/"), r.get("status", ""), _step(ro), ro.ref if ro else "",
                ro.deployment if ro else "", r["note"]) for r, ro in shown],
              ("ENDPOINT", "STATUS", "STEP", "MODEL", "DEPLOYMENT", "NOTE"))
    out.text("\nunfinished batches:")
    out.table([(p["kind"], p["key"].split("/", 1)[-1], p.get("status", ""), len(p.get("files") or ()),
                p["waiting_for"]) for p in result["pending_batches"]],
              ("KIND", "BATCH", "STATUS", "FILES", "WAITING FOR"))
    failures = result["failures"]
    out.text(f"\nfailures, newest first ({result['dead_letters']} dead-lettered: `dead-letters` lists them; "
             f"{result['held']} held while paused):")
    out.table([(when(f["at"], now), f["kind"], f["id"], f.get("job") or f.get("model") or "", f["reason"])
               for f in failures[:SHOWN_FAILURES]], ("AT", "KIND", "ID", "JOB/MODEL", "REASON"))
    if len(failures) > SHOWN_FAILURES:
        out.text(f"  … and {len(failures) - SHOWN_FAILURES} older (all of them with --json)")
    unread = int(result.get("failures_total") or 0) - RECENT_FAILURES
    if unread > 0:
        out.text(f"  … and {unread} older failed batch(es) not read (`explain <batch>` shows one)")
    if result.get("failures_window_days"):
        out.text(f"  (failed batches of the last {result['failures_window_days']} days; `status --all` for every "
                 "one still kept)")
    if "local_host" in result:
        host = result["local_host"]
        out.text(f"\nlocal host {host['url']}: "
                 f"{'up' if host['up'] else 'not running (start the stack with `make stack`)'}")
