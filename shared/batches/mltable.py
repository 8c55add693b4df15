"""The `MLTable` file an AutoML data asset needs, written into the frozen folder it describes.

Why: AutoML takes its training data only as an `mltable` asset, and an `mltable` asset is a folder holding a file
named `MLTable` that says which files to read and how. azure-ai-ml does not check a remote one ("skip validation
for remote MLTable when the contents cannot be read", azure/ai/ml/operations/_data_operations.py in 1.35.2), so
without the file the asset registers fine and the job fails at run time. Reflex writes it into the folder the
data asset points at before registering the asset: the batch's frozen copy (shared/batches/freeze.py), whose
files are exactly the recorded versions, so the relative `file:` paths below read those and nothing that lands
in the live folder later. In the frozen folder it is written once (`If-None-Match: *`), never rewritten.

The format is the documented MLTable YAML (CLI (v2) MLtable YAML schema, MicrosoftDocs/azure-ai-docs
articles/machine-learning/reference-yaml-mltable.md; schema https://azuremlschemas.azureedge.net/latest/
MLTable.schema.json): `type: mltable`, `paths` (here one `file:` per manifest file, relative to the MLTable file,
so exactly the frozen manifest is read and nothing that lands later), and one read transformation:
`read_delimited` (delimiter, header `all_files_same_headers`, encoding utf8), `read_parquet` or `read_json_lines`.
One transformation reads every path, so a batch for AutoML has one format.

The file is Reflex's own: the data intake skips a blob named `MLTable` (shared/arrival/flow.py) instead of taking it for
data, and anything under `.reflex-frozen/` (shared/batches/paths.py). The local AutoML (local/automl.py) reads
its training data through this same file, so a Reflex that forgot it fails offline as it would on Azure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shared.batches import manifest
from shared.core.errors import PermanentError, map_azure_error

if TYPE_CHECKING:
    from shared.batches.record import BatchRecord
    from shared.core.deps import Deps
    from shared.core.settings import Settings

__all__ = ["MLTABLE", "SCHEMA", "document", "for_batch", "parse", "write"]

MLTABLE = "MLTable"
SCHEMA = "https://azuremlschemas.azureedge.net/latest/MLTable.schema.json"
_READERS = {".csv": "read_delimited", ".parquet": "read_parquet", ".json": "read_json_lines",
            ".jsonl": "read_json_lines"}
_OPTIONS: dict[str, dict[str, Any]] = {
    "read_delimited": {"delimiter": ",", "header": "all_files_same_headers", "encoding": "utf8"},
    "read_parquet": {"include_path_column": False}, "read_json_lines": {"encoding": "utf8"}}


def _reader(files: list[str]) -> str:
    readers = {_READERS.get("." + f.rsplit(".", 1)[-1].lower()) if "." in f else None for f in files}
    if None in readers or not readers:
        raise PermanentError(f"AutoML data: no MLTable reader for {', '.join(sorted(files)) or 'an empty batch'} "
                             f"(readable: {', '.join(sorted(_READERS))})")
    if len(readers) > 1:
        raise PermanentError("AutoML data: the batch mixes formats (" + ", ".join(sorted(files)) + "); an MLTable "
                             "reads all its files with one transformation, so give an AutoML batch one format")
    return readers.pop()  # type: ignore[return-value]


def _quote(text: str) -> str:
    """A YAML double-quoted scalar (file names may hold `:` or `#`)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def document(files: Iterable[str]) -> str:
    """The MLTable YAML reading exactly `files` (names relative to the batch folder)."""
    names = sorted(set(files))
    reader = _reader(names)
    lines = [f"$schema: {SCHEMA}", "type: mltable", "paths:"]
    lines += [f"  - file: {_quote('./' + name)}" for name in names]
    lines += ["transformations:", f"  - {reader}:"]
    for key, value in _OPTIONS[reader].items():
        shown = str(value).lower() if isinstance(value, bool) else _quote(value) if key == "delimiter" else value
        lines.append(f"      {key}: {shown}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> tuple[list[str], str]:
    """(relative file paths, read transformation) of an MLTable this module wrote (the local AutoML's reader)."""
    import yaml

    doc = yaml.safe_load(text) or {}
    if doc.get("type") != "mltable":
        raise ValueError("MLTable: `type: mltable` missing")
    files = [str(p["file"]) for p in doc.get("paths") or [] if isinstance(p, dict) and "file" in p]
    steps = [next(iter(t)) for t in doc.get("transformations") or [] if isinstance(t, dict)]
    readers = [s for s in steps if s in _OPTIONS]
    if not files or len(readers) != 1:
        raise ValueError("MLTable: expected `file:` paths and one read transformation")
    return files, readers[0]


def write(settings: Settings, container: str, folder: str, files: Iterable[str]) -> str:
    """Write `<folder>/MLTable` once (`If-None-Match: *`: the same manifest gives the same bytes, so one already
    there is checked, never rewritten); returns the blob name.

    Raises:
        PermanentError: an MLTable with other content is already there.
    """
    from azure.core.exceptions import ResourceExistsError

    from shared.adapters.storage import blob_service

    name = f"{folder.rstrip('/')}/{MLTABLE}"
    text = document(files)
    blob = blob_service(settings).get_blob_client(container, name)
    try:
        try:
            blob.upload_blob(text.encode(), overwrite=False)
        except ResourceExistsError:
            if blob.download_blob().readall().decode("utf-8", "replace") != text:
                raise PermanentError(f"MLTable {container}/{name} exists with other content than the manifest's; "
                                     "it is Reflex's own file: remove it and train the batch again") from None
    except PermanentError:
        raise
    except Exception as exc:
        raise map_azure_error(exc, f"MLTable {container}/{name}") from exc
    return name


def for_batch(deps: Deps, batch: BatchRecord, data_path: str) -> str | None:
    """In AutoML mode, the MLTable of a completed batch (its frozen manifest's files, `manifest.load`), written
    into the folder of its data asset (`data_path`, `azureml://datastores/<datastore>/paths/<folder>/`: the frozen
    folder) before the asset is registered; None in command mode (a `uri_folder` needs none, nor the manifest)."""
    if deps.settings.training_mode != "automl":
        return None
    folder = data_path.split("/paths/", 1)[1] if "/paths/" in data_path else batch.folder
    return write(deps.settings, batch.container, folder, manifest.load(deps, batch).files)
