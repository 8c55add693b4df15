"""Only the Azure ML adapter (shared/adapters/azureml/) imports azure.ai.ml, and only lazily (it costs ~1.6 s,
~100 MiB)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = "shared/adapters/azureml/"
# tests/ exercise the SDK directly; bench/ measures naive SDK usage as its baseline on purpose
EXEMPT_DIRS = {"tests", "bench", ".venv", "node_modules", "run"}


def _imports_azure_ai_ml(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(n == "azure.ai.ml" or n.startswith("azure.ai.ml.") for n in names):
            lines.append(node.lineno)
    return lines


def test_no_module_but_the_azureml_adapter_imports_azure_ai_ml() -> None:
    offenders = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in EXEMPT_DIRS or rel.parts[0].startswith("."):
            continue
        lines = _imports_azure_ai_ml(path)
        if lines and not rel.as_posix().startswith(ADAPTER):
            offenders[rel.as_posix()] = lines
    assert offenders == {}
    assert _imports_azure_ai_ml(ROOT / ADAPTER / "jobs.py")   # the scan does see the real importers


def test_importing_the_azureml_adapter_does_not_import_the_sdk() -> None:
    code = ("import sys; import shared.adapters.azureml, shared.core.platform; "
            "bad = sorted(m for m in sys.modules if m.startswith(('azure.ai.ml', 'mlflow', 'azure.monitor')));"
            "print(bad); raise SystemExit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
