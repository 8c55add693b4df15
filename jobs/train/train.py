"""Train a scikit-learn model on a folder of CSV/Parquet files and save it as an MLflow model.

Why this file is self-contained: it runs as the command of an Azure ML job (where only ``jobs/train`` is uploaded,
so the repo's ``shared/`` is not importable) and, in the local stack, as a subprocess of the embedded platform.
Both call it the same way::

    python train.py --data <folder> --label <column> --task classification|regression \\
        --model-output <folder> [--metrics-output <file.json>] [--seed N] [--test-size 0.2] \\
        [--champion-model models:/<name>/<version>]

Contract with Reflex:

* ``--data`` is a batch folder (an Azure ML ``uri_folder`` mount or download): every file with an extension of
  ``DATA_FORMATS`` (CSV, TSV, both also gzipped, Parquet) under it, recursively, in path order. Hidden files,
  zero-byte files and markers such as ``_SUCCESS`` are ignored; other file types are listed and ignored. A
  single file works too. Reflex's arrival step accepts exactly these formats (``shared/batches/formats.py``, which
  tests/test_formats.py keeps equal to ``DATA_FORMATS``).
* ``--model-output`` always receives the MLflow model (``mlflow.sklearn.save_model``): it is the job's ``model``
  output that Reflex registers as an ``mlflow_model`` from ``azureml://jobs/<job>/outputs/model``.
* Metrics: classification -> ``auc`` (binary ROC AUC; multiclass one-vs-rest, weighted) and ``accuracy``;
  regression -> ``rmse`` and ``r2``; both -> ``n_train``, ``n_test``. Written as a flat JSON object to
  ``--metrics-output`` and logged to MLflow.
* ``--champion-model``: the current champion (any MLflow model URI; Reflex passes ``models:/<name>/<version>``)
  is scored on the same holdout rows with the same arithmetic, as ``champion.<metric>`` plus ``champion.failed``
  (1 when it cannot predict these rows; the reason is the run's ``reflex.champion_error`` tag). The gate compares
  ``<metric>`` with ``champion.<metric>``: both numbers come from the same ``n_test`` rows.
* MLflow tracking is used when a run is active, or ``MLFLOW_TRACKING_URI`` / ``MLFLOW_RUN_ID`` is set (Azure ML
  sets both for the job's own run; ``mlflow.start_run()`` attaches to it). The model is logged under the name
  ``model``. The Azure ML tracking server does not implement MLflow 3's logged-models API (it answers 404 on
  ``/api/2.0/mlflow/logged-models``), so when ``log_model`` is refused the saved folder is uploaded as the run's
  ``model`` artifacts instead, which the older endpoints accept.
* Exit codes: 0 success; 2 bad input (one line on stderr starting with ``train.py: error:``, the last line the
  script writes, so the job's failure reason ends with it); anything else is a bug or an infrastructure failure
  and keeps its traceback.

Heavy imports (pandas, scikit-learn, MLflow) happen inside the functions that need them, so argument and input
errors are reported quickly.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger("train")

TASKS = ("classification", "regression")
# extension -> reader; the same table as shared/batches/formats.py TRAINING_FORMATS (this file cannot import it)
DATA_FORMATS = {
    ".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".tsv.gz": "tsv",
    ".parquet": "parquet", ".pq": "parquet", ".pqt": "parquet",
}
LABEL_SETTING = "REFLEX_LABEL_COLUMN"  # where Reflex takes --label from, named in the error that a label is missing
MAX_LISTED_COLUMNS = 50
MIN_ROWS = 10
MAX_CATEGORIES = 50
# cloudpickle rather than MLflow 3's default skops: Azure ML's MLflow inference images and older MLflow clients
# load cloudpickle models; skops needs a recent MLflow and trusted-type lists on the reading side.
SERIALIZATION_FORMAT = "cloudpickle"


class BadInput(Exception):
    """The data or the arguments cannot produce a model; the message says what to fix."""


# ---------------------------------------------------------------------------------------------------- reading


def _kind(path: Path) -> str | None:
    """The reader of a file by its longest known extension (``x.csv.gz`` is gzipped CSV), or None."""
    name = path.name.lower()
    matches = [ext for ext in DATA_FORMATS if name.endswith(ext) and len(name) > len(ext)]
    return DATA_FORMATS[max(matches, key=len)] if matches else None


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` fit for the single ``train.py: error:`` line: no line breaks, bounded."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _columns_text(columns: Sequence[str], budget: int = 1000) -> str:
    """The column names for a message, as many as fit in ``budget`` characters, then how many more there are."""
    shown: list[str] = []
    for column in columns[:MAX_LISTED_COLUMNS]:
        name = _one_line(str(column), 80)
        if shown and sum(len(n) + 2 for n in shown) + len(name) > budget:
            break
        shown.append(name)
    more = len(columns) - len(shown)
    return ", ".join(shown) + (f" … and {more} more" if more > 0 else "")


def _skipped(path: Path, root: Path) -> bool:
    """Hidden files or folders (``.``), markers and metadata (``_SUCCESS``, ``_committed_…``) and empty files."""
    parts = path.relative_to(root).parts
    return any(part.startswith((".", "_")) for part in parts) or path.stat().st_size == 0


def find_data_files(data: Path) -> list[Path]:
    """The tabular files to read, in a stable order; raises :class:`BadInput` when there are none."""
    if not data.exists():
        raise BadInput(f"data folder {data} does not exist")
    if data.is_file():
        candidates = [data]
        root = data.parent
    else:
        candidates = sorted(p for p in data.rglob("*") if p.is_file())
        root = data
    files: list[Path] = []
    ignored: list[str] = []
    for path in candidates:
        if _skipped(path, root):
            continue
        if _kind(path) is None:
            ignored.append(str(path.relative_to(root)))
            continue
        files.append(path)
    if ignored:
        log.info("ignoring %d non-tabular file(s): %s", len(ignored), ", ".join(ignored[:10]))
    if not files:
        raise BadInput(f"no readable data in {data}: expected non-empty {', '.join(DATA_FORMATS)} files")
    return files


def _read_one(path: Path) -> pd.DataFrame:
    import pandas as pd

    kind = _kind(path)
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        compression = "gzip" if path.name.lower().endswith(".gz") else None
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", compression=compression)
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as exc:  # pyarrow errors derive from these
        raise BadInput(f"cannot read {path}: {type(exc).__name__}: {_one_line(str(exc), 200)}") from exc


def load_frame(data: Path) -> pd.DataFrame:
    """All files concatenated; every file must have the same columns (a batch is one table split in parts)."""
    import pandas as pd

    files = find_data_files(data)
    frames = []
    expected: list[str] | None = None
    for path in files:
        frame = _read_one(path)
        columns = [str(c) for c in frame.columns]
        if expected is None:
            expected = columns
        elif set(columns) != set(expected):
            raise BadInput(f"{path} has columns {columns}, but {files[0]} has {expected}; a batch must share columns")
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame.columns = [str(c) for c in frame.columns]
    frame.attrs["source"] = str(data if len(files) > 1 or data.is_file() else files[0])  # named in input errors
    if frame.empty:
        raise BadInput(f"no rows in {data} ({len(files)} file(s) read)")
    log.info("read %d rows x %d columns from %d file(s) in %s", len(frame), frame.shape[1], len(files), data)
    return frame


# ---------------------------------------------------------------------------------------------------- preparing


def label_problem(columns: Sequence[str], label: str, source: str = "") -> str:
    """The one-line reason a label column is missing ("" when present): where, which columns, what to set."""
    import difflib

    if label in columns:
        return ""
    where = f" in {source}" if source else ""
    close = difflib.get_close_matches(label, [str(c) for c in columns], n=1, cutoff=0.8) or \
        [c for c in columns if str(c).lower() == label.lower()]
    hint = f"; did you mean {str(close[0])!r}?" if close else ""
    return (f"label column {label!r} not found{where}{hint}; set {LABEL_SETTING} to the column to predict "
            f"(Reflex passes it as --label); columns are: {_columns_text(list(columns))}")


def split_features(frame: pd.DataFrame, label: str, task: str) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target; rows without a target are dropped, datetime columns too (no sensible encoding here)."""
    import pandas as pd

    problem = label_problem(list(frame.columns), label, str(frame.attrs.get("source", "")))
    if problem:
        raise BadInput(problem)
    frame = frame[frame[label].notna()]
    target = frame[label]
    features = frame.drop(columns=[label])
    dropped = [c for c in features.columns if pd.api.types.is_datetime64_any_dtype(features[c])]
    if dropped:
        log.info("dropping datetime column(s): %s", ", ".join(dropped))
        features = features.drop(columns=dropped)
    if features.shape[1] == 0:
        raise BadInput(f"no feature columns besides the label {label!r}")
    # Column dtypes stay as read: the inferred signature then matches what callers send. (Casting integers to
    # float would admit NaN at scoring time, but MLflow refuses int64 -> double, so plain integer rows would fail.)
    if task == "regression":
        target = pd.to_numeric(target, errors="coerce")
        if target.isna().any():
            raise BadInput(f"label column {label!r} is not numeric, so it cannot be a regression target")
    else:
        classes = target.nunique()
        if classes < 2:
            raise BadInput(f"label column {label!r} has {classes} class(es); classification needs at least 2")
    if len(features) < MIN_ROWS:
        raise BadInput(f"only {len(features)} labelled rows; at least {MIN_ROWS} are needed")
    return features, target


