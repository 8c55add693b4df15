"""BlobCreated for Azurite, which raises no events: the storage account's system topic and its subscriptions.

In Azure a blob upload makes the storage account's system topic publish `Microsoft.Storage.BlobCreated`, and
each Event Grid subscription (subject begins with `/blobServices/default/containers/<container>/blobs/`) POSTs
it to `/runtime/webhooks/eventgrid?functionName=NAME` with `aeg-event-type: Notification`. Locally the poller
lists each subscribed container every few seconds and, for each blob version (name + ETag) not yet delivered
to that function, builds the event in Microsoft's documented shape (MicrosoftDocs/azure-docs
articles/event-grid/event-schema-blob-storage.md; the samples are tests/fixtures/eventgrid/) from the blob's
real properties, and sends it through that same webhook: in-process (`eventgrid_webhook`, what the HTTP route
runs) or, feeding a `func start` host, over HTTP (forward.py). No blob content is read or sent.

Delivery follows Event Grid's policy (learn.microsoft.com/azure/event-grid/delivery-and-retry): a 2xx answer is
delivered; 400/401/403/413 are not retried and go straight to the dead letter; anything else (500 from a failed
function, no answer) is retried on Event Grid's schedule (10 s, 30 s, 1 min, 5 min, ...) up to
`max_attempts` (infra's `maxDeliveryAttempts`, 30), then dead-lettered: a blob
`<dead-letter container>/<SUBSCRIPTION>/<YYYY>/<M>/<D>/<H>/<uuid>.json` holding the event array with
`deadLetterReason`, `deliveryAttempts`, `lastDeliveryOutcome`, `lastHttpStatusCode`, as Event Grid writes it
(manage-event-delivery). Receipts (receipts.py) make it one delivery per blob version per function, across
pollers, hosts and restarts; the event id derives from account, blob and ETag, so a retry resends the same event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from local.host import storage
from local.host.index import FunctionEntry, resolve_settings
from local.host.receipts import HOSTS_CONTAINER, Claim, ReceiptStore
from shared.core.events import BLOB_CREATED, blob_subject

__all__ = ["DEAD_LETTER_CONTAINER", "EVENT_GRID_RETRY_DELAYS", "BlobEventDelivery", "BlobPoller",
           "BlobSubscription", "Sender", "blob_created_event", "subscriptions_for"]

logger = logging.getLogger("reflex.host")

# Event Grid's retry schedule (delivery-and-retry: "10 seconds, 30 seconds, 1 minute, 5 minutes, 10 minutes,
# 30 minutes, 1 hour, 3 hours, 6 hours, every 12 hours up to 24 hours"), in seconds; the last one repeats.
EVENT_GRID_RETRY_DELAYS: tuple[float, ...] = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200)
# Webhook answers Event Grid does not retry (delivery-and-retry, "Retry schedule" table)
_NOT_RETRIED = (400, 401, 403, 413)
DEAD_LETTER_CONTAINER = "reflex-deadletter"  # infra/main.bicep's deadLetterContainerName default
_EVENT_NS = uuid.UUID("6f1d3c1e-1f2b-4bd5-9a57-b10bc4ea7ed0")

Sender = Callable[[str, bytes], int]  # (function name, JSON body) -> HTTP status (0: no answer)


@dataclass(frozen=True)
class BlobSubscription:
    """One BlobCreated subscription: events of `container` go to the Event Grid function `function`."""

    function: str
    container: str
    connection: str = storage.HOST_CONNECTION

    @property
    def name(self) -> str:
        return f"local-{self.function}".replace("_", "-")

    @property
    def subject_begins_with(self) -> str:
        return blob_subject(self.container, "")


def subscriptions_for(index: Mapping[str, FunctionEntry], wanted: Mapping[str, str],
                      env: Mapping[str, str]) -> list[BlobSubscription]:
    """`function -> container` (a `%SETTING%` allowed) as subscriptions; each function must be an Event Grid
    trigger of the app (a disabled one is left out, as Event Grid would fail to deliver to it)."""
    subs = []
    for function, container in wanted.items():
        entry = index.get(function)
        if entry is None:
            logger.warning("blob subscription for %s: no such enabled function, not delivered", function)
            continue
        if entry.trigger_type != "eventGridTrigger":
            raise ValueError(f"blob subscription for {function}: it is a {entry.trigger_type}, BlobCreated events "
                             "go to Event Grid triggers")
        resolved = resolve_settings(container, env)
        if resolved == HOSTS_CONTAINER:
            logger.warning("blob subscription for %s watches the host's own container %s: not polled", function,
                           HOSTS_CONTAINER)
            continue
        subs.append(BlobSubscription(function, resolved))
    return subs


def blob_created_event(client: Any, props: Any) -> dict[str, Any]:
    """The `Microsoft.Storage.BlobCreated` event (Event Grid schema) a storage account publishes for this blob
    version: the fields, order and forms of Microsoft's documented sample, filled from the real properties."""
    account = client.account_name or "devstoreaccount1"
    etag = str(props.etag)
    settings = props.content_settings
    return {
        "topic": f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
                 f"Microsoft.Storage/storageAccounts/{account}",
        "subject": blob_subject(client.container_name, client.blob_name),
        "eventType": BLOB_CREATED,
        "eventTime": _event_time(props.last_modified),
        "id": str(uuid.uuid5(_EVENT_NS, f"{account}/{client.container_name}/{client.blob_name}@{etag}")),
        "data": {
            "api": _creating_api(client, props),
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "eTag": etag,  # quoted, as storage returns it and as the documented sample shows
            "contentType": (settings.content_type if settings else None) or "application/octet-stream",
            "contentLength": int(props.size),
            "blobType": str(getattr(props.blob_type, "value", props.blob_type) or "BlockBlob"),
            "url": client.url,
            "sequencer": f"{time.time_ns():032x}",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def _event_time(when: datetime | None) -> str:
    stamp = (when or datetime.now(UTC)).astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond:06d}0Z"


def _creating_api(client: Any, props: Any) -> str:
    """The call that made this version: CopyBlob if it is a copy's destination, PutBlockList if it has
    committed blocks (staged upload), else PutBlob (single-shot upload)."""
    copy = getattr(props, "copy", None)
    if copy is not None and getattr(copy, "id", None):
        return "CopyBlob"
    try:
        committed, _ = client.get_block_list("committed")
    except Exception:  # not a block blob, or the emulator cannot say: the single-shot form
        return "PutBlob"
    return "PutBlockList" if committed else "PutBlob"


class BlobEventDelivery:
    """Delivers one blob version's BlobCreated to one subscription, under its receipt, with Event Grid's retries."""

    def __init__(self, receipts: ReceiptStore, send: Sender, *, max_attempts: int = 30,
                 retry_delays: tuple[float, ...] = EVENT_GRID_RETRY_DELAYS,
                 dead_letter_container: str = DEAD_LETTER_CONTAINER, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._receipts = receipts
        self._send = send
        self._max_attempts = max_attempts
        self._delays = retry_delays or (0.0,)
        self._dead_letter_container = dead_letter_container
        self._env = env
        self._clock = clock

    def deliver(self, sub: BlobSubscription, blob_name: str, etag: str) -> str:
        """One attempt: "succeeded" | "failed" | "dead-lettered" | "done" | "busy" | "waiting" | "changed" | "gone"."""
        from azure.core.exceptions import ResourceNotFoundError

        function_id = f"Host.Functions.{sub.function}"
        claim = self._receipts.try_claim(function_id, sub.container, blob_name, etag, now=self._clock())
        if not isinstance(claim, Claim):
            return claim
        client = storage.blob_service(sub.connection, self._env).get_blob_client(sub.container, blob_name)
        try:
            props = client.get_blob_properties()
            if str(props.etag).strip('"') != etag.strip('"'):
                claim.release()  # overwritten since listed: the new version gets its own receipt
                return "changed"
            event = blob_created_event(client, props)
        except ResourceNotFoundError:
            claim.release()
            return "gone"
        except Exception:
            claim.release()
            raise
        try:
            status = self._send(sub.function, json.dumps([event]).encode("utf-8"))
        except Exception:
            logger.exception("BlobCreated for %s/%s to %s: sending failed", sub.container, blob_name, sub.function)
            status = 0
        if 200 <= status < 300:
            claim.succeeded()
            return "succeeded"
        attempts = claim.attempts + 1
        if status not in _NOT_RETRIED and attempts < self._max_attempts:
            delay = self._delays[min(attempts - 1, len(self._delays) - 1)]
            claim.failed(next_attempt=self._clock() + delay)
            logger.warning("BlobCreated for %s/%s to %s: answer %s (attempt %d of %d), retried in %.0f s",
                           sub.container, blob_name, sub.function, status or "none", attempts, self._max_attempts,
                           delay)
            return "failed"
        reason = "UndeliverableDueToHttpBadRequest" if status in _NOT_RETRIED else "MaxDeliveryAttemptsExceeded"
        self._dead_letter(sub, event, reason, attempts, status)
        claim.dead_lettered()
        return "dead-lettered"

    def _dead_letter(self, sub: BlobSubscription, event: dict[str, Any], reason: str, attempts: int,
                     status: int) -> None:
        from azure.core.exceptions import ResourceExistsError

        now = datetime.fromtimestamp(self._clock(), UTC)
        container = storage.blob_service(sub.connection, self._env).get_container_client(
            self._dead_letter_container)
        try:
            container.create_container()
        except ResourceExistsError:
            pass
        name = f"{sub.name.upper()}/{now.year}/{now.month}/{now.day}/{now.hour}/{uuid.uuid4()}.json"
        letter = {**event, "deadLetterReason": reason, "deliveryAttempts": attempts,
                  "lastDeliveryOutcome": _outcome(status), "lastHttpStatusCode": status,
                  "publishTime": event["eventTime"], "lastDeliveryAttemptTime": now.isoformat().replace("+00:00", "Z")}
        container.upload_blob(name, json.dumps([letter]).encode("utf-8"))
        logger.error("BlobCreated for %s to %s dead-lettered after %d attempt(s) (%s): %s/%s", event["subject"],
                     sub.function, attempts, reason, self._dead_letter_container, name)


def _outcome(status: int) -> str:
    return {0: "TimedOut", 400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            413: "RequestEntityTooLarge", 500: "InternalServerError", 503: "ServiceUnavailable"}.get(
        status, f"Http{status}")


class BlobPoller:
    """Lists each subscription's container and delivers versions not yet done; one pass per `poll_once`.

    Deliveries run on a pool of their own: an in-process delivery waits for the function, which runs on the
    host's invoker pool, so sharing it could starve the invocations."""

    def __init__(self, subscriptions: list[BlobSubscription], delivery: BlobEventDelivery, *,
                 env: Mapping[str, str] | None = None, workers: int = 4) -> None:
        self.subscriptions = list(subscriptions)
        self._delivery = delivery
        self._env = env
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reflex-host-blob-delivery")
        self._done: set[tuple[str, str, str, str]] = set()

    def poll_once(self) -> dict[str, int]:
        """List every subscribed container once and deliver what is new; returns outcome counts."""
        from azure.core.exceptions import ResourceNotFoundError

        jobs: list[tuple[tuple[str, str, str, str], Future[str]]] = []
        for sub in self.subscriptions:
            client = storage.blob_service(sub.connection, self._env).get_container_client(sub.container)
            try:
                blobs = list(client.list_blobs())
            except ResourceNotFoundError:
                continue  # the container does not exist yet
            for blob in blobs:
                key = (sub.function, sub.container, blob.name, str(blob.etag))
                if key not in self._done:
                    jobs.append((key, self._pool.submit(self._delivery.deliver, sub, blob.name, str(blob.etag))))
        outcomes: dict[str, int] = {}
        for key, job in jobs:
            try:
                outcome = job.result()
            except Exception:
                logger.exception("delivery of %s/%s to %s failed in the host", key[1], key[2], key[0])
                outcome = "error"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome in ("succeeded", "dead-lettered", "done"):
                self._done.add(key)
        return outcomes

    def run(self, stop: threading.Event, interval: float) -> None:
        """Poll until `stop` is set; a failing pass is logged, never fatal."""
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:
                logger.exception("blob poll failed")
            stop.wait(interval)
        self._pool.shutdown(wait=True)
