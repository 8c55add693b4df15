"""Rollout triggers: `on_model_registered` (Event Grid: Azure ML's ModelRegistered, or Reflex's own) and the
`reconcile` timer that advances every unfinished rollout one step. Thin: the reactions are
shared/rollout/reactions.py, imported on first use so a cold start does not pay for the rollout machinery. The
policy for models registered outside Reflex (shared/registration/outside_models.py: evaluated before rollout) is
handed to them here, as reactions do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.core import events, reaction

if TYPE_CHECKING:
    from shared.core.deps import Deps

bp = func.Blueprint()


@reaction.handler("rollout.model_registered")
def handle_model_registered(raw: Any, deps: Deps) -> reaction.Outcome:
    from shared.registration import outside_models
    from shared.rollout import reactions as rollout_reactions

    return rollout_reactions.handle_model_registered(raw, deps, outside_models)


@reaction.handler("rollout.reconcile")
def handle_reconcile(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared.registration import outside_models
    from shared.rollout import reactions as rollout_reactions

    return rollout_reactions.handle_reconcile(payload, deps, outside_models)


@bp.function_name("on_model_registered")
@bp.event_grid_trigger(arg_name="event")
def on_model_registered(event: func.EventGridEvent) -> None:
    raw = events.raw_from_function_event(event)
    reaction.run("rollout.model_registered", raw, event_id=raw["id"])


@bp.function_name("reconcile")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_RECONCILE_SCHEDULE%", run_on_startup=False,
                  use_monitor=True)
def reconcile(timer: func.TimerRequest) -> None:
    reaction.run("rollout.reconcile", {"past_due": bool(timer.past_due)}, event_id="")
