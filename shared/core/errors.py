"""Retry intent as error types, and the one place that maps azure-core exceptions onto them.

A reaction raises `PermanentError` when retrying cannot help (bad input, a validation or auth failure, a
resource that is not there): the trigger adapter records it (dead letter, log) and returns, so the event
does not crash-loop. It raises `TransientError` when the same call may succeed later (throttling, 5xx,
connection loss): the adapter re-raises so the platform's own redelivery (Event Grid, a timer's next tick) retries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["ReflexError", "PermanentError", "TransientError", "map_azure_error", "retry_after_seconds", "safe_json",
           "safe_text", "TEXT_LIMIT"]

TEXT_LIMIT = 1000  # characters of one reason, id or log field (an Event Grid event may carry a 1 MB string)
_DEPTH_LIMIT = 32  # levels of a JSON value kept in a dead letter or a ledger line (the worker parses ~1,000)


class ReflexError(Exception):
    """Base of Reflex's own errors."""


class PermanentError(ReflexError):
    """Retrying will not help; record the cause where an operator sees it and stop."""


class TransientError(ReflexError):
    """The same call may succeed later; `retry_after` is the server's hint in seconds (or a default)."""

    def __init__(self, message: str, retry_after: float = 10.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(exc: BaseException, default: float = 10.0) -> float:
    """Read `Retry-After` (seconds) from an azure-core error's response, if it carried one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for key in ("Retry-After", "retry-after", "x-ms-retry-after-ms"):
        value = headers.get(key)
        if value is None:
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        return seconds / 1000.0 if key.endswith("-ms") else seconds
    return default


def safe_text(value: object, limit: int = TEXT_LIMIT, *, one_line: bool = False) -> str:
    """`value` as text that any sink takes: at most `limit` characters (then "…" and how many were cut), lone
    surrogates and other unencodable code points as `\\udxxx` escapes, so UTF-8 encoding (a blob, a log stream,
    a terminal) never raises. The one helper for everything that reaches the ledger, a reason, a dead letter's
    error or a log; `one_line` also folds whitespace (service messages span lines).

    >>> safe_text("a\\ud800b"), safe_text("x" * 12, 5)
    ('a\\\\ud800b', 'xxxxx…(+7 chars)')
    """
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # a __str__ that raises, or a value nested too deep to render
        text = f"<unprintable {type(value).__name__}>"
    if one_line:
        text = " ".join(text[: limit * 2].split())
    if len(text) > limit:
        text = f"{text[:limit]}…(+{len(text) - limit} chars)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_json(value: Any, *, limit: int = TEXT_LIMIT, depth: int = _DEPTH_LIMIT, items: int = 1000) -> Any:
    """A JSON value that `json.dumps` always encodes, bounded: strings (and keys) through `safe_text(limit)`,
    NaN/Infinity and other non-JSON values as text, containers nested deeper than `depth` or longer than
    `items` cut with a marker. Recursion is bounded by `depth`, so a payload nested 1,000 deep cannot raise
    RecursionError in the encoder."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return safe_text(value, limit)
    if depth <= 0:
        return f"<nested deeper than {_DEPTH_LIMIT} levels: cut>"
    if isinstance(value, Mapping):
        out = {safe_text(k, 200): safe_json(v, limit=limit, depth=depth - 1, items=items)
               for k, v in list(value.items())[:items]}
        if len(value) > items:
            out["…"] = f"{len(value) - items} more keys cut"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        out_list = [safe_json(v, limit=limit, depth=depth - 1, items=items) for v in seq[:items]]
        return out_list + ([f"…{len(seq) - items} more items cut"] if len(seq) > items else [])
    return safe_text(value, limit)


def _short(text: object, limit: int = 300) -> str:
    """Service payloads can be long and may echo request data: keep the log line short."""
    return safe_text(text, limit, one_line=True)


def map_azure_error(exc: BaseException, resource: str, *, role: str = "") -> ReflexError:
    """Translate an azure-core (or azure-ai-ml) exception into a Reflex error naming `resource`.

    Not found and "already exists" are not errors for the callers that expect them: the Azure ML module
    handles those before calling this. Everything else lands here:

    * connection failures, 408, 429 and 5xx -> `TransientError(retry_after)`;
    * 401/403 (auth) and 400 (validation), client-side validation -> `PermanentError`;
    * 404 where the caller did not expect absence -> `PermanentError` saying "not found".

    `role`: what the caller's identity needs for this call (e.g. "Storage Blob Data Reader on container x"), named
    in a 401/403 message so the operator knows which role assignment is missing, not just that one is.
    """
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ReflexError):
        return exc
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"{resource}: connection failed: {_short(exc)}", retry_after_seconds(exc, 5.0))
    if isinstance(exc, ClientAuthenticationError):
        return PermanentError(f"{resource}: authentication failed (check the managed identity and its roles"
                              f"{'; it needs ' + role if role else ''}): {_short(exc)}")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if status in (408, 429) or status >= 500:
            return TransientError(f"{resource}: service answered {status}: {_short(exc.message or exc)}",
                                  retry_after_seconds(exc))
        if status == 404:
            return PermanentError(f"{resource}: not found: {_short(exc.message or exc)}")
        if status == 403:
            needs = f"; it needs {role}" if role else ""
            return PermanentError(f"{resource}: forbidden (the identity lacks a role{needs}): "
                                  f"{_short(exc.message or exc)}")
        return PermanentError(f"{resource}: rejected with {status}: {_short(exc.message or exc)}")
    name = type(exc).__name__
    if name == "CredentialUnavailableError":
        return PermanentError(f"{resource}: no credential available: {_short(exc)}")
    return PermanentError(f"{resource}: {name}: {_short(exc)}")
