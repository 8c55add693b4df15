"""How many rows a scoring request sends, in the MLflow scoring formats. Pure.

Why in core: the settings check (`shared.core.settings_checks`, REFLEX_SMOKE_REQUEST) and the rollout's smoke test
(shared/rollout/smoke.py) read the same request shapes, and core must not import a reaction. The shapes are those
an MLflow model's scoring server accepts on Azure ML (`input_data` with `columns`/`data`: MicrosoftDocs/azure-ai-docs,
articles/machine-learning/how-to-deploy-mlflow-models-online-endpoints.md) and MLflow's own serving formats
(`dataframe_split`, `dataframe_records`, `instances`, `inputs`), plus the plain `data` list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SHAPES", "expected_rows"]

SHAPES = ('{"input_data": {"columns": [...], "data": [[...]]}}, {"dataframe_split": {"columns": [...], '
          '"data": [[...]]}}, {"dataframe_records": [{...}]}, {"instances": [...]}, {"inputs": [...]}, '
          '{"data": [...]}')


def expected_rows(body: Mapping[str, Any]) -> int | None:
    """How many rows `body` sends, in the MLflow scoring formats; None when the shape is not one of them."""
    candidates: list[Any] = []
    for outer in ("input_data", "dataframe_split"):
        inner = body.get(outer)
        if isinstance(inner, Mapping):
            candidates.append(inner.get("data"))
        elif isinstance(inner, list):
            candidates.append(inner)
    candidates += [body.get(k) for k in ("dataframe_records", "instances", "inputs", "data")]
    for value in candidates:
        if isinstance(value, list):
            return len(value)
    return None
