"""One blueprint per reaction. `blueprints()` lists them for function_app.py, in registration order.

Each module registers its triggers and its named handlers (for the runner and the CLI's replay) and imports its
flow inside the handler, so indexing the app loads only the trigger plumbing (tests/test_cold_start.py).
"""

from __future__ import annotations

import importlib

import azure.functions as func

# module names under functions/, one per reaction (trigger family)
REACTIONS: tuple[str, ...] = ("data_arrival", "registration", "rollout", "batch_scoring", "monitoring")


def blueprints() -> list[func.Blueprint]:
    return [importlib.import_module(f"functions.{name}").bp for name in REACTIONS]
