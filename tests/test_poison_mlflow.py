"""#18 item 5: only real transient causes are retried. A model version of 10^20 made MLflow answer INTERNAL_ERROR,
which local/mlflow_errors.py mapped to transient, so the event was retried for 24 hours.

Real MLflow: its SQLAlchemy store (the one `mlflow server` runs) for the server-side error, and its REST client's
own `verify_rest_response` on real `requests.Response` objects for the HTTP forms (see local/mlflow_errors.py
for the source lines each case comes from).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from mlflow.utils.rest_utils import verify_rest_response

from local.mlflow_errors import mlflow_errors
from shared.core.errors import PermanentError, TransientError


def _response(status: int, body: str) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body.encode()
    return response


def test_a_model_version_of_10_20_is_permanent_not_retried_forever(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    with pytest.raises(PermanentError, match="INTERNAL_ERROR") as caught, mlflow_errors("model m:10^20"):
        client.get_model_version("m", str(10**20))  # SQLite: "Python int too large to convert to SQLite INTEGER"
    assert not isinstance(caught.value, TransientError)


@pytest.mark.parametrize(("status", "body", "transient"), [
    (500, json.dumps({"error_code": "INTERNAL_ERROR", "message": "int too large"}), False),  # the server's verdict
    (503, json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "database is locked"}), True),
    (429, json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}), True),
    (400, json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}), False),
    (502, "<html>Bad Gateway</html>", True),  # not MLflow's JSON: a proxy or a crashed server
    (504, "upstream timed out", True),
    (500, "Internal Server Error", True),
])
def test_which_mlflow_rest_errors_are_retried(status: int, body: str, transient: bool) -> None:
    expected = TransientError if transient else PermanentError
    with pytest.raises(expected) as caught, mlflow_errors("model m:1"):
        verify_rest_response(_response(status, body), "/api/2.0/mlflow/model-versions/get")
    assert isinstance(caught.value, TransientError) is transient