def build_pipeline(features: pd.DataFrame, task: str, seed: int) -> Pipeline:
    """Impute and scale numbers, impute and one-hot text; gradient boosting, which is fast and robust on small data."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    transformers = []
    if numeric:
        transformers.append(
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric)
        )
    if categorical:
        encode = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES, sparse_output=False)
        transformers.append(
            (
                "categorical",
                Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="missing")), ("onehot", encode)]),
                categorical,
            )
        )
    estimator_type = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    estimator = estimator_type(max_iter=200, learning_rate=0.05, random_state=seed)
    return Pipeline([("prepare", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)])


def _prepare_categoricals(features: pd.DataFrame) -> pd.DataFrame:
    """Text columns as plain object strings, so the imputer and encoder see one type per column."""
    import pandas as pd

    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if not text:
        return features
    features = features.copy()
    for column in text:
        values = features[column]
        features[column] = values.where(values.isna(), values.astype(str)).astype(object)
    return features


# ---------------------------------------------------------------------------------------------------- training


def holdout_split(
    features: pd.DataFrame, target: pd.Series, *, task: str, seed: int, test_size: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """(x_train, x_test, y_train, y_test): seeded, stratified when every class allows it.

    One function for the training job and the evaluation job (evaluate.py), so a batch's holdout is the same rows
    wherever it is reproduced.
    """
    from sklearn.model_selection import train_test_split

    stratify = None
    if task == "classification":
        counts = target.value_counts()
        n_test = math.ceil(len(target) * test_size)
        if counts.min() >= 2 and n_test >= len(counts):
            stratify = target
    return train_test_split(features, target, test_size=test_size, random_state=seed, stratify=stratify)


def measure(task: str, y_true: pd.Series, predicted: Any, probabilities: Any = None,
            classes: Sequence[Any] | None = None) -> dict[str, float]:
    """The gate's metrics of one model's predictions on some rows; the same arithmetic for every model scored.

    Classification: `accuracy`, and `auc` from class probabilities (binary ROC AUC; multiclass one-vs-rest,
    weighted); a model that gives labels only is ranked by its labels (binary). Regression: `rmse`, `r2`.
    """
    import numpy as np
    from sklearn import metrics

    if task != "classification":
        scores = {"rmse": float(np.sqrt(metrics.mean_squared_error(y_true, predicted)))}
        scores["r2"] = float(metrics.r2_score(y_true, predicted)) if len(y_true) >= 2 else float("nan")
        return scores
    scores = {"accuracy": float(metrics.accuracy_score(y_true, predicted))}
    present = set(y_true.unique())
    if len(present) < 2:
        log.warning("the evaluation rows hold one class only; auc is undefined and not reported")
    elif probabilities is not None and classes is not None and len(classes) == 2:
        scores["auc"] = float(metrics.roc_auc_score(y_true == classes[1], probabilities[:, 1]))
    elif probabilities is not None and classes is not None:
        scores["auc"] = float(
            metrics.roc_auc_score(y_true, probabilities, multi_class="ovr", average="weighted", labels=classes)
        )
    elif len(present) == 2:
        positive = sorted(present, key=str)[1]
        scores["auc"] = float(metrics.roc_auc_score(y_true == positive, np.asarray(predicted) == positive))
    return scores


def train(
    features: pd.DataFrame, target: pd.Series, *, task: str, seed: int, test_size: float
) -> tuple[Pipeline, dict[str, float]]:
    """Fit on a holdout split (stratified when every class allows it) and measure on the held-out rows."""
    pipeline, scores, _ = train_with_holdout(features, target, task=task, seed=seed, test_size=test_size)
    return pipeline, scores


def train_with_holdout(
    features: pd.DataFrame, target: pd.Series, *, task: str, seed: int, test_size: float
) -> tuple[Pipeline, dict[str, float], tuple[pd.DataFrame, pd.Series]]:
    """`train`, also returning the held-out rows (x_test, y_test), which the champion is scored on."""
    x_train, x_test, y_train, y_test = holdout_split(features, target, task=task, seed=seed, test_size=test_size)
    pipeline = build_pipeline(features, task, seed)
    pipeline.fit(x_train, y_train)
    scores: dict[str, float] = {"n_train": float(len(x_train)), "n_test": float(len(x_test))}
    probabilities = pipeline.predict_proba(x_test) if task == "classification" else None
    classes = list(pipeline.classes_) if task == "classification" else None
    scores.update(measure(task, y_test, pipeline.predict(x_test), probabilities, classes))
    return pipeline, scores, (x_test, y_test)


# ---------------------------------------------------------------------------------------------------- champion


class ModelUnusable(Exception):
    """A model loads or predicts in a way that cannot be scored on these rows (missing packages, other columns)."""


def predictions_of(model_uri: str, rows: pd.DataFrame, task: str) -> tuple[Any, Any, list[Any] | None]:
    """(predictions, class probabilities or None, classes or None) of the MLflow model at `model_uri`.

    `model_uri` is anything MLflow loads: `models:/<name>/<version>` (the local MLflow registry, and Azure ML's
    MLflow-compatible registry inside a job, where azureml-mlflow sets the tracking and registry URI), `runs:/…`,
    or a folder (an Azure ML `mlflow_model` input). A scikit-learn model is loaded with its flavor, so its class
    probabilities rank rows for `auc` exactly as the challenger's do; any other MLflow model through pyfunc.

    Raises:
        ModelUnusable: the model needs packages that are absent, or cannot predict these rows.
    """
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import get_model_info

    try:
        flavors = get_model_info(model_uri).flavors
        model = mlflow.sklearn.load_model(model_uri) if "sklearn" in flavors else mlflow.pyfunc.load_model(model_uri)
    except ImportError as exc:
        raise ModelUnusable(f"cannot load {model_uri}: {type(exc).__name__}: {exc}") from exc
    try:
        if "sklearn" in flavors and task == "classification" and hasattr(model, "predict_proba"):
            return model.predict(rows), model.predict_proba(rows), list(model.classes_)
        predicted = model.predict(rows)
    except Exception as exc:  # the model's own code: wrong columns, types, anything it raises on these rows
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ModelUnusable(f"{model_uri} cannot predict these rows: {type(exc).__name__}: {first}") from exc
    if hasattr(predicted, "to_numpy"):
        predicted = predicted.to_numpy()
    if getattr(predicted, "ndim", 1) > 1:
        predicted = predicted[:, 0]
    return predicted, None, None


def score_model(model_uri: str, rows: pd.DataFrame, target: pd.Series, task: str,
                prefix: str) -> tuple[dict[str, float], str]:
    """`<prefix><metric>` of the model on the rows and `<prefix>failed` (0 or 1); the reason when it failed."""
    try:
        predicted, probabilities, classes = predictions_of(model_uri, rows, task)
    except ModelUnusable as exc:
        log.warning("%s", exc)
        return {f"{prefix}failed": 1.0}, str(exc)
    scores = measure(task, target, predicted, probabilities, classes)
    log.info("%s scored on %d rows: %s", model_uri, len(rows), json.dumps(scores, sort_keys=True))
    return {**{f"{prefix}{k}": v for k, v in scores.items()}, f"{prefix}failed": 0.0}, ""


CHAMPION_PREFIX = "champion."  # the champion's metrics on this run's holdout; read by Reflex's gate


# ---------------------------------------------------------------------------------------------------- saving


def save_model(pipeline: Pipeline, features: pd.DataFrame, output: Path) -> Any:
    """Write the MLflow model folder (signature inferred, a few input rows as example); returns the signature."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    example = features.head(5)
    signature = infer_signature(example, pipeline.predict(example))
    mlflow.sklearn.save_model(
        pipeline,
        str(output),
        signature=signature,
        input_example=example,
        serialization_format=SERIALIZATION_FORMAT,
    )
    return signature


