"""#14.8: no registration is missed. The reconcile timer finds a served model's newest version that no event
announced, with ONE platform request per served model per tick, and hands it to the same reaction as the event.

`MLPlatform.get_latest_model` is checked on every implementation: the behavioural fake, the Azure ML adapter with
the real azure-ai-ml SDK at the HTTP boundary (tests/aml_harness.py: the request it sends is
`GET …/models/<name>/versions?$orderBy=createdtime desc&$top=1`, azure-ai-ml 1.35.2 `_utils/_asset_utils._get_latest`),
and the local platform on a real MLflow registry (SQLite store: `search_model_versions(max_results=1, …)`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from aml_harness import azure_platform
from conftest import Clock, make_deps, make_settings
from rollout_helpers import ENDPOINT, MODEL, ROLLOUT_ENV, live_endpoint, register_model

from shared.core.control import write_control
from shared.core.deps import Deps
from shared.core.platform import MLPlatform, TrainingRequest
from shared.core.state import MemoryStateStore
from shared.registration import outside_models
from shared.rollout import reactions as rollout_reactions
from shared.rollout.discovery import MEMO_PREFIX, discovery_event
from shared.rollout.flow import rollout_key
from shared.rollout.machine import Rollout
from testing.aml_service import AmlService
from testing.fake_platform import FakePlatform

TWO_SERVED = {"REFLEX_ENDPOINTS": "churn=churn-ep,sales=sales-ep"}


def _request(name: str) -> TrainingRequest:
    return TrainingRequest(job_name=f"train-{name}", experiment_name="reflex", data_name="d", data_version="1",
                           mode="command", task="classification", label_column="y", compute="cpu-cluster",
                           environment="azureml:reflex-train:1")


class Backend:
    """The fake or the Azure ML adapter over the HTTP stand-in, with one way to register a model version."""

    def __init__(self, kind: str, stack: ExitStack) -> None:
        self.kind = kind
        if kind == "fake":
            self.fake = FakePlatform()
            self.platform: MLPlatform = self.fake
        else:
            self.svc = AmlService()
            self.platform = stack.enter_context(azure_platform(self.svc))

    def register(self, name: str, version: str) -> None:
        job = f"{name}-{version}"
        self.platform.register_data(name="d", version="1", path="azureml://datastores/x/paths/1/", tags={})
        self.platform.submit_training(_request(job))
        if self.kind == "fake":
            self.fake.finish_job(f"train-{job}")
        else:
            self.svc.finish_job(f"train-{job}")
        self.platform.register_model(name=name, version=version, job_name=f"train-{job}", tags={})


@pytest.fixture(params=["fake", "azure"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with ExitStack() as stack:
        yield Backend(request.param, stack)


# ------------------------------------------------------------------ the protocol method, every implementation
def test_latest_model_is_none_without_versions_then_the_newest(backend: Backend) -> None:
    assert backend.platform.get_latest_model("churn") is None
    backend.register("churn", "1")
    backend.register("churn", "2")
    backend.register("sales", "7")
    latest = backend.platform.get_latest_model("churn")
    assert latest is not None and (latest.ref, latest.type) == ("churn:2", "mlflow_model")
    assert latest.job_name == "train-churn-2"
    assert backend.platform.get_latest_model("sales").ref == "sales:7"  # type: ignore[union-attr]


def test_azure_asks_for_the_latest_version_in_one_request_ordered_by_creation() -> None:
    svc = AmlService()
    with azure_platform(svc) as p:
        start = len(svc.requests)
        assert p.get_latest_model("churn") is None
        p.register_data(name="d", version="1", path="azureml://datastores/x/paths/1/", tags={})
        p.submit_training(_request("c"))
        svc.finish_job("train-c")
        p.register_model(name="churn", version="3", job_name="train-c", tags={})
        mark = len(svc.requests)
        assert p.get_latest_model("churn").ref == "churn:3"  # type: ignore[union-attr]
    for since, until in ((start, start + 1), (mark, len(svc.requests))):
        (only,) = svc.requests[since:until]
        assert (only.method, only.path) == ("GET", svc.ws_path + "/models/churn/versions")
        assert only.query["$top"] == ["1"] and only.query["$orderBy"] == ["createdtime desc"]


def test_azure_latest_model_maps_throttling_like_every_other_call() -> None:
    from shared.core.errors import TransientError

    svc = AmlService()
    svc.fail("GET", r"/models/churn/versions$", 429, headers={"Retry-After": "7"})
    with azure_platform(svc) as p, pytest.raises(TransientError) as caught:
        p.get_latest_model("churn")
    assert caught.value.retry_after == 7.0


class _CountingClient:
    """The real MlflowClient, counting which of its methods are called (not a mock: every call goes through)."""

    def __init__(self, client: Any) -> None:
        self._client, self.calls = client, []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if callable(attr):
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attr(*args, **kwargs)
            return counted
        return attr


def test_local_platform_asks_the_mlflow_registry_once(tmp_path: Path) -> None:
    """A version a person registers straight in MLflow (no event): found with one registry call."""
    from mlflow import MlflowClient

    from local.platform import LocalPlatform

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client = _CountingClient(real)
    platform = LocalPlatform(make_settings(), state=MemoryStateStore(), blob_service=None, client=client,
                             run_dir=tmp_path / "run")
    assert platform.get_latest_model("churn") is None
    real.create_registered_model("churn")
    for _ in range(3):
        real.create_model_version("churn", source=str(tmp_path / "model"))
    client.calls.clear()
    latest = platform.get_latest_model("churn")
    assert latest is not None and latest.ref == "churn:3"
    assert client.calls == ["search_model_versions"]


# ------------------------------------------------------------------ the reconcile tick
def _deps(platform: Any, state: MemoryStateStore | None = None, **env: str) -> Deps:
    return make_deps(make_settings(**{**ROLLOUT_ENV, **env}), state=state or MemoryStateStore(), platform=platform,
                     clock=Clock())


def test_a_quiet_tick_costs_one_call_per_served_model_and_nothing_else() -> None:
    fp = FakePlatform()
    deps = _deps(fp, **TWO_SERVED)
    for _ in range(3):
        outcome = rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
        assert outcome.status == "skipped"
    assert dict(fp.calls) == {"get_latest_model": 6}


def test_an_unannounced_version_is_rolled_out_and_its_late_event_is_a_duplicate() -> None:
    clock = Clock()
    fp = FakePlatform(clock=clock)
    live_endpoint(fp, version="1")
    state = MemoryStateStore()
    deps = make_deps(make_settings(**ROLLOUT_ENV), state=state, platform=fp, clock=clock)
    event = register_model(fp, "2")  # Azure ML's ModelRegistered for v2 is never delivered
    outcome = rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    assert outcome.status == "acted", outcome
    found = outcome.details["discovered"][MODEL]
    assert (found["model"], found["outcome"]) == (f"{MODEL}:2", "acted")
    assert any(link.get("rollout") == f"{ENDPOINT}/{MODEL}:2" for link in outcome.details["links"])
    record = Rollout.from_dict(state.get(rollout_key(ENDPOINT)).value)  # type: ignore[union-attr]
    assert (record.ref, record.event_id) == (f"{MODEL}:2", discovery_event(MODEL, "2")["id"])
    assert fp.endpoints[ENDPOINT].deployments, "the first step ran: the new deployment is being created"

    # the event arrives late: the same reaction sees a duplicate
    late = rollout_reactions.handle_model_registered(event, deps, outside_models)
    assert late.status == "duplicate", late

    # later ticks know the version: one call, no second look at the model
    fp.calls.clear()
    clock.advance(5)
    rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    assert fp.calls["get_latest_model"] == 1 and fp.calls["get_model"] == 0


def test_a_version_the_event_already_started_is_not_touched_by_the_tick() -> None:
    fp = FakePlatform()
    live_endpoint(fp, version="1")
    deps = _deps(fp)
    event = register_model(fp, "2")
    assert rollout_reactions.handle_model_registered(event, deps, outside_models).status == "acted"
    # the first step (the event only records it)
    rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    fp.calls.clear()
    outcome = rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    assert "discovered" not in outcome.details
    assert fp.calls["get_latest_model"] == 1 and fp.calls["get_model"] == 0


def test_a_declined_version_is_remembered_so_it_is_not_fetched_every_tick() -> None:
    fp = FakePlatform()
    register_model(fp, "4")
    fp.models[(MODEL, "4")] = dataclasses.replace(fp.models[(MODEL, "4")], type="custom_model")
    state = MemoryStateStore()
    deps = _deps(fp, state)
    first = rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    assert first.details["discovered"][MODEL]["outcome"] == "skipped"
    assert "not an MLflow model" in first.details["discovered"][MODEL]["reason"]
    assert state.get(MEMO_PREFIX + MODEL).value["version"] == "4"  # type: ignore[union-attr]
    fp.calls.clear()
    second = rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    assert "discovered" not in second.details
    assert dict(fp.calls) == {"get_latest_model": 1}


def test_a_dry_run_discovery_is_handled_again_once_dry_run_is_off() -> None:
    fp = FakePlatform()
    live_endpoint(fp, version="1")
    state = MemoryStateStore()
    deps = _deps(fp, state)
    register_model(fp, "2")
    write_control(deps, dry_run=True, by="test", why="look first")
    assert rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models).status == "dry-run"
    assert state.get(rollout_key(ENDPOINT)) is None and state.get(MEMO_PREFIX + MODEL) is None
    write_control(deps, dry_run=False, by="test", why="go")
    outcome = rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    assert outcome.details["discovered"][MODEL]["outcome"] == "acted"


def test_one_models_failure_does_not_hide_another_models_new_version() -> None:
    from shared.core.errors import TransientError

    fp = FakePlatform()
    deps = _deps(fp, **TWO_SERVED)
    fp.register_data(name="d", version="1", path="azureml://datastores/x/paths/1/", tags={})
    fp.submit_training(_request("s"))
    fp.finish_job("train-s")
    fp.register_model(name="sales", version="1", job_name="train-s", tags={})
    fp.inject("get_latest_model", TransientError("models: service answered 503", 5.0))  # churn's call fails
    outcome = rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    assert "503" in outcome.details["discovered"]["churn"]["error"]
    assert outcome.details["discovered"]["sales"]["outcome"] == "acted"


def test_a_tick_on_the_azure_adapter_sends_one_request_per_served_model() -> None:
    """The SDK contract harness end to end: the reconcile reaction over the real azure-ai-ml SDK."""
    svc = AmlService()
    with azure_platform(svc) as p:
        deps = _deps(p, **TWO_SERVED)
        start = len(svc.requests)
        assert rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models).status == "skipped"
        sent = svc.requests[start:]
    assert sorted((r.method, r.path.rsplit("/models/", 1)[1]) for r in sent) == [
        ("GET", "churn/versions"), ("GET", "sales/versions")]
    assert all(r.query["$top"] == ["1"] for r in sent)


def test_a_refused_newest_version_lookup_is_reported_and_the_tick_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform refusing to say which version is newest (a permanent error from the lookup itself) is that
    model's error in the tick's details; the tick does not fail and nothing is remembered (it asks again)."""
    from shared.core.errors import PermanentError

    fp = FakePlatform()
    deps = _deps(fp)

    def refuse(model: str) -> None:
        raise PermanentError(f"listing versions of {model}: forbidden")

    monkeypatch.setattr(fp, "get_latest_model", refuse)
    outcome = rollout_reactions.handle_reconcile({"past_due": False}, deps, outside_models)
    assert outcome.details["discovered"][MODEL] == {"error": f"listing versions of {MODEL}: forbidden"}
    assert list(deps.state.records(MEMO_PREFIX)) == []
