"""Freezing a batch: a server-side copy of exactly the blob versions its manifest recorded, into a folder only
Reflex writes, which is what the data asset (and the AutoML MLTable) points at (#18.4).

Why a copy, and not the live folder with an ETag check or blob version ids: Azure ML reads a data asset's path
when the job runs, maybe hours after submission, and has no way to pin an ETag or a blob version id on a
`uri_folder`/`mltable` input. Its docs say so plainly: "Azure ML data assets are references to file(s) in your
storage services or public URLs along with any corresponding metadata. They are not copies of your data"
(az ml data, https://learn.microsoft.com/cli/azure/ml/data), and a data asset "resembles web browser bookmarks"
(how-to-create-register-datasets). So a file overwritten or added after completion used to reach the job, while
the record said it was "not trained on" and `explain` named blobs that were not what trained (#18). A frozen
copy cannot change: only the version recorded is copied, and nothing rewrites it afterwards.

Where: `<container>/.reflex-frozen/<dataset>/<batch>/<manifest digest, 16 hex>/<file>` in the batch's own
container, so the datastore registered on that container addresses it
(`azureml://datastores/<datastore>/paths/.reflex-frozen/…/`) and the job's identity already reads it. Arrival
never takes it for a new batch: `parse_blob_path` refuses a `.reflex-frozen` dataset folder with that reason
(shared/batches/paths.py), and the copies' own BlobCreated events (api CopyBlob) end there as skips. The digest
in the path keeps two manifests of one batch name apart (a batch re-uploaded after its record was removed).

How (Copy Blob, https://learn.microsoft.com/rest/api/storageservices/copy-blob; azure-storage-blob 12.31.1
`BlobClient.start_copy_from_url`, keyword names from azure/storage/blob/_serialize.py `get_source_conditions`
and `get_modify_conditions`):

* `source_etag=<recorded ETag>, source_match_condition=IfNotModified` -> `x-ms-source-if-match`: only the
  recorded version is copied. A source changed since it was recorded answers 412 SourceConditionNotMet
  (ConditionNotMet on Azurite), one deleted 404 BlobNotFound: that version is gone (see "lost" below). A source
  the service could not read answers CannotVerifyCopySource with the source's own status: 404 / 412 are the same
  two cases, 401 / 403 a missing role, 500 "could not verify the copy source within the specified time" (retried);
* `match_condition=IfMissing` -> `If-None-Match: *` on the destination: a copy is never overwritten; a re-run
  finds it (409 BlobAlreadyExists; 412 TargetConditionNotMet, the service's answer to a destination condition)
  and checks it instead;
* 5xx (500 InternalError, 503 ServerBusy) after the SDK's own retries: `TransientError`, the next pass copies it;
  403 AuthorizationPermissionMismatch: `PermanentError` naming the roles the identity needs;
* `metadata={"reflexsourceetag": <recorded ETag>}`: each copy says which version it is, so a re-run (a
  redelivery, the sweep after a crash) verifies what exists from one listing of the frozen folder
  (`include=["metadata", "copy"]`) and copies only what is missing: no cursor to lose, no work done twice.
* Within one account the copy "can complete synchronously" and the source may be authorized with Microsoft
  Entra ID or the account key (MicrosoftDocs/azure-docs articles/storage/blobs/storage-blob-copy-async-python.md);
  `copy_status` is `success` or `pending`. A pending copy is checked again by the next pass (its listing shows
  `copy.status`: `success` is frozen, `failed` / `aborted` lost with the service's CopyStatusDescription); the
  service fails a copy whose source ETag changes before it finishes (same article), which lands here as lost too.
  A copy it failed for a fault of its own (the description opens with a 5xx, 408 or 429) is deleted (If-Match its
  ETag) and made again: the source condition still binds the new copy to the recorded version.
  Azurite never answers `pending` (it completes every copy), so that path is held to the recorded answers.

The answers above are the service's own (tests/fixtures/storage/, from the SDKs' recordings against Azure and the
REST docs; tests/test_freeze_contract.py replays them through azure-storage-blob).

Bounded work: Event Grid waits 30 s for a delivery, so one pass copies in parallel for at most
`BUDGET_SECONDS` (always at least one round, so every pass makes progress), then the batch waits as `freezing`
and the arrival sweep (or the scoring tracker) runs the next pass (shared/batches/training.py `start_batch`).

Lost versions: a recorded version that is gone before its copy (or whose copy failed) cannot be trained on as
recorded, and training another version would be the very bug this fixes. The batch fails permanently with the
file named and what to do ("upload it as a new batch folder"), visible in `status`, `explain` and the ledger.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.batches import manifest
from shared.batches.mltable import MLTABLE
from shared.batches.paths import FROZEN_ROOT
from shared.core.errors import PermanentError, map_azure_error, safe_text

if TYPE_CHECKING:
    from shared.batches.record import BatchRecord
    from shared.core.deps import Deps
    from shared.core.settings import Settings

__all__ = ["BUDGET_SECONDS", "FROZEN_ROOT", "PARALLEL", "SOURCE_ETAG", "STARTED_SUFFIX", "Progress", "advance",
           "frozen_blobs", "frozen_folder", "frozen_path", "job_blobs", "reads_frozen"]

log = logging.getLogger("reflex.freeze")

BUDGET_SECONDS = 12.0  # of one pass: well inside Event Grid's 30 s, with the submission after it
PARALLEL = 16          # copies in flight per round (server-side: each is one small request)
STARTED_SUFFIX = ".started"  # after a stored manifest's key: how many of its copies were started (`advance`)
SOURCE_ETAG = "reflexsourceetag"  # metadata on each copy: the ETag of the version it copied
# Copy Blob's answers, as tests/fixtures/storage/copy_blob.json holds them (the service's recordings):
_TARGET_EXISTS = {"BlobAlreadyExists", "TargetConditionNotMet"}  # 409 / 412: If-None-Match: * found a copy
_SERVICE_FAULT = re.compile(r"(5\d\d|408|429)\b")  # a failed copy's CopyStatusDescription opening with these
_ROLES = ("Storage Blob Data Reader on container {container} (to read the recorded version) and Storage Blob Data "
          f"Contributor there, limited to {FROZEN_ROOT}/ (to write the copy), as infra/app/rbac.bicep assigns them")


def frozen_folder(batch: BatchRecord) -> str:
    """The frozen folder of the batch's manifest inside its container, ending with '/'. Named by the digest the
    summary holds (`BatchRecord.digest`), so naming it never reads the stored manifest."""
    return f"{FROZEN_ROOT}/{batch.dataset}/{batch.batch}/{batch.digest[:16]}/"


def frozen_path(datastore: str, batch: BatchRecord) -> str:
    """The frozen folder as the datastore URI a data asset or a batch job input takes."""
    return f"azureml://datastores/{datastore}/paths/{frozen_folder(batch)}"


def frozen_blobs(deps: Deps, batch: BatchRecord, container_url: str) -> list[dict[str, str]]:
    """What a job on the frozen folder reads, one entry per manifest file: the copy's URL, the source's URL and
    the source version's ETag (what `explain` shows as trained)."""
    from urllib.parse import quote

    base, folder = container_url.rstrip("/"), frozen_folder(batch)
    return [{"file": name, "frozen": f"{base}/{quote(folder + name)}", "source": str(entry.get("url", "")),
             "source_etag": str(entry.get("etag", ""))}
            for name, entry in sorted(manifest.load(deps, batch).files.items())]


