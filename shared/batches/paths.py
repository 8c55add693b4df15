"""Pure rules of a data batch: where a blob belongs, whether it is usable data, and the Azure ML names it gets.

Why a separate module: the arrival flow must give one training job per completed batch whatever the order and
number of deliveries, which means every name it creates is a function of the batch alone, never of the
delivery. These functions hold those decisions without I/O, so they are exhaustively tested (and fuzzed).

Layout: a dataset is a folder, `<container>/<dataset>/<batch>/<file…>`; files may sit in sub-folders of the
batch. The completion marker (`_SUCCESS` by default) sits directly in the batch folder and is not data.

Names (Azure ML rejects many characters blob names allow):

* data asset name = the dataset, if it is AML-safe (letters, digits, `-`, `_`), else the dataset mapped to
  safe characters plus a hash suffix (`sales 2024` -> `sales-2024-1a2b3c4d`): deterministic, and two
  datasets that map alike still differ;
* data asset version = the batch name if AML-safe as a version, else `b-<hash>` of the batch name;
* job name = `reflex-train-<hash(container/dataset/batch + manifest digest)>`, lower case as Azure ML needs.

Path segments themselves (dataset, batch) must be plain enough to sit in an `azureml://datastores/…` URI
unescaped; others are rejected with the reason rather than guessed at.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.batches.formats import Purpose, format_problem, name_problem

__all__ = [
    "FROZEN_ROOT", "FROZEN_SUFFIX", "BatchPath", "PathProblem", "asset_path", "data_asset_name", "data_asset_version",
    "file_problem", "job_name", "manifest_digest", "parse_blob_path",
]

# Reflex's frozen copies of batches (shared/batches/freeze.py): `<FROZEN_ROOT>/<dataset>/<batch>/<16 hex>/<file>`
# in the batch's own container. Never a dataset: `parse_blob_path` refuses it with this reason.
FROZEN_ROOT = ".reflex-frozen"
FROZEN_SUFFIX = 17  # the digest folder ("<16 hex>/") a frozen copy's name adds after `<dataset>/<batch>/`
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")
_AML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$")
_AML_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,29}$")


class PathProblem(ValueError):
    """The blob cannot belong to a batch; the message is the reason recorded in the outcome."""


@dataclass(frozen=True)
class BatchPath:
    """Where one blob sits: its batch and its path inside the batch folder."""

    container: str
    dataset: str
    batch: str
    file: str

    @property
    def batch_id(self) -> str:
        return f"{self.container}/{self.dataset}/{self.batch}"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def parse_blob_path(container: str, blob_name: str) -> BatchPath:
    """Split `<dataset>/<batch>/<file…>` inside `container`.

    Raises:
        PathProblem: the blob is at the container root, has no batch folder, or a segment is unsafe.

    Examples:
        >>> parse_blob_path("reflex-data", "sales/2024-06-01/part-0.csv").batch
        '2024-06-01'
    """
    parts = blob_name.split("/")
    if len(parts) < 3:
        where = "at the container root" if len(parts) == 1 else "directly in a dataset folder, not in a batch"
        raise PathProblem(f"blob {blob_name!r} is {where}: expected <dataset>/<batch>/<file>")
    dataset, batch, rest = parts[0], parts[1], parts[2:]
    if dataset == FROZEN_ROOT:
        raise PathProblem(f"blob {blob_name!r} is Reflex's frozen copy of a batch's file (what its training reads, "
                          "shared/batches/freeze.py), not new data")
    for kind, value in (("dataset", dataset), ("batch", batch)):
        if not _SEGMENT.fullmatch(value):
            raise PathProblem(f"{kind} folder {value!r} has characters unsafe in an Azure ML path (allowed: letters, "
                              "digits, . _ = + - ; at most 128, starting with a letter or digit)")
    if any(not p for p in rest):
        raise PathProblem(f"blob {blob_name!r} has an empty path segment")
    return BatchPath(container, dataset, batch, "/".join(rest))


def file_problem(file: str, size: int | None, *, purpose: Purpose = "training", folder: str = "") -> str:
    """Why a file of a batch is not usable data ("" when it is): hidden, a name the job cannot open, a format
    the `purpose` job does not read (shared/batches/formats.py), or zero bytes. `folder` is `<dataset>/<batch>/`,
    so the limits apply to the whole blob name."""
    if any(part.startswith((".", "_")) for part in file.split("/")):  # as train.py skips them (`_temporary/…`)
        return f"{file}: hidden or underscore file or folder, not data"
    problem = name_problem(folder + file) or _frozen_name_problem(folder, file)
    if problem:
        return f"{file if len(file) <= 80 else file[:60] + '…'}: {problem}"
    problem = format_problem(file, purpose)
    if problem:
        return problem
    if size == 0:
        return f"{file}: zero bytes"
    return ""


def _frozen_name_problem(folder: str, file: str) -> str:
    """Why the frozen copy of `file` could not be named ("" when it can): the job reads that copy, whose name is
    longer by `FROZEN_ROOT/` and the digest folder (shared/batches/freeze.py), so the limits apply to it too."""
    if not folder:
        return ""
    problem = name_problem(f"{FROZEN_ROOT}/{folder}{'0' * (FROZEN_SUFFIX - 1)}/{file}")
    extra = len(FROZEN_ROOT) + 1 + FROZEN_SUFFIX
    return f"{problem} once copied for training (Reflex's frozen copy adds {extra} characters: shorten the name)" \
        if problem else ""


def data_asset_name(dataset: str) -> str:
    """The Azure ML data asset name of a dataset: itself when safe, else a safe form with a hash suffix."""
    if _AML_NAME.fullmatch(dataset):
        return dataset
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", dataset).strip("-_")[:150] or "dataset"
    return f"{safe}-{_digest(dataset, 8)}"


def data_asset_version(batch: str) -> str:
    """The data asset version of a batch: the batch name when AML-safe as a version, else `b-<hash>`."""
    return batch if _AML_VERSION.fullmatch(batch) else f"b-{_digest(batch, 16)}"


def asset_path(datastore: str, dataset: str, batch: str) -> str:
    """The batch folder as an Azure ML datastore URI (the data container is registered as `datastore`)."""
    return f"azureml://datastores/{datastore}/paths/{dataset}/{batch}/"


def manifest_digest(files: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, str]]) -> str:
    """A digest of (file, etag) pairs, independent of order: the frozen content of a completed batch."""
    pairs = ([(name, str(entry.get("etag", ""))) for name, entry in files.items()]
             if isinstance(files, Mapping) else list(files))
    text = "\n".join(f"{name}\t{etag}" for name, etag in sorted(pairs))
    return hashlib.sha256(text.encode()).hexdigest()


def job_name(batch_id: str, digest: str) -> str:
    """The training job's name: lower case, derived from the batch and its manifest only."""
    return f"reflex-train-{_digest(f'{batch_id}|{digest}', 24)}"
