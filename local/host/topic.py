"""A tiny local "custom Event Grid topic": where Reflex publishes its outbound `Reflex.*` events offline.

It accepts what `azure.eventgrid.EventGridPublisherClient(endpoint, AzureKeyCredential(key))` sends to a
basic topic: `POST <endpoint>?api-version=2018-01-01` with header `aeg-sas-key` and a JSON array of events
(Event Grid or CloudEvents schema), answered with 200. Events are kept in memory (the newest `capacity`)
and, if a path is given, appended to a JSON-lines file, so the local stack and tests can see them.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["LocalTopic"]


class LocalTopic:
    def __init__(self, *, key: str | None = None, log_path: Path | str | None = None,
                 capacity: int = 1000) -> None:
        self._key = key
        self.log_path = Path(log_path) if log_path else None
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def publish(self, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """Store a published batch; (status, error body or None) like the service's answers."""
        supplied = headers.get("aeg-sas-key") or headers.get("aeg-sas-token")
        if self._key is not None and supplied != self._key:
            return 401, {"error": {"code": "Unauthorized", "message": "aeg-sas-key is missing or wrong"}}
        try:
            parsed = json.loads(body or b"null")
        except ValueError as exc:
            return 400, {"error": {"code": "BadRequest", "message": f"body is not JSON: {exc}"}}
        events = parsed if isinstance(parsed, list) else [parsed]
        if not events or not all(isinstance(event, dict) for event in events):
            return 400, {"error": {"code": "BadRequest", "message": "body must be an array of events"}}
        with self._lock:
            self._events.extend(events)
            if self.log_path:
                with self.log_path.open("a", encoding="utf-8") as out:
                    out.writelines(json.dumps(event) + "\n" for event in events)
        return 200, None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)
