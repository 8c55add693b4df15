"""Local batch scoring: predict every row of a downloaded input folder and write `predictions.csv` once.

Why this shape: an Azure ML batch deployment of an MLflow model reads the input files, predicts, and appends
the rows to `predictions.csv` in the job's output folder; the service refuses an output that already exists.
Locally the job runner downloads the input from Azurite and this writes the output to the output container,
create-only, so a reused output path fails the job instead of overwriting an earlier result.

Which files: those the Azure ML MLflow batch driver reads (shared/batches/formats.py SCORING_FORMATS, directly in the
folder). Each is predicted on its own, as the driver calls `predict` once per file; a file that lacks a column
of the model's signature fails the job, naming the file, the missing and the unexpected columns
(shared/scoring/model_input.py), before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["score_folder", "OUTPUT_FILE"]

OUTPUT_FILE = "predictions.csv"
MAX_REPORTED_FILES = 5

log = logging.getLogger("reflex.local.batch")


def score_folder(*, model: str, data: Path, service: Any, output: dict[str, str], run_id: str = "") -> int:
    """Score every row under `data` with registered model "name:version"; the number of rows written.

    Raises ValueError when there is nothing to score or a file lacks columns the model needs.
    """
    import mlflow.pyfunc
    import pandas as pd

    from local.blobs import upload_file
    from local.tables import read_table, table_files
    from shared.batches.formats import describe
    from shared.scoring.model_input import column_problem

    name, _, version = model.partition(":")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    files = table_files(data, "scoring")
    frames = [(path, read_table(path, "scoring")) for path in files]
    frames = [(path, frame) for path, frame in frames if len(frame)]
    if not frames:
        raise ValueError(f"no rows to score: no non-empty {describe('scoring')} file directly in the input folder")
    schema = loaded.metadata.get_input_schema()
    required = schema.input_names() if schema is not None else []
    problems = [p for p in (column_problem(required, [str(c) for c in frame.columns],
                                           where=str(path.relative_to(data))) for path, frame in frames) if p]
    if problems:
        more = len(problems) - MAX_REPORTED_FILES
        raise ValueError("; ".join(problems[:MAX_REPORTED_FILES]) + (f"; and {more} more file(s)" if more > 0 else ""))
    results = []
    for path, frame in frames:
        predictions = loaded.predict(frame[required] if required else frame)
        scored = frame.copy()
        scored["prediction"] = list(predictions.iloc[:, 0] if hasattr(predictions, "iloc") and predictions.ndim == 2
                                    else predictions)
        results.append(scored)
        log.info("scored %d rows of %s", len(scored), path.name)
    result = pd.concat(results, ignore_index=True)
    prefix = output["prefix"]
    blob = f"{prefix.rstrip('/')}/{OUTPUT_FILE}" if prefix else OUTPUT_FILE
    upload_file(service, output["container"], blob, result.to_csv(index=False).encode())
    return len(result)
