"""Outbound Reflex.* events reach an Event Grid topic over HTTP (a loopback receiver), or are skipped quietly."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from shared.core.publish import Publisher


@pytest.fixture
def topic() -> Any:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "key": self.headers.get("aeg-sas-key"), "body": json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/api/events", received
    server.shutdown()


def test_publishes_eventgrid_schema_with_key(topic: Any) -> None:
    url, received = topic
    pub = Publisher(url, key="local-key")
    event = pub.publish("RolloutStarted", "endpoints/ep", {"model": "m:2"})
    assert event.type == "Reflex.RolloutStarted"
    [req] = received
    assert req["key"] == "local-key" and req["path"].startswith("/api/events?api-version=")
    [sent] = req["body"]
    assert sent["eventType"] == "Reflex.RolloutStarted" and sent["subject"] == "endpoints/ep"
    assert sent["data"] == {"model": "m:2"} and sent["id"] == event.id


def test_without_topic_says_so_once_and_sends_nothing(caplog: pytest.LogCaptureFixture) -> None:
    sink: list[Any] = []
    pub = Publisher("", sink=sink.append)
    with caplog.at_level(logging.INFO, logger="reflex.publish"):
        pub.publish("A", "s", {})
        pub.publish("B", "s", {})
    assert sum("not published" in r.message for r in caplog.records) == 1
    assert [e.type for e in sink] == ["Reflex.A", "Reflex.B"]


def test_unreachable_topic_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    pub = Publisher("http://127.0.0.1:9/api/events", key="k")
    with caplog.at_level(logging.WARNING, logger="reflex.publish"):
        pub.publish("X", "s", {"a": 1})
    assert any("could not publish Reflex.X" in r.message for r in caplog.records)
