"""Blob receipts: each blob version (name + ETag) is delivered to a function once, across hosts and restarts.

Stored like the real host's: container `azure-webjobs-hosts`, blob
`blobreceipts/<hostId>/Host.Functions.<function>/<"etag">/<container>/<blob name>` (the quoted ETag before the
container, as the WebJobs SDK lays them out, so a blob name with slashes stays unambiguous). A receipt is
created if absent (`If-None-Match: *`), then LEASED for the duration of one attempt, so two pollers (or a
poller and the blobs webhook) never run the same blob version at once. Receipt metadata:

    Status   = "Pending" | "Done"
    Attempts = number of finished attempts (str)
    Outcome  = "Succeeded" | "Poisoned" (when Done)

After `max_attempts` failures the caller writes a poison message and the receipt is marked Done.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient

__all__ = ["HOSTS_CONTAINER", "Claim", "ReceiptStore", "quote_etag"]

HOSTS_CONTAINER = "azure-webjobs-hosts"
_LEASE_SECONDS = 60
logger = logging.getLogger("reflex.host")


@dataclass
class Claim:
    """An exclusive, leased right to attempt one blob version once more."""

    blob: BlobClient
    lease: BlobLeaseClient
    attempts: int  # finished attempts before this one
    _renewer: threading.Event

    def succeeded(self) -> None:
        self._finish({"Status": "Done", "Attempts": str(self.attempts + 1), "Outcome": "Succeeded"})

    def failed(self, max_attempts: int) -> bool:
        """Record a failed attempt; True when the blob is now poison (the caller must enqueue the message)."""
        attempts = self.attempts + 1
        if attempts >= max_attempts:
            return True
        self._finish({"Status": "Pending", "Attempts": str(attempts)})
        return False

    def poisoned(self) -> None:
        self._finish({"Status": "Done", "Attempts": str(self.attempts + 1), "Outcome": "Poisoned"})

    def release(self) -> None:
        """Give the lease back without recording an attempt (e.g. the blob changed under us)."""
        self._renewer.set()
        self.lease.release()

    def _finish(self, metadata: dict[str, str]) -> None:
        self._renewer.set()
        try:
            self.blob.set_blob_metadata(metadata, lease=self.lease)
        finally:
            self.lease.release()


class ReceiptStore:
    """Receipts of one host id in the host's storage account."""

    def __init__(self, service: BlobServiceClient, host_id: str) -> None:
        self._container = service.get_container_client(HOSTS_CONTAINER)
        self._host_id = host_id
        self._ensured = False

    def name(self, function_id: str, container: str, blob_name: str, etag: str) -> str:
        return f"blobreceipts/{self._host_id}/{function_id}/{quote_etag(etag)}/{container}/{blob_name}"

    def try_claim(self, function_id: str, container: str, blob_name: str, etag: str) -> Claim | str:
        """Lease the receipt of this version: a Claim, or "done" (delivered or poisoned) / "busy" (leased now)."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        self._ensure_container()
        blob = self._container.get_blob_client(self.name(function_id, container, blob_name, etag))
        try:
            blob.upload_blob(b"", overwrite=False, metadata={"Status": "Pending", "Attempts": "0"})
        except ResourceExistsError:
            pass  # created earlier or by another host: fine, the lease decides who runs
        try:
            lease = blob.acquire_lease(lease_duration=_LEASE_SECONDS)
        except HttpResponseError as exc:
            if exc.status_code == 409:  # LeaseAlreadyPresent: another attempt is running right now
                return "busy"
            raise
        try:
            metadata = blob.get_blob_properties(lease=lease).metadata or {}
        except Exception:
            lease.release()
            raise
        if metadata.get("Status") == "Done":
            lease.release()
            return "done"
        stop = threading.Event()
        threading.Thread(target=_renew, args=(lease, stop), daemon=True, name="reflex-host-lease").start()
        return Claim(blob=blob, lease=lease, attempts=int(metadata.get("Attempts", "0")), _renewer=stop)

    def is_done(self, function_id: str, container: str, blob_name: str, etag: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._container.get_blob_client(self.name(function_id, container, blob_name, etag))
        try:
            return (blob.get_blob_properties().metadata or {}).get("Status") == "Done"
        except ResourceNotFoundError:
            return False

    def _ensure_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        if self._ensured:
            return
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass
        self._ensured = True


def quote_etag(etag: str) -> str:
    """ETags in double quotes, as storage returns them (Event Grid's `data.eTag` may come unquoted)."""
    bare = etag.strip('"')
    return f'"{bare}"'


def _renew(lease: Any, stop: threading.Event) -> None:
    """Keep the lease while a long invocation runs; stops when the claim finishes."""
    while not stop.wait(_LEASE_SECONDS / 3):
        try:
            lease.renew()
        except Exception:
            logger.warning("could not renew receipt lease %s", lease.id, exc_info=True)
            return
