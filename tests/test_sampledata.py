"""The sample data generator: same seed same rows, realistic schema, a shift that moves the right features."""

from __future__ import annotations

import csv
import io
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from local import sampledata
from local.sampledata import COLUMNS, FEATURES, LABEL, generate, patient_record, to_csv_bytes, write_batch

REPO = Path(__file__).resolve().parents[1]

RANGES = {
    "age": (40, 95),
    "creatinine_phosphokinase": (23, 7861),
    "ejection_fraction": (14, 80),
    "platelets": (25100, 850000),
    "serum_creatinine": (0.5, 9.4),
    "serum_sodium": (113, 148),
    "time": (4, 285),
}
BINARY = ("anaemia", "diabetes", "high_blood_pressure", "sex", "smoking", LABEL)
FLOATS = ("platelets", "serum_creatinine")


def test_same_seed_same_rows_and_other_seed_other_rows() -> None:
    assert generate(50, seed=3) == generate(50, seed=3)
    assert generate(50, seed=3) != generate(50, seed=4)
    assert generate(10, seed=3) == generate(50, seed=3)[:10]


def test_rows_follow_the_schema_with_realistic_ranges_and_types() -> None:
    rows = generate(1000, seed=11)
    assert len(rows) == 1000
    for row in rows:
        assert tuple(row) == COLUMNS
        for column, (low, high) in RANGES.items():
            assert low <= row[column] <= high, (column, row[column])
        for column in BINARY:
            assert row[column] in (0, 1) and type(row[column]) is int
        for column in set(COLUMNS) - set(FLOATS):
            assert type(row[column]) is int, column
        for column in FLOATS:
            assert type(row[column]) is float, column
    deaths = statistics.mean(r[LABEL] for r in rows)
    assert 0.2 < deaths < 0.45  # the real set has 32%
    assert 55 < statistics.mean(r["age"] for r in rows) < 67
    assert 34 < statistics.mean(r["ejection_fraction"] for r in rows) < 42


def test_label_carries_the_signal_in_the_documented_direction() -> None:
    rows = generate(2000, seed=5)
    died = [r for r in rows if r[LABEL] == 1]
    survived = [r for r in rows if r[LABEL] == 0]

    def mean(group: list[dict[str, float]], column: str) -> float:
        return statistics.mean(r[column] for r in group)

    assert mean(died, "ejection_fraction") < mean(survived, "ejection_fraction") - 3
    assert mean(died, "serum_creatinine") > mean(survived, "serum_creatinine") + 0.1
    assert mean(died, "age") > mean(survived, "age") + 2
    assert mean(died, "time") < mean(survived, "time") - 30


def test_shift_moves_age_creatinine_and_ejection_fraction_only() -> None:
    base = generate(2000, seed=9)
    drifted = generate(2000, seed=9, shift=1.0)

    def mean(rows: list[dict[str, float]], column: str) -> float:
        return statistics.mean(r[column] for r in rows)

    assert mean(drifted, "age") - mean(base, "age") > 5
    assert mean(drifted, "serum_creatinine") / mean(base, "serum_creatinine") > 1.25
    assert mean(base, "ejection_fraction") - mean(drifted, "ejection_fraction") > 5
    for column in ("platelets", "serum_sodium", "time", "creatinine_phosphokinase"):
        assert mean(drifted, column) == pytest.approx(mean(base, column), rel=0.02), column
    assert mean(drifted, LABEL) > mean(base, LABEL)  # sicker patients, same mechanism


def test_negative_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        generate(-1)
    with pytest.raises(ValueError):
        write_batch("unused", [], files=0)


def test_patient_record_has_every_feature_but_not_the_label() -> None:
    record = patient_record(7)
    assert tuple(record) == FEATURES
    assert record == patient_record(7) != patient_record(8)


def test_csv_bytes_round_trip() -> None:
    rows = generate(5, seed=2)
    data = to_csv_bytes(rows)
    assert data.startswith(",".join(COLUMNS).encode() + b"\n")
    parsed = list(csv.DictReader(io.StringIO(data.decode())))
    assert [{k: float(v) for k, v in r.items()} for r in parsed] == [{k: float(v) for k, v in r.items()} for r in rows]
    assert to_csv_bytes([]) == ",".join(COLUMNS).encode() + b"\n"


def test_write_batch_splits_rows_over_files_and_ends_with_an_empty_marker(tmp_path: Path) -> None:
    rows = generate(10, seed=1)
    paths = write_batch(tmp_path / "batch", rows, files=3)
    assert [p.name for p in paths] == ["part-00000.csv", "part-00001.csv", "part-00002.csv", "_SUCCESS"]
    assert paths[-1].stat().st_size == 0
    counts = [len(list(csv.DictReader(io.StringIO(p.read_text())))) for p in paths[:-1]]
    assert counts == [4, 3, 3]
    assert write_batch(tmp_path / "few", rows[:2], files=5)[-2].name == "part-00001.csv"


def test_cli_writes_a_batch(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    done = subprocess.run(
        [sys.executable, "-m", "local.sampledata", "--rows", "30", "--seed", "1", "--out", str(out), "--files", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.csv", "part-00001.csv"]
    assert str(out / "_SUCCESS") in done.stdout
    rows = [r for p in sorted(out.glob("part-*.csv")) for r in csv.DictReader(io.StringIO(p.read_text()))]
    assert [int(r["time"]) for r in rows] == [r["time"] for r in generate(30, seed=1)]


def test_import_stays_standard_library_only() -> None:
    code = "import sys, local.sampledata; print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'pandas'}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert sampledata.__name__ == "local.sampledata"
