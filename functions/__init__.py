"""One blueprint per reaction. `blueprints()` lists them for function_app.py, in registration order.

Each module registers its triggers and its named handlers (for the runner and the CLI's replay) and imports its
flow inside the handler, so indexing the app loads only the trigger plumbing (tests/test_cold_start.py).
"""

from __future__ import annotations

import importlib

import azure.functions as func

# module names under functions/, one per reaction (trigger family)
REACTIONS: tuple[str, ...] = ("data_arrival", "registration", "rollout", "batch_scoring", "monitoring")


# The storage account's BlobCreated subscriptions, as function -> container (a setting name): what infra
# subscribes in Azure (subject begins with `/blobServices/default/containers/<container>/blobs/`) and what the
# local host polls Azurite for and delivers to the same functions (local/host/blobs.py). The names are the infra's
# contract.
BLOB_SUBSCRIPTIONS: dict[str, str] = {
    "on_data_blob": "%REFLEX_DATA_CONTAINER%",
    "on_scoring_blob": "%REFLEX_SCORING_CONTAINER%",
}


def blueprints() -> list[func.Blueprint]:
    return [importlib.import_module(f"functions.{name}").bp for name in REACTIONS]
