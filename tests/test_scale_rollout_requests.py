"""Rollout ticks within the naive number of Azure ML requests (#17.3), counted at the HTTP boundary with the real
azure-ai-ml SDK against the REST stand-in, the flows unchanged (tests/rollout_requests.py runs them).

The naive read-modify-write is the bound: a Wait tick reads the endpoint (GET endpoint + one deployments listing:
2), a traffic step reads and writes it (+ the SDK's workspace GET for the location and the PUT: 4), and promote
reads it and tags the new champion (GET + PUT of that model version: 4). Each request is the one the SDK source
sends (azure-ai-ml 1.35.2): `_online_endpoint_operations.py` `begin_create_or_update` GETs the workspace
(`_get_workspace_location`) before its PUT; a model version has no partial update (the generated
`ModelVersionsOperations`: get, create_or_update, delete, list, begin_publish), so a tag change is a GET and a PUT
of the whole version (REST `Workspace/ModelVersion/createOrUpdate.json` in tests/fixtures/aml-rest).

Before this change promote sent 8 in the steady state: the tick's read, then for the new champion and the former
one each a GET, the SDK's own `$top=1` look-up of the newest version inside `models.create_or_update`, and a PUT.
Now the tag change skips that look-up and the former champion is untagged by the next tick (`Demote`, 4).
"""

from __future__ import annotations

import pytest
from rollout_helpers import ENDPOINT, MODEL
from rollout_requests import Rollouts, Tick, two_rollouts

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
    assert {t.calls for t in steps} == {(*READ, ("GET", ""), ("PUT", EP))}
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
