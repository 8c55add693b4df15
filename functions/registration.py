"""Registration gate trigger: Azure ML `RunCompleted` and `RunStatusChanged` (Event Grid). The flow is
shared/registration.py; the handler is registered here so the CLI can replay its dead letters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared import reaction

if TYPE_CHECKING:
    from shared.deps import Deps

bp = func.Blueprint()


@reaction.handler("registration.run_event")
def handle_run_event(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared import registration

    return registration.handle_run_event(payload, deps)


@bp.function_name("on_run_event")
@bp.event_grid_trigger(arg_name="event")
def on_run_event(event: func.EventGridEvent) -> None:
    reaction.run_event("registration.run_event", event)
