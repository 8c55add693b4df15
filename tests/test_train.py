"""jobs/train/train.py end to end, as Azure ML and the local platform run it: a subprocess on a batch folder.

Real pandas, scikit-learn and MLflow; the tracking store is a SQLite file in the test's temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from local.sampledata import FEATURES, LABEL, generate, patient_record, write_batch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "train" / "train.py"


def _env(tracking_uri: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = ""  # the script must not need the repo on the path (shared/ is absent in Azure ML)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def _train(cwd: Path, *args: str | Path, tracking_uri: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=cwd,  # an isolated working directory, as in a job; MLflow's default artifact root lands here
        env=_env(tracking_uri),
        capture_output=True,
        text=True,
        timeout=900,  # a hang bound, not a speed check: under two CPU-bound processes per core a run took > 120 s
    )


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One tracked classification run on a three-part CSV batch with a marker and noise files beside it."""
    root = tmp_path_factory.mktemp("classification")
    data = root / "landing" / "batch-001"
    write_batch(data, generate(600, seed=1), files=3)
    (data / ".part-00000.csv.crc").write_bytes(b"crc bytes that are not a table")
    (data / "empty.csv").write_bytes(b"")
    (data / "notes.txt").write_text("not data\n")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    done = _train(
        root,
        "--data", data, "--label", LABEL, "--task", "classification", "--seed", "7",
        "--model-output", root / "outputs" / "model", "--metrics-output", root / "outputs" / "metrics.json",
        tracking_uri=tracking_uri,
    )  # fmt: skip
    return {"root": root, "done": done, "tracking_uri": tracking_uri}


def test_classification_succeeds_with_sane_metrics(classified: dict[str, object]) -> None:
    done = classified["done"]
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((Path(str(classified["root"])) / "outputs" / "metrics.json").read_text())
    assert set(metrics) == {"auc", "accuracy", "n_train", "n_test"}
    assert 0.7 < metrics["auc"] <= 1.0
    assert 0.6 < metrics["accuracy"] <= 1.0
    assert (metrics["n_train"], metrics["n_test"]) == (480, 120)
    assert "read 600 rows x 13 columns from 3 file(s)" in done.stderr


def test_model_folder_is_an_mlflow_model_that_predicts_a_patient(classified: dict[str, object]) -> None:
    import mlflow.pyfunc
    import pandas as pd

    model_dir = Path(str(classified["root"])) / "outputs" / "model"
    assert (model_dir / "MLmodel").is_file()
    model = mlflow.pyfunc.load_model(str(model_dir))
    assert [c.name for c in model.metadata.get_input_schema().inputs] == list(FEATURES)
    predictions = model.predict(pd.DataFrame([patient_record(3), patient_record(4)]))
    assert set(map(int, predictions)) <= {0, 1} and len(predictions) == 2


