"""The `MLTable` file an AutoML data asset needs, written into the batch folder it describes.

Why: AutoML takes its training data only as an `mltable` asset, and an `mltable` asset is a folder holding a file
named `MLTable` that says which files to read and how. azure-ai-ml does not check a remote one ("skip validation
for remote MLTable when the contents cannot be read", azure/ai/ml/operations/_data_operations.py in 1.35.2), so
without the file the asset registers fine and the job fails at run time. Reflex writes it into the batch folder
before registering the asset; the asset path stays the batch folder.

The format is the documented MLTable YAML (CLI (v2) MLtable YAML schema, MicrosoftDocs/azure-ai-docs
articles/machine-learning/reference-yaml-mltable.md; schema https://azuremlschemas.azureedge.net/latest/
MLTable.schema.json): `type: mltable`, `paths` (here one `file:` per manifest file, relative to the MLTable file,
so exactly the frozen manifest is read and nothing that lands later), and one read transformation:
`read_delimited` (delimiter, header `all_files_same_headers`, encoding utf8), `read_parquet` or `read_json_lines`.
One transformation reads every path, so a batch for AutoML has one format.

The file is Reflex's own: the data intake skips a blob named `MLTable` (shared/arrival/flow.py) instead of taking it for
data. The local AutoML (local/automl.py) reads its training data through this same file, so a Reflex that forgot
it fails offline as it would on Azure.
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
    """Write `<folder>/MLTable` (idempotent: the same manifest gives the same bytes); returns the blob name."""
    from shared.adapters.storage import blob_service

    name = f"{folder.rstrip('/')}/{MLTABLE}"
    text = document(files)
    try:
        blob_service(settings).get_blob_client(container, name).upload_blob(text.encode(), overwrite=True)
    except Exception as exc:
        raise map_azure_error(exc, f"MLTable {container}/{name}") from exc
    return name


def for_batch(deps: Deps, batch: BatchRecord) -> str | None:
    """In AutoML mode, the MLTable of a completed batch (its frozen manifest's files, `manifest.load`), written
    before its data asset is registered; None in command mode (a `uri_folder` needs none, nor the manifest)."""
    if deps.settings.training_mode != "automl":
        return None
    return write(deps.settings, batch.container, batch.folder, manifest.load(deps, batch).files)
