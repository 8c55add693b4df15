"""Storage clients for a trigger's `connection`, resolved from app settings the way the host resolves them.

A connection names an app setting (default `AzureWebJobsStorage`, the host's receipts and the blob
subscriptions' storage account). The setting holds a connection string (Azurite: `UseDevelopmentStorage=true`),
or the identity-based form sets `<CONN>__blobServiceUri` instead. Clients are cached per connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from local.host.index import SettingError

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

__all__ = ["HOST_CONNECTION", "blob_service"]

HOST_CONNECTION = "AzureWebJobsStorage"


def _lookup(connection: str, service: str, env: Mapping[str, str]) -> tuple[str, str]:
    name = connection or HOST_CONNECTION
    if env.get(name):
        return env[name], ""
    uri = env.get(f"{name}__{service}ServiceUri", "")
    if uri:
        return "", uri
    raise SettingError(f"storage connection {name!r} is not set: set {name} to a connection string "
                       f"or {name}__{service}ServiceUri")


def blob_service(connection: str = "", env: Mapping[str, str] | None = None) -> BlobServiceClient:
    return _blob_service(*_lookup(connection, "blob", os.environ if env is None else env))


@lru_cache(maxsize=8)
def _blob_service(conn_str: str, uri: str) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    if conn_str:
        return BlobServiceClient.from_connection_string(conn_str)
    from shared.adapters.storage import credential

    return BlobServiceClient(uri, credential=credential(os.environ.get("AZURE_CLIENT_ID", "")))
