"""Data arrival triggers: a blob in the data container, and the sweep timer. Thin: the flow is shared/arrival/flow.py.

`on_data_blob` is an Event Grid trigger on `Microsoft.Storage.BlobCreated` from the storage account's system
topic (subscription `reflex-on-data-blob`: subject begins with the data container's path, `data.api` one that
completes a blob). It hands the runner the event itself: url, eTag, contentLength, contentType, api. It is not
a blob trigger, on purpose: for a blob trigger the host reads the whole blob and sends its bytes to the worker
over gRPC (a maintainer in Azure/azure-functions-python-worker#1449: "the file is loaded in by the host and
passed to the worker ... resulting in OOMs"), and its `Properties.ETag` is an `Azure.ETag` struct that JSON.NET
serializes as `{}` (Azure/azure-sdk-for-net PR #5469, issue #34410), so no upload would carry its ETag.
`sweep_batches` completes quiet batches
(when no completion marker is configured), starts batches waiting for a training slot and releases slots of
jobs that ended. The named handlers are in shared/handlers.py (the CLI replays through them too).
"""

from __future__ import annotations

import azure.functions as func

from shared import handlers  # noqa: F401  (registers the named handlers `reaction.run` calls)
from shared.core import reaction

bp = func.Blueprint()


@bp.function_name("on_data_blob")
@bp.event_grid_trigger(arg_name="event")
def on_data_blob(event: func.EventGridEvent) -> None:
    reaction.run_event("data.arrival", event)


@bp.function_name("sweep_batches")
@bp.timer_trigger(arg_name="timer", schedule="%REFLEX_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sweep_batches(timer: func.TimerRequest) -> None:
    reaction.run("data.sweep", {"past_due": bool(timer.past_due)}, event_id="")
