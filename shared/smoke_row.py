"""A smoke request made of one row of a model's own training data, its label dropped (see shared/smoke.py).

Why from the training data: the columns and value types are exactly what the model was fitted on, so the
request exercises the deployed model's input schema the way real traffic will, and nobody has to write one.

Lineage, in order: the model's `reflex.batch` tag names the arrival record of the batch it was trained on,
whose manifest lists the files (`arrivals/<container>/<dataset>/<batch>`); without that record, its
`reflex.data` tag names the data asset (`<name>:<version>`), whose `azureml://datastores/<datastore>/paths/
<dataset>/<batch>/` folder is listed in the data container. The first data file by name is read, only as far as
its first rows (`HEAD_BYTES`; Parquet needs its footer, so the whole file).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from shared.batches import file_problem
from shared.errors import PermanentError, map_azure_error
from shared.tabular import is_missing, read_rows

if TYPE_CHECKING:
    from shared.deps import Deps

__all__ = ["HEAD_BYTES", "ROWS_LOOKED_AT", "pick_row", "request_from_row", "training_row_request"]

HEAD_BYTES = 1 << 20
ROWS_LOOKED_AT = 100
_INT = re.compile(r"^[+-]?\d+$")
_DATASTORE_PATH = re.compile(r"^azureml://datastores/(?P<store>[^/]+)/paths/(?P<prefix>.+?)/?$")


def training_row_request(deps: Deps, model: str, version: str) -> tuple[dict[str, Any], str]:
    """(request body, where the row came from) for `model:version`.

    Raises:
        PermanentError: no lineage, no readable data file, or no row; the message says which.
        TransientError: storage or the platform did not answer.
    """
    found = deps.platform.get_model(model, version)
    if found is None:
        raise PermanentError(f"model {model}:{version} is not registered")
    container, blob = _first_file(deps, found.tags, f"{model}:{version}")
    row = _first_row(deps, container, blob)
    label = deps.settings.label_column
    features = {k: v for k, v in row.items() if k != label}
    if not features:
        raise PermanentError(f"{container}/{blob}: its first row has no column besides the label {label!r}")
    return request_from_row(features), f"training data {container}/{blob}"


def request_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row in Azure ML's MLflow request format (pandas "split" orientation under `input_data`)."""
    columns = list(row)
    return {"input_data": {"columns": columns, "index": [0], "data": [[_typed(row[c]) for c in columns]]}}


def _typed(value: Any) -> Any:
    """CSV text as the trainer's reader sees it: missing -> None, integer, decimal, else the text."""
    if not isinstance(value, str):
        return value
    if is_missing(value):
        return None
    text = value.strip()
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return value


def _first_file(deps: Deps, tags: Mapping[str, str], ref: str) -> tuple[str, str]:
    batch_key, data = tags.get("reflex.batch", ""), tags.get("reflex.data", "")
    record = deps.state.get(batch_key) if batch_key.startswith("arrivals/") else None
    if record is not None:
        value = record.value
        files = sorted(value.get("files") or {})
        if files:
            return value["container"], f"{value['dataset']}/{value['batch']}/{files[0]}"
    if data:
        return _first_in_asset(deps, data, ref)
    if batch_key:
        raise PermanentError(f"model {ref}: its training batch {batch_key} is not in the state store any more and it "
                             "has no reflex.data tag")
    raise PermanentError(f"model {ref} has no reflex.batch or reflex.data tag (registered outside Reflex?), so its "
                         "training data is unknown")


def _first_in_asset(deps: Deps, data: str, ref: str) -> tuple[str, str]:
    name, _, version = data.rpartition(":")
    asset = deps.platform.get_data(name, version) if name else None
    if asset is None:
        raise PermanentError(f"model {ref}: its data asset {data} (reflex.data) is not registered")
    match = _DATASTORE_PATH.match(asset.path)
    if match is None or match["store"] != deps.settings.data_datastore:
        raise PermanentError(f"model {ref}: its data asset {data} is at {asset.path}, not in the data datastore "
                             f"{deps.settings.data_datastore!r}")
    from shared.storage import blob_service

    container = deps.settings.data_container
    prefix = match["prefix"].rstrip("/") + "/"
    client = blob_service(deps.settings).get_container_client(container)
    try:
        names = sorted(b.name for b in client.list_blobs(name_starts_with=prefix)
                       if not file_problem(b.name[len(prefix):], b.size))
    except Exception as exc:
        raise map_azure_error(exc, f"listing {container}/{prefix}") from exc
    if not names:
        raise PermanentError(f"model {ref}: no data file in {container}/{prefix} (its data asset {data})")
    return container, names[0]


def _first_row(deps: Deps, container: str, blob: str) -> dict[str, Any]:
    from shared.storage import blob_service

    client = blob_service(deps.settings).get_blob_client(container, blob)
    whole = blob.lower().endswith(".parquet")
    try:
        download = client.download_blob() if whole else client.download_blob(offset=0, length=HEAD_BYTES)
        cut = not whole and int(download.properties.size or 0) > HEAD_BYTES
        row = pick_row(read_rows(blob, download.chunks()), cut=cut)
    except PermanentError as exc:
        raise PermanentError(f"{container}/{blob}: {exc}") from exc
    except Exception as exc:
        raise map_azure_error(exc, f"reading {container}/{blob}") from exc
    if row is None:
        raise PermanentError(f"{container}/{blob}: no data row" + (f" in its first {HEAD_BYTES >> 20} MiB"
                                                                   if not whole else ""))
    return row


def pick_row(rows: Iterator[dict[str, Any]], *, cut: bool) -> dict[str, Any] | None:
    """The first row without missing values among the first ROWS_LOOKED_AT, else the first row; None if none.

    Of a file read only in part (`cut`), the last row read may be cut short: it is never chosen, and an
    unreadable tail (a JSON line cut in half) ends the look-ahead rather than the smoke test.
    """
    seen: list[dict[str, Any]] = []
    try:
        for row in rows:
            seen.append(row)
            if len(seen) > ROWS_LOOKED_AT:
                break
    except PermanentError:
        if not seen:
            raise
        cut = False  # the unreadable part was the tail; every row before it is whole
    if cut and len(seen) > 1:
        seen.pop()
    return next((r for r in seen if not any(is_missing(v) for v in r.values())), seen[0] if seen else None)