def reads_frozen(settings: Settings, batch: BatchRecord) -> bool:
    """Whether the batch's job was submitted on its frozen copy (a batch from before freezing read the live
    folder; one not submitted yet read nothing)."""
    from shared.batches.record import ScoringRecord

    if isinstance(batch, ScoringRecord):
        read, datastore = batch.input, settings.scoring_datastore
    else:
        read, datastore = (batch.data.path if batch.data else None), settings.data_datastore
    return batch.submitted_at is not None and read == frozen_path(datastore, batch)


def job_blobs(deps: Deps, batch: BatchRecord) -> list[tuple[str, str]]:
    """(container, blob name) of each file the batch's job read, in file order: the frozen copies once its job
    was submitted on them (so a drift baseline or a smoke row comes from exactly what trained or scored), else
    the recorded files in the live folder (a batch from before freezing, or one not submitted yet)."""
    folder = frozen_folder(batch) if reads_frozen(deps.settings, batch) else batch.folder
    return [(batch.container, folder + name) for name in sorted(manifest.load(deps, batch).files)]


@dataclass(frozen=True)
class Progress:
    """Where freezing a batch stands after a pass."""

    folder: str
    total: int
    frozen: int = 0
    pending: int = 0
    lost: Mapping[str, str] = field(default_factory=dict)  # file -> why its recorded version cannot be copied
    copied: int = 0  # copies this pass started

    @property
    def done(self) -> bool:
        return not self.lost and self.frozen == self.total

    @property
    def reason(self) -> str:
        """What an operator reads in `status` and the ledger."""
        if self.lost:
            first = sorted(self.lost)[:3]
            more = f" (and {len(self.lost) - 3} more)" if len(self.lost) > 3 else ""
            return ("the recorded version of " + "; ".join(f"{f}: {self.lost[f]}" for f in first) + more +
                    ": this batch cannot be trained on what it recorded; upload the data as a new batch folder")
        if self.done:
            return f"frozen: {self.total} file(s) in {self.folder}"
        waiting = f", {self.pending} copy(ies) still pending" if self.pending else ""
        return (f"freezing: {self.frozen} of {self.total} file(s) copied into {self.folder}{waiting}; the next "
                "pass (sweep or tracker) continues")


