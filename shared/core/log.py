"""Logging with context on every line, and OpenTelemetry export to Application Insights when configured.

Every line a reaction logs carries the function name, the event id and the reaction key, set once per
invocation with `context(...)` (a contextvar, so concurrent invocations in one worker do not mix). The
Azure Monitor exporter is imported only when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set, and only on the
first invocation, so cold start does not pay for it.

What reaches Application Insights: the exporter's OpenTelemetry `LoggingHandler` turns every attribute of a
`LogRecord` that is not one of logging's own (`_RESERVED_ATTRS`: msg, args, levelname, ...) into a log record
attribute, and the Azure Monitor exporter writes those as `customDimensions` of a `traces` row (values cut to
8 KiB; a record with exc_info becomes an `exceptions` row instead): opentelemetry-instrumentation-logging
`handler.py` `LoggingHandler._get_attributes`, azure-monitor-opentelemetry-exporter `export/logs/_exporter.py`
`_convert_log_to_envelope` and `_utils._filter_custom_properties` (Azure/azure-sdk-for-python,
sdk/monitor/azure-monitor-opentelemetry-exporter, 1.0.0b58 as installed). `configure_azure_monitor(logger_name=
"reflex")` adds that handler to the `reflex` logger; a *logger's* filter does not run for records of its
children (`reflex.reaction`, ...), so the context filter is put on that handler too (`export_context`), or the
context would never leave the process. The alert rules and the workbook in infra/ query these dimensions:
`function`, `event_id`, `key`, `ctx` (every line), `reaction`, `outcome`, `explain_id`, `dead_letter` (the
outcome line, shared/core/reaction.py) and `reflex_event`, `reflex_subject`, `reflex_data`, `explain_id` (one line per
published `Reflex.*` event, shared/core/publish.py).

Every line a reaction logs is written inside its span (shared/core/reaction.py, shared/core/trace.py): the handler
hands the current OpenTelemetry context with each record (opentelemetry-instrumentation-logging `handler.py`,
`context=get_current()`), and the exporter writes its trace id as the row's `operation_Id`
(`_exporter.py` `_convert_log_to_envelope`: `ai.operation.id`), so in Application Insights a chain's log lines,
requests and dependencies are found together by that one id: the trace id of the upload's span.

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

__all__ = ["EXPLAIN_KINDS", "ContextFilter", "configure", "configure_process", "context", "current_context",
           "explain_id", "export_context", "quiet_sdk_loggers"]

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("reflex_log_context",
                                                                                   default=None)
_FIELDS = ("function", "event_id", "key")
_SDK_LOGGERS = ("azure",)  # every azure-* library logs under it (azure.core, azure.storage.blob, azure.identity…)
_configured = False
# The ref kinds (shared/core/ledger.py REF_KINDS) a line's explain id is taken from, first found wins: the batch or job
# names the chain from its start; a model ("name:version") or rollout where no batch or job is known.
EXPLAIN_KINDS = ("batch", "scoring_batch", "job", "scoring_job", "model", "rollout", "blob", "scoring_blob")


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


def explain_id(refs: Mapping[str, Sequence[str]], fallback: str = "") -> str:
    """The id to give `python -m reflex explain` for a line that touched `refs` (ledger ref kinds -> ids):
    its batch, job or model, else `fallback` (the event id), else "-". Logged as the `explain_id` dimension, so
    an alert on the line names the command to run."""
    for kind in EXPLAIN_KINDS:
        for value in refs.get(kind, ()):
            if value:
                return str(value)
    return fallback if fallback and fallback != "-" else "-"


def export_context(logger: logging.Logger) -> None:
    """Put the context filter on every handler of `logger` (the Azure Monitor exporter's), so records of its
    child loggers carry the context too (see the module docstring)."""
    for handler in logger.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


_FILTER = ContextFilter()


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
    context_filter = _FILTER
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
        export_context(logger)
