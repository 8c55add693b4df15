"""The demo's verdicts: a step passes only when its goal is met; a rollback where a promotion was expected fails
the step and the demo exits non-zero (it once said "ok" and exited 0 after `RolloutRolledBack`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from local.demo import Demo, StepMissed, Steps, StepSkipped, rollout_outcome
from tests.conftest import make_settings

MODEL = "heart-failure"


def _event(kind: str, version: str, **data: Any) -> dict[str, Any]:
    """A `Reflex.Rollout*` event as shared/rollout/flow.py publishes it."""
    return {"id": f"{kind}-{version}-{len(data)}", "eventType": f"Reflex.{kind}",
            "subject": f"endpoints/heart-failure-ep/rollouts/{MODEL}:{version}",
            "data": {"endpoint": "heart-failure-ep", "model": MODEL, "version": version, **data}}


# the second model's rollout as the issue saw it, after the first model's promotion
ROLLED_BACK = [
    _event("RolloutStarted", "1"), _event("RolloutPromoted", "1", champion=f"{MODEL}:1"),
    _event("RolloutCompleted", "1", reason="old deployment retired"),
    _event("RolloutStarted", "2"), _event("RolloutStepCompleted", "2", step="smoke"),
    _event("RolloutStepCompleted", "2", step="traffic-10", traffic={"v1": 90, "v2": 10}),
    _event("RolloutStepCompleted", "2", step="traffic-50", traffic={"v1": 50, "v2": 50}),
    _event("RolloutRolledBack", "2", reason="at 50%: latency 1034 ms > 1000 ms", traffic={"v1": 100}),
]


def test_rollout_outcome_reads_the_end_of_that_version_only() -> None:
    assert rollout_outcome(ROLLED_BACK, MODEL, "1") == (True, "RolloutPromoted")
    assert rollout_outcome(ROLLED_BACK, MODEL, "2") == (False,
                                                        "RolloutRolledBack (at 50%: latency 1034 ms > 1000 ms)")
    assert rollout_outcome(ROLLED_BACK[:-1], MODEL, "2") is None          # still running
    assert rollout_outcome(ROLLED_BACK, "other-model", "2") is None
    failed = [_event("RolloutFailed", "3", reason="smoke test: HTTP 500")]
    assert rollout_outcome(failed, MODEL, "3") == (False, "RolloutFailed (smoke test: HTTP 500)")


class _Feed:
    """The local topic's events, in order (what EventFeed.wait scans)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def wait(self, predicate: Any, *, timeout: float, what: str, show: Any) -> dict[str, Any]:
        for event in self.events:
            if predicate(event):
                return event
        raise TimeoutError(f"no {what} within {timeout:.0f}s")


def _demo(events: list[dict[str, Any]]) -> Demo:
    """The real Demo's rollout step over recorded events (no storage: it only reads the feed and traffic)."""
    demo = Demo.__new__(Demo)
    demo.settings = make_settings(REFLEX_MODEL_NAME=MODEL, REFLEX_ENDPOINTS=f"{MODEL}=heart-failure-ep")
    demo.deps = SimpleNamespace(platform=SimpleNamespace(get_endpoint=lambda name: None))  # nothing serves yet
    demo.feed, demo.timeout, demo.steps = _Feed(events), 5.0, Steps()
    demo.facts = {"model:b2": f"{MODEL}:2", "model:b1": f"{MODEL}:1"}
    return demo


def test_a_rollback_where_promotion_was_expected_fails_the_step_and_the_demo() -> None:
    demo = _demo(ROLLED_BACK)
    step = demo.steps.run("11. canary, bake, promote", lambda: demo.rollout("b2"))
    assert step.status == "FAILED"
    assert "RolloutRolledBack" in step.detail and "latency 1034 ms" in step.detail and "not promoted" in step.detail
    assert demo.steps.exit_code() == 1


def test_a_promotion_passes() -> None:
    demo = _demo(ROLLED_BACK)
    step = demo.steps.run("5. safe rollout", lambda: demo.rollout("b1"))
    assert (step.status, demo.steps.exit_code()) == ("ok", 0)
    assert step.detail.startswith("RolloutPromoted")


def test_a_timeout_fails_the_step() -> None:
    demo = _demo(ROLLED_BACK[:-1])                                          # the rollout never ends
    step = demo.steps.run("11. canary, bake, promote", lambda: demo.rollout("b2"))
    assert step.status == "FAILED" and "TimeoutError" in step.detail and demo.steps.exit_code() == 1


def test_no_challenger_is_a_skip_not_a_pass_or_a_failure() -> None:
    demo = _demo([])
    demo.facts["model:b2"] = ""
    demo.facts["skipped:b2"] = "the gate did not register the challenger {\"metric\": \"auc\"}"
    step = demo.steps.run("11. canary, bake, promote", lambda: demo.rollout("b2"))
    assert step.status == "skipped" and "did not register" in step.detail and demo.steps.exit_code() == 0


def test_steps_stop_counting_as_ok_after_a_miss() -> None:
    steps = Steps(clock=iter(range(100)).__next__)
    assert steps.run("a", lambda: "done").status == "ok"

    def missed() -> str:
        raise StepMissed("job j ended Failed: train.py: error: label column 'DEATH_EVENT' not found")

    def skipped() -> str:
        raise StepSkipped("nothing to do")

    assert steps.run("b", skipped).status == "skipped"
    assert steps.run("c", missed).status == "FAILED"
    assert steps.failed is not None and steps.failed.name == "c" and steps.exit_code() == 1
    assert "FAILED" in steps.summary() and "label column" in steps.summary()


def test_training_progress_shows_the_jobs_last_log_message(tmp_path: Any, monkeypatch: Any) -> None:
    from local.demo import last_log_line
    from shared.core.state import key_part

    monkeypatch.setenv("REFLEX_LOCAL_RUN_DIR", str(tmp_path))
    assert last_log_line("reflex-train-1") == ""                           # no log yet
    folder = tmp_path / "jobs" / key_part("reflex-train-1")
    folder.mkdir(parents=True)
    (folder / "user_logs.txt").write_text("2026-12-01 10:34:33,736 INFO train: read 300 rows\n"
                                          "2026/12/01 10:35:46 INFO train: fitting\n\n")
    assert last_log_line("reflex-train-1") == "INFO train: fitting"
