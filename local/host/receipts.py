"""Blob receipts: each blob version (name + ETag) is delivered to a function once, across hosts and restarts.

The local stand-in for one Event Grid subscription's delivery state (Event Grid keeps it in the service): which
BlobCreated events a function has had, how many attempts failed, and when the next retry is due.

Stored like the real host's: container `azure-webjobs-hosts`, blob
`blobreceipts/<hostId>/Host.Functions.<function>/<"etag">/<container>/<blob name>` (the quoted ETag before the
container, as the WebJobs SDK lays them out, so a blob name with slashes stays unambiguous). A receipt is
created if absent (`If-None-Match: *`), then LEASED for the duration of one attempt, so two pollers (or two
hosts) never deliver the same blob version at once. Receipt metadata:

    Status      = "Pending" | "Done"
    Attempts    = number of finished attempts (str)
    NextAttempt = epoch seconds before which no retry is made (str; set after a failed attempt)
    Outcome     = "Succeeded" | "DeadLettered" (when Done)

The caller decides retry or dead letter (blobs.py, Event Grid's policy); a dead-lettered receipt is Done.
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

    def failed(self, *, next_attempt: float) -> None:
        """Record a failed attempt; no retry before `next_attempt` (epoch seconds)."""
        self._finish({"Status": "Pending", "Attempts": str(self.attempts + 1), "NextAttempt": f"{next_attempt:.3f}"})

    def dead_lettered(self) -> None:
        """The last attempt failed and the event went to the dead letter (the caller wrote it): Done."""
        self._finish({"Status": "Done", "Attempts": str(self.attempts + 1), "Outcome": "DeadLettered"})

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

    def try_claim(self, function_id: str, container: str, blob_name: str, etag: str, *,
                  now: float | None = None) -> Claim | str:
        """Lease the receipt of this version: a Claim, or "done" (delivered or dead-lettered) / "busy" (leased
        now) / "waiting" (a retry is not due before `NextAttempt`; `now` in epoch seconds, None = no wait)."""
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
        if now is not None and float(metadata.get("NextAttempt") or 0) > now:
            lease.release()
            return "waiting"
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


def quote_etag(etag: str | None) -> str:
    """ETags in double quotes, as storage returns them (Event Grid's `data.eTag` may come unquoted).

    Raises:
        ValueError: no ETag (None, empty or only quotes): a receipt must name the version it is for, and a
            version without one cannot be told from the next; refused here rather than failing later with
            AttributeError on None (#18).
    """
    bare = etag.strip().strip('"') if isinstance(etag, str) else ""
    if not bare:
        raise ValueError(f"a blob receipt needs the blob's ETag, got {etag!r}")
    return f'"{bare}"'


def _renew(lease: Any, stop: threading.Event) -> None:
    """Keep the lease while a long invocation runs; stops when the claim finishes."""
    while not stop.wait(_LEASE_SECONDS / 3):
        try:
            lease.renew()
        except Exception:
            logger.warning("could not renew receipt lease %s", lease.id, exc_info=True)
            return
