"""Read a downloaded data folder (CSV and Parquet files, any depth) into one DataFrame.

Shared by the local AutoML search and batch scoring; markers such as `_SUCCESS` and other files are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_folder", "table_files"]


def table_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".csv", ".parquet"))


def read_folder(folder: Path) -> pd.DataFrame:
    """All rows of every CSV/Parquet file under `folder`; ValueError when there is none or all are empty."""
    import pandas as pd

    frames = [pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p) for p in table_files(folder)]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError(f"no rows: no non-empty CSV or Parquet file under {folder}")
    return pd.concat(frames, ignore_index=True)