def _existing(container: Any, folder: str) -> dict[str, Any]:
    """The frozen folder as storage holds it now (one paged listing): file -> blob properties."""
    try:
        return {b.name[len(folder):]: b for b in container.list_blobs(name_starts_with=folder,
                                                                      include=["metadata", "copy"])}
    except Exception as exc:
        raise map_azure_error(exc, f"listing {container.container_name}/{folder}",
                              role=_ROLES.format(container=container.container_name)) from exc


def _properties(container: Any, name: str) -> Any:
    """The properties of the copy a Copy Blob found in place (metadata and copy status, as a listing has them)."""
    try:
        return container.get_blob_client(name).get_blob_properties()
    except Exception as exc:
        raise map_azure_error(exc, f"reading {container.container_name}/{name}",
                              role=_ROLES.format(container=container.container_name)) from exc


def _check(found: Any, etag: str) -> tuple[str, str]:
    """(state, why) of an existing copy: frozen | pending | lost | retry (a copy the service failed for a reason
    of its own: a 5xx, 408 or 429 leading its CopyStatusDescription, `<status> <code> "<message>"` as the service
    writes it (tests/fixtures/storage/list_blobs_copy.json `failed_description`); the source may be intact)."""
    source = (found.metadata or {}).get(SOURCE_ETAG, "")
    if source != etag:
        raise PermanentError(f"frozen copy {found.name} holds version {source or '?'} of its source, not the "
                             f"recorded {etag}: something other than Reflex wrote into {FROZEN_ROOT}/")
    status = str(getattr(found.copy, "status", "") or "success")  # no copy properties: a completed copy
    if status == "success":
        return "frozen", ""
    if status == "pending":
        return "pending", ""
    why = getattr(found.copy, "status_description", "") or status
    if status == "failed" and _SERVICE_FAULT.match(why):
        return "retry", f"its copy failed ({why})"
    return "lost", f"its copy {status} ({why}): the source changed or vanished while it was copied"


