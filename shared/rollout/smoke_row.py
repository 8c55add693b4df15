"""A smoke request made of one row of a model's own training data, its label dropped (see shared/rollout/smoke.py).

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

from shared.batches import freeze
from shared.batches.paths import file_problem
from shared.batches.record import ArrivalRecord
from shared.batches.tabular import is_missing, read_rows
from shared.core.errors import PermanentError, map_azure_error

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["HEAD_BYTES", "ROWS_LOOKED_AT", "column_kinds", "first_rows", "pick_row", "request_from_row",
           "training_row_request"]

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
    rows = _sample(deps, container, blob)
    row = pick_row(rows)
    if row is None:
        raise PermanentError(f"{container}/{blob}: no data row" + ("" if blob.lower().endswith(".parquet") else
                                                                   f" in its first {HEAD_BYTES >> 20} MiB"))
    label = deps.settings.label_column
    features = {k: v for k, v in row.items() if k != label}
    if not features:
        raise PermanentError(f"{container}/{blob}: its rows have no column besides the label {label!r}")
    return request_from_row(features, column_kinds(rows)), f"training data {container}/{blob}"


def pick_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first row without missing values, else the first row; None when there is none."""
    return next((r for r in rows if not any(is_missing(v) for v in r.values())), rows[0] if rows else None)


def column_kinds(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each column's kind over the rows read, as pandas infers it for training: `int` when every value is a
    whole number, `float` when every value is a number and one is not whole, else `other`.

    Why over several rows: MLflow enforces the model's input schema and refuses a long where a double was
    trained (mlflow/models/utils.py `_enforce_mlflow_datatype`: int -> double only up to 6 bytes), so a first
    row with `265000` in a column of decimals must send `265000.0`.
    """
    kinds: dict[str, str] = {}
    for row in rows:
        for column, value in row.items():
            kind = _kind(value)
            if kind == "missing":
                continue
            seen = kinds.get(column, kind)
            kinds[column] = kind if seen == kind else "float" if {seen, kind} == {"int", "float"} else "other"
    return kinds


def request_from_row(row: Mapping[str, Any], kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One row in Azure ML's MLflow request format (pandas "split" orientation under `input_data`)."""
    columns = list(row)
    kinds = kinds if kinds is not None else column_kinds([dict(row)])
    values = [_typed(row[c], kinds.get(c, "other")) for c in columns]
    return {"input_data": {"columns": columns, "index": [0], "data": [values]}}


def _kind(value: Any) -> str:
    if value is None or is_missing(value):
        return "missing"
    if isinstance(value, bool):
        return "other"
    if isinstance(value, int) or (isinstance(value, str) and _INT.match(value.strip())):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return "other"
        return "float"
    return "other"


def _typed(value: Any, kind: str) -> Any:
    """The value as its column's kind: missing -> None, integer, decimal, else as read."""
    if value is None or is_missing(value):
        return None
    if kind == "int" and _kind(value) == "int":
        return int(value)
    if kind in ("int", "float") and _kind(value) in ("int", "float"):
        return float(value)
    return value


def _first_file(deps: Deps, tags: Mapping[str, str], ref: str) -> tuple[str, str]:
    batch_key, data = tags.get("reflex.batch", ""), tags.get("reflex.data", "")
    record = deps.state.get(batch_key) if batch_key.startswith("arrivals/") else None
    batch = ArrivalRecord.from_dict(record.value) if record is not None else None
    if batch is not None and batch.file_count:
        return freeze.job_blobs(deps, batch)[0]  # its first file as the job read it (frozen, #18.4)
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
    container = deps.settings.data_container
    prefix = match["prefix"].rstrip("/") + "/"
    client = deps.blobs.get_container_client(container)
    try:
        names = sorted(b.name for b in client.list_blobs(name_starts_with=prefix)
                       if not file_problem(b.name[len(prefix):], b.size))
    except Exception as exc:
        raise map_azure_error(exc, f"listing {container}/{prefix}") from exc
    if not names:
        raise PermanentError(f"model {ref}: no data file in {container}/{prefix} (its data asset {data})")
    return container, names[0]


def _sample(deps: Deps, container: str, blob: str) -> list[dict[str, Any]]:
    """The first rows of the file (up to ROWS_LOOKED_AT), every one of them whole."""
    client = deps.blobs.get_blob_client(container, blob)
    whole = blob.lower().endswith(".parquet")
    try:
        download = client.download_blob() if whole else client.download_blob(offset=0, length=HEAD_BYTES)
        cut = not whole and int(download.properties.size or 0) > HEAD_BYTES
        return first_rows(read_rows(blob, download.chunks()), cut=cut)
    except PermanentError as exc:
        raise PermanentError(f"{container}/{blob}: {exc}") from exc
    except Exception as exc:
        raise map_azure_error(exc, f"reading {container}/{blob}") from exc


def first_rows(rows: Iterator[dict[str, Any]], *, cut: bool) -> list[dict[str, Any]]:
    """Up to ROWS_LOOKED_AT rows. Of a file read only in part (`cut`) the last row read may be cut short, so
    it is dropped; an unreadable tail (a JSON line cut in half) ends the reading rather than the smoke test."""
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
    return seen[:ROWS_LOOKED_AT]
