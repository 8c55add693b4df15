"""Rollout triggers: `on_model_registered` (Event Grid: Azure ML's ModelRegistered, or Reflex's own) and the
`reconcile` timer that advances every unfinished rollout one step. Thin: the reactions are
shared/rollout/reactions.py, imported on first use so a cold start does not pay for the rollout machinery. The
policy for models registered outside Reflex (shared/registration/outside_models.py: evaluated before rollout) is
handed to them by shared/handlers.py, as reactions do not import each other.
"""

from __future__ import annotations

import azure.functions as func

from shared import handlers  # noqa: F401  (registers the named handlers `reaction.run` calls)
from shared.core import reaction

bp = func.Blueprint()


@bp.function_name("on_model_registered")
@bp.event_grid_trigger(arg_name="event")
def on_model_registered(event: func.EventGridEvent) -> None:
    reaction.run_event("rollout.model_registered", event, keyed=False)


@bp.function_name("reconcile")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_RECONCILE_SCHEDULE%", run_on_startup=False,
                  use_monitor=True)
def reconcile(timer: func.TimerRequest) -> None:
    reaction.run("rollout.reconcile", {"past_due": bool(timer.past_due)}, event_id="")
