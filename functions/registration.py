"""Registration gate trigger: Azure ML `RunCompleted` and `RunStatusChanged` (Event Grid). The flow is
shared/registration/flow.py; the handler is registered here so the CLI can replay its dead letters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.core import events, reaction

if TYPE_CHECKING:
    from shared.core.deps import Deps

bp = func.Blueprint()


@reaction.handler("registration.run_event")
def handle_run_event(payload: Any, deps: Deps) -> reaction.Outcome:
    from shared.registration import flow as registration

    return registration.handle_run_event(payload, deps)


@bp.function_name("on_run_event")
@bp.event_grid_trigger(arg_name="event")
def on_run_event(event: func.EventGridEvent) -> None:
    raw = events.raw_from_function_event(event)
    reaction.run("registration.run_event", raw, event_id=raw["id"], key=str(raw.get("subject", "")))
