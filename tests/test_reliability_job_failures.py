"""#18 item 3, local platform: why a job failed, as the local job runner reports it (`Job.failure`), and a
runner that outlives MLflow being down at the end of a job. Real scripts run as the job's child process;
real exceptions of the libraries the runner talks through (requests, MLflow's client, azure-core)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from local import jobrunner
from local.jobs import Jobs


def run_script(tmp_path: Path, body: str) -> jobrunner.JobFailed:
    script = tmp_path / "script.py"
    script.write_text(body)
    spec = {"run_id": "r", "experiment_id": "0"}
    with pytest.raises(jobrunner.JobFailed) as caught:
        jobrunner._run_script([sys.executable, str(script)], spec, tmp_path, "training script")
    return caught.value


def test_a_script_that_fails_on_its_data_is_the_users_failure(tmp_path: Path) -> None:
    failed = run_script(tmp_path, "import sys\nsys.exit('train.py: error: label column \\'y\\' not found')\n")
    assert failed.failure == "user" and "train.py: error: label column 'y' not found" in str(failed)


def test_a_script_whose_mlflow_calls_could_not_connect_failed_for_a_transient_reason(tmp_path: Path) -> None:
    # what MLflow's client prints when its server is down (mlflow/utils/rest_utils.py http_request)
    failed = run_script(tmp_path, (
        "from mlflow.exceptions import MlflowException\n"
        "raise MlflowException(\"API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-metric failed with "
        "exception HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /api/2.0\")\n"))
    assert failed.failure == "transient"


def test_a_script_exiting_with_ex_tempfail_asks_for_a_retry(tmp_path: Path) -> None:
    assert run_script(tmp_path, "import sys\nsys.exit(75)\n").failure == "transient"


def _raised_while_handling(outer: type[Exception], inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException:
            raise outer("API request to http://127.0.0.1:5000 failed with exception boom")  # noqa: B904
    except Exception as exc:
        return exc


def test_failure_of_the_runners_own_calls() -> None:
    from mlflow.exceptions import MlflowException

    assert jobrunner.failure_of(requests.ConnectionError("refused")) == "transient"
    assert jobrunner.failure_of(ServiceRequestError("Azurite unreachable")) == "transient"
    assert jobrunner.failure_of(_raised_while_handling(MlflowException, requests.ConnectionError("x"))) == \
        "transient"
    busy = HttpResponseError("server busy")
    busy.status_code = 503
    assert jobrunner.failure_of(busy) == "transient"
    missing = HttpResponseError("no such container")
    missing.status_code = 404
    assert jobrunner.failure_of(missing) == ""
    assert jobrunner.failure_of(ValueError("a bug in the runner")) == ""
    assert jobrunner.failure_of(jobrunner.JobFailed("no files")) == "user"


def test_patiently_outlasts_an_outage_and_gives_up_after_its_patience() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    calls = {"n": 0}

    def down_for_three_tries() -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise requests.ConnectionError("MLflow restarting")

    assert jobrunner._patiently(down_for_three_tries, "end the run", sleep=sleep, clock=lambda: now[0])
    assert slept == [1.0, 2.0, 4.0]

    def never() -> None:
        raise requests.ConnectionError("MLflow gone")

    slept.clear()
    now[0] = 0.0
    assert not jobrunner._patiently(never, "end the run", patience=100.0, sleep=sleep, clock=lambda: now[0])
    assert sum(slept) <= 100.0 and max(slept) == 30.0


@pytest.mark.parametrize(("written", "expected"), [
    ({"status": "Completed", "error": "", "failure": ""}, ("Completed", "", "")),
    ({"status": "Failed", "error": "train.py: error: bad", "failure": "user"}, ("Failed", "train.py: error: bad",
                                                                               "user")),
    (None, ("Failed", "the job process ended without reporting a result", "transient")),
])
def test_a_runner_that_ended_while_mlflow_was_down_is_read_from_its_folder(
        tmp_path: Path, written: dict[str, Any] | None, expected: tuple[str, str, str]) -> None:
    if written is not None:
        (tmp_path / "result.json").write_text(json.dumps(written))
    assert Jobs._result({"folder": str(tmp_path)}) == expected


# ---------------------------------------------------------------- Azure ML: the real SDK at the HTTP boundary
RUNHISTORY = Path(__file__).parent / "fixtures" / "aml-runhistory"


@pytest.mark.parametrize(("fixture_name", "failure", "code"), [
    ("user-error.json", "user", "UserError"), ("service-error.json", "transient", "ServiceError")])
def test_azure_ml_says_why_a_job_failed_from_run_history(fixture_name: str, failure: str, code: str) -> None:
    from aml_harness import azure_platform

    from testing.aml_service import AmlService
    from tests.test_azureml_contract import REQ

    svc = AmlService()
    details = json.loads((RUNHISTORY / fixture_name).read_text())
    with azure_platform(svc) as p:
        p.submit_training(REQ)
        svc.finish_job(REQ.job_name, "Failed", run_details=details)
        start = len(svc.requests)
        job = p.get_job(REQ.job_name)
    assert job is not None and job.status == "Failed" and job.failure == failure
    assert job.error == f"{code}: {details['error']['error']['message']}"
    history = f"{svc.location}.api.azureml.ms/history/v1.0{svc.ws_path}/runs/{REQ.job_name}/details"
    assert ("GET", history) in svc.calls(start)


def test_azure_ml_without_run_history_reports_the_failure_unclassified() -> None:
    from aml_harness import azure_platform

    from testing.aml_service import AmlService
    from tests.test_azureml_contract import REQ

    svc = AmlService()
    with azure_platform(svc) as p:
        p.submit_training(REQ)
        svc.finish_job(REQ.job_name, "Failed")
        svc.fail("GET", r"^/history/", 503, times=5)
        job = p.get_job(REQ.job_name)
    assert job is not None and job.status == "Failed" and job.failure == ""   # not retried: unknown
