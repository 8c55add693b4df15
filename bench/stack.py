"""The local stack's weight: start time, process count and total RSS, now against the old configuration.

Both in one run, alternating (old, new, old, new … for `--rounds`), each a whole stack of its own
(`local.stack.ephemeral`: temporary root, free ports, own containers in the shared Azurite, which is not
counted). The old configuration is the same stack with MLflow's job execution on
(`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true`, MLflow's default, which the stack used before: a job runner and huey
consumers beside the server). The new one is what `make stack` starts now (job execution off).

Start time: `Stack.start()` until every component answers its health check. Then the process tree settles (MLflow
launches its job runner after the server): processes are counted once the count has not changed for 3 s.
Processes: every process in the components' process groups or below them; RSS: the sum of their VmRSS (shared
pages counted in each process, as `ps` shows them). Ends with one line `RESULT stack key=value ...`.

Run: `.venv/bin/python bench/stack.py [--rounds 1]` (Azurite must listen on 127.0.0.1:10000: `make stack` or
`python -m local.azurite run -- .venv/bin/python bench/stack.py`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local import procs  # noqa: E402
from local.stack import Stack, ephemeral  # noqa: E402

CONFIGS = {"old": "true", "new": "false"}  # MLFLOW_SERVER_ENABLE_JOB_EXECUTION


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a kernel thread without one


def census(stack: Stack) -> dict[str, tuple[int, int]]:
    """Per component: (processes, RSS KiB) of its process group and descendants."""
    out = {}
    for name, pid in stack.pids().items():
        members = procs.group_pids(pid)
        out[name] = (len(members), sum(_rss_kib(p) for p in members))
    return out


def settled(stack: Stack, quiet: float = 3.0, limit: float = 90.0) -> dict[str, tuple[int, int]]:
    """The census once the process count has stayed the same for `quiet` seconds (at most `limit`)."""
    deadline = time.monotonic() + limit
    last, since = census(stack), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = census(stack)
        if {k: v[0] for k, v in now.items()} != {k: v[0] for k, v in last.items()}:
            since = time.monotonic()
        last = now
        if time.monotonic() - since >= quiet:
            break
    return last


def measure(config: str) -> dict[str, float]:
    environ = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": CONFIGS[config]}
    with tempfile.TemporaryDirectory(prefix=f"bench-stack-{config}-") as tmp:
        began = time.perf_counter()
        with ephemeral(Path(tmp), environ=environ) as stack:
            start_s = time.perf_counter() - began
            parts = settled(stack)
    figures = {"start_s": start_s, "processes": sum(n for n, _ in parts.values()),
               "rss_mib": sum(k for _, k in parts.values()) / 1024}
    for name, (count, kib) in parts.items():
        figures[f"{name}_processes"], figures[f"{name}_rss_mib"] = count, kib / 1024
    print(f"  {config}: start {start_s:.1f} s; " + ", ".join(
        f"{name} {count} proc {kib / 1024:.0f} MiB" for name, (count, kib) in parts.items()), flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for config in CONFIGS:
            runs[config].append(measure(config))

    def median(config: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[config])

    print(f"\n{'':22}{'old (job execution on)':>24}{'new (off)':>12}")
    rows = [("start time (s)", "start_s", ".1f"), ("processes", "processes", ".0f"),
            ("total RSS (MiB)", "rss_mib", ".0f"), ("  mlflow processes", "mlflow_processes", ".0f"),
            ("  mlflow RSS (MiB)", "mlflow_rss_mib", ".0f")]
    for label, key, fmt in rows:
        print(f"{label:22}{median('old', key):>24{fmt}}{median('new', key):>12{fmt}}")
    print(f"RESULT stack start_s={median('new', 'start_s'):.1f} processes={median('new', 'processes'):.0f} "
          f"rss_mib={median('new', 'rss_mib'):.0f} old_start_s={median('old', 'start_s'):.1f} "
          f"old_processes={median('old', 'processes'):.0f} old_rss_mib={median('old', 'rss_mib'):.0f} "
          f"mlflow_processes={median('new', 'mlflow_processes'):.0f} "
          f"old_mlflow_processes={median('old', 'mlflow_processes'):.0f} rounds={args.rounds} load={load:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
