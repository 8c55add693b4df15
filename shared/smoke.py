"""The smoke test of a new deployment: which request to send, and whether the answer is a real prediction.

Why it is strict: the smoke test is the last check before a deployment receives live traffic. A deployment
that answers 200 with an error text, or with fewer predictions than rows sent, would pass a status-only test.

Request body, first found wins:

1. `REFLEX_SMOKE_REQUEST` (a JSON object), the same for every model;
2. the JSON object in blob `smoke/<model name>.json` of the state container (`REFLEX_STATE_CONTAINER`), one per
   model, written by whoever owns the model (the demo writes it from its sample data).

Neither present: the rollout fails before anything is created, with a reason that names both places. Reflex
never skips the smoke test silently: a deployment that was never invoked must not take traffic.

The answer must be HTTP 200 with a JSON body holding one prediction per row sent: a list, or an object with
`predictions` / `outputs` / `result` holding a list. Rows are counted in the MLflow scoring formats
(`input_data.data`, `dataframe_split.data`, `dataframe_records`, `instances`, `inputs`, `data`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.state import key_part

if TYPE_CHECKING:
    from shared.deps import Deps
    from shared.platform import InvokeResult

__all__ = ["check_response", "expected_rows", "smoke_key", "smoke_request"]


def smoke_key(model: str) -> str:
    return f"smoke/{key_part(model)}.json"


def smoke_request(deps: Deps, model: str) -> Mapping[str, Any] | None:
    """The request body for `model`'s smoke test, or None when none is configured (see module docstring)."""
    if deps.settings.smoke_request:
        return deps.settings.smoke_request
    record = deps.state.get(smoke_key(model))
    return record.value if record is not None and record.value else None


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
