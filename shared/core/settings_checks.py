"""Checks across settings, run by `shared.core.settings.load()` at start: combinations that fail only much later.

Why here: each of these settings is well-formed alone, and the mistake showed only after a whole training run
(a regression task with the gate metric `auc`: "metric 'auc' missing") or at the first rollout (a smoke request
in a shape no scoring server reads). Each problem names every setting involved and what would fit.

* Gate metric against task. `command` mode trains with jobs/train/train.py, which logs `auc` and `accuracy`
  for classification and `rmse` and `r2` for regression (its docstring; tests/test_train.py); local/automl.py
  logs the same. In `automl` mode Azure ML AutoML logs its own metric names, so only a metric of the other task
  is refused there. A known metric with the wrong direction (`rmse` with `max`) would register worse models.
* AutoML primary metric against task (`automl` mode only): azure-ai-ml resolves it as
  `ClassificationPrimaryMetrics[camel_to_snake(value).upper()]` (or `RegressionPrimaryMetrics`), in
  azure/ai/ml/entities/_job/automl/tabular/classification_job.py and regression_job.py (azure-ai-ml 1.35.2);
  a name outside the task's enum fails the submission.
* Smoke request: a JSON object whose rows are found in one of the scoring formats
  (`shared.core.scoring_request.expected_rows`, which the rollout's smoke test counts with too), or empty.

Schedules are parsed by shared/core/ncrontab.py, the parser the local host runs timers with (in the declarations).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shared.core.scoring_request import SHAPES, expected_rows

__all__ = ["COMMAND_METRICS", "AUTOML_PRIMARY_METRICS", "cross_check", "automl_metric_key"]

# metric -> better direction, per task
COMMAND_METRICS: Mapping[str, Mapping[str, str]] = {
    "classification": {"auc": "max", "accuracy": "max"},
    "regression": {"rmse": "min", "r2": "max"},
}
# the members of azure-ai-ml's ClassificationPrimaryMetrics / RegressionPrimaryMetrics, in their documented
# spelling (YAML `primary_metric:`), with their direction
AUTOML_PRIMARY_METRICS: Mapping[str, Mapping[str, str]] = {
    "classification": {"AUC_weighted": "max", "accuracy": "max", "norm_macro_recall": "max",
                       "average_precision_score_weighted": "max", "precision_score_weighted": "max"},
    "regression": {"spearman_correlation": "max", "normalized_root_mean_squared_error": "min", "r2_score": "max",
                   "normalized_mean_absolute_error": "min"},
}
_OTHER = {"classification": "regression", "regression": "classification"}


def automl_metric_key(value: str) -> str:
    """The enum member name azure-ai-ml looks a primary metric up by: CamelCase or snake_case -> UPPER_SNAKE."""
    text = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", value.strip())
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text).upper()


_AUTOML_KEYS = {task: {automl_metric_key(name): name for name in names}
                for task, names in AUTOML_PRIMARY_METRICS.items()}


def _known_direction(metric: str) -> str | None:
    for table in (*COMMAND_METRICS.values(), *AUTOML_PRIMARY_METRICS.values()):
        if metric in table:
            return table[metric]
    return None


def _gate(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    task, mode, metric, direction = (values["task"], values["training_mode"], values["gate_metric"],
                                     values["gate_direction"])
    other = _OTHER[task]
    if mode == "command" and metric not in COMMAND_METRICS[task]:
        fits = ", ".join(COMMAND_METRICS[task])
        return [("REFLEX_GATE_METRIC", f"{metric!r} is not a metric the training job logs for REFLEX_TASK={task} "
                                       f"(REFLEX_TRAINING_MODE=command logs {fits}): set REFLEX_GATE_METRIC to one "
                                       "of those, or REFLEX_TASK to the task of your data")]
    if mode == "automl" and (metric in COMMAND_METRICS[other] or metric in AUTOML_PRIMARY_METRICS[other]):
        fits = ", ".join([*COMMAND_METRICS[task], *AUTOML_PRIMARY_METRICS[task]])
        return [("REFLEX_GATE_METRIC", f"{metric!r} is a {other} metric but REFLEX_TASK={task}: metrics that fit "
                                       f"are {fits}")]
    better = _known_direction(metric)
    if better and better != direction:
        word = "higher" if better == "max" else "lower"
        return [("REFLEX_GATE_DIRECTION", f"{metric!r} (REFLEX_GATE_METRIC) is better when {word}: expected "
                                          f"{better}, got {direction}")]
    return []


def _primary(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    task, metric = values["task"], values["automl_primary_metric"]
    if values["training_mode"] != "automl" or automl_metric_key(metric) in _AUTOML_KEYS[task]:
        return []
    fits = ", ".join(AUTOML_PRIMARY_METRICS[task])
    return [("REFLEX_AUTOML_PRIMARY_METRIC", f"{metric!r} is not an AutoML primary metric for REFLEX_TASK={task}: "
                                             f"expected one of {fits}")]


def _smoke(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    body = values["smoke_request"]
    if body is None or (expected_rows(body) or 0) > 0:
        return []
    return [("REFLEX_SMOKE_REQUEST", f"expected rows in one of the scoring request shapes ({SHAPES}), or empty "
                                     f"(a row of the model's training data is sent then); got keys {sorted(body)}")]


_CHECKS = ((("task", "training_mode", "gate_metric", "gate_direction"), _gate),
           (("task", "training_mode", "automl_primary_metric"), _primary),
           (("smoke_request",), _smoke))


def cross_check(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems (setting, message) across the parsed `values`; a check whose inputs did not parse is left out."""
    problems: list[tuple[str, str]] = []
    for needs, check in _CHECKS:
        if all(name in values for name in needs):
            problems += check(values)
    return problems
