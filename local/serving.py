"""The local scoring server: online endpoints over HTTP, plus the MLflow webhook relay.

    python -m local.serving [--port 5001]
    POST /endpoints/<name>/score      body as Azure ML takes it, {"input_data": {"columns", "index", "data"}}, or
                                      {"data": [{…}]}; header `azureml-model-deployment` picks a deployment.
                                      Any other shape is a 400 that names it and lists the accepted ones
                                      (shared/scoring/model_input.py), as is a row without a column the model needs.
    POST /mlflow/webhooks             MLflow registry webhook -> ModelRegistered to the local host
    POST /models/warm                 body {"model": "name:version"}: load it now (the provisioner calls this)
    GET  /health

Why a server: Azure ML endpoints are reached over HTTPS with a scoring URI; the demo and people make real
requests the same way here. Routing, mirror traffic and counters are the platform's (local/endpoints.py), so a
request here and `platform.invoke()` are counted alike. Models are cached in this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["serve", "make_handler"]

log = logging.getLogger("reflex.local.serving")
_SCORE = re.compile(r"^/endpoints/([A-Za-z0-9-]+)/score/?$")


def make_handler(platform: Any, secret: str) -> type[BaseHTTPRequestHandler]:
    from local import amlevents, mlflow_relay
    from shared.core.errors import PermanentError

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(200, '{"status": "ok"}') if self.path == "/health" else self._reply(404, '{"error": "no"}')

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            match = _SCORE.match(self.path.split("?")[0])
            if match:
                return self._score(match[1], raw)
            if self.path.split("?")[0] == "/mlflow/webhooks":
                return self._relay(raw)
            if self.path.split("?")[0] == "/models/warm":
                return self._warm(raw)
            self._reply(404, json.dumps({"error": f"no route {self.path}"}))

        def _score(self, endpoint: str, raw: bytes) -> None:
            from shared.scoring.model_input import ACCEPTED_SHAPES

            try:
                body = json.loads(raw or b"{}")
            except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested too deep to read
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                return self._reply(400, json.dumps({"error": f"invalid JSON: {reason}",
                                                    "accepted_shapes": list(ACCEPTED_SHAPES)}))
            try:
                name, result = platform.endpoints.invoke(endpoint, self.headers.get("azureml-model-deployment", ""),
                                                         body)
            except PermanentError as exc:
                return self._reply(404, json.dumps({"error": str(exc)}))
            self._reply(result.status, result.body, {"azureml-model-deployment": name})

        def _warm(self, raw: bytes) -> None:
            """Load a model into this process before its deployment reports Succeeded (the provisioner asks),
            as an Azure ML deployment is ready to answer its first request at full speed."""
            from local.endpoints import load_model

            try:
                model = str(json.loads(raw or b"{}")["model"])
                load_model(model)
            except (KeyError, ValueError) as exc:
                return self._reply(400, json.dumps({"error": f'expected {{"model": "name:version"}}: {exc}'}))
            except Exception as exc:  # the provisioner reports the deployment Failed with this
                return self._reply(500, json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            self._reply(200, json.dumps({"loaded": model}))

        def _relay(self, raw: bytes) -> None:
            if not mlflow_relay.verify(secret, dict(self.headers.items()), raw):
                return self._reply(401, '{"error": "bad signature"}')
            event = mlflow_relay.to_event(json.loads(raw))
            if event is not None:
                delivered = amlevents.deliver(platform.settings.local_host_url, "on_model_registered", event)
                log.info("relayed %s:%s (delivered: %s)", event["data"]["modelName"], event["data"]["modelVersion"],
                         delivered)
            self._reply(200, "{}")

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s " + fmt, self.address_string(), *args)

    return Handler


def serve(port: int, *, secret: str) -> None:
    from local.platform import LocalPlatform
    from shared.core.settings import load

    platform = LocalPlatform.from_settings(load())
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(platform, secret))
    print(f"serving endpoints on http://127.0.0.1:{port}/endpoints/<name>/score", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Local online endpoints over HTTP")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    from shared.core.log import configure_process

    configure_process()  # INFO to serving.log, without the Azure SDK's HTTP line per storage call
    serve(args.port, secret=os.environ.get("REFLEX_LOCAL_WEBHOOK_SECRET", "local-webhook-secret"))
