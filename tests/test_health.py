"""Health checks over fake platform states: each finding published once across ticks, remediation behind a
setting, reacted jobs and healthy states not reported, and nothing reported before Reflex's own reaction (run
event, sweep, batch tracker, rollout reconciler) had its grace period to handle it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from shared.arrival import flow as arrival
from shared.core import reaction
from shared.core.platform import REFLEX_TAG, Job, TrainingRequest
from shared.core.state import BlobStateStore, MemoryStateStore
from shared.handlers import monitoring_health
from shared.monitoring import health
from shared.rollout import health as rollout_health
from shared.rollout.machine import Observation, Rollout, advance, decide
from shared.rollout.plan import Plan
from shared.scoring import flow as scoring
from testing.fake_platform import FakePlatform, _Pending
from tests.conftest import Clock, make_deps, make_settings
from tests.real_chain import Lake
from tests.timers_support import make_champion, upload

EP = "reflex-endpoint"


def _deps(platform: FakePlatform, clock: Clock, state: MemoryStateStore | None = None, **env: str) -> Any:
    return make_deps(make_settings(**env), state=state or MemoryStateStore(), platform=platform, clock=clock)


def _serving(platform: FakePlatform, deployment: str = "blue") -> None:
    champion = make_champion(platform)
    platform.begin_create_endpoint(EP)
    platform.begin_create_deployment(EP, deployment, model=champion.ref, instance_type="Standard_DS3_v2",
                                     instance_count=1)
    platform.set_traffic(EP, {deployment: 100})


def check(deps: Any) -> reaction.Outcome:
    """The health timer as the monitoring function runs it: with the rollout's check of its records."""
    return monitoring_health(deps)


def _published(deps: Any) -> list[Any]:
    return [e for e in deps.publisher.sent if e.type == "Reflex.HealthCheckFailed"]


def test_healthy_platform_reports_nothing(fake_platform: FakePlatform, clock: Clock) -> None:
    _serving(fake_platform)
    deps = _deps(fake_platform, clock)
    outcome = check(deps)
    assert outcome.status == "skipped" and outcome.reason == "healthy: no finding"
    assert not _published(deps)


def test_traffic_to_failed_deployment_and_bad_sum_each_published_once(fake_platform: FakePlatform,
                                                                       clock: Clock) -> None:
    _serving(fake_platform)
    deps = _deps(fake_platform, clock)
    # the live deployment later fails (the service can do that; the fake cannot by itself, so poke its state)
    dep, _ = fake_platform.endpoints[EP].deployments["blue"]
    fake_platform.endpoints[EP].deployments["blue"] = (dep, _Pending("Failed", 0.0, "Failed"))
    for _ in range(3):
        check(deps)
        clock.advance(300)
    (first,) = _published(deps)
    assert first.data["kind"] == "traffic" and "blue: receives 100% but its state is Failed" in first.data["summary"]
    assert first.data["evidence"]["deployments"] == {"blue": "Failed"}
    # a different broken state (traffic no longer sums to 100) is a new finding, again once
    fake_platform.endpoints[EP].traffic = {"blue": 60}
    for _ in range(3):
        check(deps)
    assert len(_published(deps)) == 2
    assert "live traffic sums to 60" in _published(deps)[1].data["summary"]


def test_traffic_on_an_updating_or_scaling_deployment_is_not_a_finding(fake_platform: FakePlatform,
                                                                         clock: Clock) -> None:
    _serving(fake_platform)
    for state in ("Updating", "Scaling"):
        fake_platform.transition(EP, "blue", state=state, seconds=600)
        assert health.traffic_finding(fake_platform.get_endpoint(EP)) is None  # type: ignore[arg-type]
    fake_platform.transition(EP, "blue", state="Failed", seconds=600)
    finding = health.traffic_finding(fake_platform.get_endpoint(EP))  # type: ignore[arg-type]
    assert finding is not None and "Failed" in finding.summary


