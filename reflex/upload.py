"""`python -m reflex upload`: put the files of one batch where Reflex picks them up, then its completion marker.

A batch is the folder `<container>/<dataset>/<batch>/` (shared/batches/paths.py). Data arrival trains on a batch once
its marker (`REFLEX_COMPLETION_MARKER`) lands, listing the folder at that moment, so the order matters: every
file first, the marker only after all of them were stored. A failure leaves the marker unwritten, the batch
incomplete (nothing trains on half a batch), and the command says how to finish it: run it again with the same
`--batch`. Re-runs are idempotent: a file whose stored MD5 and size equal the local file's is not uploaded
again (a new upload would be a new blob version, and after completion a "late file" that is never trained on),
and a marker already there is left alone. A batch already complete whose files differ is refused: its manifest
is frozen, new data belongs in a new batch.

Where: the same storage account the app uses (`AzureWebJobsStorage`: Azurite's connection string locally, or
`AzureWebJobsStorage__blobServiceUri` in Azure, reached with `DefaultAzureCredential`, i.e. the operator's
`az login`, who needs Storage Blob Data Contributor on the account). The MD5 is sent as the blob's
`Content-MD5` property (`ContentSettings.content_md5`), which Blob Storage keeps for block uploads too.

Progress: files larger than `BLOCK_BYTES` are uploaded in blocks, and azure-storage-blob calls
`progress_hook(current, total)` after each (`BlobClient.upload_blob`, azure-storage-blob 12.x,
azure/storage/blob/_blob_client.py: "function(current: int, total: Optional[int])").
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.batches.paths import PathProblem, file_problem, parse_blob_path
from shared.core.errors import ReflexError, map_azure_error

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from shared.core.settings import Settings

__all__ = ["BLOCK_BYTES", "BadUpload", "LocalFile", "UploadFailed", "UploadReport", "default_batch_id",
           "plan_files", "upload_batch"]

BLOCK_BYTES = 4 << 20  # larger files go up in 4 MiB blocks, with progress after each
_READ = 1 << 20


class BadUpload(ValueError):
    """The command line names something that cannot be uploaded as a batch (the message says what and why)."""


class UploadFailed(ReflexError):
    """Storage refused a file; the marker was not written. `report` holds what did get stored."""

    def __init__(self, message: str, report: UploadReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class LocalFile:
    """One local file and the name it gets inside the batch folder."""

    path: Path
    name: str
    size: int


@dataclass
class UploadReport:
    container: str
    dataset: str
    batch: str
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    marker: str = ""              # blob name of the marker, "" when none is configured
    marker_status: str = ""       # "written" | "already there" | "not written" | "" (none configured)
    completes: str = ""

    @property
    def prefix(self) -> str:
        return f"{self.dataset}/{self.batch}/"

    def to_dict(self) -> dict[str, Any]:
        return {"container": self.container, "dataset": self.dataset, "batch": self.batch,
                "folder": f"{self.container}/{self.prefix}", "uploaded": self.uploaded,
                "unchanged": self.unchanged, "ignored": self.ignored, "marker": self.marker or None,
                "marker_status": self.marker_status or None, "completes": self.completes}


def default_batch_id(now: float) -> str:
    """A batch id that sorts by time and differs between two runs: UTC time to the millisecond.

    Safe as a folder name and as an Azure ML data asset version (shared/batches/paths.py), e.g. 20260314T101502417Z.
    """
    moment = datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


def plan_files(paths: Sequence[str], marker: str) -> tuple[list[LocalFile], list[str]]:
    """The files to upload (name inside the batch) and the ones skipped with the reason.

    A file named on the command line must be usable data (else `BadUpload`); a directory contributes every
    file below it, keeping sub-folders, and skips hidden files and non-data files with the reason.
    """
    files: list[LocalFile] = []
    ignored: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = _walk(path, marker, ignored)
            if not found:
                raise BadUpload(f"{raw}: the directory holds no data file (expected .csv, .parquet, .json or .jsonl"
                                f"{'; skipped: ' + '; '.join(ignored) if ignored else ''})")
            files += found
        elif path.is_file():
            problem = file_problem(path.name, path.stat().st_size)
            if problem or path.name == marker:
                raise BadUpload(f"{raw}: {problem.split(': ', 1)[-1] if problem else 'this is the marker name'}; "
                                "data arrival would not train on it")
            files.append(LocalFile(path, path.name, path.stat().st_size))
        elif path.exists():
            raise BadUpload(f"{raw}: not a regular file or directory")
        else:
            raise BadUpload(f"{raw}: no such file or directory")
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen and seen[f.name] != f.path:
            raise BadUpload(f"{seen[f.name]} and {f.path} would both be {f.name} in the batch: rename one, or "
                            "upload their directory")
        seen[f.name] = f.path
    unique = {f.name: f for f in files}
    return [unique[name] for name in sorted(unique)], ignored


def _walk(root: Path, marker: str, ignored: list[str]) -> list[LocalFile]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            size = path.stat().st_size
            problem = "the completion marker is written by the command" if name == marker else file_problem(rel, size)
            if problem:
                ignored.append(problem if problem.startswith(rel) else f"{rel}: {problem}")
            else:
                found.append(LocalFile(path, rel, size))
    return found


def _md5(path: Path) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_READ), b""):
            digest.update(chunk)
    return digest.digest()


def _stored(container: ContainerClient, prefix: str) -> dict[str, Any]:
    """What the batch folder holds now: blob name (inside the batch) -> properties, one paged list call."""
    try:
        return {b.name[len(prefix):]: b for b in container.list_blobs(name_starts_with=prefix)}
    except Exception as exc:
        from azure.core.exceptions import ResourceNotFoundError

        if isinstance(exc, ResourceNotFoundError):
            account = container.url.rsplit("/", 1)[0]
            raise BadUpload(f"container {container.container_name!r} does not exist in {account}: check the "
                            "container setting (or start the local stack, which creates it)") from exc
        raise map_azure_error(exc, f"listing {container.container_name}/{prefix}") from exc


def _same(stored: Any, size: int, md5: bytes) -> bool:
    settings = getattr(stored, "content_settings", None)
    return stored.size == size and settings is not None and bytes(settings.content_md5 or b"") == md5


Progress = Callable[[str, int, int], None]


def upload_batch(settings: Settings, files: Iterable[LocalFile], *, dataset: str, batch: str, scoring: bool,
                 say: Callable[[str], None], progress: Progress | None = None) -> UploadReport:
    """Upload `files` into `<container>/<dataset>/<batch>/`, then the marker; what was done.

    Raises:
        BadUpload: dataset or batch unsafe as a folder name; the container is missing; the batch is already
            complete and a file differs.
        UploadFailed: storage refused a file (the marker is not written); `report` says what is stored.
    """
    from azure.storage.blob import ContentSettings

    from shared.adapters.storage import blob_service

    container_name = settings.scoring_container if scoring else settings.data_container
    try:
        parse_blob_path(container_name, f"{dataset}/{batch}/x.csv")
    except PathProblem as exc:
        raise BadUpload(str(exc).replace("folder", "name", 1)) from exc
    marker = settings.completion_marker
    report = UploadReport(container_name, dataset, batch, marker=marker)
    container = blob_service(settings, block_bytes=BLOCK_BYTES).get_container_client(container_name)
    stored = _stored(container, report.prefix)
    wanted = list(files)
    digests = {f.name: _md5(f.path) for f in wanted}
    changed = [f for f in wanted if f.name not in stored or not _same(stored[f.name], f.size, digests[f.name])]
    if marker and marker in stored and changed:
        raise BadUpload(f"batch {container_name}/{report.prefix} is already complete (its {marker} is there) and "
                        f"{', '.join(f.name for f in changed)} differ(s) from what it holds: a complete batch is "
                        "never trained again on new files; upload them as a new batch (another --batch, or none)")
    report.unchanged = [f.name for f in wanted if f not in changed]
    for f in changed:
        hook = None if progress is None or f.size <= BLOCK_BYTES else (
            lambda current, total, name=f.name, size=f.size: progress(name, current, total or size))
        kind = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        try:
            with f.path.open("rb") as data:
                container.get_blob_client(report.prefix + f.name).upload_blob(
                    data, length=f.size, overwrite=True, max_concurrency=2, progress_hook=hook,
                    content_settings=ContentSettings(content_type=kind, content_md5=bytearray(digests[f.name])))
        except Exception as exc:
            report.marker_status = "not written" if marker else ""
            error = map_azure_error(exc, f"uploading {f.name}") if not isinstance(exc, OSError) else exc
            raise UploadFailed(f"{error}; {len(report.uploaded)} of {len(changed)} changed file(s) stored, the "
                               f"marker was not written, so the batch is not complete: run the same command with "
                               f"--batch {batch} to finish it (stored files are not uploaded again)", report) from exc
        report.uploaded.append(f.name)
        say(f"  uploaded {f.name} ({_size(f.size)})")
    if not marker:
        report.completes = (f"REFLEX_COMPLETION_MARKER is empty: the batch completes once no new blob arrived in it "
                            f"for REFLEX_QUIET_SECONDS ({settings.quiet_seconds} s)")
        return report
    report.marker_status = _write_marker(container, report.prefix + marker)
    report.completes = f"{marker} {report.marker_status}: the batch is complete"
    return report


def _write_marker(container: ContainerClient, name: str) -> str:
    from azure.core.exceptions import ResourceExistsError

    try:
        container.get_blob_client(name).upload_blob(b"", overwrite=False)
    except ResourceExistsError:
        return "already there"
    except Exception as exc:
        raise map_azure_error(exc, f"writing the marker {name}") from exc
    return "written"


def _size(n: int) -> str:
    """1.5 MiB, 812 bytes: how a person reads a file size."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"
