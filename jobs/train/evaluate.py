"""Score several MLflow models on the same evaluation rows, with the training script's own arithmetic.

Why a job of its own: the registration gate compares a challenger with the champion on the same rows. The
training script does that itself when it trains (``train.py --champion-model``); this script is for when it
cannot: AutoML mode (Azure ML AutoML does not run our script), a champion that changed while the challenger
trained, a fixed evaluation set the user chose, and a model a person registered from outside Reflex. It runs as
an Azure ML command job from the same code folder as train.py (and, offline, as a subprocess of the local job
runner), and imports train.py's reading, preparing, splitting and measuring, so its rows and numbers are the ones
the training job would have produced::

    python evaluate.py --data <folder> --label <column> --task classification|regression \\
        --model challenger=<uri or folder> --model champion=<uri or folder> \\
        [--holdout --seed 42 --test-size 0.2] [--metrics-output <file.json>]

* ``--holdout``: the rows are the batch's holdout split, exactly train.py's (same seed, size, stratification);
  without it, every labelled row of ``--data`` (a fixed evaluation set).
* Metrics, per model: ``<role>.<metric>`` and ``<role>.failed`` (1 when the model cannot predict these rows; the
  reason is the run's tag ``reflex.<role>_error``), plus ``eval.rows``. Logged to MLflow like train.py's.
* Exit codes as train.py's: 0 (also when a model could not be scored: that is a result), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train.py beside it, in Azure ML as locally

import train

log = logging.getLogger("evaluate")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate.py", description="Score MLflow models on the same rows.")
    parser.add_argument("--data", required=True, type=Path, help="folder (or file) of CSV/Parquet data")
    parser.add_argument("--label", required=True)
    parser.add_argument("--task", required=True, choices=train.TASKS)
    parser.add_argument("--model", action="append", default=[], metavar="ROLE=URI",
                        help="a model to score: role (challenger, champion) = MLflow URI or folder; repeatable")
    parser.add_argument("--holdout", action="store_true", help="score the batch's holdout split, as train.py does")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--metrics-output", type=Path)
    args = parser.parse_args(argv)
    roles = [m.partition("=")[0] for m in args.model]
    if not args.model or any("=" not in m or not m.partition("=")[2] for m in args.model):
        parser.error("--model ROLE=URI is required at least once")
    if len(set(roles)) != len(roles):
        parser.error(f"--model roles must differ, got {roles}")
    return args


def evaluate(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, errors by role) of every model on the same rows."""
    frame = train.load_frame(args.data)
    features, target = train.split_features(frame, args.label, args.task)
    features = train._prepare_categoricals(features)
    if args.holdout:
        _, features, _, target = train.holdout_split(features, target, task=args.task, seed=args.seed,
                                                     test_size=args.test_size)
    scores: dict[str, float] = {"eval.rows": float(len(features))}
    errors: dict[str, str] = {}
    for spec in args.model:
        role, _, uri = spec.partition("=")
        found, error = train.score_model(uri, features, target, args.task, f"{role}.")
        scores.update(found)
        if error:
            errors[role] = error
    return scores, errors


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        scores, errors = evaluate(args)
    except train.BadInput as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    log.info("metrics: %s", json.dumps(scores, sort_keys=True))
    if args.metrics_output:
        args.metrics_output.parent.mkdir(parents=True, exist_ok=True)
        args.metrics_output.write_text(json.dumps({k: v if math.isfinite(v) else None for k, v in scores.items()},
                                                  indent=2, sort_keys=True) + "\n")
    if train._tracking_wanted():
        import mlflow

        started = mlflow.active_run() is None
        if started:
            mlflow.start_run()
        try:
            mlflow.log_params({"task": args.task, "label": args.label, "holdout": args.holdout, "seed": args.seed,
                               "test_size": args.test_size, **{f"model.{m.partition('=')[0]}": m.partition("=")[2]
                                                               for m in args.model}})
            mlflow.log_metrics({k: v for k, v in scores.items() if math.isfinite(v)})
            if errors:
                mlflow.set_tags({f"reflex.{role}_error": text[:4000] for role, text in errors.items()})
        finally:
            if started:
                mlflow.end_run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
