"""MLflow registry webhook -> Azure ML `ModelRegistered` event, so a model a person registers in the MLflow UI
starts a rollout exactly as one registered in Azure ML Studio does.

Verified on mlflow 3.17 with the SQLite server: `MlflowClient.create_webhook(events=["model_version.created"])`
works, but the server accepts only https URLs on public hosts unless it is started with
`MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https` and `MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true` (the stack sets both;
`MLFLOW_WEBHOOK_CACHE_TTL=1` makes a new webhook take effect at once). It posts
`{"entity": "model_version", "action": "created", "timestamp", "data": {"name", "version", "source", "run_id",
"tags", "description"}}` with `X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>`.
Delivery is fire-and-forget (no outbox), so the reconciler's own polling remains the safety net.

Versions registered by Reflex itself carry `reflex.managed=true`: the platform already emitted their event, so
the relay skips them (the event ids are equal anyway, `model:<name>:<version>`, so a duplicate would be seen
as one by the reactions' idempotency).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from local import amlevents
from shared.core.platform import REFLEX_TAG

__all__ = ["WEBHOOK_NAME", "verify", "to_event", "ensure_webhook", "SERVER_ENV"]

WEBHOOK_NAME = "reflex-model-registered"
SERVER_ENV = {"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
              "MLFLOW_WEBHOOK_CACHE_TTL": "1"}
PROPERTY_PREFIX = "reflex.property."


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Check MLflow's `v1,<base64 HMAC>` signature over `<delivery id>.<timestamp>.<body>`."""
    lower = {k.lower(): v for k, v in headers.items()}
    signature = lower.get("x-mlflow-signature", "")
    if not signature.startswith("v1,"):
        return False
    signed = f"{lower.get('x-mlflow-delivery-id', '')}.{lower.get('x-mlflow-timestamp', '')}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, signature[3:])


def to_event(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Azure ML event for a `model_version.created` payload; None for other payloads and Reflex's own."""
    if (payload.get("entity"), payload.get("action")) != ("model_version", "created"):
        return None
    data = payload.get("data") or {}
    tags = {str(k): str(v) for k, v in (data.get("tags") or {}).items()}
    if tags.get(REFLEX_TAG) == "true":
        return None
    props = {k[len(PROPERTY_PREFIX):]: v for k, v in tags.items() if k.startswith(PROPERTY_PREFIX)}
    tags = {k: v for k, v in tags.items() if not k.startswith(PROPERTY_PREFIX)}
    return amlevents.model_registered(name=str(data["name"]), version=str(data["version"]), tags=tags,
                                      properties=props)


def ensure_webhook(client: Any, url: str, secret: str) -> str:
    """Create (or point) the registry webhook at `url`; its id. Idempotent by name."""
    for hook in client.list_webhooks():
        if hook.name == WEBHOOK_NAME:
            client.update_webhook(hook.webhook_id, url=url, secret=secret, status="ACTIVE")
            return hook.webhook_id
    return client.create_webhook(name=WEBHOOK_NAME, url=url, events=["model_version.created"], secret=secret,
                                 description="Reflex: relay model registrations to the local host").webhook_id
