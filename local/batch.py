"""Local batch scoring: predict every row of a downloaded input folder and write `predictions.csv` once.

Why this shape: an Azure ML batch deployment of an MLflow model reads the input files, predicts, and appends
the rows to `predictions.csv` in the job's output folder; the service refuses an output that already exists.
Locally the job runner downloads the input from Azurite and this writes the output to the output container,
create-only, so a reused output path fails the job instead of overwriting an earlier result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["score_folder", "OUTPUT_FILE"]

OUTPUT_FILE = "predictions.csv"


def score_folder(*, model: str, data: Path, service: Any, output: dict[str, str], run_id: str = "") -> int:
    """Score every row under `data` with registered model "name:version"; the number of rows written."""
    import mlflow.pyfunc

    from local.blobs import upload_file
    from local.tables import read_folder

    name, _, version = model.partition(":")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    frame = read_folder(data)
    schema = loaded.metadata.get_input_schema()
    features = frame[[c for c in schema.input_names() if c in frame.columns]] if schema else frame
    predictions = loaded.predict(features)
    result = frame.copy()
    result["prediction"] = list(predictions.iloc[:, 0] if hasattr(predictions, "iloc") and predictions.ndim == 2
                                else predictions)
    prefix = output["prefix"]
    blob = f"{prefix.rstrip('/')}/{OUTPUT_FILE}" if prefix else OUTPUT_FILE
    upload_file(service, output["container"], blob, result.to_csv(index=False).encode())
    return len(result)
