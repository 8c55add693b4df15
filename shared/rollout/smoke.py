"""The smoke test of a new deployment: which request to send, and whether the answer is a real prediction.

Why it is strict: the smoke test is the last check before a deployment receives live traffic. A deployment
that answers 200 with an error text, or with fewer predictions than rows sent, would pass a status-only test.

Request body, first found wins:

1. `REFLEX_SMOKE_REQUEST` (a JSON object), the same for every model;
2. the JSON object in blob `smoke/<model name>.json` of the state container (`REFLEX_STATE_CONTAINER`), one per
   model, written by whoever owns the model;
3. a row of the model's own training data without the label (most users never write a smoke request): the
   batch comes from the model's lineage tags, `reflex.batch` (its arrival record, whose manifest lists the
   files) or else `reflex.data` (the data asset, whose folder in the data container is listed); the first data
   file is read up to its first complete row (one without missing values among the first `ROWS_LOOKED_AT`,
   else the first), `REFLEX_LABEL_COLUMN` is dropped and the row is sent in Azure ML's request format for
   MLflow models, `{"input_data": {"columns": […], "index": [0], "data": [[…]]}}` (MicrosoftDocs/azure-ai-docs,
   articles/machine-learning/how-to-deploy-mlflow-models-online-endpoints.md, whose sample request is read
   back as `pd.DataFrame(**sample_request["input_data"])`), which the local endpoint reads too. Values are
   typed per column over the rows read, as pandas types the training frame (a column of whole numbers sends
   an integer, a column with any decimal a decimal, others the text), because MLflow
   enforces the model's input schema (shared/rollout/smoke_row.py).

None found: the rollout fails before anything is created, with a reason that names the places and why the
training data could not be used (a model registered outside Reflex has no lineage). Reflex never skips the
smoke test silently: a deployment that was never invoked must not take traffic.

The answer must be HTTP 200 with a JSON body holding one prediction per row sent: a list, or an object with
`predictions` / `outputs` / `result` holding a list. Rows are counted in the MLflow scoring formats
(`shared.core.scoring_request.expected_rows`: `input_data.data`, `dataframe_split.data`, `dataframe_records`,
`instances`, `inputs`, `data`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.core.errors import PermanentError
from shared.core.state import key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.platform import InvokeResult

__all__ = ["SmokeRequest", "check_response", "find_smoke_request", "smoke_key"]


def smoke_key(model: str) -> str:
    return f"smoke/{key_part(model)}.json"


@dataclass(frozen=True)
class SmokeRequest:
    """The body to send (None: none found), where it came from, and why the training data could not serve."""

    body: Mapping[str, Any] | None
    source: str = ""
    problem: str = ""


def find_smoke_request(deps: Deps, model: str, version: str) -> SmokeRequest:
    """The smoke request for `model:version` (see the module docstring for the order).

    Raises:
        TransientError: storage or the platform did not answer; the rollout step is retried.
    """
    if deps.settings.smoke_request:
        return SmokeRequest(deps.settings.smoke_request, "REFLEX_SMOKE_REQUEST")
    record = deps.state.get(smoke_key(model))
    if record is not None and record.value:
        return SmokeRequest(record.value, smoke_key(model))
    from shared.rollout.smoke_row import training_row_request

    try:
        body, source = training_row_request(deps, model, version)
    except PermanentError as exc:
        return SmokeRequest(None, problem=str(exc))
    return SmokeRequest(body, source)


def _predictions(parsed: Any) -> list[Any] | None:
    if isinstance(parsed, list):
        return parsed
    if isinstance(parsed, Mapping):
        for key in ("predictions", "outputs", "result"):
            if isinstance(parsed.get(key), list):
                return parsed[key]
    return None


def check_response(result: InvokeResult, rows: int | None) -> dict[str, Any]:
    """The smoke test's verdict as a record-ready dict: ok, detail, status, latency_ms."""
    base = {"status": result.status, "latency_ms": round(result.latency_ms, 1)}
    if result.status != 200:
        return {**base, "ok": False, "detail": f"HTTP {result.status}: {result.body[:200]}"}
    try:
        parsed = json.loads(result.body)
    except ValueError:
        return {**base, "ok": False, "detail": f"response is not JSON: {result.body[:200]!r}"}
    predictions = _predictions(parsed)
    if predictions is None:
        return {**base, "ok": False, "detail": f"no predictions in the response: {result.body[:200]}"}
    if rows is not None and len(predictions) != rows:
        return {**base, "ok": False, "detail": f"{len(predictions)} predictions for {rows} rows sent"}
    if not predictions:
        return {**base, "ok": False, "detail": "empty prediction list"}
    return {**base, "ok": True, "detail": f"{len(predictions)} predictions"}
