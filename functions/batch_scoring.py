"""Batch scoring triggers: a blob in the scoring container, the scoring schedule and the job tracker. Thin.

The flow is shared/scoring/flow.py. `on_scoring_blob` is an Event Grid trigger on `Microsoft.Storage.BlobCreated`
for the scoring container (subscription `reflex-on-scoring-blob`); it hands the runner the event (url, eTag,
contentLength, api), never the blob's content (why not a blob trigger: functions/data_arrival.py).
`batch_tracker` runs on the reconcile schedule to complete quiet batches, retry batches waiting for a champion
or a deployment and publish the outcome of finished batch jobs; `scheduled_scoring` re-scores the latest batch
with the current champion when REFLEX_BATCH_SCHEDULE_ENABLED is true. The named handlers are in
shared/handlers.py (the CLI replays through them too).
"""

from __future__ import annotations

import azure.functions as func

from shared import handlers  # noqa: F401  (registers the named handlers `reaction.run` calls)
from shared.core import reaction

bp = func.Blueprint()


@bp.function_name("on_scoring_blob")
@bp.event_grid_trigger(arg_name="event")
def on_scoring_blob(event: func.EventGridEvent) -> None:
    reaction.run_event("scoring.blob", event)


@bp.function_name("batch_tracker")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_RECONCILE_SCHEDULE%", run_on_startup=False, use_monitor=True)
def batch_tracker(timer: func.TimerRequest) -> None:
    reaction.run("scoring.track", {"past_due": bool(timer.past_due)}, event_id="")


@bp.function_name("scheduled_scoring")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_BATCH_SCHEDULE%", run_on_startup=False, use_monitor=True)
def scheduled_scoring(timer: func.TimerRequest) -> None:
    reaction.run("scoring.scheduled", {"past_due": bool(timer.past_due)}, event_id="")
