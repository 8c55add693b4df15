"""Arrival and the jobs agree: every format arrival accepts is really read by its job, and no other is accepted.

The trainer is checked as Azure ML runs it (a subprocess of jobs/train/train.py without the repo on the path);
batch scoring against the file types of Azure ML's MLflow batch driver (tests/fixtures/aml-batch); name limits
against the file system a job opens the files on.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local.sampledata import LABEL, generate
from local.tables import table_files
from shared.batches.formats import (
    MAX_BLOB_NAME,
    MAX_SEGMENT_BYTES,
    SCORING_FORMATS,
    TRAINING_FORMATS,
    data_format,
    name_problem,
)
from shared.batches.manifest import freeze
from shared.batches.paths import BatchPath, file_problem
from shared.batches.record import BlobVersion
from tests.test_train import SCRIPT, _load_script

FIXTURES = Path(__file__).parent / "fixtures" / "aml-batch"
ROWS_PER_FILE = 40


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    """Write `rows` in the format `path`'s extension names (real CSV/TSV/gzip/Parquet bytes)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    kind = data_format(path.name, "training")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        frame.to_parquet(path)
        return
    text = frame.to_csv(index=False, sep="\t" if kind == "tsv" else ",").encode()
    path.write_bytes(gzip.compress(text) if path.name.lower().endswith(".gz") else text)


def test_the_trainer_reads_the_table_arrival_accepts() -> None:
    assert dict(TRAINING_FORMATS) == _load_script().DATA_FORMATS


def test_every_format_arrival_accepts_is_really_read_by_train_py_and_the_rest_is_refused(tmp_path: Path) -> None:
    rows = generate(ROWS_PER_FILE * len(TRAINING_FORMATS), seed=3)
    batch = tmp_path / "batch"
    for i, ext in enumerate(TRAINING_FORMATS):
        name = f"day={i}/part-{i}{ext.upper() if i % 2 else ext}"  # extensions are case-insensitive for training
        _write(batch / name, rows[i * ROWS_PER_FILE:(i + 1) * ROWS_PER_FILE])
        assert file_problem(name, 100) == "", name
    refused = {"a.json": '[{"age": 1}]', "b.jsonl": '{"age": 1}\n', "notes.txt": "x\n", "c.xlsx": "x",
               "_temporary/0/part-9.csv": "age\n1\n", ".part-0.csv.crc": "x", "_SUCCESS": ""}
    for name, text in refused.items():
        (batch / name).parent.mkdir(parents=True, exist_ok=True)
        (batch / name).write_text(text)
        assert file_problem(name, len(text)) != "", name
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(batch), "--label", LABEL, "--task", "classification",
         "--model-output", str(tmp_path / "model"), "--metrics-output", str(tmp_path / "metrics.json")],
        cwd=tmp_path, env={**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "PYTHONPATH": ""},
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    total = ROWS_PER_FILE * len(TRAINING_FORMATS)
    assert f"read {total} rows x 13 columns from {len(TRAINING_FORMATS)} file(s)" in done.stderr
    assert "ignoring 4 non-tabular file(s)" in done.stderr  # the json, jsonl, txt and xlsx files
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_test"] == total


def test_the_arrival_reason_names_what_training_reads() -> None:
    reason = file_problem("events/a.json", 10)
    assert reason == ("events/a.json: unreadable format for training; "
                      "expected .csv, .csv.gz, .tsv, .tsv.gz, .parquet, .pq, .pqt")


def test_scoring_accepts_what_the_azure_ml_mlflow_batch_driver_reads() -> None:
    driver = json.loads((FIXTURES / "mlflow_batch_driver.json").read_text())
    tabular = {ext for ext, loader in driver["file_loaders"].items() if loader != "load_image"}
    assert set(SCORING_FORMATS) == tabular
    assert driver["descends_into_sub_folders"] is False and driver["extension_match"] == "os.path.splitext"


@pytest.mark.parametrize(("file", "reason"), [
    ("part-0.csv", ""), ("part-0.parquet", ""), ("part-0.pqt", ""),
    ("part-0.CSV", "case-sensitive there: use lower case"),  # splitext gives ".CSV", which the driver refuses
    ("part-0.tsv", "not read by Azure ML batch scoring; expected .csv, .parquet, .pqt"),
    ("part-0.csv.gz", "not read by Azure ML batch scoring"),
    ("day=1/part-0.csv", "in a sub-folder; Azure ML batch scoring reads only files directly in the batch folder"),
    ("rows.json", "unreadable format for scoring; expected .csv, .parquet, .pqt"),
])
def test_scoring_file_rules(file: str, reason: str) -> None:
    found = file_problem(file, 10, purpose="scoring")
    assert (reason in found) if reason else found == "", found


def test_the_local_scorer_reads_exactly_the_files_scoring_arrival_accepts(tmp_path: Path) -> None:
    rows = generate(10, seed=1)
    names = ["a.csv", "b.parquet", "c.pqt", "d.tsv", "e.CSV", "f.csv.gz", "day=1/g.csv", "_SUCCESS", "h.json"]
    for name in names:
        _write(tmp_path / name, rows) if data_format(name, "training") else (tmp_path / name).write_text("{}")
    read = {str(p.relative_to(tmp_path)) for p in table_files(tmp_path, "scoring")}
    accepted = {n for n in names if not file_problem(n, 10, purpose="scoring")}
    assert read == accepted == {"a.csv", "b.parquet", "c.pqt"}
    training = {str(p.relative_to(tmp_path)) for p in table_files(tmp_path, "training")}
    assert training == {n for n in names if not file_problem(n, 10)}


# ------------------------------------------------------------------------------------------------ name limits


def test_the_segment_limit_is_the_file_system_s(tmp_path: Path) -> None:
    """A job writes each blob to a local path; one component longer than 255 bytes cannot be created."""
    assert os.pathconf(tmp_path, "PC_NAME_MAX") == MAX_SEGMENT_BYTES
    (tmp_path / ("x" * MAX_SEGMENT_BYTES)).write_bytes(b"ok")
    with pytest.raises(OSError, match="File name too long"):
        (tmp_path / ("x" * (MAX_SEGMENT_BYTES + 1))).write_bytes(b"no")


def test_a_990_character_name_is_refused_at_arrival_with_the_reason() -> None:
    file = "x" * 986 + ".csv"  # the case: passed arrival, failed the job's download
    path = BatchPath("reflex-data", "sales", "b1", file)
    frozen = freeze([BlobVersion(path.file, "https://a/x", '"0x1"', 10)], purpose="training",
                    folder=f"{path.dataset}/{path.batch}/")
    assert file not in frozen.files
    reason = frozen.rejected[file]["reason"]
    assert f"is {len(file)} bytes" in reason and "at most 255 bytes: shorten it" in reason and len(reason) < 300


def test_long_names_made_of_short_segments_are_fine_and_storage_limits_hold() -> None:
    nested = "/".join(["d" * 200] * 4) + "/part.csv"  # 800+ characters, every segment under 255 bytes
    assert file_problem(nested, 10) == ""
    too_long = "sales/b1/" + "/".join(["d" * 100] * 11) + "/p.csv"
    assert len(too_long) > MAX_BLOB_NAME and f"at most {MAX_BLOB_NAME}" in name_problem(too_long)
    assert "254" in name_problem("/".join(["a"] * 255))
    assert "bytes" in name_problem("é" * 128 + ".csv")  # 256 bytes in UTF-8, though 132 characters
