"""Feed another Functions host (`func start`) the blob events Azurite never raises.

An Event Grid-source blob trigger only runs when something POSTs a `BlobCreated` event to the host's
`/runtime/webhooks/blobs?functionName=Host.Functions.<name>`; in Azure that is the storage account's Event
Grid subscription, locally nobody. In feeder mode (`python -m local.host --forward-to URL`) the local host
keeps polling Azurite along each blob trigger's path, as it does for itself, but instead of invoking the
function in-process it POSTs one `BlobCreated` per new blob version to that host. Receipts make each version
go out once, like one Event Grid subscription; a refused or failed POST releases the receipt, so the version
is sent again on a later poll (delivery is at least once, as Event Grid's is).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from local.host import storage
from local.host.index import FunctionEntry
from local.host.receipts import Claim, ReceiptStore, quote_etag

__all__ = ["ForwardingDelivery", "blob_created"]

logger = logging.getLogger("reflex.host")


def blob_created(url: str, etag: str, length: int, account: str = "devstoreaccount1") -> dict[str, Any]:
    """A `Microsoft.Storage.BlobCreated` event in the Event Grid schema, as the storage account sends it."""
    container_and_name = url.split(f"/{account}/", 1)[-1]
    container, _, name = container_and_name.partition("/")
    return {"id": str(uuid.uuid4()), "eventType": "Microsoft.Storage.BlobCreated",
            "topic": f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
                     f"Microsoft.Storage/storageAccounts/{account}",
            "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
            "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "dataVersion": "",
            "metadataVersion": "1",
            "data": {"api": "PutBlob", "eTag": quote_etag(etag), "contentType": "application/octet-stream",
                     "contentLength": length, "blobType": "BlockBlob", "url": url, "sequencer": "",
                     "storageDiagnostics": {"batchId": str(uuid.uuid4())}}}


class ForwardingDelivery:
    """Same `deliver` contract as `BlobDelivery`, but the function runs in the host at `target`."""

    def __init__(self, receipts: ReceiptStore, target: str, *, env: Mapping[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        self._receipts = receipts
        self._target = target.rstrip("/")
        self._env = env
        self._timeout = timeout

    def deliver(self, entry: FunctionEntry, container: str, blob_name: str, etag: str) -> str:
        """"succeeded" once the host accepted the event; "failed" (sent again later) otherwise."""
        from azure.core.exceptions import ResourceNotFoundError

        claim = self._receipts.try_claim(entry.function_id, container, blob_name, etag)
        if not isinstance(claim, Claim):
            return claim
        client = storage.blob_service(entry.settings.get("connection", ""), self._env).get_blob_client(
            container, blob_name)
        try:
            length = client.get_blob_properties().size
        except ResourceNotFoundError:
            claim.release()
            return "gone"
        url = f"{self._target}/runtime/webhooks/blobs?functionName=Host.Functions.{entry.name}"
        body = json.dumps([blob_created(client.url, etag, length)]).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "aeg-event-type": "Notification"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                accepted = 200 <= response.status < 300
        except (urllib.error.URLError, OSError) as exc:
            logger.warning("BlobCreated for %s/%s not accepted by %s: %s (sent again on a later poll)",
                           container, blob_name, self._target, exc)
            accepted = False
        if not accepted:
            claim.release()
            return "failed"
        claim.succeeded()
        return "succeeded"
