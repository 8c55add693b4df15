"""The Azure ML events the local platform emits, in Event Grid schema, delivered to the local host over HTTP.

Why: on Azure, Azure ML publishes `RunCompleted`, `RunStatusChanged` and `ModelRegistered` to Event Grid, which
pushes them to the Functions host. Locally the platform builds the same envelopes (camelCase `data`, subject
`experiments/<id>/runs/<name>` or `models/<name>:<version>`) and posts them to the path the real host serves
locally: `POST <host>/runtime/webhooks/eventgrid?functionName=<fn>` with `aeg-event-type: Notification`.
Event ids are derived from what happened (job + status, model + version), so a repeated delivery carries the
same id and the reactions' idempotency sees a duplicate, as with Event Grid's at-least-once redelivery.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["WORKSPACE_TOPIC", "deliver", "model_registered", "run_event", "experiment_id"]

log = logging.getLogger("reflex.local.events")

WORKSPACE_TOPIC = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
                   "Microsoft.MachineLearningServices/workspaces/local-mlflow")
_NS = uuid.UUID("6f1c3a52-9b1e-4c59-8d53-2f2a0e6c0f11")


def experiment_id(experiment_name: str) -> str:
    """A stable GUID-shaped experiment id (Azure ML's are GUIDs; MLflow's are small integers)."""
    return str(uuid.uuid5(_NS, f"experiment:{experiment_name}"))


def _envelope(kind: str, subject: str, data: Mapping[str, Any], ident: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid5(_NS, ident)), "topic": WORKSPACE_TOPIC, "subject": subject,
            "eventType": f"Microsoft.MachineLearningServices.{kind}",
            "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": dict(data), "dataVersion": "2", "metadataVersion": "1"}


def run_event(*, job_name: str, experiment_name: str, status: str, tags: Mapping[str, str],
              properties: Mapping[str, str] | None = None, run_type: str | None = None) -> dict[str, Any]:
    """`RunCompleted` for a Completed job, `RunStatusChanged` (runStatus lower case) for Failed/Canceled."""
    exp = experiment_id(experiment_name)
    data: dict[str, Any] = {"experimentId": exp, "experimentName": experiment_name, "runId": job_name,
                            "runType": run_type, "runTags": dict(tags), "runProperties": dict(properties or {})}
    kind = "RunCompleted" if status == "Completed" else "RunStatusChanged"
    if kind == "RunStatusChanged":
        data["runStatus"] = status.lower()
    return _envelope(kind, f"experiments/{exp}/runs/{job_name}", data, f"run:{job_name}:{status}")


def model_registered(*, name: str, version: str, tags: Mapping[str, str],
                     properties: Mapping[str, str] | None = None) -> dict[str, Any]:
    data = {"modelName": name, "modelVersion": version, "modelTags": dict(tags),
            "modelProperties": dict(properties or {})}
    return _envelope("ModelRegistered", f"models/{name}:{version}", data, f"model:{name}:{version}")


def deliver(host_url: str, function_name: str, event: Mapping[str, Any], *, attempts: int = 5,
            backoff: float = 0.5, timeout: float = 10.0) -> bool:
    """POST one event (as Event Grid does: a JSON array) to the host; True once a 2xx answer arrives.

    Retries connection failures and 5xx with exponential backoff for a few seconds; a 4xx is final (the host
    rejected it). Never raises: the caller records whether delivery succeeded.

    Deliberately short, and not Event Grid's schedule (learn.microsoft.com/azure/event-grid/delivery-and-retry:
    10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then every 12 h up to 24 h): a job runner or a
    platform thread kept alive for a day to deliver one event would outlive the stack it belongs to. What
    Event Grid's retries achieve is left to the timers instead (#18): the data sweep finds a job that ended
    without its event reaching Reflex and runs the same reaction on the event built from the job
    (shared/core/unheard.py), and the batch tracker polls scoring jobs; a late delivery is then a duplicate.
    """
    url = f"{host_url.rstrip('/')}/runtime/webhooks/eventgrid?functionName={function_name}"
    body = json.dumps([dict(event)]).encode()
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "aeg-event-type": "Notification"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                log.warning("event %s to %s rejected with %s", event.get("eventType"), url, exc.code)
                return False
        except (urllib.error.URLError, OSError) as exc:
            log.info("event delivery to %s failed (attempt %d): %s", url, attempt + 1, exc)
        if attempt + 1 < attempts:
            time.sleep(backoff * 2**attempt)
    log.warning("event %s not delivered to %s after %d attempts", event.get("eventType"), url, attempts)
    return False
