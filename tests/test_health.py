"""Health checks over fake platform states: each finding published once across ticks, remediation behind a
setting, reacted jobs and healthy states not reported."""

from __future__ import annotations

from typing import Any

from shared import health
from shared.platform import REFLEX_TAG, TrainingRequest
from shared.state import MemoryStateStore
from testing.fake_platform import FakePlatform, _Pending
from tests.conftest import Clock, make_deps, make_settings
from tests.timers_support import make_champion

EP = "reflex-endpoint"


def _deps(platform: FakePlatform, clock: Clock, state: MemoryStateStore | None = None, **env: str) -> Any:
    return make_deps(make_settings(**env), state=state or MemoryStateStore(), platform=platform, clock=clock)


def _serving(platform: FakePlatform, deployment: str = "blue") -> None:
    champion = make_champion(platform)
    platform.begin_create_endpoint(EP)
    platform.begin_create_deployment(EP, deployment, model=champion.ref, instance_type="Standard_DS3_v2",
                                     instance_count=1)
    platform.set_traffic(EP, {deployment: 100})


def _published(deps: Any) -> list[Any]:
    return [e for e in deps.publisher.sent if e.type == "Reflex.HealthCheckFailed"]


def test_healthy_platform_reports_nothing(fake_platform: FakePlatform, clock: Clock) -> None:
    _serving(fake_platform)
    deps = _deps(fake_platform, clock)
    outcome = health.check(deps)
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
        health.check(deps)
        clock.advance(300)
    (first,) = _published(deps)
    assert first.data["kind"] == "traffic" and "blue: receives 100% but its state is Failed" in first.data["summary"]
    assert first.data["evidence"]["deployments"] == {"blue": "Failed"}
    # a different broken state (traffic no longer sums to 100) is a new finding, again once
    fake_platform.endpoints[EP].traffic = {"blue": 60}
    for _ in range(3):
        health.check(deps)
    assert len(_published(deps)) == 2
    assert "live traffic sums to 60" in _published(deps)[1].data["summary"]


def test_overdue_rollout_reported_once_and_remediated_when_enabled(fake_platform: FakePlatform,
                                                                    clock: Clock) -> None:
    state = MemoryStateStore()
    record = {"endpoint": EP, "model": "reflex-model", "version": "2", "status": "baking", "phase": 1,
              "started_at": clock() - 20_000, "deadline": clock() - 100}
    state.create(f"rollouts/{EP}", record)
    state.create("rollouts/other-ep", {**record, "endpoint": "other-ep", "status": "done"})
    state.create("rollouts/fresh-ep", {**record, "endpoint": "fresh-ep", "deadline": clock() + 100})
    quiet = _deps(fake_platform, clock, state)
    health.check(quiet)
    assert "remediate" not in state.get(f"rollouts/{EP}").value  # type: ignore[union-attr]
    (finding,) = _published(quiet)
    assert finding.data["kind"] == "rollout-overdue" and finding.data["evidence"]["status"] == "baking"

    state2 = MemoryStateStore()
    state2.create(f"rollouts/{EP}", record)
    deps = _deps(fake_platform, clock, state2, REFLEX_HEALTH_REMEDIATE="true")
    for _ in range(3):
        outcome = health.check(deps)
    assert len(_published(deps)) == 1 and outcome.status == "skipped"
    stored = state2.get(f"rollouts/{EP}").value  # type: ignore[union-attr]
    assert stored["operator_rollback"] is True and stored["remediate"]["action"] == "rollback"
    assert _published(deps)[0].data["remediation"]


def test_rollout_without_deadline_uses_the_setting(fake_platform: FakePlatform, clock: Clock) -> None:
    state = MemoryStateStore()
    state.create(f"rollouts/{EP}", {"endpoint": EP, "status": "creating", "started_at": clock() - 100})
    deps = _deps(fake_platform, clock, state, REFLEX_ROLLOUT_DEADLINE_SECONDS="600")
    health.check(deps)
    assert not _published(deps)
    clock.advance(600)
    health.check(deps)
    assert len(_published(deps)) == 1


def _submitted_job(platform: FakePlatform, state: MemoryStateStore, clock: Clock, name: str) -> None:
    if ("d", "1") not in platform.data:
        platform.register_data(name="d", version="1", path="azureml://datastores/x/paths/d/1/", tags={})
    platform.submit_training(TrainingRequest(job_name=name, experiment_name="reflex", data_name="d",
                                             data_version="1", mode="command", task="classification",
                                             label_column="y", compute="c", environment="azureml:e:1",
                                             tags={REFLEX_TAG: "true"}))
    state.create(f"arrivals/reflex-data/d/{name}", {"status": "submitted", "job": name, "submitted_at": clock()})


def test_failed_job_without_reaction_published_once(fake_platform: FakePlatform, clock: Clock) -> None:
    state = MemoryStateStore()
    deps = _deps(fake_platform, clock, state)
    _submitted_job(fake_platform, state, clock, "job-a")
    _submitted_job(fake_platform, state, clock, "job-b")
    _submitted_job(fake_platform, state, clock, "job-c")
    fake_platform.finish_job("job-a", "Failed", error="bad data")
    fake_platform.finish_job("job-b", "Canceled")
    state.claim("claims/training-failed/job-b")  # the RunStatusChanged reaction handled this one
    # job-c still queued: fine
    for _ in range(3):
        health.check(deps)
    (finding,) = _published(deps)
    assert finding.data["evidence"]["job"] == "job-a" and finding.data["evidence"]["error"] == "bad data"


def test_vanished_job_reported_after_grace(fake_platform: FakePlatform, clock: Clock) -> None:
    state = MemoryStateStore()
    state.create("scoring/reflex-scoring/d/b", {"status": "submitted", "job": "reflex-score-x",
                                                "submitted_at": clock()})
    deps = _deps(fake_platform, clock, state)
    health.check(deps)
    assert not _published(deps)
    clock.advance(health.MISSING_JOB_GRACE_SECONDS + 1)
    health.check(deps)
    (finding,) = _published(deps)
    assert finding.data["evidence"]["status"] == "missing" and finding.data["evidence"]["job_kind"] == "batch-scoring"


def test_finding_id_depends_on_state_not_time() -> None:
    a = health.Finding("traffic", "endpoint/e", "x", {"at": 1}, {"problems": ["p"]})
    b = health.Finding("traffic", "endpoint/e", "y", {"at": 2}, {"problems": ["p"]})
    c = health.Finding("traffic", "endpoint/e", "x", {}, {"problems": ["q"]})
    assert a.id == b.id != c.id
