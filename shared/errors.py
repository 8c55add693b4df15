"""Retry intent as error types, and the one place that maps azure-core exceptions onto them.

A reaction raises `PermanentError` when retrying cannot help (bad input, a validation or auth failure, a
resource that is not there): the trigger adapter records it (dead letter, log) and returns, so the event
does not crash-loop. It raises `TransientError` when the same call may succeed later (throttling, 5xx,
connection loss): the adapter re-raises so the platform's own redelivery (Event Grid, a timer's next tick) retries.
"""

from __future__ import annotations

__all__ = ["ReflexError", "PermanentError", "TransientError", "map_azure_error", "retry_after_seconds"]


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


def _short(text: str, limit: int = 300) -> str:
    """Service payloads can be long and may echo request data: keep the log line short."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def map_azure_error(exc: BaseException, resource: str) -> ReflexError:
    """Translate an azure-core (or azure-ai-ml) exception into a Reflex error naming `resource`.

    Not found and "already exists" are not errors for the callers that expect them: the Azure ML module
    handles those before calling this. Everything else lands here:

    * connection failures, 408, 429 and 5xx -> `TransientError(retry_after)`;
    * 401/403 (auth) and 400 (validation), client-side validation -> `PermanentError`;
    * 404 where the caller did not expect absence -> `PermanentError` saying "not found".
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
        return PermanentError(f"{resource}: authentication failed (check the managed identity and its roles): "
                              f"{_short(exc)}")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if status in (408, 429) or status >= 500:
            return TransientError(f"{resource}: service answered {status}: {_short(exc.message or exc)}",
                                  retry_after_seconds(exc))
        if status == 404:
            return PermanentError(f"{resource}: not found: {_short(exc.message or exc)}")
        if status == 403:
            return PermanentError(f"{resource}: forbidden (the identity lacks a role): {_short(exc.message or exc)}")
        return PermanentError(f"{resource}: rejected with {status}: {_short(exc.message or exc)}")
    name = type(exc).__name__
    if name == "CredentialUnavailableError":
        return PermanentError(f"{resource}: no credential available: {_short(exc)}")
    return PermanentError(f"{resource}: {name}: {_short(exc)}")
