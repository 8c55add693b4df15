"""Where a champion's drift baseline comes from: its training data where lineage exists, else the first window of
scoring data (a model registered from a notebook); every check and the `drift/<model>` record say which."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from local.sampledata import generate
from shared.core.state import BlobStateStore
from shared.monitoring import drift_check
from testing.fake_platform import FakePlatform
from tests.conftest import Clock
from tests.test_drift_flow import Env, _csv
from tests.timers_support import make_champion


def _record(env: Env) -> dict[str, Any]:
    found = env.state.get("drift/reflex-model")
    assert found is not None
    return found.value


def test_a_champion_with_lineage_has_a_training_data_baseline(container_factory: Callable[[str], Any],
                                                              blob_state: BlobStateStore,
                                                              fake_platform: FakePlatform, clock: Clock) -> None:
    env = Env(container_factory, blob_state, fake_platform, clock)
    env.train_batch()
    env.score_batch("s1", [("a.csv", _csv(generate(200, seed=9)))])
    env.clock.advance(60)
    outcome = drift_check.check(env.deps)
    assert outcome.details["baseline_source"] == "training data"
    assert "3 files of patients/b1" in outcome.details["baseline_detail"]
    assert _record(env)["baseline"] == {"model": "reflex-model:1", "source": "training data",
                                        "detail": outcome.details["baseline_detail"]}


def test_a_notebook_champion_gets_its_baseline_from_the_first_scoring_window(
        container_factory: Callable[[str], Any], blob_state: BlobStateStore, fake_platform: FakePlatform,
        clock: Clock) -> None:
    env = Env(container_factory, blob_state, fake_platform, clock)
    make_champion(fake_platform)  # no reflex.batch, no reflex.data: it was "no baseline" and drift stopped
    env.score_batch("s1", [("a.csv", _csv(generate(60, seed=1)))])
    env.clock.advance(60)
    few = drift_check.check(env.deps)
    assert few.status == "skipped" and "has no training lineage" in few.reason
    assert "60 of 100 rows so far" in few.reason and few.details["baseline_source"] == "first scoring window"
    env.score_batch("s2", [("a.csv", _csv(generate(90, seed=2)))])
    env.clock.advance(60)
    built = drift_check.check(env.deps)
    assert built.status == "skipped" and "built from 150 rows" in built.reason  # s1 was kept
    assert _record(env)["baseline"]["source"] == "first scoring window"
    assert "150 rows of 2 scoring batch(es)" in _record(env)["baseline"]["detail"]
    # later windows are compared with it: a shift is found, and the check says where its baseline came from
    env.clock.advance(60)
    env.score_batch("s3", [("a.csv", _csv(generate(300, seed=7, shift=1.0)))])
    env.clock.advance(60)
    found = drift_check.check(env.deps)
    assert found.status == "acted", found
    assert found.details["baseline_source"] == "first scoring window" and found.details["report"]["rows"] == 300
    assert env.published("DriftDetected")
