"""Drift check throughput and memory: streaming CSV -> PSI (shared.monitoring.drift) vs the naive pandas way, same run.

Why: the drift timer runs on a Functions worker; it must stay within a small memory budget whatever the size
of the recent data. This bench generates a training set and a drifted "recent" set (10 numeric + 2
categorical features) as CSV files, builds the baseline profile by streaming the training CSV, then measures
each approach in a fresh subprocess (so peak RSS is its own):

* ours: the file is read in 4 MiB chunks (azure-storage-blob's default download chunk size) through
  `tabular.iter_csv_rows` into `drift.compare`;
* naive (baseline): read the whole blob into memory, `pandas.read_csv`, then per feature `numpy.histogram` on
  the profile's edges (and `value_counts` for categories), PSI with the same `psi` function; pandas and numpy
  are imported inside the naive worker only, and their import is part of its cost (it would be in the app).

Both must agree on every feature's PSI (checked). Peak memory is the growth of the worker's peak RSS (VmHWM) from just
before the work starts, plus a tracemalloc peak of Python allocations for ours (in a separate, slower pass).

Usage: python bench/drift.py [--quick]      (--quick: 20k and 100k rows instead of 100k and 1M)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.batches.tabular import iter_csv_rows  # noqa: E402
from shared.monitoring.drift import Profile, ProfileBuilder, compare, psi  # noqa: E402

CHUNK = 4 * 1024 * 1024
THRESHOLD = 0.25
NUMERIC = [f"f{i}" for i in range(10)]
CATEGORICAL = ["color", "channel"]


def _rss_mark() -> float:
    """Reset the peak-RSS mark (Linux: clear_refs 5) and return the current RSS in MiB.

    ru_maxrss is no use in a child: Linux carries the parent's high-water mark across fork and exec.
    """
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_mb("VmRSS")


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"no {key} in /proc/self/status")


def _peak_growth_mb(mark: float) -> float:
    return _status_mb("VmHWM") - mark


def _label(rows: int) -> str:
    return f"{rows // 1_000_000}m" if rows % 1_000_000 == 0 else f"{rows // 1000}k"


# ---------------------------------------------------------------- data (parent only)


def generate(path: Path, rows: int, seed: int, drifted: bool) -> None:
    """Write a CSV: f0..f9 ~ N(0,1) (f0 shifted by 1 sd when drifted, f3 1% missing), two categories."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    block = 250_000
    with path.open("w", newline="") as out:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            frame = pd.DataFrame(rng.normal(size=(n, len(NUMERIC))), columns=NUMERIC)
            if drifted:
                frame["f0"] += 1.0
            frame.loc[rng.random(n) < 0.01, "f3"] = np.nan
            colors = ["red", "green", "blue", "black", "white"]
            weights = [0.1, 0.1, 0.2, 0.3, 0.3] if drifted else [0.3, 0.3, 0.2, 0.1, 0.1]
            frame["color"] = rng.choice(colors, size=n, p=weights)
            frame["channel"] = rng.choice(["web", "app", "store"], size=n, p=[0.5, 0.3, 0.2])
            frame["label"] = rng.integers(0, 2, size=n)
            frame.to_csv(out, index=False, header=start == 0, float_format="%.6g")


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


# ---------------------------------------------------------------- workers (fresh process each)


