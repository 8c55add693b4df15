"""The host's two Event Grid push endpoints, with the status codes of the real extensions.

`/runtime/webhooks/eventgrid?functionName=NAME` (Event Grid extension, `HttpRequestProcessor`):
  unknown or non-eventGrid function -> 404; header `aeg-event-type`:
  `SubscriptionValidation` -> 200 `{"validationResponse": code}`; `Unsubscribe` -> 202;
  `Notification` -> decode each element (array or single object) with the worker's converter and run the
  function once per element, in parallel: 202 if all succeeded, 500 if any failed (Event Grid then resends
  the whole batch); missing or other header -> 400. That is `ProcessEventsAsync` (single dispatch) in
  Azure/azure-sdk-for-net sdk/eventgrid/Microsoft.Azure.WebJobs.Extensions.EventGrid/src/Config/
  EventGridExtensionConfigProvider.cs (commit f85eb6b): every element is one `TryExecuteAsync`, all awaited,
  then 500 on the first failed one; and the Python library's converter says the same ("The runtime invokes
  function once for each array element", azure-functions 1.26.0 azure/functions/eventgrid.py). So the functions
  must not fail on a poison event (shared/core/reaction.py `run_event` dead-letters it and returns): then one poison
  event in an array costs the good ones nothing.
The local BlobCreated feed (blobs.py) delivers through `eventgrid_webhook` too, so blob events reach the
functions exactly as Event Grid's POSTs do.
Input the worker itself cannot decode gets 500, as from the real host (its invocation fails before any Reflex
code runs; Event Grid retries it on its schedule, then dead-letters it to the subscription's dead-letter
container): a body that is not JSON or is nested deeper than the decoder's recursion limit (a JSON array ~1,000
deep raised RecursionError, #18), and an element that the worker's converter rejects (not an object, an
`eventTime` that is not a time). The decodable elements of such a body still run, each once, before the 500
names the others. The local host does not soften this to a 400: a stand-in that answers better than the real
host would hide the difference (README "How it is built").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from local.host.index import FunctionEntry
from local.host.invoke import Invoker, decode_event
from shared.core.errors import safe_text

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


def _elements(body: bytes) -> list[Any]:
    """The body's elements (an array, or one event); ValueError when it is not JSON the decoder can read."""
    try:
        parsed = json.loads(body or b"null")
    except RecursionError:
        raise ValueError("JSON nested deeper than the decoder's recursion limit") from None
    return parsed if isinstance(parsed, list) else [parsed]


def _events(body: bytes) -> list[dict[str, Any]]:
    events = _elements(body)
    if not all(isinstance(event, dict) for event in events):
        raise ValueError("every event must be a JSON object")
    return events


def _decode(element: Any) -> Any:
    """One element as the worker's converter decodes it; ValueError when the converter rejects it."""
    if not isinstance(element, dict):
        raise ValueError(f"not a JSON object but {type(element).__name__}")
    try:
        return decode_event(element)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ValueError(f"{type(exc).__name__}: {safe_text(exc, 200)}") from None


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
        elements = _elements(body)
    except ValueError as exc:
        return Response(500, {"error": f"bad Event Grid body: {exc}"})
    jobs, rejected = [], []
    for position, element in enumerate(elements):
        try:
            payload = _decode(element)
        except ValueError as exc:
            rejected.append(f"element {position}: {exc}")
            continue
        event_id = safe_text(element.get("id"), 200)
        jobs.append(invoker.submit(entry, payload, event_id=event_id))
    failed = sum(1 for job in jobs if not job.result())
    if failed:
        return Response(500, {"error": f"{failed} of {len(jobs)} invocations of {entry.name} failed"})
    if rejected:
        logger.warning("%s: %d of %d events could not be decoded: %s", entry.name, len(rejected), len(elements),
                       "; ".join(rejected[:5]))
        return Response(500, {"error": f"bad Event Grid body: {len(rejected)} of {len(elements)} events could not "
                                       f"be decoded ({'; '.join(rejected[:5])})"})
    return Response(202)
