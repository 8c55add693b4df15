"""The local host's parts wired together: index, invoker pool, BlobCreated feed and poller, timers, HTTP server.

`Host` owns the threads and stops them together; tests build one in-process on port 0, the CLI in
`__main__` builds one from flags. Receipts and the poller exist only when there are blob subscriptions
(function -> container, e.g. the app's `BLOB_SUBSCRIPTIONS`), so an app without them runs without any
storage setting. The feed delivers through the Event Grid webhook handler, in-process or (feeding a
`func start` host) over HTTP.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local.host import storage
from local.host.blobs import (
    DEAD_LETTER_CONTAINER,
    EVENT_GRID_RETRY_DELAYS,
    BlobEventDelivery,
    BlobPoller,
    subscriptions_for,
)
from local.host.eventgrid import eventgrid_webhook
from local.host.forward import http_sender
from local.host.index import FunctionEntry
from local.host.invoke import Invoker
from local.host.receipts import ReceiptStore
from local.host.server import make_server
from local.host.timers import TimerScheduler
from local.host.topic import LocalTopic

__all__ = ["Host", "default_host_id"]

logger = logging.getLogger("reflex.host")


def default_host_id(env: Mapping[str, str] | None = None) -> str:
    """`AzureFunctionsWebHost__hostid` if set, else the machine name: lower case, [a-z0-9-], 32 chars max."""
    source = os.environ if env is None else env
    raw = source.get("AzureFunctionsWebHost__hostid") or socket.gethostname() or "localhost"
    return re.sub(r"[^a-z0-9-]", "-", raw.lower())[:32].strip("-") or "localhost"


class Host:
    def __init__(self, index: Mapping[str, FunctionEntry], *, bind: str = "127.0.0.1", port: int = 7071,
                 host_id: str | None = None, poll_seconds: float = 2.0, timers: bool = True,
                 blob_poll: bool = True, events_log: Path | str | None = None, topic_key: str | None = None,
                 max_workers: int = 8, max_blob_attempts: int = 30,
                 blob_retry_delays: tuple[float, ...] = EVENT_GRID_RETRY_DELAYS,
                 dead_letter_container: str = DEAD_LETTER_CONTAINER, env: Mapping[str, str] | None = None,
                 forward_to: str | None = None, blob_subscriptions: Mapping[str, str] | None = None) -> None:
        self.index = dict(index)
        # a feeder keeps receipts of its own: the host it feeds may be this machine's local host, same default id
        self.host_id = host_id or (default_host_id(env)[:25] + "-feeder" if forward_to else default_host_id(env))
        self.invoker = Invoker(max_workers=max_workers)
        self.topic = LocalTopic(key=topic_key, log_path=events_log)
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._started = time.monotonic()
        subscriptions = subscriptions_for(self.index, blob_subscriptions or {}, os.environ if env is None else env)
        self.delivery: BlobEventDelivery | None = None
        self.poller: BlobPoller | None = None
        if subscriptions:
            receipts = ReceiptStore(storage.blob_service(storage.HOST_CONNECTION, env), self.host_id)
            send = http_sender(forward_to) if forward_to else self._deliver_here
            self.delivery = BlobEventDelivery(receipts, send, max_attempts=max_blob_attempts,
                                              retry_delays=blob_retry_delays,
                                              dead_letter_container=dead_letter_container, env=env)
            if blob_poll:
                self.poller = BlobPoller(subscriptions, self.delivery, env=env)
        # feeding another host: it runs the timers (and every function); this one only feeds and hosts the topic
        self.timers = TimerScheduler(self.index, self.invoker) if timers and not forward_to else None
        self.server = make_server(self, bind, port)
        self._threads: list[threading.Thread] = []

    def _deliver_here(self, function: str, body: bytes) -> int:
        """In-process: the same handler the HTTP route runs for Event Grid's POSTs."""
        return eventgrid_webhook(self.index, self.invoker, function, "Notification", body).status

    @property
    def url(self) -> str:
        bind, port = self.server.server_address[:2]
        host = bind.decode() if isinstance(bind, bytes) else bind
        return f"http://{host}:{port}"

    def start(self) -> Host:
        self._spawn("reflex-host-http", self.server.serve_forever)
        if self.poller is not None:
            self._spawn("reflex-host-blob-poll", self.poller.run, self._stop, self._poll_seconds)
        if self.timers is not None:
            self.timers.start(self._stop)
        return self

    def stop(self) -> None:
        """Stop accepting work, let running invocations finish, join the threads."""
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.timers is not None:
            self.timers.join(timeout=10)
        self.invoker.shutdown(wait=True)

    def status(self) -> dict[str, Any]:
        return {"id": self.host_id, "state": "Running" if not self._stop.is_set() else "Stopping",
                "version": "reflex-local-host", "processUptime": int((time.monotonic() - self._started) * 1000),
                "functions": sorted(self.index),
                "triggers": {name: entry.trigger_type for name, entry in sorted(self.index.items())}}

    def __enter__(self) -> Host:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=name)
        thread.start()
        self._threads.append(thread)
