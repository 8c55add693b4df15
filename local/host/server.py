"""HTTP front of the local host: routes the real host's URLs to the handlers (stdlib only).

    POST /runtime/webhooks/eventgrid?functionName=NAME         Event Grid trigger (path case-insensitive)
    POST /admin/functions/NAME   {"input": "..."}              run a non-HTTP function now -> 202
    GET  /admin/host/status                                    health: {"state": "Running", "functions": [...]}
    POST /api/events   (aeg-sas-key)                           local custom topic for outbound Reflex.* events
    GET  /api/events                                           the events published so far
"""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from local.host import admin, eventgrid

if TYPE_CHECKING:
    from local.host.runtime import Host

__all__ = ["make_server"]

logger = logging.getLogger("reflex.host")


def make_server(host: Host, bind: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (_Handler,), {"host": host})
    server = ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    return server


class _Handler(BaseHTTPRequestHandler):
    host: Host
    server_version = "ReflexLocalHost/1"

    def do_GET(self) -> None:
        path, _ = self._route()
        if path == "/admin/host/status":
            self._send(200, self.host.status())
        elif path == "/api/events":
            self._send(200, self.host.topic.events())
        else:
            self._send(404, {"error": f"no route GET {path}"})

    def do_POST(self) -> None:
        try:
            self._post()
        except Exception:  # a bug or an unreachable dependency: answer 500, keep serving
            logger.exception("POST %s failed in the host", self.path)
            self._send(500, {"error": "the local host failed to handle the request; see its log"})

    def _post(self) -> None:
        path, query = self._route()
        body = self._body()
        event_type = self.headers.get("aeg-event-type", "")
        names = query.get("functionname")
        function_name = names[0] if names else None
        started = time.monotonic()
        if path == "/runtime/webhooks/eventgrid":
            response = eventgrid.eventgrid_webhook(self.host.index, self.host.invoker, function_name, event_type,
                                                   body)
        elif path.startswith("/admin/functions/"):
            name = unquote(self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
            response = admin.run_now(self.host.index, self.host.invoker, name, body)
        elif path == "/api/events":
            status, payload = self.host.topic.publish({k.lower(): v for k, v in self.headers.items()}, body)
            response = eventgrid.Response(status, payload)
        else:
            response = eventgrid.Response(404, {"error": f"no route POST {path}"})
        logger.info("POST %s -> %d (%.0f ms)", self.path, response.status, (time.monotonic() - started) * 1000)
        self._send(response.status, response.body)

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        query = {k.lower(): v for k, v in parse_qs(parts.query).items()}
        return parts.path.rstrip("/").lower() or "/", query

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any) -> None:
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http: " + format, *args)
