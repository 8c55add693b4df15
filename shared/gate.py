"""The registration gate: does a finished run's model deserve registration? A pure function of the numbers.

Why pure: the decision is what people argue about afterwards ("why was my better model not registered?"), so
it is computed in one place from plain values and returned with every number that went into it; the
registration flow publishes that decision as it is. Rules:

* the challenger's metric must be present and finite, else the run is skipped (a run that logged no number
  cannot be judged better);
* no champion: register (the first model of a name needs no comparison);
* a champion without the metric cannot be compared: skipped, with the reason;
* `direction="max"`: register when challenger > champion + margin; `"min"`: when challenger < champion - margin.
  Equal to the margin is not enough ("more than the margin");
* with approval required, a winning model is registered as `reflex.approval=pending`; the rollout waits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GateDecision", "decide", "metric_value"]


@dataclass(frozen=True)
class GateDecision:
    """`register` or not, why, and the numbers compared (None where absent)."""

    register: bool
    reason: str
    metric: str
    direction: str
    margin: float
    challenger: float | None
    champion: float | None
    champion_version: str = ""
    approval: str = ""          # "pending" when the model is registered for approval, else ""

    @property
    def improvement(self) -> float | None:
        """How much better the challenger is, in the metric's direction (positive = better)."""
        if self.challenger is None or self.champion is None:
            return None
        diff = self.challenger - self.champion
        return diff if self.direction == "max" else -diff

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "improvement": self.improvement}


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
           margin: float, approval: bool = False, champion_version: str = "") -> GateDecision:
    """Decide whether the challenger's model is registered. `champion` is None when there is none.

    Examples:
        >>> decide({"auc": 0.91}, {"auc": 0.90}, metric="auc", direction="max", margin=0.005).register
        True
        >>> decide({"rmse": 3.0}, {"rmse": 2.9}, metric="rmse", direction="min", margin=0.0).reason
        'rmse 3 does not beat the champion 2.9 (min, margin 0)'
    """
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be max or min, got {direction!r}")
    ours = metric_value(challenger, metric)
    base = {"metric": metric, "direction": direction, "margin": margin, "challenger": ours,
            "champion_version": champion_version}
    pending = "pending" if approval else ""
    if ours is None:
        present = ", ".join(sorted(challenger)) or "none"
        return GateDecision(False, f"metric {metric!r} missing or not a finite number in the run "
                                   f"(logged: {present})", champion=None, **base)
    if champion is None:
        return GateDecision(True, f"no champion yet: registering with {metric} {ours:g}", champion=None,
                            approval=pending, **base)
    theirs = metric_value(champion, metric)
    if theirs is None:
        which = f"the champion {champion_version}" if champion_version else "the champion"
        return GateDecision(False, f"{which} has no {metric!r} to compare with", champion=None, **base)
    better = ours > theirs + margin if direction == "max" else ours < theirs - margin
    numbers = f"{metric} {ours:g} {'beats' if better else 'does not beat'} the champion {theirs:g} " \
              f"({direction}, margin {margin:g})"
    return GateDecision(better, numbers, champion=theirs, approval=pending if better else "", **base)
