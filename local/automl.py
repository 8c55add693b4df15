"""Local "AutoML": a small, honest model search with scikit-learn, standing in for Azure ML AutoML offline.

What it is: a handful of estimators (logistic/linear regression, random forest, gradient boosting) trained on
a stratified split, scored on the held-out part, the best by the primary metric kept. What it is not: Azure ML
AutoML (no featurization sweep, no ensembling, no early termination policy); the run is tagged
`reflex.automl=local-search` so nobody mistakes one for the other. It logs the same metrics the command job
logs (`auc`, `accuracy` or `rmse`, `r2`, plus the AutoML-style primary metric name) and an MLflow model named
`best_model` to the active run: the output name Azure ML AutoML gives its model (`outputs.best_model`, see
`shared.core.platform.MODEL_OUTPUTS`), so a Reflex that registered AutoML from `model` fails here as on Azure.

It takes what an Azure ML AutoML job takes (shared/adapters/azureml/jobs.py builds that job): `training_data`,
an `mltable` folder read through its `MLTable` file (shared/batches/mltable.py writes it; without one this fails, as
Azure's job does),
`target_column_name`, the task, `primary_metric` and the limits `max_trials`, `timeout_minutes` and
`enable_early_termination` (recorded: three candidates leave no room for an early-termination policy).

    python -m local.automl --training-data <mltable folder> --target-column-name <col>
        --task classification|regression --model-output <folder> [--metrics-output f.json]
        [--primary-metric AUC_weighted] [--max-trials N] [--timeout-minutes M] [--enable-early-termination B]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["search", "main"]

# AutoML primary metric -> (our metric, higher is better)
PRIMARY = {"auc_weighted": ("auc", True), "accuracy": ("accuracy", True),
           "normalized_root_mean_squared_error": ("rmse", False), "r2_score": ("r2", True)}


def _candidates(task: str) -> list[tuple[str, Any]]:
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "classification":
        return [("logistic_regression", make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
                ("random_forest", RandomForestClassifier(n_estimators=100, random_state=0)),
                ("gradient_boosting", GradientBoostingClassifier(random_state=0))]
    return [("ridge", make_pipeline(StandardScaler(), Ridge())),
            ("random_forest", RandomForestRegressor(n_estimators=100, random_state=0)),
            ("gradient_boosting", GradientBoostingRegressor(random_state=0))]


def _score(task: str, model: Any, x: Any, y: Any) -> dict[str, float]:
    from sklearn import metrics

    if task == "classification":
        predicted = model.predict(x)
        out = {"accuracy": float(metrics.accuracy_score(y, predicted))}
        if hasattr(model, "predict_proba") and len(set(y)) == 2:
            out["auc"] = float(metrics.roc_auc_score(y, model.predict_proba(x)[:, 1]))
        else:
            out["auc"] = out["accuracy"]
        return out
    predicted = model.predict(x)
    return {"rmse": float(metrics.mean_squared_error(y, predicted) ** 0.5), "r2": float(metrics.r2_score(y, predicted))}


def search(frame: Any, label: str, task: str, *, primary_metric: str = "AUC_weighted", max_trials: int = 3,
           timeout_seconds: float = 600.0) -> tuple[Any, str, dict[str, float], list[dict[str, Any]]]:
    """Fit the candidates; (best model refitted on all rows, its name, its metrics, every trial)."""
    from sklearn.base import clone
    from sklearn.model_selection import train_test_split

    if label not in frame.columns:
        raise ValueError(f"label column {label!r} not in the data (columns: {', '.join(map(str, frame.columns))})")
    x, y = frame.drop(columns=[label]).select_dtypes("number"), frame[label]
    metric, higher = PRIMARY.get(primary_metric.lower(), ("auc", True) if task == "classification" else ("rmse", False))
    stratify = y if task == "classification" and y.value_counts().min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=stratify)
    started, trials = time.monotonic(), list[dict[str, Any]]()
    for name, estimator in _candidates(task)[:max(1, max_trials)]:
        if trials and time.monotonic() - started > timeout_seconds:
            break
        model = clone(estimator).fit(x_train, y_train)
        trials.append({"name": name, "metrics": _score(task, model, x_test, y_test), "model": model})
    best = (max if higher else min)(trials, key=lambda t: t["metrics"][metric])
    final = clone(dict(_candidates(task))[best["name"]]).fit(x, y)
    return final, best["name"], best["metrics"], [{k: t[k] for k in ("name", "metrics")} for t in trials]


def read_mltable(folder: Path) -> Any:
    """The rows an `mltable` input holds: the files its MLTable file lists, read by its transformation."""
    import pandas as pd

    from shared.batches.mltable import MLTABLE, parse

    table = folder / MLTABLE
    if not table.is_file():
        raise ValueError(f"training_data {folder} is not an MLTable folder: it has no {MLTABLE} file (Azure ML "
                         "AutoML takes mltable data only and fails at run time the same way)")
    files, reader = parse(table.read_text())
    read = {"read_delimited": pd.read_csv, "read_parquet": pd.read_parquet,
            "read_json_lines": lambda p: pd.read_json(p, lines=True)}[reader]
    frames = [read(folder / f) for f in files]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError(f"no rows in the files {folder / MLTABLE} lists")
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training-data", required=True, type=Path, help="an mltable folder (with MLTable)")
    parser.add_argument("--target-column-name", required=True)
    parser.add_argument("--task", choices=("classification", "regression"), default="classification")
    parser.add_argument("--model-output", required=True, type=Path)
    parser.add_argument("--metrics-output", type=Path)
    parser.add_argument("--primary-metric", default="AUC_weighted")
    parser.add_argument("--max-trials", type=int, default=3)
    parser.add_argument("--timeout-minutes", type=float, default=10.0)
    parser.add_argument("--enable-early-termination", choices=("true", "false"), default="true")
    args = parser.parse_args(argv)
    label = args.target_column_name

    import mlflow
    import mlflow.sklearn

    from shared.core.platform import model_output

    frame = read_mltable(args.training_data)
    model, best, metrics, trials = search(frame, label, args.task, primary_metric=args.primary_metric,
                                          max_trials=args.max_trials, timeout_seconds=args.timeout_minutes * 60)
    features = frame.drop(columns=[label]).select_dtypes("number")
    requirements = [f"scikit-learn=={__import__('sklearn').__version__}", "pandas", "mlflow"]  # no slow inference
    mlflow.sklearn.save_model(model, str(args.model_output), input_example=features.head(2),
                              pip_requirements=requirements)
    if args.metrics_output:
        args.metrics_output.write_text(json.dumps(metrics))
    print(json.dumps({"best": best, "metrics": metrics, "trials": trials}))
    if os.environ.get("MLFLOW_TRACKING_URI"):
        with mlflow.start_run():
            mlflow.set_tags({"reflex.automl": "local-search", "reflex.automl.best": best,
                             "reflex.automl.early_termination": args.enable_early_termination})
            mlflow.log_metrics(metrics)
            primary = PRIMARY.get(args.primary_metric.lower(), ("auc", True))[0]
            if primary in metrics:
                mlflow.log_metric(args.primary_metric, metrics[primary])
            mlflow.log_dict({"trials": trials}, "automl_trials.json")
            mlflow.sklearn.log_model(model, name=model_output("automl"), input_example=features.head(2),
                                     pip_requirements=requirements)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
