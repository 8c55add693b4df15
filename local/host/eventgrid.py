"""The host's two Event Grid push endpoints, with the status codes of the real extensions.

`/runtime/webhooks/eventgrid?functionName=NAME` (Event Grid extension, `HttpRequestProcessor`):
  unknown or non-eventGrid function -> 404; header `aeg-event-type`:
  `SubscriptionValidation` -> 200 `{"validationResponse": code}`; `Unsubscribe` -> 202;
  `Notification` -> decode each element (array or single object) with the worker's converter and run the
  function once per element, in parallel: 202 if all succeeded, 500 if any failed (Event Grid then resends
  the whole batch); missing or other header -> 400.
The local BlobCreated feed (blobs.py) delivers through `eventgrid_webhook` too, so blob events reach the
functions exactly as Event Grid's POSTs do.
A body that is not JSON gets 400 (the real host answers 500, which only makes Event Grid retry it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from local.host.index import FunctionEntry
from local.host.invoke import Invoker, decode_event

__all__ = ["Response", "eventgrid_webhook", "lookup"]

logger = logging.getLogger("reflex.host")
_PREFIX = "host.functions."


@dataclass(frozen=True)
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body


def lookup(index: Mapping[str, FunctionEntry], name: str | None) -> FunctionEntry | None:
    """Function names are case-insensitive in the host; `Host.Functions.` prefixes are accepted."""
    if not name:
        return None
    wanted = name.lower().removeprefix(_PREFIX)
    return next((entry for key, entry in index.items() if key.lower() == wanted), None)


def _events(body: bytes) -> list[dict[str, Any]]:
    parsed = json.loads(body or b"null")
    events = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(event, dict) for event in events):
        raise ValueError("every event must be a JSON object")
    return events


def _handshake(event_type: str, body: bytes) -> Response | None:
    """The answers that do not run the function: validation, unsubscribe, bad header."""
    kind = event_type.strip().lower()
    if kind == "subscriptionvalidation":
        try:
            code = (_events(body)[0].get("data") or {}).get("validationCode")
        except (ValueError, IndexError):
            return Response(400, {"error": "SubscriptionValidation needs a validation event"})
        return Response(200, {"validationResponse": code})
    if kind == "unsubscribe":
        return Response(202)
    if kind != "notification":
        return Response(400, {"error": f"aeg-event-type header {event_type!r} is not supported"})
    return None


def eventgrid_webhook(index: Mapping[str, FunctionEntry], invoker: Invoker, function_name: str | None,
                      event_type: str, body: bytes) -> Response:
    entry = lookup(index, function_name)
    if entry is None or entry.trigger_type != "eventGridTrigger":
        return Response(404, {"error": f"no Event Grid trigger function named {function_name!r}"})
    early = _handshake(event_type, body)
    if early is not None:
        return early
    try:
        events = _events(body)
        payloads = [(event.get("id"), decode_event(event)) for event in events]
    except (ValueError, TypeError, KeyError) as exc:
        return Response(400, {"error": f"bad Event Grid body: {exc}"})
    jobs = [invoker.submit(entry, payload, event_id=event_id) for event_id, payload in payloads]
    failed = sum(1 for job in jobs if not job.result())
    if failed:
        return Response(500, {"error": f"{failed} of {len(jobs)} invocations of {entry.name} failed"})
    return Response(202)
