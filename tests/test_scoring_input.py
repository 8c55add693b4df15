"""Scoring inputs are refused with their reason: request shapes over real HTTP, and the columns of a batch.

Real parts: the local scoring server (local/serving.py) on a loopback port, the real `Endpoints` routing over
an Azurite state container, a real MLflow model in a SQLite registry, and local batch scoring writing to
Azurite. The accepted Azure ML shape is checked with the request from Microsoft's documentation.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import process_state

from local.sampledata import FEATURES, LABEL, generate, patient_record
from shared.core.state import BlobStateStore
from shared.scoring.model_input import ACCEPTED_SHAPES, AZURE_SHAPE, RequestShapeError, column_problem, parse_request

FIXTURES = Path(__file__).parent / "fixtures" / "aml-online"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registered MLflow model (name:version) with the sample data's column signature."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.tree import DecisionTreeClassifier

    root = tmp_path_factory.mktemp("registry")
    # both URIs: an earlier test in the same process may have pointed the registry at a server now stopped.
    # Restored by process_state(), not by setting "the previous" URIs again: with none set, get_tracking_uri()
    # answers MLflow's default and set_tracking_uri() writes it into os.environ (leaked into later modules)
    with process_state():
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        mlflow.set_registry_uri(f"sqlite:///{root / 'mlflow.db'}")
        experiment = mlflow.create_experiment("scoring-input", artifact_location=(root / "artifacts").as_uri())
        frame = pd.DataFrame(generate(120, seed=5))
        features = frame[list(FEATURES)]
        fitted = DecisionTreeClassifier(max_depth=4, random_state=0).fit(features, frame[LABEL])
        name = f"scoring-input-{uuid.uuid4().hex[:8]}"
        with mlflow.start_run(experiment_id=experiment):
            signature = infer_signature(features, fitted.predict(features))
            mlflow.sklearn.log_model(fitted, name="model", signature=signature, registered_model_name=name,
                                     serialization_format="cloudpickle")  # as jobs/train/train.py saves
        yield f"{name}:1"


@pytest.fixture
def scoring_url(model: str, container_factory: Callable[[str], Any], tmp_path: Path) -> Iterator[str]:
    """The local scoring server with one endpoint whose deployment `blue` (Succeeded) serves `model`."""
    from local.endpoints import Endpoints
    from local.serving import make_handler

    state = BlobStateStore(container_factory("state"))
    endpoints = Endpoints(state, run_dir=tmp_path, model_exists=lambda _: True, spawn_env={},
                          serving_url="http://127.0.0.1", quota_cores=8)
    endpoints.create_endpoint("heart", None)

    def succeeded(rec: dict[str, Any] | None) -> dict[str, Any]:
        assert rec is not None
        rec["deployments"]["blue"] = {"model": model, "instance_type": "x", "instance_count": 1, "tags": {},
                                      "state": "Succeeded", "error": "", "generation": "g", "pid": None}
        rec["traffic"] = {"blue": 100}
        return rec

    state.update("platform/endpoints/heart", succeeded)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(SimpleNamespace(endpoints=endpoints), "secret"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/endpoints/heart/score"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _split(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"input_data": {"columns": list(FEATURES), "index": list(range(len(rows))),
                           "data": [[row[c] for c in FEATURES] for row in rows]}}


def test_the_azure_ml_shape_and_the_local_records_shape_are_served(scoring_url: str) -> None:
    status, answer = _post(scoring_url, json.dumps(_split([patient_record(1), patient_record(2)])).encode())
    assert status == 200 and len(answer) == 2 and set(answer) <= {0, 1}
    status, answer = _post(scoring_url, json.dumps({"data": [patient_record(3)]}).encode())
    assert status == 200 and len(answer) == 1


@pytest.mark.parametrize(("body", "found"), [
    ([patient_record(1)], "a list at the top level"),  # a bare JSON list: a 500 before
    ({"dataframe_records": [patient_record(1)]}, "an object with 'dataframe_records'"),  # MLflow's own server
    ({"inputs": [[1, 2]]}, "an object with 'inputs'"),
    ({"input_data": [[1] * len(FEATURES)]}, "input_data is a list of rows without column names"),
    ({"input_data": {"columns": list(FEATURES), "data": [[1] * len(FEATURES)]}}, "but no index"),
    ({"input_data": {"columns": ["a"], "index": [0], "data": [[1, 2]]}}, "1 columns but rows of [2] values"),
    ({"input_data": {"columns": ["a"], "index": [0], "data": [[1]]}, "extra": 1}, "unexpected key(s) 'extra'"),
    ({"data": [[1, 2]]}, "data is not a list of records"),
    ("text", "a string at the top level"),
    (7, "a number at the top level"),
    (None, "null at the top level"),
])
def test_an_unknown_shape_is_a_400_that_lists_the_accepted_shapes(scoring_url: str, body: Any, found: str) -> None:
    status, answer = _post(scoring_url, json.dumps(body).encode())
    assert status == 400, answer
    assert answer["error"].startswith("unsupported request shape: ") and found in answer["error"].split("; accepted")[0]
    assert answer["accepted_shapes"] == list(ACCEPTED_SHAPES)
    assert AZURE_SHAPE in answer["error"] and '{"data": [{"a": 1, …}, …]}' in answer["error"]


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b"[" * 100_000])
def test_a_body_that_is_not_json_is_a_400(scoring_url: str, raw: bytes) -> None:
    status, answer = _post(scoring_url, raw)
    assert status == 400 and answer["error"].startswith("invalid JSON") and answer["accepted_shapes"]


def test_a_request_with_the_wrong_columns_names_the_missing_and_unexpected_ones(scoring_url: str) -> None:
    row = patient_record(1)
    row["Age"] = row.pop("age")
    status, answer = _post(scoring_url, json.dumps({"data": [row]}).encode())
    assert status == 400
    assert answer["error"].startswith("the request lacks column(s) 'age' that the model needs; "
                                      "unexpected column(s): 'Age'; the model takes: 'age', 'anaemia'")


def test_the_documented_azure_ml_request_parses_as_a_table() -> None:
    documented = json.loads((FIXTURES / "mlflow_split_request.json").read_text())
    parsed = parse_request(documented["request"])
    assert parsed.is_azure_shape and parsed.columns == documented["request"]["input_data"]["columns"]
    assert len(parsed.rows) == 1 and parsed.params == {}
    with pytest.raises(RequestShapeError, match="input_data is a list of rows"):
        parse_request(documented["tensor_request"])  # documented for tensor models, not for named columns


def test_column_problem_is_silent_when_only_extra_columns_come() -> None:
    assert column_problem(["a", "b"], ["b", "a", LABEL]) == ""
    assert column_problem(["a"], [], where="x.csv") == "x.csv lacks column(s) 'a' that the model needs; " \
                                                       "the model takes: 'a'"


# ------------------------------------------------------------------------------------------------ batch scoring


def test_a_scoring_batch_with_the_wrong_columns_names_the_file_and_the_columns(
        model: str, blob_service: Any, container_factory: Callable[[str], Any], tmp_path: Path) -> None:
    import pandas as pd

    from local.batch import score_folder

    out = container_factory("out")
    rows = generate(20, seed=9)
    pd.DataFrame(rows).to_csv(tmp_path / "part-0.csv", index=False)  # the label too: extra, fine
    renamed = pd.DataFrame(rows).drop(columns=[LABEL]).rename(columns={"age": "Age", "time": "days"})
    renamed.to_parquet(tmp_path / "part-1.parquet")
    with pytest.raises(ValueError) as failed:
        score_folder(model=model, data=tmp_path, service=blob_service,
                     output={"container": out.container_name, "prefix": "p"})
    assert str(failed.value).startswith("part-1.parquet lacks column(s) 'age', 'time' that the model needs; "
                                        "unexpected column(s): 'Age', 'days'; the model takes: 'age'")
    assert not list(out.list_blobs())  # nothing written

    (tmp_path / "part-1.parquet").unlink()
    (tmp_path / "_SUCCESS").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not data\n")
    written = score_folder(model=model, data=tmp_path, service=blob_service,
                           output={"container": out.container_name, "prefix": "p"})
    assert written == 20
    text = out.download_blob("p/predictions.csv").readall().decode()
    assert text.splitlines()[0].endswith(",prediction") and len(text.splitlines()) == 21

