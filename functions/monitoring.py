"""Monitoring timers: health check, drift check, scheduled retraining and the ledger's index. Thin: the flows are
shared/monitoring/health.py, shared/monitoring/drift_check.py, shared/monitoring/retrain.py and
shared/core/ledger_index.py. The health check
also runs the rollout's own check of its records (shared/rollout/health.py), handed to it by shared/handlers.py, as
reactions do not import each other. The named handlers are in shared/handlers.py."""

from __future__ import annotations

import azure.functions as func

from shared import handlers  # noqa: F401  (registers the named handlers `reaction.run` calls)
from shared.core import reaction

bp = func.Blueprint()


@bp.function_name("health_check")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_HEALTH_SCHEDULE%", run_on_startup=False, use_monitor=True)
def health_check(timer: func.TimerRequest) -> None:
    reaction.run("monitoring.health", {"past_due": bool(timer.past_due)}, event_id="")


@bp.function_name("drift_check")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_DRIFT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def drift_check_timer(timer: func.TimerRequest) -> None:
    reaction.run("monitoring.drift", {"past_due": bool(timer.past_due)}, event_id="")


@bp.function_name("ledger_index")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_LEDGER_INDEX_SCHEDULE%", run_on_startup=False,
                  use_monitor=True)
def ledger_index(timer: func.TimerRequest) -> None:
    # bookkeeping of the operator's ledger, no Azure ML call: it runs while automation is paused too
    reaction.run("monitoring.ledger_index", {"past_due": bool(timer.past_due)}, event_id="", honour_pause=False)


@bp.function_name("scheduled_retrain")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_RETRAIN_SCHEDULE%", run_on_startup=False, use_monitor=True)
def scheduled_retrain(timer: func.TimerRequest) -> None:
    reaction.run("monitoring.retrain", {"past_due": bool(timer.past_due)}, event_id="")
