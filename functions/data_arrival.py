"""Data arrival triggers: a blob in the data container, and the sweep timer. Thin: the flow is shared/arrival.py.

`on_data_blob` is an Event Grid-sourced blob trigger (Flex Consumption has no polling blob trigger); it hands
the runner the blob's name, URI, ETag and length, never its content. `sweep_batches` completes quiet batches
(when no completion marker is configured), starts batches waiting for a training slot and releases slots of
jobs that ended. Both handlers are registered here, so the CLI can replay their dead letters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared import events, reaction

if TYPE_CHECKING:
    from shared.deps import Deps

bp = func.Blueprint()


@reaction.handler("data.arrival")
def handle_arrival(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared import arrival

    return arrival.handle_blob(payload, deps)


@reaction.handler("data.sweep")
def handle_sweep(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared import arrival

    return arrival.sweep(deps)



@bp.function_name("on_data_blob")
@bp.blob_trigger(arg_name="blob", path="%REFLEX_DATA_CONTAINER%/{name}", connection="AzureWebJobsStorage",
                 source=func.BlobSource.EVENT_GRID)
def on_data_blob(blob: func.InputStream) -> None:
    raw = events.raw_from_blob_stream(blob)
    reaction.run("data.arrival", raw, event_id=events.delivery_id(raw), key=str(raw.get("name", "")))


@bp.function_name("sweep_batches")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sweep_batches(timer: func.TimerRequest) -> None:
    reaction.run("data.sweep", {"past_due": bool(timer.past_due)}, event_id="")
