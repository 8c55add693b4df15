"""Which data files Reflex accepts, for training and for batch scoring, and which file names a job can open.

Why one module: a file that arrival accepts must be one the job reads, or the batch trains on less than its
record says (`.json` used to pass arrival and be ignored by the trainer, `.tsv` the reverse). Arrival
(shared/batches/paths.py `file_problem`), the local readers (local/tables.py) and the tests read these tables.
`jobs/train/train.py` cannot import this module (Azure ML uploads only `jobs/train`, and the Functions
package leaves `jobs/` out), so it keeps a copy of `TRAINING_FORMATS` that tests/test_formats.py checks is
equal, and proves by training on one file of every format.

* **Training** reads what `train.py` reads with pandas: CSV (also gzipped), TSV (also gzipped), Parquet;
  extensions case-insensitive, files at any depth of the batch folder.
* **Batch scoring** in Azure ML runs the no-code MLflow batch driver, which reads only `.csv`, `.parquet`
  and `.pqt`, picked by `os.path.splitext` (so case-sensitive), fails the job on any other file, and does
  not descend into sub-folders ("Review support for file types" and "Explore distribution of work" in
  MicrosoftDocs/azure-ai-docs articles/machine-learning/how-to-mlflow-batch.md, commit 365bdad). The local
  batch scorer (local/batch.py) reads the same.
* **Names**: a blob name is at most 1,024 characters and 254 path segments (Azure Storage, "Naming and
  Referencing Containers, Blobs, and Metadata",
  https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata).
  A job opens the files on a Linux file system (Azure ML compute downloads or mounts the folder; the local
  runner downloads it), where one path component is at most 255 bytes (NAME_MAX; `os.pathconf(path,
  "PC_NAME_MAX")`), so a longer folder or file name passes storage and fails the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

__all__ = [
    "MAX_BLOB_NAME", "MAX_SEGMENT_BYTES", "MAX_SEGMENTS", "Purpose", "SCORING_FORMATS", "TRAINING_FORMATS",
    "data_format", "describe", "format_problem", "name_problem",
]

Purpose = Literal["training", "scoring"]

# extension -> how it is read; keep jobs/train/train.py DATA_FORMATS equal (tests/test_formats.py)
TRAINING_FORMATS: Mapping[str, str] = {
    ".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".tsv.gz": "tsv",
    ".parquet": "parquet", ".pq": "parquet", ".pqt": "parquet",
}
# the Azure ML MLflow batch driver's tabular loaders (its image loaders do not fit a tabular model)
SCORING_FORMATS: Mapping[str, str] = {".csv": "csv", ".parquet": "parquet", ".pqt": "parquet"}

MAX_BLOB_NAME = 1024
MAX_SEGMENTS = 254
MAX_SEGMENT_BYTES = 255

_TABLES: Mapping[str, Mapping[str, str]] = {"training": TRAINING_FORMATS, "scoring": SCORING_FORMATS}


def data_format(name: str, purpose: Purpose) -> str | None:
    """How a file is read ("csv", "tsv", "parquet") for `purpose`, by its longest known extension; else None.

    >>> data_format("day=1/part-0.CSV.gz", "training"), data_format("part-0.CSV", "scoring")
    ('csv', None)
    """
    base = name.rsplit("/", 1)[-1]
    if purpose == "training":
        base = base.lower()
    table = _TABLES[purpose]
    matches = [ext for ext in table if base.endswith(ext) and len(base) > len(ext)]
    return table[max(matches, key=len)] if matches else None


def describe(purpose: Purpose) -> str:
    """The accepted extensions as a list for messages, e.g. ".csv, .csv.gz, .tsv, …"."""
    return ", ".join(_TABLES[purpose])


def format_problem(file: str, purpose: Purpose) -> str:
    """Why `file` (a path inside a batch folder) is not data the `purpose` job reads; "" when it is."""
    if purpose == "scoring" and "/" in file:
        return (f"{file}: in a sub-folder; Azure ML batch scoring reads only files directly in the batch folder "
                "(move it up)")
    if data_format(file, purpose) is not None:
        return ""
    if purpose == "scoring" and data_format(file, "training") is not None:
        reason = "not read by Azure ML batch scoring"
        if data_format(file.lower(), "scoring") is not None:
            reason += " (extensions are case-sensitive there: use lower case)"
        return f"{file}: {reason}; expected {describe('scoring')}"
    return f"{file}: unreadable format for {purpose}; expected {describe(purpose)}"


def name_problem(blob_name: str) -> str:
    """Why a job cannot open blob `blob_name` ("" when it can): too long, too many segments, a segment too long."""
    if len(blob_name) > MAX_BLOB_NAME:
        return f"blob name is {len(blob_name)} characters; Azure Storage allows at most {MAX_BLOB_NAME}"
    segments = blob_name.split("/")
    if len(segments) > MAX_SEGMENTS:
        return f"blob name has {len(segments)} path segments; Azure Storage allows at most {MAX_SEGMENTS}"
    for segment in segments:
        size = len(segment.encode("utf-8", "surrogatepass"))
        if size > MAX_SEGMENT_BYTES:
            shown = segment[:40] + "…"
            return (f"path segment {shown!r} is {size} bytes; a training or scoring job opens files on Linux, "
                    f"where a file or folder name is at most {MAX_SEGMENT_BYTES} bytes: shorten it")
    return ""
