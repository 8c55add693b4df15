"""Rollout ticks within the naive number of Azure ML requests (#17.3), counted at the HTTP boundary with the real
azure-ai-ml SDK against the REST stand-in, the flows unchanged (tests/rollout_requests.py runs them).

The naive read-modify-write is the bound: a Wait tick reads the endpoint (GET endpoint + one deployments listing:
2), a traffic step reads and writes it (+ the SDK's workspace GET for the location and the PUT: 4; 3 here, as the
adapter reads the location once per worker), and promote reads it and tags the new champion (GET + PUT of that
model version: 4). Each request is the one the SDK source sends (azure-ai-ml 1.35.2): `_online_endpoint_operations.py`
`begin_create_or_update` GETs the workspace (`_get_workspace_location`) before its PUT; a model version has no
partial update (the generated
`ModelVersionsOperations`: get, create_or_update, delete, list, begin_publish), so a tag change is a GET and a PUT
of the whole version (REST `Workspace/ModelVersion/createOrUpdate.json` in tests/fixtures/aml-rest).

Before this change promote sent 8 in the steady state: the tick's read, then for the new champion and the former
one each a GET, the SDK's own `$top=1` look-up of the newest version inside `models.create_or_update`, and a PUT.
Now the tag change skips that look-up and the former champion is untagged by the next tick (`Demote`, 4).
"""

from __future__ import annotations

import threading

import pytest
from aml_harness import azure_platform
from rollout_helpers import ENDPOINT, MODEL
from rollout_requests import Rollouts, Tick, service, train, two_rollouts

from shared.core.platform import CHAMPION_TAG, REFLEX_TAG

EP = f"/onlineEndpoints/{ENDPOINT}"
READ = (("GET", EP), ("GET", f"{EP}/deployments"))


@pytest.fixture(scope="module")
def rollouts() -> Rollouts:
    return two_rollouts()


def _only(ticks: list[Tick], action: str) -> list[Tick]:
    found = [t for t in ticks if t.action == action]
    assert found, [t.action for t in ticks]
    return found


def test_both_rollouts_end_promoted_with_one_champion_tag(rollouts: Rollouts) -> None:
    assert rollouts.statuses == ("done", "done")
    assert rollouts.tags == {"1": {REFLEX_TAG: "true"}, "2": {REFLEX_TAG: "true", CHAMPION_TAG: "true"}}
    assert rollouts.pointer is not None and rollouts.pointer.version == "2" and rollouts.pointer.demote == []


def test_a_wait_tick_is_one_endpoint_read(rollouts: Rollouts) -> None:
    waits = _only(rollouts.second, "Wait")
    assert {t.calls for t in waits} == {READ}
    assert rollouts.most("Wait") <= 2


def test_a_traffic_step_is_the_naive_read_modify_write(rollouts: Rollouts) -> None:
    steps = _only(rollouts.second, "SetTraffic")
    assert len(steps) == 3   # 10%, 50%, 100%
    # the SDK's PUT needs the workspace's location: one GET per worker, made here before (the quota check)
    assert {t.calls for t in steps} == {(*READ, ("PUT", EP))}
    assert rollouts.most("SetTraffic") <= 4


def test_promote_reads_the_endpoint_and_tags_the_new_champion_only(rollouts: Rollouts) -> None:
    """The steady state: a former champion exists and the pointer names it."""
    (promote,) = _only(rollouts.second, "Promote")
    versions = f"/models/{MODEL}/versions"
    assert promote.calls == (*READ, ("GET", f"{versions}/2"), ("PUT", f"{versions}/2"))
    assert rollouts.most("Promote") <= 4


def test_the_former_champion_is_untagged_by_the_next_tick_within_the_same_bound(rollouts: Rollouts) -> None:
    actions = [t.action for t in rollouts.second]
    assert actions[actions.index("Promote") + 1] == "Demote"
    (demote,) = _only(rollouts.second, "Demote")
    assert demote.calls == (*READ, ("GET", f"/models/{MODEL}/versions/1"), ("PUT", f"/models/{MODEL}/versions/1"))


def test_every_tick_reads_the_endpoint_once_and_lists_its_deployments_once(rollouts: Rollouts) -> None:
    for tick in rollouts.first + rollouts.second:
        # the SDK's online_deployments.begin_create_or_update GETs the endpoint itself before its PUT
        # (azure-ai-ml 1.35.2 _online_deployment_operations.py, `self._online_endpoint_operations.get`), and
        # begin_create_endpoint looks for the endpoint the observation found absent
        own = 2 if tick.action in ("CreateDeployment", "CreateEndpoint") else 1
        assert tick.calls.count(("GET", EP)) <= own, tick
        assert tick.calls.count(("GET", f"{EP}/deployments")) <= 1, tick
    every = [t for t in rollouts.second if t.action not in ("CreateDeployment", "SmokeTest")]
    assert max(t.requests for t in every) <= 4, every


