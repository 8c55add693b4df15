"""Blob triggers: find new blob versions by polling storage, deliver each once per function, poison after 5.

Azurite raises no Event Grid events, so locally every blob trigger (also `source=EventGrid` ones) is fed by
listing its container along the trigger `path` every few seconds, like the host's `LogsAndContainerScan`
source. The blobs webhook (`/runtime/webhooks/blobs`) and the admin API feed the same `BlobDelivery`.
Delivery goes through receipts (see `receipts.py`), so a version (name + ETag) runs once per function, a
failing one is retried on later polls, and after `max_attempts` failures a message goes to the storage queue
`webjobs-blobtrigger-poison` with `FunctionId`, `BlobType`, `ContainerName`, `BlobName`, `ETag`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from local.host import storage
from local.host.index import FunctionEntry
from local.host.invoke import Invoker, decode_blob
from local.host.receipts import HOSTS_CONTAINER, Claim, ReceiptStore, quote_etag

__all__ = ["POISON_QUEUE", "BlobDelivery", "BlobPath", "BlobPoller"]

POISON_QUEUE = "webjobs-blobtrigger-poison"
logger = logging.getLogger("reflex.host")
_TOKEN = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class BlobPath:
    """A blob trigger `path` (`container/prefix{name}.ext`), already %SETTING%-resolved."""

    container: str
    pattern: str

    @classmethod
    def parse(cls, path: str) -> BlobPath:
        container, _, pattern = path.strip("/").partition("/")
        if not container or "{" in container:
            raise ValueError(f"blob trigger path {path!r} must start with a literal container name")
        return cls(container, pattern)

    @property
    def prefix(self) -> str:
        """The literal text before the first `{token}`: the listing prefix."""
        return self.pattern.split("{", 1)[0]

    def match(self, blob_name: str) -> dict[str, str] | None:
        """Binding data (`{"name": ...}`) if `blob_name` fits the pattern, else None."""
        if not self.pattern:
            return {}
        regex, last = "", 0
        for token in _TOKEN.finditer(self.pattern):
            regex += re.escape(self.pattern[last:token.start()]) + f"(?P<{token.group(1)}>.+?)"
            last = token.end()
        regex += re.escape(self.pattern[last:])
        found = re.fullmatch(regex, blob_name, flags=re.DOTALL)
        return found.groupdict() if found else None


class BlobDelivery:
    """Reads a blob version and runs one function on it under its receipt."""

    def __init__(self, invoker: Invoker, receipts: ReceiptStore, *, max_attempts: int = 5,
                 env: Mapping[str, str] | None = None) -> None:
        self._invoker = invoker
        self._receipts = receipts
        self._max_attempts = max_attempts
        self._env = env

    def deliver(self, entry: FunctionEntry, container: str, blob_name: str, etag: str) -> str:
        """One attempt: "succeeded" | "failed" | "poisoned" | "done" | "busy" | "changed" | "gone"."""
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        claim = self._receipts.try_claim(entry.function_id, container, blob_name, etag)
        if not isinstance(claim, Claim):
            return claim
        try:
            stream = self.read(entry, container, blob_name, etag=etag)
        except ResourceModifiedError:  # overwritten since listed: the new version gets its own receipt
            claim.release()
            return "changed"
        except ResourceNotFoundError:
            claim.release()
            return "gone"
        except Exception:
            claim.release()
            raise
        if self._invoker.invoke(entry, stream, event_id=f"{container}/{blob_name}@{quote_etag(etag)}"):
            claim.succeeded()
            return "succeeded"
        if not claim.failed(self._max_attempts):
            return "failed"
        self._poison(entry, container, blob_name, etag)
        claim.poisoned()
        return "poisoned"

    def run_now(self, entry: FunctionEntry, blob_path: str) -> bool:
        """Admin "run now": read `container/path` as it is and invoke, without receipts (as the host does)."""
        container, _, blob_name = blob_path.strip("/").partition("/")
        if not container or not blob_name:
            raise ValueError(f"input must be 'container/path', got {blob_path!r}")
        stream = self.read(entry, container, blob_name)
        return self._invoker.invoke(entry, stream, event_id=f"{container}/{blob_name}")

    def read(self, entry: FunctionEntry, container: str, blob_name: str, *, etag: str | None = None) -> Any:
        """Download the blob (this ETag only, if given) as the `InputStream` the worker would pass."""
        from azure.core import MatchConditions

        client = storage.blob_service(entry.settings.get("connection", ""), self._env).get_blob_client(
            container, blob_name)
        options: dict[str, Any] = {}
        if etag:
            options = {"etag": quote_etag(etag), "match_condition": MatchConditions.IfNotModified}
        downloader = client.download_blob(**options)
        data = downloader.readall()
        props = downloader.properties
        properties = {"ETag": props.etag, "ContentLength": props.size, "LastModified": props.last_modified,
                      "BlobType": str(getattr(props.blob_type, "value", props.blob_type)),
                      "ContentType": props.content_settings.content_type}
        return decode_blob(data, name=f"{container}/{blob_name}", uri=client.url, properties=properties,
                           metadata=props.metadata)

    def _poison(self, entry: FunctionEntry, container: str, blob_name: str, etag: str) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import TextBase64EncodePolicy

        queue = storage.queue_service(entry.settings.get("connection", ""), self._env).get_queue_client(
            POISON_QUEUE, message_encode_policy=TextBase64EncodePolicy())
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
        message = {"Type": "BlobTrigger", "FunctionId": entry.function_id, "BlobType": "BlockBlob",
                   "ContainerName": container, "BlobName": blob_name, "ETag": quote_etag(etag)}
        queue.send_message(json.dumps(message))
        logger.error("blob %s/%s failed %d times in %s: sent to queue %s", container, blob_name,
                     self._max_attempts, entry.name, POISON_QUEUE)


class BlobPoller:
    """Lists each blob trigger's container and delivers versions not yet done; one pass per `poll_once`."""

    def __init__(self, entries: Mapping[str, FunctionEntry], delivery: BlobDelivery, invoker: Invoker, *,
                 env: Mapping[str, str] | None = None) -> None:
        self._delivery = delivery
        self._invoker = invoker
        self._env = env
        self._done: set[tuple[str, str, str, str]] = set()
        self.targets: list[tuple[FunctionEntry, BlobPath]] = []
        for entry in entries.values():
            if entry.trigger_type != "blobTrigger":
                continue
            path = BlobPath.parse(entry.settings["path"])
            if path.container == HOSTS_CONTAINER:
                logger.warning("blob trigger %s watches the host's own container %s: not polled",
                               entry.name, HOSTS_CONTAINER)
                continue
            self.targets.append((entry, path))

    def poll_once(self) -> dict[str, int]:
        """List every target once and deliver what is new; returns outcome counts (for logs and tests)."""
        from azure.core.exceptions import ResourceNotFoundError

        jobs: list[tuple[tuple[str, str, str, str], Future[str]]] = []
        for entry, path in self.targets:
            client = storage.blob_service(entry.settings.get("connection", ""), self._env).get_container_client(
                path.container)
            try:
                blobs = list(client.list_blobs(name_starts_with=path.prefix or None))
            except ResourceNotFoundError:
                continue  # the container does not exist yet
            for blob in blobs:
                key = (entry.name, path.container, blob.name, blob.etag)
                if key in self._done or path.match(blob.name) is None:
                    continue
                jobs.append((key, self._invoker.run(self._delivery.deliver, entry, path.container, blob.name,
                                                    blob.etag)))
        outcomes: dict[str, int] = {}
        for key, job in jobs:
            try:
                outcome = job.result()
            except Exception:
                logger.exception("delivery of %s/%s to %s failed in the host", key[1], key[2], key[0])
                outcome = "error"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome in ("succeeded", "poisoned", "done"):
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
