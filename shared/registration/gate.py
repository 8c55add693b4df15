"""The registration gate: does a challenger deserve registration? A pure function of the numbers and their rows.

Why pure: the decision is what people argue about afterwards ("why was my better model not registered?"), so
it is computed in one place from plain values and returned with every number that went into it, and with the
rows those numbers were measured on; the registration flow publishes that decision as it is.

Why "the same rows": a score only means something next to another score measured on the same evaluation rows.
A model trained on 96 rows and scored on its own 24-row holdout is not comparable with one scored on another
batch's 61-row holdout. So the champion's number is never a stored number from its own training: it is the
champion scored on the challenger's evaluation rows (by the training job itself, or by an evaluation job),
and `Rows` says which rows those were. Rules:

* the challenger's metric must be present and finite, else the run is skipped (a run that logged no number
  cannot be judged better);
* no champion: register (the first model of a name needs no comparison);
* the champion could not score the rows (`champion_error`: it cannot predict this data) or has no finite metric
  on them: register, with that reason. A champion that cannot be measured never blocks retraining;
* `direction="max"`: register when challenger > champion + margin; `"min"`: when challenger < champion - margin.
  Equal to the margin is not enough ("more than the margin");
* with approval required, a winning model is registered as `reflex.approval=pending`; the rollout waits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CHAMPION_PREFIX", "GateDecision", "Rows", "decide", "metric_value"]

CHAMPION_PREFIX = "champion."   # the champion's metrics on the challenger's rows, as the job logs them


@dataclass(frozen=True)
class Rows:
    """Which evaluation rows both numbers come from.

    `source`: "holdout" (the challenger's holdout split of its training batch, scored in the training job),
    "evaluation set" (a fixed set the user chose, REFLEX_EVAL_DATA), or "batch holdout" (a batch's holdout
    split reproduced by an evaluation job); `data` the data asset (`name:version`), `count` the row count,
    `job` the job that scored both models, `note` anything a reader must know (e.g. in-sample rows).
    """

    source: str
    data: str
    count: int | None
    job: str = ""
    note: str = ""

    def describe(self) -> str:
        count = "?" if self.count is None else str(self.count)
        text = f"{count} rows of {self.source} {self.data}".rstrip()
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class GateDecision:
    """`register` or not, why, the numbers compared (None where absent) and the rows they come from."""

    register: bool
    reason: str
    metric: str
    direction: str
    margin: float
    challenger: float | None
    champion: float | None
    champion_version: str = ""
    approval: str = ""          # "pending" when the model is registered for approval, else ""
    rows: Mapping[str, Any] = field(default_factory=dict)  # `Rows` as a dict; {} when nothing was compared

    @property
    def improvement(self) -> float | None:
        """How much better the challenger is, in the metric's direction (positive = better)."""
        if self.challenger is None or self.champion is None:
            return None
        diff = self.challenger - self.champion
        return diff if self.direction == "max" else -diff

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": dict(self.rows), "improvement": self.improvement}


def metric_value(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    """The metric as a finite float, or None when absent or not a finite number (strings are parsed)."""
    if not metrics or metric not in metrics:
        return None
    raw = metrics[metric]
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def decide(challenger: Mapping[str, Any], champion: Mapping[str, Any] | None, *, metric: str, direction: str,
           margin: float, approval: bool = False, champion_version: str = "", rows: Rows | None = None,
           champion_error: str = "") -> GateDecision:
    """Decide whether the challenger's model is registered.

    `champion` is the champion's metrics measured on the same `rows` as `challenger`'s, or None when there is
    no champion; `champion_error` says why the champion could not be scored on them.

    Examples:
        >>> decide({"auc": 0.91}, {"auc": 0.90}, metric="auc", direction="max", margin=0.005).register
        True
        >>> decide({"rmse": 3.0}, {"rmse": 2.9}, metric="rmse", direction="min", margin=0.0).reason
        'rmse 3 does not beat the champion 2.9 (min, margin 0)'
    """
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be max or min, got {direction!r}")
    ours = metric_value(challenger, metric)
    base: dict[str, Any] = {"metric": metric, "direction": direction, "margin": margin, "challenger": ours,
            "champion_version": champion_version, "rows": asdict(rows) if rows else {}}
    on = f" on {rows.describe()}" if rows else ""
    pending = "pending" if approval else ""
    which = f"the champion {champion_version}" if champion_version else "the champion"
    if ours is None:
        present = ", ".join(sorted(k for k in challenger if not k.startswith(CHAMPION_PREFIX))) or "none"
        return GateDecision(False, f"metric {metric!r} missing or not a finite number in the run "
                                   f"(logged: {present})", champion=None, **base)
    if champion is None and not champion_error:
        return GateDecision(True, f"no champion yet: registering with {metric} {ours:g}{on}", champion=None,
                            approval=pending, **base)
    theirs = metric_value(champion, metric)
    if champion_error or theirs is None:
        why = f"could not score these rows: {champion_error}" if champion_error else f"has no finite {metric!r}"
        return GateDecision(True, f"{metric} {ours:g}{on}; {which} {why}, so it cannot hold the challenger back",
                            champion=None, approval=pending, **base)
    better = ours > theirs + margin if direction == "max" else ours < theirs - margin
    numbers = f"{metric} {ours:g} {'beats' if better else 'does not beat'} the champion {theirs:g} " \
              f"({direction}, margin {margin:g})"
    return GateDecision(better, numbers + on, champion=theirs, approval=pending if better else "", **base)