def test_overdue_rollout_reported_once(fake_platform: FakePlatform,
                                                                    clock: Clock) -> None:
    state = MemoryStateStore()
    record = Rollout(EP, "reflex-model", "2", "reflex-model-v2", Plan(), created_at=clock() - 20_000, status="baking",
                     phase=1, started_at=clock() - 20_000, deadline=clock() - 100).to_dict()
    state.create(f"rollouts/{EP}", record)
    state.create("rollouts/other-ep", {**record, "endpoint": "other-ep", "status": "done"})
    state.create("rollouts/fresh-ep", {**record, "endpoint": "fresh-ep", "deadline": clock() + 100})
    quiet = _deps(fake_platform, clock, state, REFLEX_HEALTH_GRACE_SECONDS="60")
    check(quiet)
    assert "remediate" not in state.get(f"rollouts/{EP}").value  # type: ignore[union-attr]
    (finding,) = _published(quiet)
    assert finding.data["kind"] == "rollout-overdue" and finding.data["evidence"]["status"] == "baking"
    assert "remediation" not in finding.data  # REFLEX_HEALTH_REMEDIATE is off: reported, nothing done
    # remediation on: tests/test_rollout_flow.py rolls a real overdue canary back through the machinery


def test_rollout_without_deadline_uses_the_setting(fake_platform: FakePlatform, clock: Clock) -> None:
    state = MemoryStateStore()
    state.create(f"rollouts/{EP}", Rollout(EP, "reflex-model", "2", "reflex-model-v2", Plan(), created_at=clock() - 100,
                                           status="creating", started_at=clock() - 100).to_dict())
    deps = _deps(fake_platform, clock, state, REFLEX_ROLLOUT_DEADLINE_SECONDS="600", REFLEX_HEALTH_GRACE_SECONDS="60")
    check(deps)
    assert not _published(deps)
    clock.advance(600)
    check(deps)
    assert len(_published(deps)) == 1


def _submitted_job(platform: FakePlatform, state: MemoryStateStore, clock: Clock, name: str) -> None:
    if ("d", "1") not in platform.data:
        platform.register_data(name="d", version="1", path="azureml://datastores/x/paths/d/1/", tags={})
    platform.submit_training(TrainingRequest(job_name=name, experiment_name="reflex", data_name="d",
                                             data_version="1", mode="command", task="classification",
                                             label_column="y", compute="c", environment="azureml:e:1",
                                             tags={REFLEX_TAG: "true"}))
    state.create(f"arrivals/reflex-data/d/{name}", {"status": "submitted", "job": name, "submitted_at": clock()})


def test_failed_job_without_reaction_published_once_after_the_grace(fake_platform: FakePlatform,
                                                                     clock: Clock) -> None:
    state = MemoryStateStore()
    deps = _deps(fake_platform, clock, state)
    _submitted_job(fake_platform, state, clock, "job-a")
    _submitted_job(fake_platform, state, clock, "job-b")
    _submitted_job(fake_platform, state, clock, "job-c")
    fake_platform.finish_job("job-a", "Failed", error="bad data")
    fake_platform.finish_job("job-b", "Canceled")
    state.claim("claims/training-failed/job-b")  # the RunStatusChanged reaction handled this one
    # job-c still queued: fine
    check(deps)
    assert not _published(deps)  # the run event may still be on its way: not yet
    clock.advance(599)
    check(deps)
    assert not _published(deps)
    for _ in range(3):
        clock.advance(60)
        check(deps)
    (finding,) = _published(deps)
    assert finding.data["evidence"]["job"] == "job-a" and finding.data["evidence"]["error"] == "bad data"


def test_vanished_job_reported_after_grace(fake_platform: FakePlatform, clock: Clock) -> None:
    state = MemoryStateStore()
    state.create("scoring/reflex-scoring/d/b", {"status": "submitted", "job": "reflex-score-x",
                                                "submitted_at": clock()})
    deps = _deps(fake_platform, clock, state, REFLEX_HEALTH_GRACE_SECONDS="900")
    check(deps)
    clock.advance(899)
    check(deps)
    assert not _published(deps)
    clock.advance(1)
    check(deps)
    (finding,) = _published(deps)
    assert finding.data["evidence"]["status"] == "missing" and finding.data["evidence"]["job_kind"] == "batch-scoring"


# ------------------------------------------------------------------------------------ decisions


def _job(status: str) -> Job:
    return Job(name="j", status=status, error="boom")


@pytest.mark.parametrize(("job", "age", "ended", "reported"), [
    (_job("Failed"), 5000.0, 0.0, False),        # just seen failed: its own reaction comes first
    (_job("Failed"), 5000.0, 599.0, False),
    (_job("Failed"), 5000.0, 600.0, True),       # still unhandled a grace later
    (_job("Canceled"), 5000.0, 600.0, True),
    (_job("NotResponding"), 5000.0, 600.0, True),
    (_job("Completed"), 5000.0, 5000.0, False),
    (_job("Running"), 5000.0, 5000.0, False),
    (None, 599.0, 0.0, False),                   # not visible yet
    (None, 600.0, 0.0, True),                    # vanished
])
def test_job_finding_waits_the_grace(job: Job | None, age: float, ended: float, reported: bool) -> None:
    found = health.job_finding("batch-scoring", "scoring/c/d/b", "j", job, age_seconds=age, ended_seconds=ended,
                               grace_seconds=600)
    assert (found is not None) == reported
    if found is not None:
        assert found.state == {"job": "j", "status": job.status if job else "missing"}


