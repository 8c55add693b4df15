"""Registration gate trigger: Azure ML `RunCompleted` and `RunStatusChanged` (Event Grid). The flow is
shared/registration/flow.py; its named handler is in shared/handlers.py."""

from __future__ import annotations

import azure.functions as func

from shared import handlers  # noqa: F401  (registers the named handlers `reaction.run` calls)
from shared.core import reaction

bp = func.Blueprint()


@bp.function_name("on_run_event")
@bp.event_grid_trigger(arg_name="event")
def on_run_event(event: func.EventGridEvent) -> None:
    reaction.run_event("registration.run_event", event)
