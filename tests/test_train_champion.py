"""The training job scores the champion on its own holdout, and evaluate.py reproduces those rows exactly.

Real runs of jobs/train/train.py and jobs/train/evaluate.py as subprocesses (as Azure ML and the local platform
run them), against a real MLflow tracking store and model registry (SQLite in the test's folder): the champion is
loaded as `models:/<name>/<version>`, the URI form MLflow's registry serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import process_state

from local.sampledata import LABEL, generate, write_batch

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "jobs" / "train" / "train.py"
EVALUATE = REPO / "jobs" / "train" / "evaluate.py"


def _run(script: Path, cwd: Path, uri: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH="", MLFLOW_TRACKING_URI=uri)  # the scripts must not need the repo (absent in Azure ML)
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@contextlib.contextmanager
def mlflow_at(uri: str) -> Iterator[None]:
    """Tracking and registry both at `uri`, then back: an earlier test in the same process may have pointed the
    registry at a server that has stopped since (the registry URI does not follow the tracking URI once set).

    Restored with `process_state()`, not by setting the previous URIs again: `set_tracking_uri` also writes
    MLFLOW_TRACKING_URI into os.environ, and `get_tracking_uri()` with none set answers MLflow's default
    (`sqlite:///<cwd>/mlflow.db`), so setting "the previous one" back from the module fixture's teardown (after
    the last test's own restore) leaked that default into later modules (a shuffled run under load: the CLI
    then refused to start in tests/test_cli.py and tests/test_operator_view.py)."""
    import mlflow

    with process_state():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A champion trained on 304 rows and registered as heart:1; a challenger trained on 96 rows scoring it."""
    import mlflow

    root = tmp_path_factory.mktemp("champion")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    big, small = root / "big", root / "small"
    write_batch(big, generate(380, seed=11), files=2)    # 304 training rows, 76 held out
    write_batch(small, generate(120, seed=12), files=1)  # 96 training rows, 24 held out
    done = _run(TRAIN, root, uri, "--data", big, "--label", LABEL, "--task", "classification",
                "--model-output", root / "m1", "--metrics-output", root / "m1.json")
    assert done.returncode == 0, done.stderr
    with mlflow_at(uri):
        client = mlflow.MlflowClient()
        [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "heart")
    assert str(version.version) == "1"
    challenger = _run(TRAIN, root, uri, "--data", small, "--label", LABEL, "--task", "classification",
                      "--model-output", root / "m2", "--metrics-output", root / "m2.json",
                      "--champion-model", "models:/heart/1")
    return {"root": root, "uri": uri, "small": small, "done": challenger}


def test_the_challengers_job_scores_the_champion_on_the_same_holdout_rows(world: dict[str, object]) -> None:
    import mlflow

    done = world["done"]
    assert isinstance(done, subprocess.CompletedProcess) and done.returncode == 0, getattr(done, "stderr", "")
    root = Path(str(world["root"]))
    metrics = json.loads((root / "m2.json").read_text())
    own = json.loads((root / "m1.json").read_text())
    assert (metrics["n_train"], metrics["n_test"], own["n_test"]) == (96, 24, 76)
    assert set(metrics) >= {"auc", "accuracy", "champion.auc", "champion.accuracy", "champion.failed"}
    assert metrics["champion.failed"] == 0 and 0.5 < metrics["champion.auc"] <= 1.0
    assert metrics["champion.auc"] != own["auc"]  # its own number came from other rows; this one from these 24
    assert "models:/heart/1 scored on 24 rows" in done.stderr
    with mlflow_at(str(world["uri"])):
        client = mlflow.MlflowClient()
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string="params.champion_model = 'models:/heart/1'")
    [run] = runs
    assert run.data.metrics["champion.auc"] == pytest.approx(metrics["champion.auc"])  # what the gate reads


def test_evaluate_reproduces_the_holdout_and_the_numbers_of_the_training_job(world: dict[str, object]) -> None:
    """An evaluation job on the challenger's batch scores the same 24 rows: the same numbers for both models."""
    root = Path(str(world["root"]))
    done = _run(EVALUATE, root, str(world["uri"]), "--data", world["small"], "--label", LABEL, "--task",
                "classification", "--holdout", "--model", f"challenger={root / 'm2'}",
                "--model", "champion=models:/heart/1", "--metrics-output", root / "eval.json")
    assert done.returncode == 0, done.stderr
    found = json.loads((root / "eval.json").read_text())
    trained = json.loads((root / "m2.json").read_text())
    assert found["eval.rows"] == 24
    assert found["challenger.auc"] == pytest.approx(trained["auc"])
    assert found["champion.auc"] == pytest.approx(trained["champion.auc"])
    assert (found["challenger.failed"], found["champion.failed"]) == (0, 0)


def test_a_champion_that_cannot_predict_the_rows_is_reported_not_fatal(world: dict[str, object],
                                                                      tmp_path: Path) -> None:
    rows = generate(60, seed=3)
    for row in rows:
        row.pop("age")  # the champion needs `age`
    write_batch(tmp_path / "batch", rows, files=1)
    done = _run(EVALUATE, tmp_path, str(world["uri"]), "--data", tmp_path / "batch", "--label", LABEL, "--task",
                "classification", "--model", "champion=models:/heart/1", "--metrics-output", tmp_path / "e.json")
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "e.json").read_text())
    assert found["champion.failed"] == 1 and "champion.auc" not in found and found["eval.rows"] == 60
    assert "cannot predict these rows" in done.stderr