PLAN = Plan(deadline_seconds=1000, retain_seconds=3600, approval_timeout_seconds=86_400)


def _rollout(status: str = "baking", **kw: Any) -> dict[str, Any]:
    r = Rollout("ep", "m", "2", "m-v2", PLAN, created_at=0.0, status=status, started_at=0.0, deadline=1000.0)
    return replace(r, **kw).to_dict()


def test_rollout_due_is_when_the_reconciler_should_have_ended_it() -> None:
    assert rollout_health.rollout_due(_rollout("baking"), 14_400) == 1000.0
    assert rollout_health.rollout_due({**_rollout("baking"), "deadline": 0}, 14_400) == 14_400.0
    # promoted: the old deployment is kept for the plan's retention, past the deadline, by design
    assert rollout_health.rollout_due(_rollout("promoted", phase_started_at=900.0), 14_400) == 4500.0
    assert rollout_health.rollout_due(_rollout("retiring", phase_started_at=100.0), 14_400) == 3700.0
    # pending on approval (the record as the machine writes it): the plan's approval timeout, not the deadline
    pending = Rollout.from_dict(_rollout("pending"))
    observed = Observation(endpoint_state="Succeeded", approval="pending")
    waiting = advance(pending, decide(pending, observed, 5.0), 5.0).to_dict()
    assert rollout_health.rollout_due(waiting, 14_400) == 86_400.0
    older = {**waiting, "plan": {k: v for k, v in waiting["plan"].items() if k != "approval_timeout_seconds"}}
    # records from before the setting
    assert rollout_health.rollout_due(older, 14_400) == Plan().approval_timeout_seconds
    # records from before `awaiting_approval`: read from their last Wait (Rollout.from_dict)
    legacy = {k: v for k, v in waiting.items() if k != "awaiting_approval"}
    assert rollout_health.rollout_due(legacy, 14_400) == 86_400.0
    assert rollout_health.rollout_due({**waiting, "plan": {"steps": "x"}}, 14_400) is None  # not a rollout record
    # pending for another reason: the machine fails it at the deadline
    endpoint = Observation(endpoint_state="Creating")
    assert rollout_health.rollout_due(advance(pending, decide(pending, endpoint, 5.0), 5.0).to_dict(), 14_400) == 1000.0
    assert rollout_health.rollout_due({"status": "creating"}, 14_400) is None


def test_rollout_finding_leaves_the_reconciler_its_grace() -> None:
    record = _rollout("baking")
    assert rollout_health.rollout_finding("rollouts/ep", record, 1000.0, 14_400, 600) is None  # it rolls back now
    assert rollout_health.rollout_finding("rollouts/ep", record, 1599.0, 14_400, 600) is None
    found = rollout_health.rollout_finding("rollouts/ep", record, 1600.0, 14_400, 600)
    assert found is not None and found.evidence["deadline"] == 1000.0 and found.evidence["status"] == "baking"
    assert rollout_health.rollout_finding("rollouts/ep", _rollout("rolled_back"), 99_999.0, 14_400, 600) is None
    promoted = _rollout("promoted", phase_started_at=900.0)
    assert rollout_health.rollout_finding("rollouts/ep", promoted, 5000.0, 14_400, 600) is None
    assert rollout_health.rollout_finding("rollouts/ep", promoted, 5100.0, 14_400, 600) is not None


def test_remediation_only_for_a_rollout_that_may_hold_traffic(fake_platform: FakePlatform, clock: Clock) -> None:
    state = MemoryStateStore()
    state.create(f"rollouts/{EP}", {**_rollout("retiring", phase_started_at=clock() - 10_000),
                                    "endpoint": EP, "created_at": clock() - 20_000, "deadline": clock() - 5000})
    deps = _deps(fake_platform, clock, state, REFLEX_HEALTH_REMEDIATE="true")
    check(deps)
    (finding,) = _published(deps)
    assert finding.data["evidence"]["status"] == "retiring" and "remediation" not in finding.data
    assert "remediate" not in state.get(f"rollouts/{EP}").value  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ flows on Azurite


