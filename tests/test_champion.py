"""The champion pointer (shared/core/champion.py): moved by promotion, repaired from the registry's tags once,
never moved by a model registered outside Reflex; and, with the real azure-ai-ml SDK at the HTTP boundary, the
champion of a model with 1,000 versions found in ONE request (the listing it replaces is counted beside it).

State is real Azurite; the platform is the behavioural fake (its `calls` count requests per operation) or the
SDK against testing/aml_service.py, answered from the service's REST examples.
"""

from __future__ import annotations

from typing import Any

import pytest
from aml_harness import azure_platform
from conftest import make_deps, make_settings
from rollout_helpers import MODEL
from test_rollout_flow import V2, World, deliver, healthy, register_model, run_to_end, world  # noqa: F401

from shared.core import champion as champions
from shared.core.platform import CHAMPION_TAG, REFLEX_TAG
from shared.core.state import BlobStateStore, MemoryStateStore
from shared.registration import outside_models
from testing.aml_service import AmlService
from testing.fake_platform import FakePlatform
from tests.rollout_helpers import live_endpoint
from tests.timers_support import make_champion

pytestmark = pytest.mark.azurite


def test_promotion_moves_the_pointer_and_untags_the_old_champion_without_listing(world: World) -> None:  # noqa: F811
    live_endpoint(world.fp)  # v1 serves and is tagged champion; no pointer yet (a store from before the pointer)
    assert champions.pointer(world.current["deps"], MODEL) is None  # type: ignore[attr-defined]
    deliver(world, register_model(world.fp, "2"))
    listings = world.fp.calls["list_models"]
    final = run_to_end(world, each=healthy)
    assert final.status == "done"
    stored = champions.pointer(world.current["deps"], MODEL)  # type: ignore[attr-defined]
    assert stored is not None and stored.version == "2" and stored.demote == []
    assert stored.by.startswith(f"rollout {MODEL}:2")
    assert world.fp.models[(MODEL, "2")].tags.get(CHAMPION_TAG) == "true"
    assert CHAMPION_TAG not in world.fp.models[(MODEL, "1")].tags
    # the one listing of the promotion is the repair of the missing pointer; a second promotion lists nothing
    assert world.fp.calls["list_models"] - listings == 1
    listings = world.fp.calls["list_models"]
    deliver(world, register_model(world.fp, "3"))
    assert run_to_end(world, each=healthy).status == "done"
    assert world.fp.calls["list_models"] == listings
    assert champions.pointer(world.current["deps"], MODEL).version == "3"  # type: ignore[attr-defined,union-attr]
    assert [v for (n, v), m in world.fp.models.items() if m.tags.get(CHAMPION_TAG) == "true"] == ["3"]
    found = champions.find(world.current["deps"], MODEL)  # type: ignore[attr-defined]
    assert found is not None and found.version == "3" and world.fp.calls["list_models"] == listings
    assert V2 not in {d.name for d in world.fp.get_endpoint(world.record().endpoint).deployments}  # type: ignore[union-attr]


def test_a_missing_pointer_is_repaired_from_the_tags_once(blob_state: BlobStateStore,
                                                          fake_platform: FakePlatform) -> None:
    deps = make_deps(make_settings(), state=blob_state, platform=fake_platform)
    for version in ("1", "2", "3"):
        make_champion(fake_platform, version=version)
    fake_platform.update_model_tags("reflex-model", "3", remove=(CHAMPION_TAG,))  # 1 and 2 tagged: 2 is champion
    assert champions.pointer(deps, "reflex-model") is None
    found = [champions.find(deps, "reflex-model") for _ in range(5)]
    assert {m.version for m in found if m} == {"2"} and len([m for m in found if m]) == 5
    assert fake_platform.calls["list_models"] == 1 and fake_platform.calls["get_model"] == 4
    stored = champions.pointer(deps, "reflex-model")
    assert stored is not None and stored.version == "2" and stored.demote == ["1"]
    assert stored.by == "repair from tags"


