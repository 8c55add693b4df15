"""Read a downloaded data folder into one DataFrame, choosing files by the formats of shared/batches/formats.py.

Shared by the local AutoML search (training: every readable file at any depth, as train.py reads a batch) and
local batch scoring (scoring: only the files directly in the folder, as Azure ML's MLflow batch driver reads
them). Hidden and `_`-prefixed files or folders (markers such as `_SUCCESS`) and zero-byte files are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shared.batches.formats import Purpose, data_format

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_folder", "read_table", "table_files"]


def _skipped(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts) or path.stat().st_size == 0


def table_files(folder: Path, purpose: Purpose = "training") -> list[Path]:
    """The data files of `folder` that a `purpose` job reads, in path order."""
    candidates = folder.rglob("*") if purpose == "training" else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and not _skipped(p, folder)
                  and data_format(p.name, purpose) is not None)


def read_table(path: Path, purpose: Purpose = "training") -> pd.DataFrame:
    """One file as a DataFrame (CSV and TSV may be gzipped, `.gz` in any case)."""
    import pandas as pd

    kind = data_format(path.name, purpose)
    if kind == "parquet":
        return pd.read_parquet(path)
    compression = "gzip" if path.name.lower().endswith(".gz") else None
    return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", compression=compression)


def read_folder(folder: Path, purpose: Purpose = "training") -> pd.DataFrame:
    """All rows of every data file under `folder`; ValueError when there is none or all are empty."""
    import pandas as pd

    frames = [read_table(p, purpose) for p in table_files(folder, purpose)]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError(f"no rows: no non-empty data file under {folder}")
    return pd.concat(frames, ignore_index=True)