def _discard(container: Any, found: Any) -> None:
    """Delete a copy the service failed (only that very blob: If-Match its ETag), so that Copy Blob, still bound to
    the recorded version by x-ms-source-if-match, makes it again. Gone or replaced meanwhile: nothing to do, the
    copy that follows finds out (If-None-Match: *)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    try:
        container.get_blob_client(found.name).delete_blob(etag=found.etag,
                                                          match_condition=MatchConditions.IfNotModified)
    except (ResourceNotFoundError, ResourceModifiedError):
        return
    except Exception as exc:
        raise map_azure_error(exc, f"deleting the failed copy {container.container_name}/{found.name}",
                              role=_ROLES.format(container=container.container_name)) from exc


def _copy(container: Any, folder: str, file: str, entry: Mapping[str, Any]) -> tuple[str, str]:
    """Start the copy of the recorded version of `file`: (state, why), state frozen | pending | lost | exists.

    Raises:
        TransientError: storage did not answer, or answered 5xx (the next pass copies it).
        PermanentError: the identity may not read the source or write the copy (the message names the roles).
    """
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError

    etag = str(entry.get("etag", ""))
    target = container.get_blob_client(folder + file)
    try:
        result = target.start_copy_from_url(
            str(entry["url"]), metadata={SOURCE_ETAG: etag}, source_etag=etag,
            source_match_condition=MatchConditions.IfNotModified, match_condition=MatchConditions.IfMissing)
    except HttpResponseError as exc:
        raw = getattr(exc, "error_code", None)  # set by azure-storage-blob's error handler (StorageErrorCode)
        code, status = str(getattr(raw, "value", raw) or ""), exc.status_code or 0
        if code in _TARGET_EXISTS or status == 409:  # 409 PendingCopyOperation too: an earlier copy, in flight
            return "exists", ""  # a copy from an earlier pass (If-None-Match: *): checked by the caller
        if status in (404, 412):  # the recorded version is gone (also CannotVerifyCopySource with 404 / 412)
            what = "deleted" if status == 404 else "changed"
            return "lost", f"{what} since it was recorded (etag {etag}; Copy Blob answered {status} {code})"
        # 5xx (CannotVerifyCopySource 500 too) -> TransientError; 401 / 403 -> PermanentError naming the roles
        raise map_azure_error(exc, f"copying {entry.get('url')} to {container.container_name}/{folder}{file}",
                              role=_ROLES.format(container=container.container_name)) from exc
    except Exception as exc:
        raise map_azure_error(exc, f"copying {entry.get('url')}") from exc
    # 202 with x-ms-copy-status success (done in the request) or pending (tests/fixtures/storage/copy_blob.json)
    return ("frozen" if str(result.get("copy_status") or "") == "success" else "pending"), ""


def _started_key(batch: BatchRecord) -> str | None:
    """The state key counting how many of the batch's files (in name order) had their copy started, beside its
    stored manifest (so retention purges it with the manifest: shared/batches/retention.py); None for a record
    from before #17, which holds its manifest itself (every pass then lists, as before)."""
    return f"{batch.manifest.key}{STARTED_SUFFIX}" if batch.manifest is not None else None


def _started(deps: Deps, key: str | None, names: list[str]) -> list[str]:
    """The files whose copy no earlier pass started, in name order (all of them for a legacy record: every pass
    then lists, as before)."""
    if key is None:
        return []
    found = deps.state.get(key)
    value = found.value if found is not None else {}
    also = set(value.get("also", ()))
    return [n for n in names[int(value.get("started", 0)):] if n not in also]


def _note_started(deps: Deps, key: str | None, names: list[str], answered: Mapping[str, str]) -> None:
    """Remember which copies were started: a count of the names (in order) all started, and the few started
    beyond it (a round interrupted by an error answers some of its files). Never backwards: a slower concurrent
    pass may finish after a faster one."""
    if key is None or not answered:
        return

    def change(value: dict[str, Any] | None) -> dict[str, Any] | None:
        done = set((value or {}).get("also", ())) | set(answered)
        count = int((value or {}).get("started", 0))
        while count < len(names) and names[count] in done:
            count += 1
        also = sorted(n for n in done if n > names[count - 1]) if count else sorted(done)
        new = {"started": count, "also": also}
        return None if value == new else new

    deps.state.update(key, change)


def _rounds(pool: ThreadPoolExecutor, container: Any, folder: str, files: Mapping[str, Mapping[str, Any]],
            names: list[str], deadline: float, clock: Callable[[], float], states: dict[str, str]) -> dict[str, str]:
    """Copy `names` in rounds of PARALLEL * 4 until done, one is lost or the deadline passes (at least one
    round), filling `states` (file -> frozen | pending | lost) as answers come, also when a copy raises (the
    round's other answers are kept, then the first error is raised): why each lost one is."""
    lost: dict[str, str] = {}
    size = PARALLEL * 4
    while names and not lost:
        round_, names = names[:size], names[size:]
        futures = [pool.submit(_copy, container, folder, f, files[f]) for f in round_]
        error: BaseException | None = None
        for name, future in zip(round_, futures, strict=True):
            try:
                state, why = future.result()
                if state == "exists":
                    state, why = _check(_properties(container, folder + name), str(files[name].get("etag", "")))
                    if state == "retry":  # failed again meanwhile (a concurrent pass): the next pass copies it
                        state, why = "pending", ""
            except Exception as exc:  # raised below, once the round's other answers are kept
                error = error or exc
                continue
            states[name] = state
            if state == "lost":
                lost[name] = why
        if error is not None:
            raise error
        if clock() >= deadline:
            break
    return lost