def test_a_pointer_whose_version_lost_its_tag_or_is_gone_is_repaired(blob_state: BlobStateStore,
                                                                     fake_platform: FakePlatform) -> None:
    deps = make_deps(make_settings(), state=blob_state, platform=fake_platform)
    make_champion(fake_platform, version="1")
    make_champion(fake_platform, version="2")
    fake_platform.update_model_tags("reflex-model", "1", remove=(CHAMPION_TAG,))
    assert champions.find(deps, "reflex-model").version == "2"  # type: ignore[union-attr]
    fake_platform.update_model_tags("reflex-model", "1", set_tags={CHAMPION_TAG: "true"})
    fake_platform.update_model_tags("reflex-model", "2", remove=(CHAMPION_TAG,))  # untagged by hand in the studio
    assert champions.find(deps, "reflex-model").version == "1"  # type: ignore[union-attr]
    assert champions.pointer(deps, "reflex-model").version == "1"  # type: ignore[union-attr]
    del fake_platform.models[("reflex-model", "1")]  # deleted: nothing tagged is left
    assert champions.find(deps, "reflex-model") is None
    assert champions.pointer(deps, "reflex-model") is None
    assert fake_platform.calls["list_models"] == 3


def test_a_model_registered_outside_reflex_does_not_move_the_pointer(blob_state: BlobStateStore,
                                                                     fake_platform: FakePlatform) -> None:
    deps = make_deps(make_settings(REFLEX_EVAL_DATA="ds/eval"), state=blob_state, platform=fake_platform)
    make_champion(fake_platform, version="1")
    assert champions.find(deps, "reflex-model").version == "1"  # type: ignore[union-attr]
    # a person registers version 2 from a notebook and even tags it champion: not Reflex's promotion
    from tests.test_fair_gate_flow import notebook_model

    notebook_model(fake_platform, "2", tags={CHAMPION_TAG: "true"})
    notebook = fake_platform.models[("reflex-model", "2")]
    assert REFLEX_TAG not in notebook.tags
    outcome = outside_models.admit(deps, notebook, "reflex-endpoint", "ev-1")
    assert outcome is not None and outcome.status == "acted"  # evaluated against the champion before any rollout
    assert "against the champion reflex-model:1" in outcome.reason
    assert champions.find(deps, "reflex-model").version == "1"  # type: ignore[union-attr]
    assert champions.pointer(deps, "reflex-model").version == "1"  # type: ignore[union-attr]


def test_a_trusted_outside_model_becomes_champion_only_through_its_rollout(world: World) -> None:  # noqa: F811
    world.env["REFLEX_TRUST_OUTSIDE_MODELS"] = "true"
    world.current["deps"] = world.deps()  # type: ignore[attr-defined]
    live_endpoint(world.fp)
    assert champions.find(world.current["deps"], MODEL).version == "1"  # type: ignore[attr-defined,union-attr]
    raw = register_model(world.fp, "2")
    world.fp.update_model_tags(MODEL, "2", remove=(REFLEX_TAG,))  # registered by a person: trusted by the policy
    assert deliver(world, raw).status == "acted"
    assert champions.pointer(world.current["deps"], MODEL).version == "1"  # type: ignore[attr-defined,union-attr]
    assert run_to_end(world, each=healthy).status == "done"
    assert champions.pointer(world.current["deps"], MODEL).version == "2"  # type: ignore[attr-defined,union-attr]


def test_the_champion_of_1000_versions_is_one_request_with_the_real_sdk() -> None:
    """The state store is in memory here: the `responses` transport answers every HTTP request of the SDK, and
    what is counted is the platform's (the pointer's storage read is one blob GET either way)."""
    svc = AmlService()
    for v in range(1, 1001):
        svc.seed_model_version("churn", str(v), {REFLEX_TAG: "true", **({CHAMPION_TAG: "true"} if v == 640 else {})})
    with azure_platform(svc) as p:
        deps = make_deps(make_settings(), state=MemoryStateStore())
        deps.platform = p  # type: ignore[misc]  # the Deps' cached platform: the real adapter
        start = len(svc.requests)
        first = champions.find(deps, "churn")  # no pointer: the one repair lists every version
        repair = svc.calls(start)
        start = len(svc.requests)
        again = [champions.find(deps, "churn") for _ in range(3)]
        steady = svc.calls(start)
    assert first is not None and first.version == "640" and {m.version for m in again if m} == {"640"}
    assert [m for m, _ in repair] == ["GET"] and repair[0][1].startswith("/models/churn/versions")
    assert steady == [("GET", "/models/churn/versions/640")] * 3  # one request per lookup at 1,000 versions


