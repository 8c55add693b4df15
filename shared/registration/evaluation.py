"""Evaluation jobs: challenger and champion scored on the same rows, when the training job could not do it.

Why a job: a score means something only next to another score measured on the same rows
(shared/registration/gate.py). The command-mode training job scores the champion on its own holdout
(jobs/train/train.py `--champion-model`). An evaluation job (jobs/train/evaluate.py, a command job in every
mode) does it when the training job cannot:

* AutoML mode: Azure ML AutoML runs no script of ours, and its metrics are computed by its own code, so the
  challenger (its `best_model` output) and the champion are both scored by evaluate.py;
* the champion changed while the challenger trained (the job scored a champion that no longer is one);
* a fixed evaluation set (REFLEX_EVAL_DATA = `<dataset>/<folder>` in the data container) is configured;
* a model registered outside Reflex, before it may be rolled out (shared/registration/outside_models.py).

Which rows: the evaluation set when configured (all its labelled rows), else the holdout split of the
challenger's training batch, reproduced exactly as train.py splits it. AutoML trains on the whole batch, so
without an evaluation set those rows are in-sample for an AutoML challenger: the record says so (`Rows.note`);
set REFLEX_EVAL_DATA for an unbiased AutoML gate.

The job is named from what it evaluates (`reflex-eval-<hash>`), so a redelivered event finds it. Its tags say
why it runs (`reflex.kind=evaluation`, `reflex.purpose=gate|outside`, `reflex.parent`, the rows) and its
metrics are `<role>.<metric>`, `<role>.failed` and `eval.rows` (jobs/train/evaluate.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.batches.paths import asset_path, data_asset_name, data_asset_version
from shared.core import trace
from shared.core.errors import PermanentError
from shared.core.platform import REFLEX_TAG, EvaluationRequest, Job
from shared.registration import gate

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["EVALUATION_KIND", "RowsPlan", "is_evaluation", "outcome_of", "rows_plan", "submit"]

EVALUATION_KIND = "evaluation"
SOURCE_TAG, DATA_TAG, NOTE_TAG = "reflex.eval.source", "reflex.eval.data", "reflex.eval.note"


@dataclass(frozen=True)
class RowsPlan:
    """The rows an evaluation job scores: a data asset, its holdout split or all of it, and how to describe it."""

    data_name: str
    data_version: str
    holdout: bool
    source: str
    note: str = ""

    @property
    def data(self) -> str:
        return f"{self.data_name}:{self.data_version}"


def is_evaluation(job: Job) -> bool:
    return job.tags.get("reflex.kind") == EVALUATION_KIND


def rows_plan(deps: Deps, training_data: str, *, in_sample: bool = False) -> RowsPlan:
    """The evaluation set when configured (registered as a data asset on first use), else `training_data`'s holdout.

    `in_sample`: the challenger trained on the whole batch (AutoML), so its holdout rows are not unseen.

    Raises:
        PermanentError: neither an evaluation set nor the challenger's training data is known.
    """
    s = deps.settings
    if s.eval_data:
        dataset, _, folder = s.eval_data.partition("/")
        name, version = f"{data_asset_name(dataset)}-eval", data_asset_version(folder)
        deps.platform.register_data(name=name, version=version, path=asset_path(s.data_datastore, dataset, folder),
                                    tags={REFLEX_TAG: "true", "reflex.kind": "evaluation-set"},
                                    description=f"Reflex evaluation set (REFLEX_EVAL_DATA={s.eval_data})")
        return RowsPlan(name, version, holdout=False, source="evaluation set")
    name, _, version = training_data.partition(":")
    if not name or not version:
        raise PermanentError("no evaluation rows: the challenger has no training data lineage (reflex.data) and "
                             "REFLEX_EVAL_DATA is not set; set it to <dataset>/<folder> with labelled rows")
    note = "in-sample for the challenger, which trained on the whole batch; set REFLEX_EVAL_DATA" if in_sample else ""
    return RowsPlan(name, version, holdout=True, source="batch holdout", note=note)


def submit(deps: Deps, *, purpose: str, parent: str, models: Mapping[str, str], plan: RowsPlan,
           tags: Mapping[str, str]) -> Job:
    """Submit (or find) the evaluation job of `models` on `plan`'s rows; idempotent by its derived name."""
    s = deps.settings
    scored = (f"{role}={model}" for role, model in sorted(models.items()))
    identity = "|".join([purpose, parent, plan.data, str(plan.holdout), *scored])
    name = f"reflex-eval-{hashlib.sha256(identity.encode()).hexdigest()[:24]}"
    request = EvaluationRequest(
        job_name=name, experiment_name=s.experiment_name, data_name=plan.data_name, data_version=plan.data_version,
        task=s.task, label_column=s.label_column, compute=s.training_compute, environment=s.training_environment,
        models=dict(models), holdout=plan.holdout, code=s.training_code, display_name=f"evaluate {parent}",
        tags={**tags, REFLEX_TAG: "true", "reflex.kind": EVALUATION_KIND, "reflex.purpose": purpose,
              "reflex.parent": parent, SOURCE_TAG: plan.source, DATA_TAG: plan.data, NOTE_TAG: plan.note,
              **trace.tags()})
    return deps.platform.submit_evaluation(request)


def outcome_of(job: Job, metrics: Mapping[str, Any], *, metric: str) -> dict[str, Any]:
    """What a finished evaluation job measured, as the gate's inputs.

    Returns {"challenger": {metric: value} | {}, "champion": {...} | None, "champion_error": str,
    "challenger_error": str, "rows": gate.Rows}.
    """
    def scored(role: str) -> tuple[dict[str, Any] | None, str]:
        if f"{role}.failed" not in metrics and f"{role}.{metric}" not in metrics:
            return None, ""
        if gate.metric_value(metrics, f"{role}.failed") == 1.0:
            return {}, f"{role} could not predict the rows (see the job's reflex.{role}_error tag)"
        value = metrics.get(f"{role}.{metric}")
        return ({metric: value} if value is not None else {}), ""

    count = gate.metric_value(metrics, "eval.rows")
    rows = gate.Rows(job.tags.get(SOURCE_TAG, "evaluation"), job.tags.get(DATA_TAG, ""),
                     None if count is None else int(count), job=job.name, note=job.tags.get(NOTE_TAG, ""))
    challenger, challenger_error = scored("challenger")
    champion, champion_error = scored("champion")
    return {"challenger": challenger or {}, "champion": champion, "champion_error": champion_error,
            "challenger_error": challenger_error or ("" if challenger is not None else "challenger was not scored"),
            "rows": rows}