def test_run_is_logged_to_mlflow_with_metrics_params_and_model(classified: dict[str, object]) -> None:
    import mlflow
    import pandas as pd

    root = Path(str(classified["root"]))
    metrics = json.loads((root / "outputs" / "metrics.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=str(classified["tracking_uri"]))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["auc"] == pytest.approx(metrics["auc"])
    assert run.data.metrics["n_test"] == 120
    assert run.data.params["task"] == "classification" and run.data.params["label"] == LABEL
    assert run.data.params["seed"] == "7"
    mlflow.set_tracking_uri(str(classified["tracking_uri"]))
    try:
        logged = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    assert len(logged.predict(pd.DataFrame([patient_record(5)]))) == 1


def test_parquet_in_nested_folders_trains_without_tracking(tmp_path: Path) -> None:
    import pandas as pd

    rows = generate(400, seed=2)
    data = tmp_path / "batch"
    (data / "day=1").mkdir(parents=True)
    (data / "day=2").mkdir()
    pd.DataFrame(rows[:250]).to_parquet(data / "day=1" / "part-0.parquet")
    pd.DataFrame(rows[250:]).to_parquet(data / "day=2" / "part-0.pq")
    (data / "_SUCCESS").write_bytes(b"")
    done = _train(
        tmp_path,
        "--data", data, "--label", LABEL, "--task", "classification",
        "--model-output", tmp_path / "model", "--metrics-output", tmp_path / "metrics.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_test"] == 400 and metrics["auc"] > 0.7
    assert (tmp_path / "model" / "MLmodel").is_file()
    assert not (tmp_path / "mlruns").exists() and "logged to MLflow" not in done.stderr


def test_regression_on_a_numeric_target_with_a_text_column(tmp_path: Path) -> None:
    rows = generate(500, seed=4)
    for row in rows:
        row.pop(LABEL)
        row["ward"] = "ABC"[row["time"] % 3]
        row["risk_score"] = round(
            0.5 * row["age"]
            - 0.4 * row["ejection_fraction"]
            + 6 * row["serum_creatinine"]
            + {"A": 0.0, "B": 5.0, "C": -5.0}[row["ward"]],
            3,
        )
    data = tmp_path / "batch"
    write_batch(data, rows, files=2)
    done = _train(
        tmp_path,
        "--data", data, "--label", "risk_score", "--task", "regression", "--test-size", "0.25",
        "--model-output", tmp_path / "model", "--metrics-output", tmp_path / "metrics.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"rmse", "r2", "n_train", "n_test"}
    assert metrics["r2"] > 0.8 and 0 < metrics["rmse"] < 5
    assert (metrics["n_train"], metrics["n_test"]) == (375, 125)


def test_folder_with_only_a_marker_is_bad_input_naming_the_folder(tmp_path: Path) -> None:
    data = tmp_path / "empty-batch"
    write_batch(data, [], files=1)
    (data / "part-00000.csv").write_bytes(b"")  # zero-byte part, as a failed upload leaves behind
    done = _train(tmp_path, "--data", data, "--label", LABEL, "--task", "classification", "--model-output", "m")
    assert done.returncode == 2
    assert _error_line(done) == (
        f"train.py: error: no readable data in {data}: expected non-empty .csv, .csv.gz, .tsv, .tsv.gz, .parquet, .pq, "
        ".pqt files"
    )
    assert not (tmp_path / "m").exists()


def test_missing_label_is_bad_input_naming_the_label_the_data_the_columns_and_the_setting(tmp_path: Path) -> None:
    data = tmp_path / "batch"
    write_batch(data, generate(50, seed=1), files=2)
    done = _train(tmp_path, "--data", data, "--label", "outcome", "--task", "classification", "--model-output", "m")
    assert done.returncode == 2
    line = _error_line(done)
    assert line.startswith(f"train.py: error: label column 'outcome' not found in {data}; set REFLEX_LABEL_COLUMN "
                           "to the column to predict (Reflex passes it as --label); columns are: age, anaemia")
    assert LABEL in line
    assert done.stderr.rstrip().splitlines()[-1] == line  # the last line, so the job's failure reason ends with it


def test_a_label_spelled_differently_gets_a_suggestion_and_a_wide_table_a_bounded_line(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(generate(30, seed=2)).rename(columns={LABEL: "death_event"})
    extra = pd.DataFrame({f"extra_column_with_a_long_name_{i}\nsecond line": [i] * len(frame) for i in range(200)})
    frame = pd.concat([frame, extra], axis=1)
    frame.to_csv(tmp_path / "only.csv", index=False)
    done = _train(tmp_path, "--data", tmp_path / "only.csv", "--label", LABEL, "--task", "classification",
                  "--model-output", "m")
    line = _error_line(done)
    assert f"not found in {tmp_path / 'only.csv'}; did you mean 'death_event'?; set REFLEX_LABEL_COLUMN" in line
    assert re.search(r"extra_column_with_a_long_name_\d+ second line … and \d+ more$", line), line
    assert len(line) < 1500


def test_the_local_job_s_failure_reason_ends_with_the_error_line(tmp_path: Path) -> None:
    """local/jobrunner.py makes the script's error line the job's reason (first, whole), then the exit code."""
    from local import jobrunner

    data = tmp_path / "inputs"
    write_batch(data, generate(40, seed=1), files=1)
    spec = {"kind": "command", "script": str(SCRIPT), "label": "outcome", "task": "classification",
            "run_id": "r", "experiment_id": "0"}
    with pytest.raises(jobrunner.JobFailed) as failed:
        jobrunner._train(spec, tmp_path, data)
    reason = str(failed.value)
    assert reason.startswith("train.py: error: label column 'outcome' not found in ")
    assert "REFLEX_LABEL_COLUMN" in reason
    assert "(training script exited with code 2; log: " in reason


def test_unreadable_file_and_non_empty_output_are_bad_input(tmp_path: Path) -> None:
    data = tmp_path / "batch"
    write_batch(data, generate(50, seed=1), files=1)
    (data / "part-00001.parquet").write_bytes(b"this is not parquet")
    done = _train(tmp_path, "--data", data, "--label", LABEL, "--task", "classification", "--model-output", "m")
    assert done.returncode == 2 and f"cannot read {data / 'part-00001.parquet'}" in _error_line(done)

    (data / "part-00001.parquet").unlink()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "MLmodel").write_text("left over\n")
    done = _train(tmp_path, "--data", data, "--label", LABEL, "--task", "classification", "--model-output", "m")
    assert done.returncode == 2 and "model output folder m is not empty" in _error_line(done)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reflex_train_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_multiclass_auc_is_one_vs_rest_weighted_and_single_class_is_refused() -> None:
    import pandas as pd

    script = _load_script()
    rows = generate(300, seed=8)
    frame = pd.DataFrame(rows)
    frame["stage"] = pd.cut(frame["ejection_fraction"], [0, 30, 45, 100], labels=["low", "mid", "high"]).astype(str)
    features, target = script.split_features(frame.drop(columns=[LABEL]), "stage", "classification")
    _, scores = script.train(features, target, task="classification", seed=1, test_size=0.2)
    assert scores["auc"] > 0.9  # the stage is a function of one feature
    assert scores["n_test"] == 60

    with pytest.raises(script.BadInput, match="has 1 class"):
        script.split_features(frame.assign(stage="low"), "stage", "classification")


# As reported against azureml-mlflow 1.60 with mlflow 3.5 and 3.8 (Azure/azure-sdk-for-python#44896).
AZUREML_REFUSAL = "API request to endpoint /api/2.0/mlflow/logged-models failed with error code 404 != 200."


def test_refused_log_model_falls_back_to_run_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Azure ML tracking server lacks MLflow 3's logged-models API; the model must still reach the run."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow.exceptions import MlflowException

    script = _load_script()
    assert not script._logged_models_unsupported(MlflowException("RESOURCE_DOES_NOT_EXIST: experiment 3"))
    frame = pd.DataFrame(generate(120, seed=3))
    features, target = script.split_features(frame, LABEL, "classification")
    pipeline, scores = script.train(features, target, task="classification", seed=1, test_size=0.25)
    signature = script.save_model(pipeline, features, tmp_path / "model")

    def refuse(*args: object, **kwargs: object) -> None:
        raise MlflowException(AZUREML_REFUSAL)

    monkeypatch.setattr(mlflow.sklearn, "log_model", refuse)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("fallback", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as active:
            run_id = script.log_to_mlflow(
                pipeline, features, signature=signature, model_dir=tmp_path / "model", scores=scores, params={"a": 1}
            )
            assert run_id == active.info.run_id and mlflow.active_run() is active  # a caller's run is left open
        names = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "model")]
        assert "model/MLmodel" in names
        logged = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
        assert len(logged.predict(pd.DataFrame([patient_record(1)]))) == 1
        assert mlflow.get_run(run_id).data.metrics["auc"] == pytest.approx(scores["auc"])
    finally:
        mlflow.set_tracking_uri(None)