def _tracking_wanted() -> bool:
    import mlflow

    return bool(mlflow.active_run() or os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_RUN_ID"))


def _logged_models_unsupported(exc: Exception) -> bool:
    """True for the Azure ML tracking server's refusal of MLflow 3's ``/logged-models`` endpoints."""
    text = str(exc)
    return "logged-models" in text or "logged_models" in text


def log_to_mlflow(
    pipeline: Pipeline,
    features: pd.DataFrame,
    *,
    signature: Any,
    model_dir: Path,
    scores: dict[str, float],
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> str:
    """Log params, metrics and the model to the active (or environment-provided) run; returns the run id."""
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    started = mlflow.active_run() is None
    run = mlflow.start_run() if started else mlflow.active_run()
    assert run is not None  # mlflow.active_run() was checked just above
    try:
        mlflow.log_params(params)
        if tags:
            mlflow.set_tags(tags)
        mlflow.log_metrics({k: v for k, v in scores.items() if math.isfinite(v)})
        try:
            mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=signature,
                input_example=features.head(5),
                serialization_format=SERIALIZATION_FORMAT,
            )
        except MlflowException as exc:
            if not _logged_models_unsupported(exc):
                raise
            log.warning("tracking server refused log_model (%s); uploading the saved model as run artifacts", exc)
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
        return run.info.run_id
    finally:
        if started:
            mlflow.end_run()


# ---------------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train.py", description="Train a scikit-learn model; save it for MLflow.")
    parser.add_argument("--data", required=True, type=Path, help="folder (or file) of CSV/Parquet data")
    parser.add_argument("--label", required=True, help="target column")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model-output", required=True, type=Path, help="folder for the MLflow model")
    parser.add_argument("--metrics-output", type=Path, help="file for the metrics as JSON")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--champion-model", default="",
                        help="MLflow model URI of the current champion (models:/<name>/<version>): scored on this "
                             "run's holdout rows as champion.<metric>, so the gate compares like with like")
    args = parser.parse_args(argv)
    if not 0.0 < args.test_size < 1.0:
        parser.error(f"--test-size must be between 0 and 1, got {args.test_size}")
    return args