def test_the_model_versions_are_listed_once_in_the_models_life(rollouts: Rollouts) -> None:
    """The first promotion finds no champion pointer: it lists the versions once to learn which carry the tag
    (shared/core/champion.py `crown`), so that one tick costs 5. Never again: the second rollout lists nothing."""
    listing = ("GET", f"/models/{MODEL}/versions")
    (first,) = _only(rollouts.first, "Promote")
    assert first.calls == (*READ, ("GET", f"/models/{MODEL}/versions/1"), ("PUT", f"/models/{MODEL}/versions/1"),
                           listing)
    assert [t.action for t in rollouts.first + rollouts.second if listing in t.calls] == ["Promote"]


def _pollers() -> int:
    """azure-core's LROPoller threads alive (azure/core/polling/_poller.py names each `LROPoller(<uuid>)`)."""
    return sum(t.name.startswith("LROPoller(") and t.is_alive() for t in threading.enumerate())


def test_no_write_of_a_rollout_leaves_a_poller_polling() -> None:
    """Answered as Azure answers them, the SDK's pollers would keep polling, every poll a request: the endpoint PUT
    comes back Creating/Updating (the body's provisioningState: ARMPolling then polls the endpoint), the DELETE with
    202 and a `Location` to poll (REST `Workspace/OnlineDeployment/delete.json`, tests/fixtures/aml-rest), a new
    deployment or endpoint Creating (for a deployment the SDK's AzureMLPolling, every 5 s while it provisions).
    The harness makes a poller sleep for an hour before its first poll, so a poller left behind is an alive
    thread."""
    svc = service()
    with azure_platform(svc) as p:
        train(svc, p, "train-1", 0.8)
        p.register_model(name=MODEL, version="1", job_name="train-1", tags={})
        p.begin_create_endpoint(ENDPOINT)
        for name in ("blue", "green"):
            p.begin_create_deployment(ENDPOINT, name, model=f"{MODEL}:1", instance_type="Standard_DS3_v2",
                                      instance_count=1)
        before = _pollers()
        svc.ready_at[EP.lower()] = (svc.clock() + 3600, "Succeeded")   # the endpoint answers Creating from now
        start = len(svc.requests)
        written = p.set_traffic(ENDPOINT, {"blue": 100, "green": 0})
        traffic_calls = svc.calls(start)
        assert written.traffic == {"blue": 100, "green": 0}
        assert _pollers() == before, "the traffic PUT left a poller"

        svc.fail("DELETE", r"/deployments/green$", 202, body={}, headers={
            "Location": f"https://management.azure.com{svc.ws_path}/onlineEndpoints/{ENDPOINT}/deployments/"
                        "green/operationResults/op-1?api-version=2025-12-01"})
        p.get_endpoint(ENDPOINT)   # the tick's read, which the delete reuses
        start = len(svc.requests)
        p.begin_delete_deployment(ENDPOINT, "green")
        delete_calls = svc.calls(start)
        assert _pollers() == before, "the DELETE left a poller"

        svc.provisioning_seconds = 3600   # a new deployment answers Creating (the SDK would poll it every 5 s)
        start = len(svc.requests)
        p.begin_create_deployment(ENDPOINT, "red", model=f"{MODEL}:1", instance_type="Standard_DS3_v2",
                                  instance_count=1)
        create_calls = svc.calls(start)
        assert _pollers() == before, "the deployment PUT left a poller"
        start = len(svc.requests)
        p.begin_create_endpoint("other-ep")   # answers Creating too
        assert svc.calls(start) == [("GET", "/onlineEndpoints/other-ep"), ("PUT", "/onlineEndpoints/other-ep")]
        assert _pollers() == before, "the endpoint PUT left a poller"
    assert create_calls == [("GET", f"{EP}/deployments/red"), ("PUT", f"{EP}/deployments/red")]
    assert traffic_calls == [*READ, ("PUT", EP)]   # the location: read once by the deployments' creation
    assert delete_calls == [("DELETE", f"{EP}/deployments/green")]
    put = next(r for r in reversed(svc.requests) if r.method == "PUT" and r.path.endswith(EP))
    assert put.body["properties"]["traffic"] == {"blue": 100}   # 0% entries stripped, as the SDK strips them
