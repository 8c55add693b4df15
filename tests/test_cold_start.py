"""Importing function_app in a fresh process loads none of the heavy libraries (cold start and indexing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("azure.ai.ml", "mlflow", "sklearn", "pandas", "numpy", "pyarrow", "azure.monitor",
         "opentelemetry")  # tracing loads with the first reaction (shared/core/trace.py), never at import
# the reactions' flows load when their first event arrives, not at indexing: a cold start that handles one blob
# does not pay for the rollout machinery, drift statistics or the health rules
FLOWS = ("shared.arrival.flow", "shared.registration.flow", "shared.rollout.flow", "shared.rollout.machine",
         "shared.scoring.flow", "shared.monitoring.drift", "shared.monitoring.drift_check",
         "shared.monitoring.health", "shared.batches.tabular", "shared.batches.training", "shared.batches.intake")


def test_function_app_import_loads_no_heavy_module_and_no_flow() -> None:
    code = ("import json, sys, function_app; "
            f"print(json.dumps([m for m in {HEAVY + FLOWS!r} "
            "if any(k == m or k.startswith(m + '.') for k in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_indexing_works_like_the_worker() -> None:
    """The worker imports function_app and calls get_functions() once; it must not raise."""
    code = "import function_app; print(len(function_app.app.get_functions()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
