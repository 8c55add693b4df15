"""Monitoring timers: health check, drift check and scheduled retraining. Thin: the flows are
shared/monitoring/health.py, shared/monitoring/drift_check.py and shared/monitoring/retrain.py. The health check
also runs the rollout's own check of its records (shared/rollout/health.py), handed to it here, as reactions do
not import each other. Handlers are registered here so the CLI can replay them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.core import reaction

if TYPE_CHECKING:
    from shared.core.deps import Deps

bp = func.Blueprint()


@reaction.handler("monitoring.health")
def handle_health(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared.monitoring import health
    from shared.rollout import health as rollout_health

    return health.check(deps, [rollout_health])


@reaction.handler("monitoring.drift")
def handle_drift(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared.monitoring import drift_check

    return drift_check.check(deps)


@reaction.handler("monitoring.retrain")
def handle_retrain(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared.monitoring import drift_check

    return drift_check.scheduled_retrain(deps)


@bp.function_name("health_check")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_HEALTH_SCHEDULE%", run_on_startup=False, use_monitor=True)
def health_check(timer: func.TimerRequest) -> None:
    reaction.run("monitoring.health", {"past_due": bool(timer.past_due)}, event_id="")


@bp.function_name("drift_check")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_DRIFT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def drift_check_timer(timer: func.TimerRequest) -> None:
    reaction.run("monitoring.drift", {"past_due": bool(timer.past_due)}, event_id="")


@bp.function_name("scheduled_retrain")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_RETRAIN_SCHEDULE%", run_on_startup=False, use_monitor=True)
def scheduled_retrain(timer: func.TimerRequest) -> None:
    reaction.run("monitoring.retrain", {"past_due": bool(timer.past_due)}, event_id="")
