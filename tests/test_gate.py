"""The registration gate's decisions, as a table: better, worse, within margin, no champion, missing metric…,
and the rule that makes them fair: both numbers come from the same rows, which the decision names."""

from __future__ import annotations

import math

import pytest

from shared.registration.gate import GateDecision, Rows, decide

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
    # a champion without a number on these rows never blocks retraining (it was "has no 'auc'": refused forever)
    ("champion-without-metric", {"auc": 0.95}, {}, "auc", "max", 0.0, False, True, "", "has no finite 'auc'"),
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
                           "approval": "", "rows": {}, "improvement": pytest.approx(-0.1)}
    assert decide({"rmse": 1.0}, {"rmse": 1.5}, metric="rmse", direction="min", margin=0).improvement == 0.5


def test_unknown_direction_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="direction"):
        decide({"auc": 1}, None, metric="auc", direction="up", margin=0)


def test_the_rows_are_named_in_the_decision_and_its_record() -> None:
    rows = Rows("holdout", "heart:b2", 61, job="reflex-train-2")
    d = decide({"auc": 0.97}, {"auc": 0.95}, metric="auc", direction="max", margin=0.0, champion_version="4",
               rows=rows)
    assert d.register and d.reason == "auc 0.97 beats the champion 0.95 (max, margin 0) on 61 rows of holdout heart:b2"
    assert d.as_dict()["rows"] == {"source": "holdout", "data": "heart:b2", "count": 61, "job": "reflex-train-2",
                                   "note": ""}
    assert (d.challenger, d.champion) == (0.97, 0.95)


def test_a_champion_that_cannot_score_the_rows_does_not_hold_the_challenger_back() -> None:
    d = decide({"auc": 0.7}, {}, metric="auc", direction="max", margin=0.0, champion_version="4",
               champion_error="it cannot predict them", rows=Rows("batch holdout", "ds:b3", 40, job="reflex-eval-1"))
    assert d.register and d.champion is None
    assert "the champion 4 could not score these rows: it cannot predict them" in d.reason
    assert "40 rows of batch holdout ds:b3" in d.reason


def test_fewer_rows_no_longer_win_by_being_scored_on_other_rows() -> None:
    """The issue's case: 96 training rows scored 0.992 on their own 24-row holdout; the champion (304 rows) 0.972
    on its own 61. Scored on the challenger's rows, the champion gets 0.995: no registration."""
    old_gate = decide({"auc": 0.992}, {"auc": 0.972}, metric="auc", direction="max", margin=0.0)
    assert old_gate.register  # what comparing numbers from different rows did
    same_rows = decide({"auc": 0.992}, {"auc": 0.995}, metric="auc", direction="max", margin=0.0,
                       champion_version="1", rows=Rows("holdout", "heart:small", 24))
    assert not same_rows.register and "on 24 rows of holdout heart:small" in same_rows.reason
    assert isinstance(same_rows, GateDecision) and same_rows.improvement == pytest.approx(-0.003)
