"""Batch scoring: a complete batch in the scoring container -> one batch endpoint job for the champion model.

Why this shape: the batch is recorded exactly as the data-arrival flow records training batches (the same
intake and transitions, shared/batches/intake.py and record.py, the manifest stored apart and read through
shared/batches/manifest.py `load`; the same completion rule: the marker, or the quiet window checked by the
tracker), as a `ScoringRecord` under its own prefix
`scoring/<container>/<dataset>/<batch>` so the training sweep never sees it. From `complete` the record moves
through a small state machine, one compare-and-swap per step, never blocking:

    complete --no champion--> no-champion   (kept; the tracker and the schedule retry it)
    complete/no-champion --champion--> deploying   (model, deployment, job name, output path fixed here)
    deploying --frozen, deployment Succeeded--> submitted  (invoke_batch, idempotent by job name; the input is
                                                    the batch's frozen copy, shared/batches/freeze.py, copied in
                                                    bounded passes, one per tick, while the deployment gets ready)
    deploying --a recorded version gone--> failed  (BatchScoringFailed, stage freeze: upload a new batch folder)
    deploying --deployment Failed--> failed        (BatchScoringFailed)
    submitted --job terminal--> completed | failed (BatchScoringCompleted / BatchScoringFailed, once: CAS winner)
    submitted --job failed, transient--> deploying (a new job name and output folder, after a backoff, at most
                                                    REFLEX_TRANSIENT_RETRIES times: `_retry_transient`, #18.3)
    complete with no usable file --> skipped      (BatchScoringSkipped with the rejected files)

The tracker (`track`, on the reconcile schedule) completes quiet batches and advances every open record, so
nothing waits on an event that may never come. The schedule (`scheduled`) re-scores the latest batch when the
champion changed since it was scored: a new job name and a new output folder, the old run kept in
`previous`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.batches import freeze, manifest
from shared.batches.intake import complete_batch, locate_blob, record_blob
from shared.batches.paths import BatchPath
from shared.batches.record import ScoringRecord, as_update
from shared.batches.retention import latest_scoring_batch
from shared.batches.retries import schedule_retry, utc_text
from shared.core import champion as champions
from shared.core.errors import PermanentError, ReflexError, TransientError
from shared.core.platform import FAILURE_TRANSIENT, FAILURE_USER, REFLEX_TAG, BatchDeploymentSpec
from shared.core.reaction import Outcome
from shared.core.state import key_part
from shared.scoring.rules import deployment_name, instance_count, output_path, scoring_job_name

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["OPEN", "advance", "handle_blob", "scheduled", "scoring_key", "track"]

log = logging.getLogger("reflex.scoring")

OPEN = ("complete", "no-champion", "deploying", "submitted")
_STARTABLE = ("complete", "no-champion")


def scoring_key(path: BatchPath) -> str:
    return f"scoring/{key_part(path.container)}/{key_part(path.dataset)}/{key_part(path.batch)}"


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
        status = ScoringRecord.from_dict(current.value).status if current is not None else "collecting"
        if status != "collecting":
            return Outcome("duplicate", f"batch {path.batch_id} is already {status}", details)
        if not complete_batch(deps, key, path, deps.clock(), event_id=blob.id, kind=ScoringRecord, purpose="scoring",
                              marker=version):
            return Outcome("duplicate", f"batch {path.batch_id} was completed by another delivery", details)
        return advance(deps, key)
    got = record_blob(deps, key, path, version, kind=ScoringRecord, purpose="scoring")
    if got.what == "duplicate":
        return Outcome("duplicate", f"{path.file} (etag {blob.etag}) already recorded", details)
    if got.what == "late":
        return Outcome("skipped", f"late file: scoring batch {path.batch_id} is already complete; recorded in "
                                  "late_files, not scored (upload new data as a new batch folder)", details)
    if got.what == "rejected":
        return Outcome("skipped", f"rejected: {got.reason or path.file + ': not usable data'}", details)
    return Outcome("acted", f"recorded {path.file} in scoring batch {path.batch_id}", details)


# ------------------------------------------------------------------------------------ state machine


def _plan(batch: ScoringRecord, champion_ref: str, deps: Deps) -> dict[str, Any]:
    s = deps.settings
    job = scoring_job_name(batch.batch_id, manifest.load(deps, batch).files, champion_ref)
    return {"model": champion_ref, "deployment": deployment_name(champion_ref), "endpoint": s.batch_endpoint,
            "job": job, "input": freeze.frozen_path(s.scoring_datastore, batch),
            "output": output_path(s.output_datastore, batch.dataset, batch.batch, job)}


def _moved(deps: Deps, key: str, status: str, now: float, *, allowed_from: tuple[str, ...], reason: str,
           **fields: Any) -> ScoringRecord | None:
    """One CAS step of the state machine: the record moved to `status` by this call, or None when it had
    already moved on (another worker, a redelivery): the caller that moved it is the one that acts."""
    won: dict[str, bool] = {}

    def move(batch: ScoringRecord | None) -> ScoringRecord | None:
        new = batch.with_status(status, now, allowed_from=allowed_from, reason=reason, **fields) if batch else None
        won["it"] = new is not None
        return new

    stored = deps.state.update(key, as_update(ScoringRecord, move))
    return ScoringRecord.from_dict(stored.value) if stored is not None and won.get("it") else None


def advance(deps: Deps, key: str, *, champion: Any = ..., event_id: str = "") -> Outcome:
    """Move one scoring record as far as it can go now (never waits). Idempotent; safe to call any time."""
    from shared.core.control import read_control

    record = deps.state.get(key)
    if record is None:
        raise PermanentError(f"scoring record {key} vanished")
    batch = ScoringRecord.from_dict(record.value)
    batch_id = batch.batch_id
    status = batch.status
    details: dict[str, Any] = {"batch": batch_id, "record": key}
    now = deps.clock()
    if status not in OPEN:
        return Outcome("duplicate" if status != "collecting" else "skipped",
                       f"scoring batch {batch_id} is {status}", {**details, "job": batch.job})
    if status == "complete" and not batch.file_count:
        reason = f"empty batch: no usable file ({batch.rejected_count} rejected)"
        if _moved(deps, key, "skipped", now, allowed_from=("complete",), reason=reason):
            rejected = manifest.load(deps, batch).rejected
            deps.publisher.publish("BatchScoringSkipped", batch_id, {**details, "reason": reason,
                                                                     "rejected": dict(rejected)})
        return Outcome("skipped", reason, details)
    dry_run = read_control(deps).dry_run
    if status in _STARTABLE:
        if champion is ...:
            champion = champions.find(deps, deps.settings.model_name)
        if champion is None:
            reason = f"no champion yet for model {deps.settings.model_name}: kept, scored once one exists"
            if status == "complete":
                _moved(deps, key, "no-champion", now, allowed_from=("complete",), reason=reason)
            return Outcome("skipped", reason, details)
        plan = _plan(batch, champion.ref, deps)
        details.update(plan)
        if dry_run:
            return Outcome("dry-run", f"would score {batch_id} with {champion.ref} as {plan['job']}", details)
        files = batch.file_count
        deps.platform.begin_ensure_batch_deployment(BatchDeploymentSpec(
            endpoint=plan["endpoint"], deployment=plan["deployment"], model=champion.ref,
            compute=deps.settings.batch_compute, mini_batch_size=deps.settings.batch_mini_batch_size,
            instance_count=instance_count(files, configured=deps.settings.batch_instance_count,
                                          mini_batch_size=deps.settings.batch_mini_batch_size,
                                          max_concurrency=deps.settings.batch_max_concurrency),
            max_concurrency=deps.settings.batch_max_concurrency))
        stored = deps.state.update(key, as_update(ScoringRecord, lambda b: b and b.with_status(
            "deploying", now, allowed_from=_STARTABLE, reason=f"ensuring batch deployment {plan['deployment']}",
            **plan)))
        batch = ScoringRecord.from_dict(stored.value) if stored is not None else batch
        if batch.status != "deploying":
            return Outcome("duplicate", f"scoring batch {batch_id} moved on meanwhile", details)
    details.update(model=batch.model, deployment=batch.deployment, endpoint=batch.endpoint, job=batch.job,
                   input=batch.input, output=batch.output)
    if batch.status == "deploying":
        if not batch.retry_due(deps.clock()):
            return Outcome("skipped", batch.reason or "a retry waits out its backoff", details)
        if dry_run:
            return Outcome("dry-run", f"would submit {batch.job}", details)
        return _submit(deps, key, batch, details)
    return _track_job(deps, key, batch, details)


def _submit(deps: Deps, key: str, batch: ScoringRecord, details: dict[str, Any]) -> Outcome:
    now = deps.clock()
    if batch.input == freeze.frozen_path(deps.settings.scoring_datastore, batch):
        # the job reads the frozen copy of exactly the recorded versions (shared/batches/freeze.py), copied while
        # the deployment is made ready; one bounded pass per tick
        progress = freeze.advance(deps, batch)
        if progress.lost:
            return _finish(deps, key, "failed", f"not scored: {progress.reason}", details, stage="freeze")
        if not progress.done:
            return Outcome("skipped", progress.reason, {**details, "freezing": True})
    endpoint, deployment = str(batch.endpoint), str(batch.deployment)
    dep = deps.platform.get_batch_deployment(endpoint, deployment)
    if dep is None or dep.state in ("Failed", "Canceled"):
        why = f"batch deployment {endpoint}/{deployment} is {dep.state if dep else 'missing'}"
        if dep is None:  # the ensure call was lost (e.g. deleted meanwhile): begin again on the next tick
            _moved(deps, key, "complete", now, allowed_from=("deploying",), reason=why)
            return Outcome("skipped", f"{why}: re-created on the next tick", details)
        return _finish(deps, key, "failed", why, details, stage="deployment")
    if not dep.succeeded:
        return Outcome("skipped", f"batch deployment {deployment} is {dep.state}: the tracker retries",
                       details)
    tags = {REFLEX_TAG: "true", "reflex.kind": "batch-scoring", "reflex.trigger": f"blob:{batch.batch_id}",
            "reflex.event_id": batch.completing_event, "reflex.data": str(batch.input),
            "reflex.parent": str(batch.model), "reflex.batch": key}
    job = deps.platform.invoke_batch(endpoint, deployment, input_path=str(batch.input),
                                     output_path=str(batch.output), job_name=batch.job, tags=tags)
    # invoke_batch is idempotent by job name, so overlapping ticks submit one job; the record's compare-and-swap
    # names the one that acted (and publishes), the others are duplicates
    if not _moved(deps, key, "submitted", now, allowed_from=("deploying",), reason="batch job submitted",
                  submitted_at=now, job_url=job.url):
        return Outcome("duplicate", f"batch job {batch.job} was submitted by another tick", details)
    deps.publisher.publish("BatchScoringSubmitted", batch.batch_id, {**details, "url": job.url})
    return Outcome("acted", f"batch job {batch.job} submitted for {batch.batch_id}", details)


def _track_job(deps: Deps, key: str, batch: ScoringRecord, details: dict[str, Any]) -> Outcome:
    job = deps.platform.get_job(batch.job)
    if job is None:
        return Outcome("skipped", f"batch job {batch.job} is not visible yet", details)
    if not job.terminal:
        return Outcome("skipped", f"batch job {batch.job} is {job.status}", details)
    details = {**details, "status": job.status, "url": job.url, "output": job.outputs.get("score", batch.output)}
    if job.status == "Completed":
        return _finish(deps, key, "completed", "batch job completed", details)
    reason = f"batch job {job.status}" + (f": {job.error}" if job.error else "")
    if job.status == "Failed" and job.failure == FAILURE_TRANSIENT:
        retried = _retry_transient(deps, key, batch.job, job.error or "failed")
        if retried is not None:
            return Outcome(retried[0], retried[1], details)
        reason += f" (a transient failure, not retried: REFLEX_TRANSIENT_RETRIES={deps.settings.transient_retries}" \
                  + (" used up)" if deps.settings.transient_retries else ")")
    elif job.status == "Failed" and job.failure == FAILURE_USER:
        reason += " (a failure in the scoring data or the model: not retried)"
    return _finish(deps, key, "failed", reason, details, stage="job")


def _retry_transient(deps: Deps, key: str, job: str, why: str) -> tuple[str, str] | None:
    """Back to `deploying` with a new job name and output folder, not before a backoff (the same schedule as
    training's, shared/batches/retries.py); (status, reason) of the outcome, or None when retries are used up or
    off. Only the compare-and-swap winner answers "acted"."""
    limit = deps.settings.transient_retries
    found = deps.state.get(key)
    files = manifest.load(deps, ScoringRecord.from_dict(found.value)).files if found is not None else {}

    def resubmit(batch: ScoringRecord, retry: int, at: float) -> ScoringRecord | None:
        nxt = scoring_job_name(batch.batch_id, files, f"{batch.model}|retry-{retry}")
        reason = (f"batch job {job} failed for a transient reason ({why}); job {nxt} (retry {retry} of {limit}) "
                  f"is submitted after {utc_text(at)}")
        return batch.with_status("deploying", deps.clock(), allowed_from=("submitted",), reason=reason, job=nxt,
                                 output=output_path(deps.settings.output_datastore, batch.dataset, batch.batch, nxt))

    scheduled = schedule_retry(deps, key, job, ScoringRecord, resubmit)
    if scheduled is None:
        return None
    batch, won = scheduled
    return ("acted", batch.reason) if won else ("duplicate", f"batch job {job}: its retry is already scheduled")


def _finish(deps: Deps, key: str, status: str, reason: str, details: dict[str, Any], *, stage: str = "") -> Outcome:
    """Close the record; only the compare-and-swap winner publishes, so the event goes out once."""
    now = deps.clock()
    if not _moved(deps, key, status, now, allowed_from=("deploying", "submitted"), reason=reason, finished_at=now):
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
    for record in deps.state.active(f"scoring/{key_part(deps.settings.scoring_container)}/"):  # unfinished (#17.2)
        batch = ScoringRecord.from_dict(record.value)
        status = batch.status
        quiet = not deps.settings.completion_marker and batch.quiet(now, deps.settings.quiet_seconds)
        if quiet and complete_batch(deps, record.key, batch.path, now, event_id=f"tracker:{int(now)}",
                                    kind=ScoringRecord, purpose="scoring"):
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
    latest = latest_scoring_batch(deps)  # never every batch ever scored (#17.2)
    if latest is None:
        return Outcome("skipped", "no complete scoring batch to score")
    key = latest.key
    champion = champions.find(deps, deps.settings.model_name)
    if champion is None:
        return Outcome("skipped", f"no champion yet for model {deps.settings.model_name}", {"record": key})
    now = deps.clock()

    def rescore(batch: ScoringRecord | None) -> ScoringRecord | None:
        if batch is None or batch.status not in ("completed", "failed") or batch.model == champion.ref:
            return None
        previous = (*(batch.previous or ()), {"model": batch.model, "job": batch.job, "output": batch.output,
                                              "status": batch.status, "reason": batch.reason})
        return batch.with_status("complete", now, allowed_from=("completed", "failed"),
                                 reason=f"scheduled re-scoring with {champion.ref}", previous=previous)

    deps.state.update(key, as_update(ScoringRecord, rescore))
    return advance(deps, key, champion=champion)
