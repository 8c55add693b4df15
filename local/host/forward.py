"""Feed another Functions host (`func start`) the BlobCreated events Azurite never raises.

In Azure the storage account's Event Grid subscriptions POST `Microsoft.Storage.BlobCreated` to the host's
`/runtime/webhooks/eventgrid?functionName=NAME`; locally nobody does. In feeder mode
(`python -m local.host --forward-to URL`) the local host keeps polling Azurite for its blob subscriptions, as
it does for itself (blobs.py), but sends each event over HTTP to that host's Event Grid webhook, with the
headers Event Grid sends. The answer decides, as for Event Grid: 2xx delivered; otherwise retried or
dead-lettered by blobs.py's policy (the receipt keeps the version until then: at-least-once, like Event Grid).
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request

from local.host.blobs import Sender

__all__ = ["http_sender"]

logger = logging.getLogger("reflex.host")


def http_sender(target: str, *, timeout: float = 30.0) -> Sender:
    """A sender POSTing to `target`'s Event Grid webhook; it returns the HTTP status, 0 for no answer.

    `timeout` is Event Grid's: it waits 30 s for an answer, then counts the attempt as failed
    (learn.microsoft.com/azure/event-grid/delivery-and-retry)."""
    base = target.rstrip("/")

    def send(function: str, body: bytes) -> int:
        url = f"{base}/runtime/webhooks/eventgrid?functionName={urllib.parse.quote(function)}"
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "aeg-event-type": "Notification"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError) as exc:
            logger.warning("BlobCreated to %s at %s: no answer (%s)", function, base, exc)
            return 0

    return send
