"""Azure ML datastore URIs mapped onto the Azurite containers they name, with folder download and upload.

Why: Azure ML jobs address data as `azureml://datastores/<datastore>/paths/<folder>/`; the datastores are
registered on the app's containers (settings: data, scoring, output). Locally the same URIs resolve to the
Azurite containers, so flows build exactly the paths they build in Azure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from shared.core.errors import PermanentError, map_azure_error

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

    from shared.core.settings import Settings

__all__ = ["datastores", "resolve", "download_folder", "folder_has_blobs", "upload_file"]

_URI = re.compile(r"^azureml://datastores/(?P<store>[^/]+)/paths/(?P<path>.*)$")


def datastores(settings: Settings) -> dict[str, str]:
    """Datastore name -> container, as the infra registers them."""
    return {settings.data_datastore: settings.data_container, settings.scoring_datastore: settings.scoring_container,
            settings.output_datastore: settings.output_container}


def resolve(uri: str, stores: dict[str, str]) -> tuple[str, str]:
    """(container, prefix) of a datastore URI; the prefix of a folder ends with '/' (or is empty)."""
    match = _URI.match(uri)
    if not match:
        raise PermanentError(f"path {uri!r}: expected azureml://datastores/<datastore>/paths/<folder>")
    store = match["store"]
    if store not in stores:
        raise PermanentError(f"path {uri!r}: unknown datastore {store!r} (known: {', '.join(sorted(stores))})")
    return stores[store], match["path"].lstrip("/")


def _folder(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def download_folder(service: BlobServiceClient, container: str, prefix: str, target: Path) -> list[Path]:
    """Download every blob under `prefix` into `target`, keeping relative paths; the files written."""
    container_client = service.get_container_client(container)
    prefix = _folder(prefix)
    written: list[Path] = []
    try:
        for blob in container_client.list_blobs(name_starts_with=prefix or None):
            relative = blob.name[len(prefix):]
            if not relative or relative.endswith("/"):
                continue
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(container_client.download_blob(blob.name).readall())
            written.append(path)
    except Exception as exc:
        raise map_azure_error(exc, f"download {container}/{prefix}") from exc
    return written


def folder_has_blobs(service: BlobServiceClient, container: str, prefix: str) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        blobs = service.get_container_client(container).list_blobs(name_starts_with=_folder(prefix) or None)
        return next(iter(blobs), None) is not None
    except ResourceNotFoundError:
        return False
    except Exception as exc:
        raise map_azure_error(exc, f"list {container}/{prefix}") from exc


def upload_file(service: BlobServiceClient, container: str, name: str, data: bytes) -> None:
    """Create `name` (never overwrite: outputs are write-once, like the service's)."""
    from azure.core.exceptions import ResourceExistsError

    container_client = service.get_container_client(container)
    try:
        container_client.create_container()
    except ResourceExistsError:
        pass
    try:
        container_client.upload_blob(name, data, overwrite=False)
    except ResourceExistsError as exc:
        raise PermanentError(f"output {container}/{name} already exists") from exc
    except Exception as exc:
        raise map_azure_error(exc, f"upload {container}/{name}") from exc
