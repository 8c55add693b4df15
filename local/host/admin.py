"""The host's admin "run now" API: `POST /admin/functions/NAME` with `{"input": "..."}` -> 202.

As with the real host, the request is accepted and the function runs in the background: a timer gets a
`TimerRequest` with `past_due=False`, an Event Grid trigger (BlobCreated ones included) decodes `input` as one
event's JSON, a queue trigger gets `input` as the message body.
Unknown function -> 404; a body that is not `{"input": ...}` JSON -> 400.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from local.host.eventgrid import Response, lookup
from local.host.index import FunctionEntry
from local.host.invoke import Invoker, decode_event, decode_timer

__all__ = ["run_now"]

logger = logging.getLogger("reflex.host")


def _payload(entry: FunctionEntry, text: str) -> Any:
    if entry.trigger_type == "timerTrigger":
        return decode_timer(past_due=False)
    if entry.trigger_type == "eventGridTrigger":
        return decode_event(json.loads(text))
    if entry.trigger_type == "queueTrigger":
        from azure.functions.queue import QueueMessage

        return QueueMessage(id=str(uuid.uuid4()), body=text.encode("utf-8"), dequeue_count=1)
    raise ValueError(f"trigger type {entry.trigger_type!r} cannot be run through the admin API here")


def run_now(index: Mapping[str, FunctionEntry], invoker: Invoker, name: str, body: bytes) -> Response:
    entry = lookup(index, name)
    if entry is None:
        return Response(404, {"error": f"no function named {name!r}"})
    try:
        request = json.loads(body or b"{}")
        text = request.get("input", "") if isinstance(request, dict) else None
        if not isinstance(text, str):
            raise ValueError('body must be {"input": "<string>"}')
        payload = _payload(entry, text)
    except ValueError as exc:
        return Response(400, {"error": str(exc)})
    invoker.submit(entry, payload, event_id=f"admin-{uuid.uuid4()}")
    return Response(202)
