"""Batch scoring: a complete batch in the scoring container -> one batch endpoint job for the champion model.

Why this shape: the batch is recorded exactly as the data-arrival flow records training batches (same
`arrival_record` transitions, same completion rule: the marker, or the quiet window checked by the tracker),
but under its own prefix `scoring/<container>/<dataset>/<batch>` so the training sweep never sees it. From
`complete` the record moves through a small state machine, one compare-and-swap per step, never blocking:

    complete --no champion--> no-champion   (kept; the tracker and the schedule retry it)
    complete/no-champion --champion--> deploying   (model, deployment, job name, output path fixed here)
    deploying --deployment Succeeded--> submitted  (invoke_batch, idempotent by job name)
    deploying --deployment Failed--> failed        (BatchScoringFailed)
    submitted --job terminal--> completed | failed (BatchScoringCompleted / BatchScoringFailed, once: CAS winner)
    complete with no usable file --> skipped      (BatchScoringSkipped with the rejected files)

The tracker (`track`, on the reconcile schedule) completes quiet batches and advances every open record, so
nothing waits on an event that may never come. The schedule (`scheduled`) re-scores the latest batch when the
champion changed since it was scored: a new job name and a new output folder, the old run kept in
`previous`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.arrival.flow import list_batch, locate_blob
from shared.batches.paths import BatchPath
from shared.batches.record import add_blob, complete, set_status
from shared.core import champion as champions
from shared.core.errors import PermanentError, ReflexError, TransientError
from shared.core.platform import REFLEX_TAG, BatchDeploymentSpec
from shared.core.reaction import Outcome
from shared.core.state import key_part
from shared.scoring.rules import deployment_name, input_path, instance_count, output_path, scoring_job_name

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["OPEN", "advance", "handle_blob", "scheduled", "scoring_key", "track"]

log = logging.getLogger("reflex.scoring")

OPEN = ("complete", "no-champion", "deploying", "submitted")
_STARTABLE = ("complete", "no-champion")


def scoring_key(path: BatchPath) -> str:
    return f"scoring/{key_part(path.container)}/{key_part(path.dataset)}/{key_part(path.batch)}"


def _batch_id(value: Mapping[str, Any]) -> str:
    return f"{value['container']}/{value['dataset']}/{value['batch']}"


# ------------------------------------------------------------------------------------ BlobCreated events


def handle_blob(raw: Any, deps: Deps) -> Outcome:
    """One BlobCreated event of the scoring container (see `locate_blob` for what is skipped): record the blob;
    on the marker complete the batch and start scoring."""
    located = locate_blob(raw, deps.settings.scoring_container, "scoring")
    if isinstance(located, Outcome):
        return located
    blob, path, version = located
    key = scoring_key(path)
    details = {"batch": path.batch_id, "file": path.file, "record": key}
    marker = deps.settings.completion_marker
    if marker and path.file == marker:
        current = deps.state.get(key)
        if current is not None and current.value["status"] != "collecting":
            return Outcome("duplicate", f"batch {path.batch_id} is already {current.value['status']}", details)
        listing = list_batch(deps, path)
        won: dict[str, bool] = {}

        def finish(value: dict[str, Any] | None) -> dict[str, Any] | None:
            new, won["it"] = complete(value, path, listing, deps.clock(), event_id=blob.id, marker=version,
                                      purpose="scoring")
            return new

        deps.state.update(key, finish)
        if not won["it"]:
            return Outcome("duplicate", f"batch {path.batch_id} was completed by another delivery", details)
        return advance(deps, key)
    happened: dict[str, str] = {}

    def record(current: dict[str, Any] | None) -> dict[str, Any] | None:
        new, happened["what"] = add_blob(current, path, version, deps.clock(), purpose="scoring")
        return new

    stored = deps.state.update(key, record)
    what = happened["what"]
    if what == "duplicate":
        return Outcome("duplicate", f"{path.file} (etag {blob.etag}) already recorded", details)
    if what == "late":
        return Outcome("skipped", f"late file: scoring batch {path.batch_id} is already complete; recorded in "
                                  "late_files, not scored (upload new data as a new batch folder)", details)
    if what == "rejected":
        rejected = (stored.value.get("rejected") or {}).get(path.file, {}) if stored else {}
        return Outcome("skipped", f"rejected: {rejected.get('reason') or path.file + ': not usable data'}", details)
    return Outcome("acted", f"recorded {path.file} in scoring batch {path.batch_id}", details)


# ------------------------------------------------------------------------------------ state machine


def _plan(value: Mapping[str, Any], champion_ref: str, deps: Deps) -> dict[str, Any]:
    s = deps.settings
    job = scoring_job_name(_batch_id(value), value["files"], champion_ref)
    return {"model": champion_ref, "deployment": deployment_name(champion_ref), "endpoint": s.batch_endpoint,
            "job": job, "input": input_path(s.scoring_datastore, value["dataset"], value["batch"]),
            "output": output_path(s.output_datastore, value["dataset"], value["batch"], job)}


def advance(deps: Deps, key: str, *, champion: Any = ..., event_id: str = "") -> Outcome:
    """Move one scoring record as far as it can go now (never waits). Idempotent; safe to call any time."""
    from shared.core.control import read_control

    record = deps.state.get(key)
    if record is None:
        raise PermanentError(f"scoring record {key} vanished")
    value = record.value
    batch_id = _batch_id(value)
    status = value["status"]
    details: dict[str, Any] = {"batch": batch_id, "record": key}
    now = deps.clock()
    if status not in OPEN:
        return Outcome("duplicate" if status != "collecting" else "skipped",
                       f"scoring batch {batch_id} is {status}", {**details, "job": value.get("job", "")})
    if status == "complete" and not value["files"]:
        reason = f"empty batch: no usable file ({len(value.get('rejected') or {})} rejected)"
        won: dict[str, bool] = {}

        def skip(v: dict[str, Any] | None) -> dict[str, Any] | None:
            new = set_status(v, "skipped", now, allowed_from=("complete",), reason=reason)
            won["it"] = new is not None
            return new

        deps.state.update(key, skip)
        if won["it"]:
            deps.publisher.publish("BatchScoringSkipped", batch_id, {**details, "reason": reason,
                                                                     "rejected": value.get("rejected") or {}})
        return Outcome("skipped", reason, details)
    dry_run = read_control(deps).dry_run
    if status in _STARTABLE:
        if champion is ...:
            champion = champions.find(deps, deps.settings.model_name)
        if champion is None:
            reason = f"no champion yet for model {deps.settings.model_name}: kept, scored once one exists"
            if status == "complete":
                deps.state.update(key, lambda v: set_status(v, "no-champion", now, allowed_from=("complete",),
                                                            reason=reason))
            return Outcome("skipped", reason, details)
        plan = _plan(value, champion.ref, deps)
        details.update(plan)
        if dry_run:
            return Outcome("dry-run", f"would score {batch_id} with {champion.ref} as {plan['job']}", details)
        files = len(value["files"])
        deps.platform.begin_ensure_batch_deployment(BatchDeploymentSpec(
            endpoint=plan["endpoint"], deployment=plan["deployment"], model=champion.ref,
            compute=deps.settings.batch_compute, mini_batch_size=deps.settings.batch_mini_batch_size,
            instance_count=instance_count(files, configured=deps.settings.batch_instance_count,
                                          mini_batch_size=deps.settings.batch_mini_batch_size,
                                          max_concurrency=deps.settings.batch_max_concurrency),
            max_concurrency=deps.settings.batch_max_concurrency))
        stored = deps.state.update(key, lambda v: set_status(v, "deploying", now, allowed_from=_STARTABLE,
                                                             reason=f"ensuring batch deployment {plan['deployment']}",
                                                             **plan))
        value = stored.value if stored is not None else value
        if value.get("status") != "deploying":
            return Outcome("duplicate", f"scoring batch {batch_id} moved on meanwhile", details)
    details.update({k: value.get(k) for k in ("model", "deployment", "endpoint", "job", "input", "output")})
    if value["status"] == "deploying":
        if dry_run:
            return Outcome("dry-run", f"would submit {value['job']}", details)
        return _submit(deps, key, value, details)
    return _track_job(deps, key, value, details)


def _submit(deps: Deps, key: str, value: dict[str, Any], details: dict[str, Any]) -> Outcome:
    now = deps.clock()
    dep = deps.platform.get_batch_deployment(value["endpoint"], value["deployment"])
    if dep is None or dep.state in ("Failed", "Canceled"):
        why = f"batch deployment {value['endpoint']}/{value['deployment']} is {dep.state if dep else 'missing'}"
        if dep is None:  # the ensure call was lost (e.g. deleted meanwhile): begin again on the next tick
            deps.state.update(key, lambda v: set_status(v, "complete", now, allowed_from=("deploying",),
                                                        reason=why))
            return Outcome("skipped", f"{why}: re-created on the next tick", details)
        return _finish(deps, key, "failed", why, details, stage="deployment")
    if not dep.succeeded:
        return Outcome("skipped", f"batch deployment {value['deployment']} is {dep.state}: the tracker retries",
                       details)
    tags = {REFLEX_TAG: "true", "reflex.kind": "batch-scoring", "reflex.trigger": f"blob:{_batch_id(value)}",
            "reflex.event_id": str(value.get("completing_event", "")), "reflex.data": value["input"],
            "reflex.parent": value["model"], "reflex.batch": key}
    job = deps.platform.invoke_batch(value["endpoint"], value["deployment"], input_path=value["input"],
                                     output_path=value["output"], job_name=value["job"], tags=tags)
    moved: dict[str, bool] = {}

    def mark(v: dict[str, Any] | None) -> dict[str, Any] | None:
        new = set_status(v, "submitted", now, allowed_from=("deploying",), reason="batch job submitted",
                         submitted_at=now, job_url=job.url)
        moved["it"] = new is not None
        return new

    deps.state.update(key, mark)
    if moved["it"]:
        deps.publisher.publish("BatchScoringSubmitted", _batch_id(value), {**details, "url": job.url})
    return Outcome("acted", f"batch job {value['job']} submitted for {_batch_id(value)}", details)


def _track_job(deps: Deps, key: str, value: dict[str, Any], details: dict[str, Any]) -> Outcome:
    job = deps.platform.get_job(value["job"])
    if job is None:
        return Outcome("skipped", f"batch job {value['job']} is not visible yet", details)
    if not job.terminal:
        return Outcome("skipped", f"batch job {value['job']} is {job.status}", details)
    details = {**details, "status": job.status, "url": job.url, "output": job.outputs.get("score", value["output"])}
    if job.status == "Completed":
        return _finish(deps, key, "completed", "batch job completed", details)
    return _finish(deps, key, "failed", f"batch job {job.status}" + (f": {job.error}" if job.error else ""),
                   details, stage="job")


def _finish(deps: Deps, key: str, status: str, reason: str, details: dict[str, Any], *, stage: str = "") -> Outcome:
    """Close the record; only the compare-and-swap winner publishes, so the event goes out once."""
    now = deps.clock()
    moved: dict[str, bool] = {}

    def close(v: dict[str, Any] | None) -> dict[str, Any] | None:
        new = set_status(v, status, now, allowed_from=("deploying", "submitted"), reason=reason, finished_at=now)
        moved["it"] = new is not None
        return new

    deps.state.update(key, close)
    if not moved["it"]:
        return Outcome("duplicate", f"scoring batch {details['batch']} was already closed", details)
    kind = "BatchScoringCompleted" if status == "completed" else "BatchScoringFailed"
    data = {**details, "reason": reason}
    if stage:
        data["stage"] = stage
    deps.publisher.publish(kind, details["batch"], data)
    return Outcome("acted", f"{kind}: {reason}", data)


# ------------------------------------------------------------------------------------ timers


def track(deps: Deps) -> Outcome:
    """Timer: complete quiet scoring batches (no marker configured) and advance every open record."""
    now = deps.clock()
    counts = {"completed_batches": 0, "advanced": 0, "failed": 0}
    items: dict[str, dict[str, Any]] = {}  # per record: what this tick did to it or what it waits for (ledger)
    champion: Any = ...
    for record in deps.state.records(f"scoring/{key_part(deps.settings.scoring_container)}/"):
        value = record.value
        status = value.get("status")
        if status == "collecting" and not deps.settings.completion_marker and \
                now - float(value["last_seen"]) >= deps.settings.quiet_seconds:
            path = BatchPath(value["container"], value["dataset"], value["batch"], "")
            listing = list_batch(deps, path)
            event_id = f"tracker:{int(now)}"
            stored = deps.state.update(record.key, lambda v, p=path, ls=listing, e=event_id: complete(
                v, p, ls, now, event_id=e, purpose="scoring")[0])
            if stored is not None and stored.value.get("completing_event") == event_id:
                counts["completed_batches"] += 1
                status = "complete"
        if status not in OPEN:
            continue
        if status in _STARTABLE and champion is ...:
            champion = champions.find(deps, deps.settings.model_name)  # once per tick
        try:
            outcome = advance(deps, record.key, champion=champion)
        except ReflexError as exc:  # one bad batch must not stop the others
            counts["failed"] += 1
            if not isinstance(exc, TransientError):
                deps.state.dead_letter("scoring.track", {"record": record.key}, exc,
                                       event_id=f"track-{key_part(record.key)}")
            log.warning("tracker could not advance %s: %s", record.key, exc)
            continue
        counts["advanced"] += outcome.status == "acted"
        items[record.key] = {"status": outcome.status, "reason": outcome.reason,
                             **{k: outcome.details[k] for k in _ITEM_REFS if outcome.details.get(k)}}
    acted = counts["completed_batches"] or counts["advanced"]
    # one lineage group per batch (shared/core/ledger.py `links`), so batches advanced by one tick never join chains
    links = [{k: v for k, v in item.items() if k in _ITEM_REFS} for item in items.values()]
    return Outcome("acted" if acted else "skipped",
                   f"tracker: {counts['completed_batches']} batch(es) completed, {counts['advanced']} advanced",
                   {**counts, **items, "links": links})


_ITEM_REFS = ("batch", "job", "model", "output")


def scheduled(deps: Deps) -> Outcome:
    """Schedule: score the latest complete scoring batch with the current champion if not done already."""
    if not deps.settings.batch_schedule_enabled:
        return Outcome("skipped", "scheduled batch scoring is disabled (REFLEX_BATCH_SCHEDULE_ENABLED=false)")
    latest: tuple[float, str] | None = None
    for record in deps.state.records(f"scoring/{key_part(deps.settings.scoring_container)}/"):
        value = record.value
        if value.get("status") not in ("collecting", "skipped") and value.get("files"):
            at = float(value.get("completed_at") or 0)
            if latest is None or (at, record.key) > latest:
                latest = (at, record.key)
    if latest is None:
        return Outcome("skipped", "no complete scoring batch to score")
    key = latest[1]
    champion = champions.find(deps, deps.settings.model_name)
    if champion is None:
        return Outcome("skipped", f"no champion yet for model {deps.settings.model_name}", {"record": key})
    now = deps.clock()

    def rescore(v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None or v.get("status") not in ("completed", "failed") or v.get("model") == champion.ref:
            return None
        previous = [*v.get("previous", []), {k: v.get(k) for k in ("model", "job", "output", "status", "reason")}]
        return set_status(v, "complete", now, allowed_from=("completed", "failed"),
                          reason=f"scheduled re-scoring with {champion.ref}", previous=previous)

    deps.state.update(key, rescore)
    return advance(deps, key, champion=champion)
