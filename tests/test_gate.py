"""The registration gate's decisions, as a table: better, worse, within margin, no champion, missing metric…"""

from __future__ import annotations

import math

import pytest

from shared.gate import decide

CASES = [
    # id, challenger, champion, metric, direction, margin, approval, register, approval_tag, reason part
    ("better-max", {"auc": 0.91}, {"auc": 0.90}, "auc", "max", 0.0, False, True, "", "auc 0.91 beats the champion 0.9"),
    ("worse-max", {"auc": 0.80}, {"auc": 0.90}, "auc", "max", 0.0, False, False, "", "does not beat the champion 0.9"),
    ("equal-max", {"auc": 0.90}, {"auc": 0.90}, "auc", "max", 0.0, False, False, "", "does not beat"),
    ("within-margin", {"auc": 0.905}, {"auc": 0.90}, "auc", "max", 0.01, False, False, "", "margin 0.01"),
    ("exactly-margin", {"auc": 0.95}, {"auc": 0.90}, "auc", "max", 0.05, False, False, "", "does not beat"),
    ("beyond-margin", {"auc": 0.92}, {"auc": 0.90}, "auc", "max", 0.01, False, True, "", "beats"),
    ("better-min", {"rmse": 2.0}, {"rmse": 2.5}, "rmse", "min", 0.1, False, True, "", "rmse 2 beats"),
    ("worse-min", {"rmse": 3.0}, {"rmse": 2.5}, "rmse", "min", 0.0, False, False, "", "does not beat"),
    ("within-margin-min", {"rmse": 2.45}, {"rmse": 2.5}, "rmse", "min", 0.1, False, False, "", "does not beat"),
    ("no-champion", {"auc": 0.5}, None, "auc", "max", 0.3, False, True, "", "no champion yet"),
    ("missing-metric", {"accuracy": 0.9}, {"auc": 0.9}, "auc", "max", 0.0, False, False, "",
     "metric 'auc' missing or not a finite number in the run (logged: accuracy)"),
    ("missing-metric-no-champion", {}, None, "auc", "max", 0.0, True, False, "", "logged: none"),
    ("nan-metric", {"auc": math.nan}, {"auc": 0.9}, "auc", "max", 0.0, False, False, "", "not a finite number"),
    ("string-metric", {"auc": "0.95"}, {"auc": "0.9"}, "auc", "max", 0.0, False, True, "", "beats"),
    ("champion-without-metric", {"auc": 0.95}, {}, "auc", "max", 0.0, False, False, "", "has no 'auc'"),
    ("approval-pending", {"auc": 0.95}, {"auc": 0.9}, "auc", "max", 0.0, True, True, "pending", "beats"),
    ("approval-no-champion", {"auc": 0.95}, None, "auc", "max", 0.0, True, True, "pending", "no champion"),
    ("approval-but-worse", {"auc": 0.85}, {"auc": 0.9}, "auc", "max", 0.0, True, False, "", "does not beat"),
]


@pytest.mark.parametrize(("challenger", "champion", "metric", "direction", "margin", "approval", "register",
                          "approval_tag", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gate_table(challenger: dict, champion: dict | None, metric: str, direction: str, margin: float,
                    approval: bool, register: bool, approval_tag: str, reason: str) -> None:
    d = decide(challenger, champion, metric=metric, direction=direction, margin=margin, approval=approval,
               champion_version="3" if champion is not None else "")
    assert (d.register, d.approval) == (register, approval_tag)
    assert reason in d.reason
    assert (d.metric, d.direction, d.margin) == (metric, direction, margin)


def test_decision_carries_the_numbers() -> None:
    d = decide({"auc": 0.8}, {"auc": 0.9}, metric="auc", direction="max", margin=0.01, champion_version="7")
    assert d.as_dict() == {"register": False, "reason": d.reason, "metric": "auc", "direction": "max",
                           "margin": 0.01, "challenger": 0.8, "champion": 0.9, "champion_version": "7",
                           "approval": "", "improvement": pytest.approx(-0.1)}
    assert decide({"rmse": 1.0}, {"rmse": 1.5}, metric="rmse", direction="min", margin=0).improvement == 0.5


def test_unknown_direction_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="direction"):
        decide({"auc": 1}, None, metric="auc", direction="up", margin=0)
