"""The real blob state store, counting what its storage hooks move: for tests and benches of state I/O (#17).

Nothing is faked: every call goes to `BlobStateStore` (Azurite in tests), and the counts are of the bodies it
sends and receives (Put Blob and Get Blob payloads, not headers) and of the writes that landed on each key.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from shared.core.state import BlobStateStore

__all__ = ["CountingStore"]


class CountingStore(BlobStateStore):
    """`BlobStateStore` adding up bytes read and written, requests, lost conditional writes and writes per key."""

    def __init__(self, container: Any) -> None:
        super().__init__(container)
        self.moved = 0  # body bytes read and written
        self.requests = 0  # creates, reads and replaces (listings and deletes are not counted)
        self.lost = 0  # conditional creates and replaces that did not land (exists / etag moved)
        self.writes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, size: int, key: str = "", *, landed: bool = True) -> None:
        with self._lock:
            self.moved += size
            self.requests += 1
            self.lost += not landed
            if key and landed:
                self.writes[key] += 1

    def _create(self, key: str, body: bytes, *, meta: Mapping[str, str] | None = None) -> str | None:
        etag = super()._create(key, body, meta=meta)
        self._count(len(body), key, landed=etag is not None)
        return etag

    def _read(self, key: str) -> tuple[bytes, str] | None:
        found = super()._read(key)
        self._count(len(found[0]) if found else 0)
        return found

    def _replace(self, key: str, body: bytes, etag: str, *, meta: Mapping[str, str] | None = None) -> str | None:
        new = super()._replace(key, body, etag, meta=meta)
        self._count(len(body), key, landed=new is not None)
        return new
