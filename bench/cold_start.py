"""Cold start: `import function_app` against bare `import azure.functions` and the naive `import azure.ai.ml`.

Median of 5 fresh processes each: wall time of the import and the process's peak RSS. Ends with one line
`RESULT cold_start key=value ...`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
CASES = {
    "azure.functions": "import azure.functions",
    "function_app": "import function_app",
    "azure.ai.ml (naive)": "import azure.functions, azure.ai.ml",
}
PROBE = """
import time, resource, json
t = time.perf_counter()
{stmt}
took = time.perf_counter() - t
print(json.dumps({{"s": took, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure(stmt: str) -> tuple[float, float]:
    times, rss = [], []
    subprocess.run([sys.executable, "-c", stmt], cwd=ROOT, check=True)  # warm the file cache: not counted
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", PROBE.format(stmt=stmt)], cwd=ROOT, capture_output=True,
                             text=True, check=True)
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(figures["s"])
        rss.append(figures["rss_mb"])
    return statistics.median(times), statistics.median(rss)


def main() -> None:
    results = {name: measure(stmt) for name, stmt in CASES.items()}
    base_s, base_mb = results["azure.functions"]
    print(f"{'import':24} {'median s':>9} {'x bare':>7} {'peak RSS MB':>12}")
    for name, (s, mb) in results.items():
        print(f"{name:24} {s:9.3f} {s / base_s:7.2f} {mb:12.1f}")
    app_s, app_mb = results["function_app"]
    aml_s, aml_mb = results["azure.ai.ml (naive)"]
    print(f"RESULT cold_start app_s={app_s:.3f} bare_s={base_s:.3f} ratio={app_s / base_s:.2f} app_rss_mb={app_mb:.1f} "
          f"bare_rss_mb={base_mb:.1f} naive_aml_s={aml_s:.3f} naive_aml_rss_mb={aml_mb:.1f} "
          f"naive_ratio={aml_s / base_s:.2f}")


if __name__ == "__main__":
    main()