def worker_ours(data: Path, profile: Profile, trace: bool) -> dict[str, object]:
    if trace:
        import tracemalloc

        tracemalloc.start()
    before = _rss_mark()
    started = time.perf_counter()
    report = compare(profile, iter_csv_rows(file_chunks(data), name=data.name), THRESHOLD)
    seconds = time.perf_counter() - started
    result: dict[str, object] = {"rows": report.rows, "seconds": seconds, "peak_mb": _peak_growth_mb(before),
                                 "psi": {f.name: f.psi for f in report.features}, "drifted": list(report.drifted)}
    if trace:
        result["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    return result


def worker_naive(data: Path, profile: Profile) -> dict[str, object]:
    before = _rss_mark()
    started = time.perf_counter()
    import io

    import numpy as np
    import pandas as pd

    imported = time.perf_counter()
    blob = data.read_bytes()  # download_blob().readall()
    frame = pd.read_csv(io.BytesIO(blob))
    result_psi = {}
    for feature in profile.features:
        column = frame[feature.name]
        missing = int(column.isna().sum())
        if feature.kind == "numeric":
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
            present = values[~np.isnan(values)]
            counts, _ = np.histogram(present, bins=[-np.inf, *feature.edges, np.inf])
            actual = [*counts.tolist(), missing, 0]
        else:
            tally = column.dropna().astype(str).str.strip().value_counts()
            known = [int(tally.get(c, 0)) for c in feature.categories]
            actual = [*known, int(tally.sum()) - sum(known), missing]
        result_psi[feature.name] = psi(feature.expected(), actual)
    seconds = time.perf_counter() - started
    return {"rows": len(frame), "seconds": seconds, "import_s": imported - started,
            "peak_mb": _peak_growth_mb(before), "psi": result_psi}


def run_worker(kind: str, data: Path, profile: Path, trace: bool = False) -> dict[str, object]:
    command = [sys.executable, __file__, "--worker", kind, "--data", str(data), "--profile", str(profile)]
    if trace:
        command.append("--trace")
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=["ours", "naive"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    if args.worker:
        profile = Profile.from_json(args.profile.read_text())
        result = (worker_ours(args.data, profile, args.trace) if args.worker == "ours"
                  else worker_naive(args.data, profile))
        print(json.dumps(result))
        return

    sizes = [20_000, 100_000] if args.quick else [100_000, 1_000_000]
    train_rows = 20_000 if args.quick else 200_000
    bench_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reflex-drift-bench-") as tmp:
        workdir = Path(tmp)
        train = workdir / "train.csv"
        generate(train, train_rows, seed=1, drifted=False)
        started = time.perf_counter()
        builder = ProfileBuilder(label="label").update(iter_csv_rows(file_chunks(train), name=train.name))
        profile = builder.finish()
        profile_s = time.perf_counter() - started
        profile_path = workdir / "profile.json"
        profile_path.write_text(profile.to_json())
        print(f"baseline profile: {train_rows:,} training rows streamed in {profile_s:.2f} s "
              f"({train_rows / profile_s:,.0f} rows/s), {len(profile_path.read_bytes()):,} bytes of JSON")

        table: list[tuple[str, int, float, float, float | str]] = []
        figures: dict[str, float] = {"profile_rows_per_s": round(train_rows / profile_s)}
        for rows in sizes:
            data = workdir / f"recent-{rows}.csv"
            generate(data, rows, seed=2 + rows, drifted=True)
            size_mb = data.stat().st_size / 2**20
            ours = run_worker("ours", data, profile_path)
            traced = run_worker("ours", data, profile_path, trace=True)
            naive = run_worker("naive", data, profile_path)
            assert ours["rows"] == naive["rows"] == rows, (ours["rows"], naive["rows"])
            diff = max(abs(ours["psi"][k] - naive["psi"][k]) for k in naive["psi"])  # type: ignore[index]
            assert diff < 1e-9, f"PSI disagrees by {diff}"
            assert ours["drifted"] == ["f0", "color"], ours["drifted"]
            tag = _label(rows)
            table.append((f"streaming csv -> compare ({size_mb:.0f} MiB csv)", rows, float(ours["seconds"]),
                          float(ours["peak_mb"]), f"{traced['traced_peak_mb']:.1f}"))
            table.append((f"naive: readall + pandas + np.histogram (import {naive['import_s']:.2f} s)", rows,
                          float(naive["seconds"]), float(naive["peak_mb"]), "-"))
            figures[f"rows_per_s_{tag}"] = round(rows / float(ours["seconds"]))
            figures[f"peak_mb_{tag}"] = round(float(ours["peak_mb"]), 1)
            figures[f"traced_peak_mb_{tag}"] = round(float(traced["traced_peak_mb"]), 1)
            figures[f"baseline_rows_per_s_{tag}"] = round(rows / float(naive["seconds"]))
            figures[f"baseline_peak_mb_{tag}"] = round(float(naive["peak_mb"]), 1)
            figures[f"max_psi_diff_{tag}"] = float(f"{diff:.1e}")
            psi_f0 = float(ours["psi"]["f0"])  # type: ignore[index]
            figures[f"psi_f0_{tag}"] = round(psi_f0, 3)

    print()
    print(f"{'approach':<62} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'peak MiB':>9} {'py MiB':>7}")
    for name, rows, seconds, peak, traced_mb in table:
        print(f"{name:<62} {rows:>9,} {seconds:>8.2f} {rows / seconds:>10,.0f} {peak:>9.1f} {traced_mb:>7}")
    print("peak MiB: growth of peak RSS (VmHWM) in a fresh worker during the check (naive includes importing pandas);")
    print("py MiB: tracemalloc peak of Python allocations during the check (separate pass). PSI of both agree.")
    print(f"bench wall time {time.perf_counter() - bench_started:.0f} s on {os.cpu_count()} cpus")
    print("RESULT drift " + " ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
