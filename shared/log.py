"""Logging with context on every line, and OpenTelemetry export to Application Insights when configured.

Every line a reaction logs carries the function name, the event id and the reaction key, set once per
invocation with `context(...)` (a contextvar, so concurrent invocations in one worker do not mix). The
Azure Monitor exporter is imported only when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set, and only on the
first invocation, so cold start does not pay for it.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ContextFilter", "configure", "context", "current_context"]

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("reflex_log_context",
                                                                                   default=None)
_FIELDS = ("function", "event_id", "key")
_configured = False


def current_context() -> dict[str, str]:
    return dict(_context.get() or {})


@contextmanager
def context(**fields: str) -> Iterator[None]:
    """Attach `fields` (function, event_id, key, …) to every log record inside the block."""
    merged = {**current_context(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current context onto each record: `%(function)s`, `%(event_id)s`, `%(key)s`, `%(ctx)s`."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current_context()
        for name in _FIELDS:
            setattr(record, name, ctx.get(name, "-"))
        record.ctx = " ".join(f"{k}={v}" for k, v in ctx.items())
        return True


def configure() -> None:
    """Install the context filter once; start Azure Monitor export if its connection string is set."""
    global _configured
    if _configured:
        return
    _configured = True
    logger = logging.getLogger("reflex")
    logger.setLevel(logging.INFO)
    context_filter = ContextFilter()
    logger.addFilter(context_filter)
    if not logging.getLogger().handlers:  # outside the Functions worker (local host, CLI, tests)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(ctx)s] %(message)s"))
        handler.addFilter(context_filter)
        logger.addHandler(handler)
        logger.propagate = False
    if os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        from azure.monitor.opentelemetry import configure_azure_monitor  # heavy: only when asked for

        configure_azure_monitor(logger_name="reflex")
