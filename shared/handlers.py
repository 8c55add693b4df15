"""Every reaction's named handler, in one table: what `reaction.run(name, …)` calls for a trigger and what the CLI
replays for a dead letter or a held event.

Why a table here and not decorators in `functions/`: the CLI must replay through exactly the code path a trigger
uses without importing the trigger modules (they import azure.functions and describe the Functions app, not the
reactions), and a newcomer should find "which code runs for `rollout.reconcile`" in one place. Each entry names the
flow function by module path and is imported on first call, so importing this module (and `function_app`) loads
no flow code (tests/test_cold_start.py).

Reactions do not import each other (the import-linter contracts in pyproject.toml): where one needs another's
policy, this table hands it over. The rollout gets the outside-models policy of the registration reaction
(shared/registration/outside_models.py, evaluated before a person's model is rolled out), and the health check gets
the rollout's own check of its records (shared/rollout/health.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shared.core import reaction

if TYPE_CHECKING:
    from shared.core.deps import Deps

# reaction name -> (flow module, function, whether the function takes the trigger's payload before deps)
TABLE: dict[str, tuple[str, str, bool]] = {
    "data.arrival": ("shared.arrival.flow", "handle_blob", True),
    "data.sweep": ("shared.arrival.flow", "sweep", False),
    "registration.run_event": ("shared.registration.flow", "handle_run_event", True),
    "rollout.model_registered": ("shared.handlers", "rollout_model_registered", True),
    "rollout.reconcile": ("shared.handlers", "rollout_reconcile", True),
    "scoring.blob": ("shared.scoring.flow", "handle_blob", True),
    "scoring.track": ("shared.scoring.flow", "track", False),
    "scoring.scheduled": ("shared.scoring.flow", "scheduled", False),
    "monitoring.health": ("shared.handlers", "monitoring_health", False),
    "monitoring.drift": ("shared.monitoring.drift_check", "check", False),
    "monitoring.retrain": ("shared.monitoring.retrain", "scheduled_retrain", False),
    "monitoring.ledger_index": ("shared.handlers", "monitoring_ledger_index", False),
}


def rollout_model_registered(raw: Any, deps: Deps) -> reaction.Outcome:
    from shared.registration import outside_models
    from shared.rollout import reactions

    return reactions.handle_model_registered(raw, deps, outside_models)


def rollout_reconcile(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared.registration import outside_models
    from shared.rollout import reactions

    return reactions.handle_reconcile(payload, deps, outside_models)


def monitoring_health(deps: Deps) -> reaction.Outcome:
    from shared.monitoring import health
    from shared.rollout import health as rollout_health

    return health.check(deps, [rollout_health])


def monitoring_ledger_index(deps: Deps) -> reaction.Outcome:
    """The ledger's index kept up to date (shared/core/ledger_index.py `LedgerIndexer`)."""
    from shared.core.ledger_index import TAIL_BYTES, index_recent

    ledger = getattr(deps, "ledger", None)
    done = index_recent(ledger) if ledger is not None else None
    if done is None:
        return reaction.Outcome("skipped", "no ledger in Blob Storage to index")
    if not (done["built"] or done["merged"] or done["removed"]):
        return reaction.Outcome("skipped", f"the index is up to date: every tail of {done['parts']} part(s) is "
                                           f"under {TAIL_BYTES // 1024} KiB", done)
    return reaction.Outcome("acted", f"{done['built']} segment(s) indexed, {done['merged']} part(s) merged, "
                                     f"{done['removed']} superseded segment(s) removed", done)


def _lazy(module: str, function: str, takes_payload: bool) -> reaction.Handler:
    def call(payload: Any, deps: Deps) -> reaction.Outcome:
        flow = getattr(importlib.import_module(module), function)
        result: reaction.Outcome = flow(payload, deps) if takes_payload else flow(deps)
        return result

    call.__name__ = call.__qualname__ = function
    call.__doc__ = f"{module}.{function}, imported on first call."
    return call


for _name, (_module, _function, _takes_payload) in TABLE.items():
    reaction.handler(_name)(_lazy(_module, _function, _takes_payload))
