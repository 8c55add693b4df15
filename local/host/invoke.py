"""Build trigger payloads exactly as the Python worker decodes them, and run user functions safely.

Payloads go through azure.functions' own converters (`get_binding_registry()`), so a function sees the same
`EventGridEvent`/`CloudEvent` and `TimerRequest` objects here as under the real host. Every
invocation runs inside `shared.core.log.context(function=..., event_id=...)`; a failure is logged with its
traceback and reported to the caller, never allowed to stop the host.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from local.host.index import FunctionEntry
from shared.core import log

__all__ = ["Invoker", "decode_event", "decode_timer"]

logger = logging.getLogger("reflex.host")


def _converter(binding: str) -> Any:
    import azure.functions as func

    return func.get_binding_registry().get(binding)


def decode_event(event: Mapping[str, Any]) -> Any:
    """One Event Grid event dict -> `func.EventGridEvent`, or `func.CloudEvent` when it has `specversion`."""
    from azure.functions import meta

    return _converter("eventGridTrigger").decode(meta.Datum(type="json", value=json.dumps(event)),
                                                 trigger_metadata=None)


def decode_timer(*, past_due: bool, last: datetime | None = None, next_: datetime | None = None) -> Any:
    """The `TimerRequest` the host sends: `{"Schedule": {}, "ScheduleStatus": {...}, "IsPastDue": ...}`."""
    from azure.functions import meta

    status = None
    if next_ is not None:
        status = {"Last": (last or next_).isoformat(), "Next": next_.isoformat(),
                  "LastUpdated": (last or next_).isoformat()}
    payload = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status, "IsPastDue": past_due}
    return _converter("timerTrigger").decode(meta.Datum(type="json", value=json.dumps(payload)),
                                             trigger_metadata=None)


class Invoker:
    """Runs user functions in a small thread pool, each inside a log context; failures become `False`."""

    def __init__(self, max_workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="reflex-host-invoke")

    def invoke(self, entry: FunctionEntry, payload: Any, *, event_id: str | None = None) -> bool:
        """Call `entry` with its trigger argument now, in this thread; True on success, False if it raised."""
        with log.context(function=entry.name, event_id=event_id):
            try:
                result = entry.func(**{entry.arg_name: payload})
                if inspect.isawaitable(result):
                    asyncio.run(_awaited(result))
            except Exception:
                logger.exception("function %s failed (event_id=%s)", entry.name, event_id or "-")
                return False
            logger.info("function %s succeeded (event_id=%s)", entry.name, event_id or "-")
            return True

    def submit(self, entry: FunctionEntry, payload: Any, *, event_id: str | None = None) -> Future[bool]:
        """Invoke on the pool; the future holds the success flag."""
        return self._pool.submit(self.invoke, entry, payload, event_id=event_id)

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run any host task on the same pool."""
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