def advance(deps: Deps, batch: BatchRecord, *, budget_seconds: float | None = None,
            clock: Callable[[], float] = time.monotonic) -> Progress:
    """One bounded pass of freezing `batch` (see the module docstring): start the copies not started yet, in name
    order, for at most `budget_seconds` (at least one round); once every copy is started, list the frozen folder
    and check each copy (copying again what is missing or failed by the service), and report where it stands.
    Idempotent: any number of passes, concurrent or after a crash, end in the same frozen folder.

    Why copies are started from a count and not from a listing each pass (#17: a pass costs what is left, not
    the batch's size): listing a frozen folder of 10,000 copies took 19.6 s on Azurite, more than a pass's budget,
    so each pass copied one round (64 files) and 10,000 files took about 150 passes. The count is written after
    each pass's copies; a crash before it only starts copies again, which answer "exists" and are checked.

    Raises:
        TransientError: storage did not answer (the next pass resumes).
        PermanentError: the frozen folder holds a copy of another version (written by something else).
    """
    deadline = clock() + (BUDGET_SECONDS if budget_seconds is None else budget_seconds)
    files = manifest.load(deps, batch).files
    folder = frozen_folder(batch)
    container = deps.blobs.get_container_client(batch.container)
    names = sorted(files)
    key = _started_key(batch)
    todo = _started(deps, key, names)
    with ThreadPoolExecutor(PARALLEL) as pool:
        if todo:
            answered: dict[str, str] = {}
            try:
                lost = _rounds(pool, container, folder, files, todo, deadline, clock, answered)
            except BaseException:
                # the copy's error is the one to report: a count that could not be stored as well only means
                # the next pass starts those copies again (each is conditional: "exists", checked)
                try:
                    _note_started(deps, key, names, answered)
                except Exception as exc:
                    log.warning("could not store which copies were started (%s): the next pass starts them "
                                "again", safe_text(exc))
                raise
            _note_started(deps, key, names, answered)
            if lost or len(answered) < len(todo):
                pending = list(answered.values()).count("pending")
                started = len(names) - len(todo) + len(answered)
                return Progress(folder, len(files), frozen=started - pending, pending=pending, lost=lost,
                                copied=len(answered))
        return _verify(pool, container, folder, files, deadline, clock)


def _verify(pool: ThreadPoolExecutor, container: Any, folder: str,
            files: Mapping[str, Mapping[str, Any]], deadline: float, clock: Callable[[], float]) -> Progress:
    """Every copy started: the frozen folder as one listing shows it, each copy checked against its recorded
    version, what is missing (or failed by the service) copied again."""
    existing = _existing(container, folder)
    strangers = sorted(set(existing) - set(files) - {MLTABLE})
    if strangers:  # the job reads the whole folder: anything else in it would be trained on
        raise PermanentError(f"frozen folder {container.container_name}/{folder} holds {', '.join(strangers[:3])}, "
                             f"which the manifest does not list: something other than Reflex wrote into "
                             f"{FROZEN_ROOT}/")
    states: dict[str, str] = {}
    lost: dict[str, str] = {}
    missing: list[str] = []
    for name in sorted(files):
        found = existing.get(name)
        if found is None:
            missing.append(name)
            continue
        state, why = _check(found, str(files[name].get("etag", "")))
        if state == "retry":  # the service failed it, not the source: copy it again in this pass
            _discard(container, found)
            missing.append(name)
            continue
        states[name] = state
        if why:
            lost[name] = why
    again: dict[str, str] = {}
    if missing and not lost:
        lost = _rounds(pool, container, folder, files, missing, deadline, clock, again)
        states.update(again)
    copied = len(again)
    counts = list(states.values())
    return Progress(folder, len(files), frozen=counts.count("frozen"), pending=counts.count("pending"),
                    lost=lost, copied=copied)
