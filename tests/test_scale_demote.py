"""The former champion's untag, one tick after the promotion (#17.3): where the machine decides it, what the record
keeps meanwhile, and which versions the flow untags (the champion pointer, shared/core/champion.py, decides).

Why a tick of its own: a tag change is a GET and a PUT of the whole model version (Azure ML has no partial update),
so tagging the new champion and untagging the old one in the promote tick would cost 6 Azure ML requests with the
endpoint read; split, each tick stays within 4 (tests/test_scale_rollout_requests.py counts them with the real SDK).
"""

from __future__ import annotations

from dataclasses import replace

from conftest import make_deps, make_settings

from shared.core import champion as champions
from shared.core.platform import CHAMPION_TAG, REFLEX_TAG, ModelVersion
from shared.rollout.flow import execute
from shared.rollout.machine import (
    DeleteDeployment,
    Demote,
    Finish,
    Observation,
    Promote,
    RollBack,
    Rollout,
    Wait,
    advance,
    decide,
)
from shared.rollout.plan import Plan
from testing.fake_platform import FakePlatform

S = "Succeeded"
PLAN = Plan(steps=(10, 50, 100), bake_seconds=600, retain_seconds=3600)
SERVING = Observation(endpoint_state=S, traffic={"blue": 0, "new": 100}, deployments={"blue": S, "new": S})


def promoted(**kw: object) -> Rollout:
    base = Rollout("ep", "m", "2", "new", PLAN, 0.0, status="baking", previous="blue",
                   previous_traffic={"blue": 100}, phase=2, phase_started_at=100.0, started_at=0.0, deadline=9e9)
    return replace(advance(base, Promote(), 1000.0, {"demoted": ["1"]}), **kw)  # type: ignore[arg-type]


def test_the_promotion_records_what_is_to_be_untagged_and_the_next_tick_untags_it_first() -> None:
    r = promoted()
    assert r.status == "promoted" and r.demote == ("1",) and r.phase_started_at == 1000.0
    assert decide(r, SERVING, 1060.0) == Demote(("1",))
    after = advance(r, Demote(("1",)), 1060.0, {"untagged": ["1"]})
    assert after.demote == () and after.status == "promoted" and after.phase_started_at == 1000.0
    assert after.history[-1]["action"] == "Demote" and "m:1 no longer tagged champion" in after.history[-1]["detail"]
    # then the retention runs as before: kept at 0% until an hour after the promotion, then deleted
    assert isinstance(decide(after, SERVING, 1060.0), Wait)
    assert decide(after, SERVING, 1000.0 + 3600) == DeleteDeployment(("blue",))


def test_one_version_per_tick_and_before_any_retirement_or_supersession() -> None:
    r = promoted(demote=("1", "0"))
    assert decide(r, SERVING, 9e6) == Demote(("1",))           # retention long over: the untag still comes first
    assert decide(replace(r, queued={"model": "m", "version": "3", "event_id": "e"}), SERVING, 2000.0) == Demote(
        ("1",))                                                  # superseded meanwhile: untag, then hand over
    assert decide(replace(r, status="retiring"), SERVING, 2000.0) == Demote(("1",))
    left = advance(r, Demote(("1",)), 2000.0)
    assert left.demote == ("0",) and decide(left, SERVING, 2000.0) == Demote(("0",))
    done = advance(left, Demote(("0",)), 2100.0)
    assert isinstance(decide(done, Observation(endpoint_state=S, traffic={"new": 100}, deployments={"new": S}),
                             2100.0), Finish)


def test_nothing_to_untag_goes_straight_to_the_retention_and_a_rollback_is_not_delayed() -> None:
    assert advance(replace(promoted(), demote=()), Wait("x"), 1001.0).demote == ()
    first = advance(Rollout("ep", "m", "1", "new", PLAN, 0.0, status="baking"), Promote(), 10.0, {"demoted": []})
    assert first.demote == () and not isinstance(decide(first, SERVING, 20.0), Demote)
    rolling = promoted(status="rolling_back", reason="x", final="rolled_back")
    assert isinstance(decide(rolling, SERVING, 1060.0), RollBack)


def test_the_record_keeps_the_versions_to_untag_and_older_records_have_none() -> None:
    r = promoted()
    assert Rollout.from_dict(r.to_dict()) == r and r.to_dict()["demote"] == ["1"]
    legacy = {k: v for k, v in r.to_dict().items() if k != "demote"}
    assert Rollout.from_dict(legacy).demote == ()


def _tagged(fp: FakePlatform, version: str) -> None:
    fp.models[("m", version)] = ModelVersion("m", version, f"azureml://jobs/j{version}/outputs/model/paths/",
                                             "mlflow_model", {REFLEX_TAG: "true", CHAMPION_TAG: "true"}, {}, "")


def test_the_flow_untags_what_the_pointer_still_lists_and_nothing_it_crowned_since() -> None:
    fp = FakePlatform()
    deps = make_deps(make_settings(), platform=fp)
    for v in ("1", "2"):
        _tagged(fp, v)
    champions.repair(deps, "m")                 # the pointer: 2, with 1 to untag
    assert champions.pointer(deps, "m").demote == ["1"]  # type: ignore[union-attr]
    r = promoted(demote=("1",))
    assert execute(deps, r, Demote(("1",))) == {"untagged": ["1"]}
    assert CHAMPION_TAG not in fp.models[("m", "1")].tags and fp.models[("m", "2")].tags[CHAMPION_TAG] == "true"
    assert champions.pointer(deps, "m").demote == []  # type: ignore[union-attr]
    assert execute(deps, r, Demote(("1",))) == {"untagged": []}   # again (a crash before the record): nothing
    # a version crowned again since (another rollout's promotion) keeps its tag
    _tagged(fp, "1")
    champions.crown(deps, "m", "1", by="a later rollout")
    assert execute(deps, promoted(demote=("1",)), Demote(("1",))) == {"untagged": []}
    assert fp.models[("m", "1")].tags[CHAMPION_TAG] == "true"