def test_the_gate_asks_for_the_champion_without_listing(blob_state: BlobStateStore,
                                                        fake_platform: FakePlatform) -> None:
    """Registration once the pointer exists: the gate's champion lookups and its version choice list nothing."""
    from tests.test_registration_flow import champion, deliver3, submit

    deps = make_deps(make_settings(), state=blob_state, platform=fake_platform)
    champion(fake_platform, 0.8)
    champions.find(deps, "reflex-model")  # the pointer is written (the one listing)
    listings = fake_platform.calls["list_models"]
    job = submit(fake_platform, "reflex-job-2", scored="reflex-model:1")
    fake_platform.finish_job(job, metrics={"auc": 0.95, "champion.auc": 0.8, "n_test": 20})
    outcomes = deliver3(fake_platform, deps)
    assert [o.status for o in outcomes] == ["acted", "duplicate", "duplicate"], outcomes[0].reason
    assert ("reflex-model", "2") in fake_platform.models
    assert fake_platform.calls["list_models"] == listings


def test_promotion_at_1000_versions_tags_and_untags_without_listing_with_the_real_sdk() -> None:
    """`Promote` with the pointer in place tags the new champion (GET + PUT of that version) and `Demote`, the next
    tick, untags the old one (GET + PUT): one PUT each, and no listing of the 1,000 versions (the promotion used to
    list them all to find what to untag, and the SDK's `models.create_or_update` adds its own `$top=1` look-up of
    the newest version, which the adapter no longer sends for a tag change)."""
    from shared.rollout.flow import execute
    from shared.rollout.machine import Demote, Promote, Rollout, advance, decide
    from shared.rollout.plan import Plan

    svc = AmlService()
    for v in range(1, 1001):
        svc.seed_model_version("churn", str(v), {REFLEX_TAG: "true", **({CHAMPION_TAG: "true"} if v == 640 else {})})
    with azure_platform(svc) as p:
        deps = make_deps(make_settings(REFLEX_ENDPOINTS="churn=churn-ep"), state=MemoryStateStore())
        deps.platform = p  # type: ignore[misc]
        assert champions.find(deps, "churn").version == "640"  # type: ignore[union-attr]  # the pointer exists
        rollout = Rollout("churn-ep", "churn", "1000", "m-churn-v1000", Plan(), 0.0, status="baking")
        start = len(svc.requests)
        result = execute(deps, rollout, Promote())
        promoted = advance(rollout, Promote(), 1.0, result)
        after_promote = len(svc.requests)
        between = champions.find(deps, "churn")   # the pointer names the new champion at once
        start_demote = len(svc.requests)
        action = decide(promoted, _observed_promoted(), 2.0)
        untagged = execute(deps, promoted, action)
        sent = svc.requests[start:after_promote] + svc.requests[start_demote:]
        demote_requests = len(svc.requests) - start_demote
        stored = champions.pointer(deps, "churn")
    assert result == {"demoted": ["640"]} and promoted.demote == ("640",)
    assert between is not None and between.version == "1000"
    assert action == Demote(("640",)) and untagged == {"untagged": ["640"]}
    assert stored is not None and stored.version == "1000" and stored.demote == []
    assert after_promote - start == 2 and demote_requests == 2
    puts = [r.path.rpartition("/models/")[2] for r in sent if r.method == "PUT"]
    assert puts == ["churn/versions/1000", "churn/versions/640"]
    assert [r for r in sent if r.path.endswith("/models/churn/versions")] == []
    assert svc.resources["/models/churn/versions/640"]["properties"]["tags"] == {REFLEX_TAG: "true"}
    assert svc.resources["/models/churn/versions/1000"]["properties"]["tags"] == {REFLEX_TAG: "true",
                                                                               CHAMPION_TAG: "true"}


def _observed_promoted() -> Any:
    from shared.rollout.machine import Observation

    return Observation(endpoint_state="Succeeded", traffic={"m-churn-v1000": 100},
                       deployments={"m-churn-v1000": "Succeeded", "blue": "Succeeded"})
