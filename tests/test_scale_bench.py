"""`bench/scale.py --quick` ends with a complete, well-formed RESULT line (#17.6).

Only the line's form is checked, never a figure (a bench's numbers depend on the machine): every key of the
issue's line once, each a number, or `pending` exactly while the module that measures it (bench/intake.py,
bench/ticks.py) is not there yet; each figure measured here beside its baseline; the sizes measured stated.
The bench runs as it is run by hand, a subprocess on the Azurite the tests use. Left out of `make test`, as the
other benches are: even quick it takes 30 s on an idle Azurite and about two minutes on the shared one at load 7
(the intake part: 600 deliveries and the baseline's 300). Run it with
`REFLEX_BENCH_TESTS=1 .venv/bin/python -m pytest -q tests/test_scale_bench.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("tick_requests_h10", "tick_requests_h10000", "blob_events_per_s", "state_bytes_per_blob", "jobs_10k",
        "wait_tick_http", "traffic_step_http", "champion_http_1000", "explain_100k_s", "status_1000_s")
MEASURED_ELSEWHERE = {"ticks": ("run_ticks", ("tick_requests_h10", "tick_requests_h10000")),
                      "intake": ("run_intake", ("blob_events_per_s", "state_bytes_per_blob", "jobs_10k"))}
BASELINES = {"wait_tick_http": "wait_tick_http_naive", "traffic_step_http": "traffic_step_http_naive",
             "champion_http_1000": "champion_http_1000_baseline", "explain_100k_s": "explain_100k_baseline_s",
             "status_1000_s": "status_1000_baseline_s"}
NUMBER = re.compile(r"-?\d+(\.\d+)?")

pytestmark = [pytest.mark.azurite, pytest.mark.skipif(
    os.environ.get("REFLEX_BENCH_TESTS") != "1", reason="a bench (about 30-120 s): REFLEX_BENCH_TESTS=1 runs it")]


def _landed(module: str, function: str) -> bool:
    """Whether bench/<module>.py defines `function` (the bench prints its keys `pending` until it does)."""
    path = ROOT / "bench" / f"{module}.py"
    return path.exists() and f"def {function}(" in path.read_text()


@pytest.fixture(scope="module")
def result_line() -> str:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout[-3000:]
    assert done.stdout.rstrip().endswith(lines[0]), "the RESULT line is not the last one"
    return lines[0]


def _fields(line: str) -> dict[str, str]:
    head, bench, *pairs = line.split(" ")
    assert (head, bench) == ("RESULT", "scale")
    assert all(p.count("=") == 1 and p.split("=")[0] and p.split("=")[1] for p in pairs), pairs
    keys = [p.split("=")[0] for p in pairs]
    assert len(keys) == len(set(keys)), keys
    return dict(p.split("=") for p in pairs)


def test_every_key_of_the_issue_is_there_once_in_the_issues_order(result_line: str) -> None:
    fields = _fields(result_line)
    assert [k for k in fields if k in KEYS] == list(KEYS)


def test_a_value_is_a_number_or_pending_while_its_bench_has_not_landed(result_line: str) -> None:
    fields = _fields(result_line)
    pending = {k for k, (fn, keys) in MEASURED_ELSEWHERE.items() if not _landed(k, fn) for k in keys}
    for key, value in fields.items():
        if key in pending:
            assert value == "pending", (key, value)
        else:
            assert NUMBER.fullmatch(value), (key, value)


def test_each_figure_measured_here_stands_beside_its_baseline_and_the_sizes_are_stated(result_line: str) -> None:
    fields = _fields(result_line)
    keys = list(fields)
    for key, baseline in BASELINES.items():
        assert baseline in fields and keys.index(baseline) > keys.index(key), (key, baseline)
    assert {k for k in fields if k.startswith("size_")} >= {"size_h_large", "size_blobs", "size_lines"}
