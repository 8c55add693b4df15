"""Drift timer: the champion's baseline profile against recent inference data, once per window.

Why this shape (the arithmetic is shared/monitoring/drift.py; this module only finds and streams the data):

* Baseline. Training does not have to do anything: the first drift check after a champion appears builds its
  profile by streaming the champion's training batch (lineage: the training job's `reflex.batch` tag -> the
  arrival record's frozen manifest in the data container; else its `reflex.data` tag -> the data asset's
  `azureml://datastores/<data datastore>/paths/<dataset>/<batch>/` folder) through `ProfileBuilder`, label
  column excluded, and stores it next to the outputs as `baselines/<model>/<version>.json` in
  REFLEX_OUTPUT_CONTAINER (create-if-absent: two racing timers keep one). Later checks read that blob.
  A champion without that lineage (a model registered from a notebook) gets its baseline from the first window
  of scoring data instead: the check collects REFLEX_DRIFT_MIN_ROWS rows, stores them as the baseline, and
  compares later windows with it. Where a baseline came from is stored with it (blob metadata
  `reflex_baseline_source` = `training data` | `first scoring window`, plus `reflex_baseline_detail`) and
  reported by every check as `baseline_source` / `baseline_detail`, and in the record `drift/<model>`
  (`shared.monitoring.records.DriftState`, `baseline: {"model", "source", "detail"}`) for `status`.
* Recent data. Scoring batches (records `scoring/...`, see shared/scoring/flow.py) completed since the last
  check, plus, when REFLEX_DATA_COLLECTOR_PATH = `<container>/<prefix>` is set, request-log blobs under it
  modified since then (JSON lines of `{"data": [...]}`). Files stream through shared/batches/tabular.py, a chunk at a
  time: no pandas, bounded memory. The record `drift/<model>` keeps `checked_until`; it advances only after a
  check that had enough rows (REFLEX_DRIFT_MIN_ROWS), so small batches accumulate instead of being lost, but
  only within REFLEX_DRIFT_WINDOW_SECONDS: older data no longer says anything about drift now.
* Findings. An unreadable file is skipped and named in the outcome and the event (the rest is still
  checked); a schema difference names the missing and new columns; too few rows, no champion and no
  baseline lineage are skipped with the reason. Nothing raises out of the timer for bad data.
* Once per window (UTC day, `retrain.window_id`): `claims/drift/<model>/<window>` makes `Reflex.DriftDetected`
  go out once per window, and retraining (REFLEX_DRIFT_RETRAIN) goes through `retrain.request_retrain`,
  whose `retrains/<model>/<window>` record is shared with the scheduled retraining.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from shared.batches import freeze
from shared.batches.record import ArrivalRecord, ScoringRecord
from shared.batches.tabular import UnreadableData, reader_for
from shared.core import champion as champions
from shared.core.errors import PermanentError, ReflexError, map_azure_error
from shared.core.reaction import Outcome
from shared.core.state import key_part
from shared.monitoring import retrain
from shared.monitoring.drift import DriftReport, Profile, ProfileBuilder, compare
from shared.monitoring.records import DriftReported, DriftState

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.platform import ModelVersion

__all__ = ["NoLineage", "SOURCE_SCORING", "SOURCE_TRAINING", "baseline_blob", "check", "ensure_baseline",
           "recent_since", "recent_sources", "training_files"]

log = logging.getLogger("reflex.drift")

Source = tuple[str, str]  # (container, blob name)
SOURCE_TRAINING, SOURCE_SCORING = "training data", "first scoring window"


class NoLineage(PermanentError):
    """The champion's lineage leads to no training batch (e.g. a model registered from a notebook)."""


def baseline_blob(model: str, version: str) -> str:
    return f"baselines/{key_part(model)}/{key_part(version)}.json"


def _container(deps: Deps, name: str) -> Any:
    return deps.blobs.get_container_client(name)


def _list(deps: Deps, container: str, prefix: str) -> list[Any]:
    try:
        return list(_container(deps, container).list_blobs(name_starts_with=prefix))
    except Exception as exc:
        raise map_azure_error(exc, f"listing {container}/{prefix}") from exc


