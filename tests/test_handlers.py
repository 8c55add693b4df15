"""The named-handler table (shared/handlers.py): every trigger's reaction has a handler, the CLI replays through
the same table without importing `functions/`, and the table imports no flow code until a handler is called."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from shared import handlers
from shared.core import reaction

ROOT = Path(__file__).resolve().parent.parent


def _run_names() -> set[str]:
    """Every reaction name a trigger in functions/ passes to `reaction.run` or `reaction.run_event`."""
    names = set()
    for path in (ROOT / "functions").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if (node.func.attr in ("run", "run_event") and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def test_every_trigger_runs_a_handler_of_the_table_and_every_entry_is_used() -> None:
    assert _run_names() == set(handlers.TABLE)
    assert set(handlers.TABLE) <= set(reaction.HANDLERS)


def test_every_entry_names_a_function_that_exists() -> None:
    import importlib

    for name, (module, function, _) in handlers.TABLE.items():
        assert callable(getattr(importlib.import_module(module), function)), name


def test_the_cli_replays_without_importing_the_trigger_modules() -> None:
    code = ("import sys; from reflex import cli; cli._load_handlers(); from shared.core import reaction; "
            "bad = sorted(m for m in sys.modules if m == 'functions' or m.startswith('functions.'));"
            "flows = sorted(m for m in sys.modules if m.endswith(('.flow', '.reactions', '.health')));"
            "print(bad, flows, len(reaction.HANDLERS)); raise SystemExit(1 if bad or flows else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
