"""Logging with context on every line, and OpenTelemetry export to Application Insights when configured.

Every line a reaction logs carries the function name, the event id and the reaction key, set once per
invocation with `context(...)` (a contextvar, so concurrent invocations in one worker do not mix). The
Azure Monitor exporter is imported only when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set, and only on the
first invocation, so cold start does not pay for it.

The Azure SDK logs every HTTP request and response at INFO (`azure.core.pipeline.policies.http_logging_policy`),
which buries Reflex's own lines wherever INFO reaches a handler (the local host, the scoring server, the CLI,
the Functions worker): `quiet_sdk_loggers` sets the `azure` logger, the parent of every azure-* library's
logger, to WARNING, as "Configure logging in the Azure libraries for Python" shows
(https://learn.microsoft.com/azure/developer/python/sdk/azure-sdk-logging). A level someone set on purpose
(anything but NOTSET) is left alone, so `logging.getLogger("azure").setLevel(logging.DEBUG)` still debugs.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ContextFilter", "configure", "configure_process", "context", "current_context", "quiet_sdk_loggers"]

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("reflex_log_context",
                                                                                   default=None)
_FIELDS = ("function", "event_id", "key")
_SDK_LOGGERS = ("azure",)  # every azure-* library logs under it (azure.core, azure.storage.blob, azure.identity…)
_configured = False


def current_context() -> dict[str, str]:
    return dict(_context.get() or {})


@contextmanager
def context(**fields: str | None) -> Iterator[None]:
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


def quiet_sdk_loggers() -> None:
    """Azure SDK loggers at WARNING (their HTTP lines are INFO), unless a level was set on purpose."""
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def configure_process(level: int = logging.INFO, fmt: str = "%(asctime)s %(name)s %(message)s") -> None:
    """Root logging for a local helper process (the scoring server, a job runner): `level` to stderr, the Azure
    SDK's HTTP lines left out."""
    logging.basicConfig(level=level, format=fmt)
    quiet_sdk_loggers()


def configure() -> None:
    """Install the context filter once; quiet the Azure SDK's HTTP logging; start Azure Monitor export if its
    connection string is set."""
    global _configured
    if _configured:
        return
    _configured = True
    quiet_sdk_loggers()
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
