"""What a scoring request or a scoring file must look like for a Reflex model: the request shapes and the columns.

Why one module: the local scoring server, local batch scoring and the settings check of a smoke request must
refuse the same inputs with the same clear reason, and accept what Azure ML accepts, so that a request that
works locally works against a managed online endpoint.

Request shapes. Azure ML's no-code deployment of an MLflow model wants the input under `input_data`; for a
model with a column signature (Reflex's models) the only shape that predicts is a table in pandas "split"
orientation with all of `columns`, `index` and `data` (MicrosoftDocs/azure-ai-docs
articles/machine-learning/how-to-deploy-mlflow-models.md, "Input structure"; the scoring script of the
MLflow inference image, Azure/azureml-assets
assets/inference/environments/mlflow-py312-inference/context/mlflow_score_script.py at 4c5352a, reads a
dict as a DataFrame only when all three keys are present, a list as an unnamed tensor, anything else as named
tensors, and takes an optional `params`). An unnamed tensor (`{"input_data": [[…]]}`) reaches the model
without column names and MLflow refuses it ("Model is missing inputs"), so it is refused here with the
reason. The local server also takes `{"data": [{column: value}, …]}`, the records shape its demo and tests
send; Azure ML refuses that one, which the message says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACCEPTED_SHAPES", "AZURE_SHAPE", "LOCAL_SHAPE", "ModelInput", "RequestShapeError", "column_problem",
    "parse_request",
]

AZURE_SHAPE = '{"input_data": {"columns": ["a", …], "index": [0, …], "data": [[1, …], …]}}'
LOCAL_SHAPE = '{"data": [{"a": 1, …}, …]}'
ACCEPTED_SHAPES: tuple[str, ...] = (
    f"{AZURE_SHAPE} (Azure ML online endpoints and here; optional \"params\": {{…}})",
    f"{LOCAL_SHAPE} (the local scoring server only; Azure ML refuses it)",
)
MAX_LISTED = 30


class RequestShapeError(ValueError):
    """The request body is not one of `ACCEPTED_SHAPES`; the message says what was found and lists them."""

    def __init__(self, found: str) -> None:
        super().__init__(f"unsupported request shape: {found}; accepted shapes: " + " | ".join(ACCEPTED_SHAPES))
        self.found = found


@dataclass(frozen=True)
class ModelInput:
    """Rows to predict: records (`columns` None) or value rows in `columns` order; `params` for predict()."""

    rows: list[Any]
    columns: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_azure_shape(self) -> bool:
        return self.columns is not None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _split_table(table: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    missing = [k for k in ("columns", "index", "data") if k not in table]
    if missing:
        has = ", ".join(sorted(map(str, table))) or "no keys"
        raise RequestShapeError(f"input_data is an object with {has} but no {', '.join(missing)} (Azure ML reads "
                                "it as a table only with all of columns, index and data)")
    columns, index, data = table["columns"], table["index"], table["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestShapeError("input_data.columns is not a list of column names")
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise RequestShapeError("input_data.data is not a list of rows (lists of values)")
    if not isinstance(index, list) or len(index) != len(data):
        raise RequestShapeError(f"input_data.index is not a list with one entry per row ({len(data)} rows)")
    widths = sorted({len(r) for r in data if len(r) != len(columns)})
    if widths:
        raise RequestShapeError(f"input_data has {len(columns)} columns but rows of {widths} values")
    return columns, data


def parse_request(body: Any) -> ModelInput:
    """The rows of a scoring request body (already JSON-decoded), or RequestShapeError naming what is wrong.

    >>> parse_request({"input_data": {"columns": ["a"], "index": [0], "data": [[1]]}}).columns
    ['a']
    >>> parse_request([{"a": 1}])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shared.scoring.model_input.RequestShapeError: unsupported request shape: a list at the top level ...
    """
    if not isinstance(body, dict):
        raise RequestShapeError(f"{_kind(body)} at the top level (expected an object)")
    if "input_data" in body:
        extra = sorted(set(body) - {"input_data", "params"})
        if extra:
            raise RequestShapeError(f"unexpected key(s) {', '.join(map(repr, extra))} beside input_data "
                                    "(only params may be there)")
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise RequestShapeError(f"params is {_kind(params)}, not an object")
        table = body["input_data"]
        if isinstance(table, list):
            raise RequestShapeError("input_data is a list of rows without column names (an unnamed tensor, which "
                                    "a model with named columns cannot read)")
        if not isinstance(table, dict):
            raise RequestShapeError(f"input_data is {_kind(table)}")
        columns, rows = _split_table(table)
        return ModelInput(rows, columns, dict(params))
    if "data" in body and len(body) == 1:
        records = body["data"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise RequestShapeError("data is not a list of records (objects of column: value)")
        return ModelInput(records)
    keys = ", ".join(sorted(map(repr, body))) or "no keys"
    raise RequestShapeError(f"an object with {keys}")


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
    return shown + (f" … and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def column_problem(required: Sequence[str], present: Sequence[str], *, where: str = "input") -> str:
    """Why `present` columns cannot feed a model that needs `required` ("" when none is missing).

    Extra columns alone are fine (MLflow ignores columns outside the signature); when some are missing, the
    unexpected ones are named too, as they are often the same columns spelled differently.

    >>> print(column_problem(["age", "sex"], ["Age", "sex", "id"], where="part-0.csv"))
    part-0.csv lacks column(s) 'age' that the model needs; unexpected column(s): 'Age', 'id'; the model takes: ...
    """
    have = set(present)
    missing = [c for c in required if c not in have]
    if not missing:
        return ""
    needed = set(required)
    unexpected = [c for c in present if c not in needed]
    text = f"{where} lacks column(s) {_listed(missing)} that the model needs"
    if unexpected:
        text += f"; unexpected column(s): {_listed(unexpected)}"
    return f"{text}; the model takes: {_listed(list(required))}"
