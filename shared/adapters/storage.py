"""The app's Blob Storage client, built once per worker from the same connection the Functions host uses.

`AzureWebJobsStorage` is either a connection string (Azurite locally: `UseDevelopmentStorage=true`) or, in
Azure, the identity-based form `AzureWebJobsStorage__blobServiceUri` with the user-assigned identity's
`AZURE_CLIENT_ID`: no account key anywhere.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient

    from shared.core.settings import Settings

__all__ = ["blob_service", "credential"]


@lru_cache(maxsize=4)
def credential(client_id: str = "") -> TokenCredential:
    """`DefaultAzureCredential`, honouring a user-assigned identity's client id; one per worker."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id or None)


def blob_service(settings: Settings, *, block_bytes: int = 0) -> BlobServiceClient:
    """The BlobServiceClient for the app's own storage account (cached per connection).

    `block_bytes`: upload files larger than this in blocks of this size (`max_single_put_size` and
    `max_block_size`), so that `upload_blob(progress_hook=...)` reports progress per block (`reflex upload`);
    0 keeps the SDK's defaults.
    """
    return _blob_service(settings.storage_connection, settings.storage_blob_uri, settings.client_id, block_bytes)


@lru_cache(maxsize=4)
def _blob_service(connection: str, blob_uri: str, client_id: str, block_bytes: int = 0) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    config: dict[str, Any] = {"max_single_put_size": block_bytes, "max_block_size": block_bytes} if block_bytes else {}
    if connection:
        return BlobServiceClient.from_connection_string(connection, **config)
    return BlobServiceClient(blob_uri, credential=credential(client_id), **config)