def _json_metrics(scores: dict[str, float]) -> dict[str, float | int | None]:
    """Counts as integers, undefined values as null (JSON has no NaN)."""
    return {k: int(v) if k.startswith("n_") else (v if math.isfinite(v) else None) for k, v in scores.items()}


def run(args: argparse.Namespace) -> dict[str, float]:
    frame = load_frame(args.data)
    features, target = split_features(frame, args.label, args.task)
    features = _prepare_categoricals(features)
    if args.model_output.exists() and any(args.model_output.iterdir()):
        raise BadInput(f"model output folder {args.model_output} is not empty")
    pipeline, scores, (x_test, y_test) = train_with_holdout(
        features, target, task=args.task, seed=args.seed, test_size=args.test_size
    )
    champion_error = ""
    if args.champion_model:
        champion, champion_error = score_model(args.champion_model, x_test, y_test, args.task, CHAMPION_PREFIX)
        scores.update(champion)
    log.info("metrics: %s", json.dumps(scores, sort_keys=True))
    signature = save_model(pipeline, features, args.model_output)
    if args.metrics_output:
        args.metrics_output.parent.mkdir(parents=True, exist_ok=True)
        args.metrics_output.write_text(json.dumps(_json_metrics(scores), indent=2, sort_keys=True) + "\n")
    if _tracking_wanted():
        params = {
            "task": args.task,
            "label": args.label,
            "seed": args.seed,
            "test_size": args.test_size,
            "estimator": type(pipeline.named_steps["model"]).__name__,
            "n_features": features.shape[1],
        }
        tags = {}
        if args.champion_model:
            params["champion_model"] = args.champion_model
            if champion_error:
                tags["reflex.champion_error"] = champion_error[:4000]
        run_id = log_to_mlflow(
            pipeline, features, signature=signature, model_dir=args.model_output, scores=scores, params=params,
            tags=tags,
        )
        log.info("logged to MLflow run %s", run_id)
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        run(args)
    except BadInput as exc:
        for handler in logging.getLogger().handlers:  # nothing may follow the error line: the job's failure
            handler.flush()  # reason (the tail of its log) ends with it
        print(f"train.py: error: {_one_line(str(exc), 2000)}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
