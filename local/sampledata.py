"""Synthetic heart-failure clinical records, deterministic per seed.

Why: the demo, the end-to-end tests and the drift checks need a tabular dataset that looks like a real one
(the schema of the UCI "Heart failure clinical records" set, Chicco & Jurman 2020: 299 patients, 12 features,
binary DEATH_EVENT), carries a signal a model can learn (AUC well above 0.7 on a few hundred rows) and can be
shifted on purpose to provoke drift. Shipping the real file would tie us to its licence and to 299 rows.

The generator is pure standard library (no numpy, no pandas), so it can be imported anywhere: in the local
stack, in tests, in the Functions host, without touching cold start.

Feature marginals follow the published summary of the real set (means, spreads, ranges, prevalences); the label
is drawn from a logistic model in follow-up ``time``, ``ejection_fraction``, ``serum_creatinine``, ``age`` and
``serum_sodium`` (the predictors the paper found strongest), so the conditional relationship stays the same when
``shift`` moves the feature distributions: shift=1.0 makes patients about 8 years older, their serum creatinine
about 40% higher and their ejection fraction about 7 points lower.

CLI::

    python -m local.sampledata --rows 600 --seed 1 --out DIR [--shift 0.5] [--files 3]
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
from collections.abc import Sequence
from pathlib import Path

LABEL = "DEATH_EVENT"
FEATURES: tuple[str, ...] = (
    "age",
    "anaemia",
    "creatinine_phosphokinase",
    "diabetes",
    "ejection_fraction",
    "high_blood_pressure",
    "platelets",
    "serum_creatinine",
    "serum_sodium",
    "sex",
    "smoking",
    "time",
)
COLUMNS: tuple[str, ...] = (*FEATURES, LABEL)
MARKER = "_SUCCESS"

Row = dict[str, int | float]


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _risk_logit(row: Row) -> float:
    """Log-odds of DEATH_EVENT; intercept chosen so that about a third of unshifted patients die (as in the data)."""
    return (
        -1.3
        + 0.045 * (row["age"] - 60)
        - 0.065 * (row["ejection_fraction"] - 38)
        + 1.4 * (row["serum_creatinine"] - 1.1)
        - 0.02 * (row["time"] - 130)
        - 0.05 * (row["serum_sodium"] - 137)
        + 0.3 * row["anaemia"]
        + 0.3 * row["high_blood_pressure"]
    )


def _features(rng: random.Random, shift: float) -> Row:
    """One patient's features; every draw happens in a fixed order so a seed always gives the same rows."""
    age = _clip(rng.gauss(60.8 + 8.0 * shift, 11.9), 40, 95)
    ejection = _clip(rng.gauss(38.0 - 7.0 * shift, 11.8), 14, 80)
    creatinine = _clip(rng.lognormvariate(math.log(1.15) + 0.35 * shift, 0.38), 0.5, 9.4)
    return {
        "age": round(age),
        "anaemia": int(rng.random() < 0.43),
        "creatinine_phosphokinase": round(_clip(rng.lognormvariate(math.log(250), 0.95), 23, 7861)),
        "diabetes": int(rng.random() < 0.42),
        "ejection_fraction": round(ejection),
        "high_blood_pressure": int(rng.random() < 0.35),
        "platelets": round(_clip(rng.gauss(263358.0, 97804.0), 25100.0, 850000.0), 2),
        "serum_creatinine": round(creatinine, 2),
        "serum_sodium": round(_clip(rng.gauss(136.6, 4.4), 113, 148)),
        "sex": int(rng.random() < 0.65),
        "smoking": int(rng.random() < 0.32),
        "time": rng.randint(4, 285),
    }


def generate(n: int, *, seed: int = 0, shift: float = 0.0) -> list[Row]:
    """Return ``n`` rows (dicts in :data:`COLUMNS` order) with a 0/1 ``DEATH_EVENT`` label.

    :param n: number of rows (>= 0).
    :param seed: same seed, same rows, on any platform.
    :param shift: moves age up, serum creatinine up and ejection fraction down (1.0 = a clearly drifted batch);
        the label mechanism is unchanged.
    :raises ValueError: if ``n`` is negative.

    Examples::

        >>> rows = generate(3, seed=7)
        >>> sorted(rows[0]) == sorted(COLUMNS)
        True
        >>> generate(3, seed=7) == rows
        True
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    rows: list[Row] = []
    for _ in range(n):
        row = _features(rng, shift)
        probability = 1.0 / (1.0 + math.exp(-_risk_logit(row)))
        row[LABEL] = int(rng.random() < probability)
        rows.append(row)
    return rows


def patient_record(seed: int = 0, *, shift: float = 0.0) -> Row:
    """One patient's features without the label, ready for ``{"data": [record]}`` prediction requests."""
    return _features(random.Random(seed), shift)


def to_csv_bytes(rows: Sequence[Row]) -> bytes:
    """CSV (header + rows, ``\\n`` line ends, UTF-8); columns are the first row's keys, in order."""
    if not rows:
        columns: Sequence[str] = COLUMNS
    else:
        columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_batch(folder: str | Path, rows: Sequence[Row], files: int = 3, *, marker: str = MARKER) -> list[Path]:
    """Write ``rows`` as a batch: ``part-00000.csv`` … split as evenly as possible, then a zero-byte marker.

    The marker is written last, as Spark does, so a watcher that waits for it sees a complete batch.
    Returns the paths written, marker last. ``files`` is capped at the number of rows (at least one file).
    """
    if files < 1:
        raise ValueError(f"files must be >= 1, got {files}")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    count = max(1, min(files, len(rows)))
    size, extra = divmod(len(rows), count)
    written: list[Path] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        path = target / f"part-{index:05d}.csv"
        path.write_bytes(to_csv_bytes(rows[start:end]))
        written.append(path)
        start = end
    marker_path = target / marker
    marker_path.write_bytes(b"")
    written.append(marker_path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.sampledata", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--out", required=True, help="folder to write part-*.csv and the _SUCCESS marker into")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.files < 1:
        parser.error("--rows and --files must be >= 1")
    paths = write_batch(args.out, generate(args.rows, seed=args.seed, shift=args.shift), files=args.files)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