def _health_findings(deps: Any) -> list[Any]:
    return [e for e in _published(deps) if e.data["kind"] == "job-unhandled"]


def _scoring_job(container: Any, deps: Any) -> str:
    for i in range(2):
        scoring.handle_blob(upload(container, f"patients/b1/part-{i}.csv", b"a,b\n1,2\n"), deps)
    outcome = scoring.handle_blob(upload(container, "patients/b1/_SUCCESS", b""), deps)
    assert outcome.status == "acted", outcome
    (record,) = deps.state.records("scoring/")
    assert record.value["status"] == "submitted"
    return str(record.value["job"])


@pytest.mark.parametrize("tracker_runs", [True, False])
def test_failed_batch_job_is_the_trackers_to_report_health_only_if_it_does_not(
        container_factory: Callable[[str], Any], blob_state: BlobStateStore, fake_platform: FakePlatform,
        clock: Clock, tracker_runs: bool) -> None:
    container = container_factory("score")
    deps = make_deps(make_settings(REFLEX_SCORING_CONTAINER=container.container_name), state=blob_state,
                     platform=fake_platform, clock=clock)
    make_champion(fake_platform)
    job = _scoring_job(container, deps)
    fake_platform.finish_job(job, "Failed", error="out of memory")
    check(deps)  # the health tick comes first: before, it reported what the tracker was about to
    assert not _health_findings(deps)
    clock.advance(60)
    if tracker_runs:
        scoring.track(deps)
    for _ in range(3):
        clock.advance(600)
        check(deps)
    failed = [e for e in deps.publisher.sent if e.type == "Reflex.BatchScoringFailed"]
    if tracker_runs:  # reported once, by the tracker; health forgot the job's end mark once it was handled
        assert len(failed) == 1 and "out of memory" in failed[0].data["reason"] and not _health_findings(deps)
        assert blob_state.keys("health/ended/") == []
    else:  # the tracker is stuck: health reports it, once
        (finding,) = _health_findings(deps)
        assert not failed and finding.data["evidence"] == {
            "job": job, "job_kind": "batch-scoring", "status": "Failed", "error": "out of memory",
            "record": f"scoring/{container.container_name}/patients/b1", "url": fake_platform.jobs[job].url}


@pytest.mark.parametrize("event_arrives", [True, False])
def test_failed_training_is_reported_once_by_its_event_or_else_by_health(
        container_factory: Callable[[str], Any], blob_state: BlobStateStore, fake_platform: FakePlatform,
        clock: Clock, event_arrives: bool) -> None:
    lake = Lake(container_factory("data"))
    deps = make_deps(make_settings(REFLEX_DATA_CONTAINER=lake.name), state=blob_state, platform=fake_platform,
                     clock=clock)
    for raw in (lake.put("sales/b1/part-0.csv"), lake.put("sales/b1/_SUCCESS", b"")):
        arrival.handle_blob(raw, deps)
    (job,) = [name for name, j in fake_platform.jobs.items() if j.tags.get(REFLEX_TAG) == "true"]
    fake_platform.finish_job(job, "Failed", error="label column missing")
    event = fake_platform.events[-1]
    check(deps)
    clock.advance(300)
    arrival.sweep(deps)  # finds the ended job first and closes its record (it publishes nothing itself)
    (record,) = blob_state.records("arrivals/")
    assert record.value["status"] == "failed"
    if event_arrives:  # late, but within the grace
        reaction.run("registration.run_event", event, event_id=event["id"], deps=deps)
    for _ in range(3):
        clock.advance(600)
        check(deps)
    failed = [e for e in deps.publisher.sent if e.type == "Reflex.TrainingFailed"]
    if event_arrives:
        assert len(failed) == 1 and not _health_findings(deps)
        assert blob_state.keys("health/ended/") == []  # handled: the end mark is not kept
    else:  # before, the sweep's silent close hid it from health too: reported by no one
        (finding,) = _health_findings(deps)
        assert not failed and finding.data["evidence"]["job"] == job
        assert finding.data["evidence"]["status"] == "Failed"


def test_finding_id_depends_on_state_not_time() -> None:
    a = health.Finding("traffic", "endpoint/e", "x", {"at": 1}, {"problems": ["p"]})
    b = health.Finding("traffic", "endpoint/e", "y", {"at": 2}, {"problems": ["p"]})
    c = health.Finding("traffic", "endpoint/e", "x", {}, {"problems": ["q"]})
    assert a.id == b.id != c.id
