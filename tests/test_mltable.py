"""The MLTable file Reflex writes for AutoML: the documented format, loaded by azure-ai-ml's own MLTable schema.

Format: CLI (v2) MLtable YAML schema (MicrosoftDocs/azure-ai-docs articles/machine-learning/reference-yaml-mltable.md):
`type: mltable`, `paths` of `file:` entries, one read transformation with the documented parameters.
"""

from __future__ import annotations

import pytest
import yaml
from azure.ai.ml.entities._data.mltable_metadata import MLTableMetadata

from local.automl import read_mltable
from shared.batches import mltable
from shared.core.errors import PermanentError


@pytest.mark.parametrize("files, reader", [(["part-1.csv", "sub/part 2.csv"], "read_delimited"),
                                           (["a.parquet"], "read_parquet"), (["x.jsonl", "y.json"], "read_json_lines")])
def test_document_is_the_documented_mltable_and_the_sdk_loads_it(files: list[str], reader: str) -> None:
    text = mltable.document(files)
    doc = yaml.safe_load(text)
    assert doc["$schema"] == "https://azuremlschemas.azureedge.net/latest/MLTable.schema.json"
    assert doc["type"] == "mltable"
    assert doc["paths"] == [{"file": f"./{f}"} for f in sorted(files)]
    assert [next(iter(t)) for t in doc["transformations"]] == [reader]
    if reader == "read_delimited":
        assert doc["transformations"][0][reader] == {"delimiter": ",", "header": "all_files_same_headers",
                                                     "encoding": "utf8"}
    loaded = MLTableMetadata._load(doc, None)        # the SDK's MLTable schema accepts it
    assert len(loaded.paths) == len(files)
    assert mltable.parse(text) == ([f"./{f}" for f in sorted(files)], reader)
    assert mltable.document(reversed(files)) == text   # idempotent: the same manifest, the same bytes


@pytest.mark.parametrize("files, message", [(["a.csv", "b.parquet"], "mixes formats"), (["notes.txt"], "no MLTable"),
                                            ([], "no MLTable")])
def test_a_batch_an_mltable_cannot_read_is_a_permanent_error(files: list[str], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        mltable.document(files)


def test_local_automl_reads_through_the_mltable_and_refuses_a_folder_without_one(tmp_path) -> None:
    (tmp_path / "part-1.csv").write_text("x,y\n1,0\n2,1\n")
    (tmp_path / "late.csv").write_text("x,y\n9,9\n")                # not in the manifest: not read
    with pytest.raises(ValueError, match="no MLTable file"):
        read_mltable(tmp_path)
    (tmp_path / mltable.MLTABLE).write_text(mltable.document(["part-1.csv"]))
    frame = read_mltable(tmp_path)
    assert list(frame.columns) == ["x", "y"] and frame["x"].tolist() == [1, 2]
