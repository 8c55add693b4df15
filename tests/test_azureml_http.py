"""Reflex's own HTTP to Azure (MLflow REST for a run's metrics, online endpoint scoring) on azure-core (#16.5).

At the HTTP boundary (`responses` under azure-core's RequestsTransport, the REST stand-in answering): the token is
fetched once for many calls (BearerTokenCredentialPolicy caches it until 300 s before expiry), a 429 with
`Retry-After` is retried after exactly that delay (RetryPolicy sleeps through the transport, whose sleep is
injected: no wall clock), a longer hint than an Event Grid delivery can afford is handed back as
`TransientError(retry_after)` without waiting, and every failure comes out through `shared.core.errors.map_azure_error`.
Policy behaviour checked in azure-core's source (sdk/core/azure-core/azure/core/pipeline/policies/_retry.py,
_authentication.py; azure-core 1.41.0).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aml_harness import azure_platform
from azure.core.credentials import AccessToken

from shared.adapters.azureml.http import MAX_RETRY_AFTER_S, DataPlane
from shared.core.errors import PermanentError, TransientError
from shared.core.platform import TrainingRequest
from testing.aml_service import AmlService

RUNS_GET = r"/mlflow/runs/get$"
JOB = "train-1"


class CountingCredential:
    """A TokenCredential that counts the tokens it hands out."""

    def __init__(self) -> None:
        self.issued = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.issued += 1
        return AccessToken(f"t{self.issued}", int(time.time()) + 3600)


@pytest.fixture
def svc() -> AmlService:
    service = AmlService()
    return service


@contextmanager
def _platform(svc: AmlService, cred: Any, sleeps: list[float]) -> Iterator[Any]:
    """The adapter with the data plane's sleep injected, and a finished run that logged auc 0.9."""
    with azure_platform(svc, credential=cred, data_plane=DataPlane(cred, sleep=sleeps.append)) as p:
        _seed(p)
        svc.finish_job(JOB, metrics={"auc": 0.9})
        yield p


def _mlflow(svc: AmlService, since: int = 0) -> list[Any]:
    return [r for r in svc.requests[since:] if r.path.endswith("/mlflow/runs/get")]


def _seed(p: Any) -> None:
    p.register_data(name="d", version="1", path="azureml://datastores/d/paths/x/", tags={})
    p.submit_training(TrainingRequest(JOB, "reflex", "d", "1", "command", "classification", "y", "cpu",
                                      "azureml:env:1"))


def test_the_token_is_fetched_once_for_many_calls(svc: AmlService) -> None:
    cred, sleeps = CountingCredential(), []
    with _platform(svc, cred, sleeps) as p:
        p.get_job_metrics(JOB)
        issued, start = cred.issued, len(svc.requests)
        for _ in range(5):
            assert p.get_job_metrics(JOB) == {"auc": 0.9}
    calls = _mlflow(svc, start)
    assert len(calls) == 5 and cred.issued == issued          # no new token for five more calls
    assert len({r.headers["Authorization"] for r in calls}) == 1
    assert calls[0].headers["Authorization"].startswith("Bearer t")


def test_a_429_with_retry_after_is_retried_after_that_delay(svc: AmlService) -> None:
    svc.fail("GET", RUNS_GET, 429, headers={"Retry-After": "3"})
    sleeps: list[float] = []
    with _platform(svc, CountingCredential(), sleeps) as p:
        assert p.get_job_metrics(JOB) == {"auc": 0.9}
    assert len(_mlflow(svc)) == 2 and sleeps == [3.0]


def test_a_retry_after_longer_than_a_delivery_allows_is_handed_back_not_waited_for(svc: AmlService) -> None:
    svc.fail("GET", RUNS_GET, 429, headers={"Retry-After": str(int(MAX_RETRY_AFTER_S) + 55)})
    sleeps: list[float] = []
    with _platform(svc, CountingCredential(), sleeps) as p, pytest.raises(TransientError) as caught:
        p.get_job_metrics(JOB)
    assert caught.value.retry_after == MAX_RETRY_AFTER_S + 55 and f"metrics of job {JOB}" in str(caught.value)
    assert len(_mlflow(svc)) == 1 and sleeps == []


def test_a_persistent_503_is_retried_with_backoff_then_transient(svc: AmlService) -> None:
    svc.fail("GET", RUNS_GET, 503, times=10)
    sleeps: list[float] = []
    with _platform(svc, CountingCredential(), sleeps) as p, pytest.raises(TransientError, match="503"):
        p.get_job_metrics(JOB)
    assert len(_mlflow(svc)) == 4                      # retry_total=3
    assert sleeps == [1.6, 3.2]   # azure-core: no delay before the 1st retry, then 0.8 * 2 ** (n - 1)


@pytest.mark.parametrize("status, message", [(404, "not found"), (401, "authentication failed"),
                                             (403, "forbidden"), (400, "rejected with 400")])
def test_errors_are_mapped_once_and_name_the_call(svc: AmlService, status: int, message: str) -> None:
    svc.fail("GET", RUNS_GET, status)
    sleeps: list[float] = []
    with _platform(svc, CountingCredential(), sleeps) as p, pytest.raises(PermanentError, match=message) as caught:
        p.get_job_metrics(JOB)
    assert f"metrics of job {JOB}" in str(caught.value) and sleeps == []


def test_scoring_429_with_retry_after_is_retried_and_the_key_read_once(svc: AmlService) -> None:
    sleeps: list[float] = []
    cred = CountingCredential()
    with _platform(svc, cred, sleeps) as p:
        p.register_model(name="m", version="1", job_name=JOB, tags={})
        p.begin_create_endpoint("churn-ep")
        p.begin_create_deployment("churn-ep", "blue", model="m:1", instance_type="Standard_DS3_v2", instance_count=1)
        p.set_traffic("churn-ep", {"blue": 100})
        svc.fail("POST", r"/score$", 429, headers={"Retry-After": "1"})
        first = p.invoke("churn-ep", "blue", {"data": [[1]]})
        second = p.invoke("churn-ep", "blue", {"data": [[1]]})
    scoring = [r for r in svc.requests if r.path.endswith("/score")]
    assert (first.status, second.status) == (200, 200) and len(scoring) == 3 and sleeps == [1.0]
    assert sum(path.endswith("/listKeys") for _, path in svc.calls()) == 1
    assert {r.headers["Authorization"] for r in scoring} == {"Bearer pk-churn-ep"}