def _rows(deps: Deps, sources: list[Source], unreadable: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    """Rows of every source, streamed chunk by chunk; an unreadable file is noted and skipped."""
    for container, name in sources:
        try:
            reader = reader_for(name)
            downloader = _container(deps, container).get_blob_client(name).download_blob()
            yield from reader(downloader.chunks())
        except UnreadableData as exc:
            unreadable.append({"file": f"{container}/{name}", "reason": str(exc)})
            log.warning("drift: skipped unreadable %s/%s: %s", container, name, exc)
        except ReflexError:
            raise
        except Exception as exc:  # storage errors: transient ones retry on the next tick
            if type(exc).__name__ == "ResourceNotFoundError":
                unreadable.append({"file": f"{container}/{name}", "reason": "deleted before it was read"})
                continue
            raise map_azure_error(exc, f"reading {container}/{name}") from exc


# ------------------------------------------------------------------------------------ baseline


def training_files(deps: Deps, champion: ModelVersion) -> list[Source]:
    """The files of the champion's training batch, from its job's lineage tags.

    Raises:
        PermanentError: no lineage leads to a training batch (the reason names what is missing).
    """
    job = deps.platform.get_job(champion.job_name) if champion.job_name else None
    tags = {**champion.tags, **(job.tags if job else {})}
    batch_key = str(tags.get("reflex.batch", ""))
    record = deps.state.get(batch_key) if batch_key.startswith("arrivals/") else None
    batch = ArrivalRecord.from_dict(record.value) if record is not None else None
    if batch is not None and batch.file_count:
        return freeze.job_blobs(deps, batch)  # the frozen copies it trained on (#18.4)
    data = str(tags.get("reflex.data", ""))
    name, _, version = data.partition(":")
    asset = deps.platform.get_data(name, version) if name and version else None
    prefix = f"azureml://datastores/{deps.settings.data_datastore}/paths/"
    if asset is not None and asset.path.startswith(prefix):
        folder = asset.path[len(prefix):].rstrip("/") + "/"
        marker = deps.settings.completion_marker
        return [(deps.settings.data_container, b.name) for b in _list(deps, deps.settings.data_container, folder)
                if not b.name.rsplit("/", 1)[-1].startswith(("_", ".")) and b.name.rsplit("/", 1)[-1] != marker]
    raise NoLineage(f"champion {champion.ref}: no training batch found through its lineage (job "
                         f"{champion.job_name or '-'}: reflex.batch={batch_key or '-'}, reflex.data={data or '-'})")


def _stored_baseline(deps: Deps, champion: ModelVersion) -> tuple[Profile, dict[str, str]] | None:
    """The champion's stored baseline and where it came from, or None when there is none yet."""
    from azure.core.exceptions import ResourceNotFoundError

    blob = _container(deps, deps.settings.output_container).get_blob_client(
        baseline_blob(champion.name, champion.version))
    try:
        downloader = blob.download_blob()
        metadata = dict(downloader.properties.metadata or {})
        profile = Profile.from_json(downloader.readall())
    except ResourceNotFoundError:
        return None
    except Exception as exc:
        raise map_azure_error(exc, f"baseline of {champion.ref}") from exc
    return profile, {"source": metadata.get("reflex_baseline_source", SOURCE_TRAINING),
                     "detail": metadata.get("reflex_baseline_detail", "")}


def _store_baseline(deps: Deps, champion: ModelVersion, profile: Profile,
                    source: dict[str, str]) -> tuple[Profile, dict[str, str], bool]:
    """Store create-if-absent; (profile, source, stored by us). A racing check's baseline wins for both."""
    from azure.core.exceptions import ResourceExistsError

    container = _container(deps, deps.settings.output_container)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    except Exception as exc:
        raise map_azure_error(exc, f"container {deps.settings.output_container}") from exc
    blob = container.get_blob_client(baseline_blob(champion.name, champion.version))
    metadata = {"reflex_baseline_source": source["source"],
                "reflex_baseline_detail": source["detail"].encode("ascii", "replace").decode()[:1000]}
    try:
        blob.upload_blob(profile.to_json().encode(), overwrite=False, metadata=metadata)
    except ResourceExistsError:  # another check stored it first: use theirs, so both compare alike
        stored = _stored_baseline(deps, champion)
        if stored is not None:
            return stored[0], stored[1], False
    except Exception as exc:
        raise map_azure_error(exc, f"storing the baseline of {champion.ref}") from exc
    return profile, source, True


def ensure_baseline(deps: Deps, champion: ModelVersion) -> tuple[Profile, bool, dict[str, str]]:
    """The champion's stored baseline, built from its training batch on first use: (profile, built now, source).

    Raises:
        NoLineage: no baseline is stored and no lineage leads to a training batch.
    """
    stored = _stored_baseline(deps, champion)
    if stored is not None:
        return stored[0], False, stored[1]
    sources = training_files(deps, champion)
    unreadable: list[dict[str, str]] = []
    builder = ProfileBuilder(label=deps.settings.label_column)
    builder.update(_rows(deps, sources, unreadable))
    profile = builder.finish()
    if profile.rows == 0:
        raise PermanentError(f"champion {champion.ref}: its training batch has no readable rows "
                             f"({len(sources)} files, unreadable: {unreadable})")
    folders = sorted({name.rsplit("/", 1)[0] for _, name in sources})
    source = {"source": SOURCE_TRAINING, "detail": f"{len(sources)} files of {', '.join(folders)}"}
    profile, source, built = _store_baseline(deps, champion, profile, source)
    if built:
        log.info("drift: stored baseline of %s (%d rows, %d files)", champion.ref, profile.rows, len(sources))
    return profile, built, source


def _baseline_from_scoring(deps: Deps, champion: ModelVersion, state_key: str, since: float, now: float,
                           lineage: str) -> Outcome:
    """No lineage: the first window of scoring data with enough rows becomes the champion's baseline."""
    s = deps.settings
    sources, batches = recent_sources(deps, since, now)
    details: dict[str, Any] = {"model": champion.ref, "since": since, "batches": batches, "files": len(sources),
                               "baseline_source": SOURCE_SCORING, "baseline_detail": "", "lineage": lineage}
    why = f"{champion.ref} has no training lineage ({lineage}); its baseline is the first window of scoring data"
    if not sources:
        return Outcome("skipped", f"{why}: waiting for scoring data", details)
    unreadable: list[dict[str, str]] = []
    builder = ProfileBuilder(label=s.label_column)
    builder.update(_rows(deps, sources, unreadable))
    profile = builder.finish()
    details["unreadable"] = unreadable
    if profile.rows < s.drift_min_rows:
        return Outcome("skipped", f"{why}: {profile.rows} of {s.drift_min_rows} rows so far "
                                  f"(REFLEX_DRIFT_MIN_ROWS); the data is kept for the next check", details)
    detail = f"{profile.rows} rows of {len(batches)} scoring batch(es) and logs since {since:.0f}, until {now:.0f}"
    profile, source, built = _store_baseline(deps, champion, profile, {"source": SOURCE_SCORING, "detail": detail})
    details.update(baseline_source=source["source"], baseline_detail=source["detail"], baseline_built=built)
    deps.state.update(state_key, lambda v: DriftState.from_dict(v or {}).but(
        checked_until=now, baseline={"model": champion.ref, **source}).to_dict())
    return Outcome("skipped", f"{why}: built from {profile.rows} rows; later windows are compared with it", details)


# ------------------------------------------------------------------------------------ recent data


def recent_since(checked_until: float | None, now: float, window_seconds: int) -> float:
    """Where the recent data starts: after the last check with enough rows, but never before the window."""
    return max(float(checked_until or 0.0), now - window_seconds)


def recent_sources(deps: Deps, since: float, now: float) -> tuple[list[Source], list[str]]:
    """(files to read, batch ids) of scoring batches completed in (since, now] and collector logs since then."""
    s = deps.settings
    sources: list[Source] = []
    batches: list[str] = []
    prefix = f"scoring/{key_part(s.scoring_container)}/"
    # a batch completed after `since` is unfinished or finished since then: never the whole history (#17.2)
    seen: set[str] = set()
    for record in itertools.chain(deps.state.active(prefix), deps.state.finished_since(prefix, since)):
        if record.key in seen:
            continue
        seen.add(record.key)
        batch = ScoringRecord.from_dict(record.value)
        at = batch.completed_at
        if batch.status == "collecting" or at is None or not since < at <= now or not batch.file_count:
            continue
        batches.append(batch.batch_id)
        sources.extend(freeze.job_blobs(deps, batch))  # what its job scored: the frozen copies once submitted
    if s.data_collector_path:
        container, _, prefix = s.data_collector_path.partition("/")
        for b in _list(deps, container, prefix):
            modified = b.last_modified.timestamp() if b.last_modified else 0.0
            if since < modified <= now and b.size:
                sources.append((container, b.name))
    return sources, batches


# ------------------------------------------------------------------------------------ timers


def check(deps: Deps) -> Outcome:
    """Timer: compare recent inference data with the champion's baseline; publish and retrain once per window."""
    from shared.core.control import read_control

    s = deps.settings
    resumed = retrain.resume_retrains(deps)
    champion = champions.find(deps, s.model_name)
    if champion is None:
        return Outcome("skipped", f"no champion yet for model {s.model_name}: nothing to compare against")
    now = deps.clock()
    state_key = DriftState.key_of(s.model_name)
    found = deps.state.get(state_key)
    stored = DriftState.from_dict(found.value) if found is not None else DriftState()
    since = recent_since(stored.checked_until, now, s.drift_window_seconds)
    try:
        baseline, built, source = ensure_baseline(deps, champion)
    except NoLineage as exc:
        return _baseline_from_scoring(deps, champion, state_key, since, now, str(exc).split(": ", 1)[-1])
    except PermanentError as exc:
        return Outcome("skipped", f"no baseline: {exc}", {"model": champion.ref})
    if stored.baseline.get("model") != champion.ref:
        deps.state.update(state_key, lambda v: DriftState.from_dict(v or {}).but(
            baseline={"model": champion.ref, **source}).to_dict())
    sources, batches = recent_sources(deps, since, now)
    details: dict[str, Any] = {"model": champion.ref, "since": since, "batches": batches, "files": len(sources),
                               "baseline_built": built, "baseline_source": source["source"],
                               "baseline_detail": source["detail"], "resumed_retrains": len(resumed)}
    if not sources:
        return Outcome("skipped", "no new inference data since the last check", details)
    unreadable: list[dict[str, str]] = []
    report = compare(baseline, _rows(deps, sources, unreadable), s.drift_psi_threshold, min_rows=s.drift_min_rows)
    details.update(unreadable=unreadable, report=report.to_dict())
    if report.reason:
        schema = _schema_text(report)
        return Outcome("skipped", f"{report.reason}{schema}; the data is kept for the next check", details)
    window = retrain.window_id(now)
    details["window"] = window
    last = {"at": now, "model": champion.ref, "rows": report.rows, "drifted": list(report.drifted),
            "max_psi": report.max_psi}
    deps.state.update(state_key, lambda v: DriftState.from_dict(v or {}).but(
        checked_until=now, window=window, last=last).to_dict())
    if not (report.drift_detected or report.schema_changed):
        return Outcome("skipped", f"no drift: max PSI {report.max_psi:.3f} <= {s.drift_psi_threshold} over "
                                  f"{report.rows} rows", details)
    summary = (f"drift in {', '.join(report.drifted)}" if report.drift_detected else "no PSI drift") + \
        _schema_text(report)
    if read_control(deps).dry_run:
        return Outcome("dry-run", f"{summary}: would publish DriftDetected"
                                  f"{' and retrain' if s.drift_retrain else ''}", details)
    if deps.state.claim(DriftReported.key_of(s.model_name, window), DriftReported(summary=summary).to_dict()):
        deps.publisher.publish("DriftDetected", champion.ref, {
            "model": champion.ref, "window": window, "threshold": s.drift_psi_threshold, "batches": batches,
            "unreadable": unreadable, "baseline": baseline_blob(champion.name, champion.version),
            **report.to_dict()})
        published = True
    else:
        published = False
    details["published"] = published
    if s.drift_retrain and report.drift_detected:
        outcome = retrain.request_retrain(deps, model=s.model_name, window=window, trigger=f"drift:{window}",
                                          event_id=f"drift:{window}",
                                          evidence={"drifted": list(report.drifted), "max_psi": report.max_psi})
        details["retrain"] = {"status": outcome.status, "reason": outcome.reason, **outcome.details}
    if not published and "retrain" not in details:
        return Outcome("duplicate", f"{summary}: already reported in window {window}", details)
    return Outcome("acted", f"{summary}{'' if published else ' (already reported this window)'}", details)


def _schema_text(report: DriftReport) -> str:
    parts = []
    if report.missing_columns:
        parts.append(f"missing columns: {', '.join(report.missing_columns)}")
    if report.new_columns:
        parts.append(f"new columns: {', '.join(report.new_columns)}")
    return f"; schema differs from the baseline ({'; '.join(parts)})" if parts else ""
