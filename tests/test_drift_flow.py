"""Drift timer end to end on Azurite: baseline from a generated training batch, shifted scoring data detected
and resampled data not, schema differences named, retraining at most once per window (scheduled included),
empty and unreadable data as findings."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from local.sampledata import generate, to_csv_bytes
from shared.batches.paths import manifest_digest
from shared.core.state import BlobStateStore
from shared.monitoring import drift_check, retrain
from shared.registration import flow as registration
from shared.scoring import flow as scoring
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.timers_support import make_champion, upload

DAY = 86_400


class Env:
    def __init__(self, factory: Callable[[str], Any], state: BlobStateStore, platform: FakePlatform,
                 clock: Clock, **env: str) -> None:
        self.data, self.scoring, self.out = factory("data"), factory("score"), factory("out")
        self.platform, self.clock, self.state = platform, clock, state
        settings = make_settings(REFLEX_DATA_CONTAINER=self.data.container_name,
                                 REFLEX_SCORING_CONTAINER=self.scoring.container_name,
                                 REFLEX_OUTPUT_CONTAINER=self.out.container_name,
                                 REFLEX_LABEL_COLUMN="DEATH_EVENT", REFLEX_DRIFT_MIN_ROWS="100", **env)
        self.deps = make_deps(settings, state=state, platform=platform, clock=clock)

    def train_batch(self, batch: str = "b1", rows: int = 600) -> str:
        """A trained batch: files in the data container, its arrival record, a champion whose job points at it."""
        data = generate(rows, seed=1)
        files = {}
        for i in range(3):
            raw = upload(self.data, f"patients/{batch}/part-{i}.csv", to_csv_bytes(data[i::3]))
            data_ = raw["data"]
            files[f"part-{i}.csv"] = {"url": data_["url"], "etag": data_["eTag"].strip('"'),
                                      "size": data_["contentLength"]}
        key = f"arrivals/{self.data.container_name}/patients/{batch}"
        self.state.create(key, {"container": self.data.container_name, "dataset": "patients", "batch": batch,
                                "status": "trained", "files": files, "rejected": {}, "completed_at": self.clock(),
                                "data": {"name": "patients", "version": batch,
                                         "path": f"azureml://datastores/reflexdata/paths/patients/{batch}/"},
                                "job": f"first-{manifest_digest(files)[:8]}", "history": []})
        make_champion(self.platform, tags={"reflex.batch": key, "reflex.data": f"patients:{batch}"})
        return key

    def score_batch(self, batch: str, files: list[tuple[str, bytes]]) -> None:
        """Scoring data as it arrives: blobs plus marker through the scoring flow (records completed_at)."""
        for name, body in [*files, ("_SUCCESS", b"")]:
            scoring.handle_blob(upload(self.scoring, f"patients/{batch}/{name}", body), self.deps)

    def published(self, kind: str) -> list[Any]:
        return [e for e in self.deps.publisher.sent if e.type == f"Reflex.{kind}"]


@pytest.fixture
def env(container_factory: Callable[[str], Any], blob_state: BlobStateStore, fake_platform: FakePlatform,
        clock: Clock) -> Env:
    return Env(container_factory, blob_state, fake_platform, clock)


def _csv(rows: list[dict[str, Any]]) -> bytes:
    return to_csv_bytes([{k: v for k, v in r.items() if k != "DEATH_EVENT"} for r in rows])


def test_shifted_data_detected_with_per_feature_figures_resampled_not(env: Env) -> None:
    env.train_batch()
    env.score_batch("s1", [("a.csv", _csv(generate(400, seed=99)))])  # same distribution, other sample
    env.clock.advance(60)
    quiet = drift_check.check(env.deps)
    assert quiet.status == "skipped" and quiet.reason.startswith("no drift"), quiet
    assert quiet.details["baseline_built"] is True and not env.published("DriftDetected")
    baseline = env.out.get_blob_client(drift_check.baseline_blob("reflex-model", "1")).download_blob().readall()
    assert "DEATH_EVENT" not in json.loads(baseline)["features"]

    env.clock.advance(60)
    env.score_batch("s2", [("a.csv", _csv(generate(400, seed=7, shift=1.0)))])
    env.clock.advance(60)
    found = drift_check.check(env.deps)
    assert found.status == "acted", found
    (event,) = env.published("DriftDetected")
    assert {"age", "ejection_fraction", "serum_creatinine"} <= set(event.data["drifted"])
    psi = {f["name"]: f["psi"] for f in event.data["features"]}
    assert psi["age"] > 0.25 and psi["sex"] < 0.25
    assert event.data["batches"] == [f"{env.scoring.container_name}/patients/s2"]
    # no new data: nothing re-read, nothing re-published
    assert drift_check.check(env.deps).reason == "no new inference data since the last check"


def test_schema_difference_named(env: Env) -> None:
    env.train_batch()
    rows = [{k: v for k, v in r.items() if k not in ("DEATH_EVENT", "smoking")} | {"bmi": 25}
            for r in generate(300, seed=5)]
    env.score_batch("s1", [("a.csv", to_csv_bytes(rows))])
    env.clock.advance(60)
    outcome = drift_check.check(env.deps)
    assert "missing columns: smoking" in outcome.reason and "new columns: bmi" in outcome.reason
    (event,) = env.published("DriftDetected")
    assert event.data["missing_columns"] == ["smoking"] and event.data["new_columns"] == ["bmi"]


def test_unreadable_and_too_few_rows_are_findings_and_data_is_kept(env: Env) -> None:
    env.train_batch()
    env.score_batch("s1", [("a.csv", _csv(generate(30, seed=3, shift=1.0))),
                           ("b.csv", b"age,sex\n\xff\xfe,1\n")])  # not UTF-8: accepted at arrival, unreadable
    env.clock.advance(60)
    few = drift_check.check(env.deps)
    assert few.status == "skipped" and "fewer than the 100" in few.reason
    assert [u["file"].rsplit("/", 1)[-1] for u in few.details["unreadable"]] == ["b.csv"]
    env.score_batch("s2", [("a.csv", _csv(generate(300, seed=4, shift=1.0)))])
    env.clock.advance(60)
    found = drift_check.check(env.deps)
    assert found.status == "acted" and found.details["report"]["rows"] == 330  # s1 was kept, not lost


def test_kept_data_older_than_the_window_is_no_longer_compared(container_factory: Callable[[str], Any],
                                                               blob_state: BlobStateStore,
                                                               fake_platform: FakePlatform, clock: Clock) -> None:
    env = Env(container_factory, blob_state, fake_platform, clock, REFLEX_DRIFT_WINDOW_SECONDS="3600")
    env.train_batch()
    env.score_batch("s1", [("a.csv", _csv(generate(30, seed=3, shift=1.0)))])
    env.clock.advance(60)
    assert "fewer than the 100" in drift_check.check(env.deps).reason  # s1 kept for the next check...
    env.clock.advance(3600)
    env.score_batch("s2", [("a.csv", _csv(generate(300, seed=4, shift=1.0)))])
    env.clock.advance(60)
    found = drift_check.check(env.deps)
    assert found.status == "acted" and found.details["report"]["rows"] == 300  # ...but only within the window
    assert found.details["batches"] == [f"{env.scoring.container_name}/patients/s2"]


def test_recent_since_is_the_last_check_bounded_by_the_window() -> None:
    assert drift_check.recent_since(None, 10_000.0, 3600) == 6400.0
    assert drift_check.recent_since(9000.0, 10_000.0, 3600) == 9000.0
    assert drift_check.recent_since(1000.0, 10_000.0, 3600) == 6400.0


def test_no_champion_and_no_lineage(env: Env) -> None:
    assert "no champion yet" in drift_check.check(env.deps).reason
    make_champion(env.platform)  # a champion whose job carries no data lineage
    outcome = drift_check.check(env.deps)
    assert outcome.status == "skipped" and "no training batch found through its lineage" in outcome.reason


def test_retrain_at_most_once_per_window_including_schedule(container_factory: Callable[[str], Any],
                                                            blob_state: BlobStateStore, fake_platform: FakePlatform,
                                                            clock: Clock) -> None:
    env = Env(container_factory, blob_state, fake_platform, clock, REFLEX_DRIFT_RETRAIN="true",
              REFLEX_RETRAIN_ENABLED="true")
    clock.now = 1_700_006_400.0  # 00:00 UTC plus a little: plenty of room in the day window
    batch_key = env.train_batch()
    env.score_batch("s1", [("a.csv", _csv(generate(300, seed=8, shift=1.0)))])
    clock.advance(60)
    first = drift_check.check(env.deps)
    assert first.details["retrain"]["status"] == "acted"
    clock.advance(60)
    env.score_batch("s2", [("a.csv", _csv(generate(300, seed=9, shift=1.0)))])
    clock.advance(60)
    again = drift_check.check(env.deps)
    assert again.details["retrain"]["status"] == "duplicate" and not again.details["published"]
    assert retrain_jobs(fake_platform) == 1
    assert retrain.scheduled_retrain(env.deps).status == "duplicate"  # same window: no second job
    (job,) = [j for j in fake_platform.jobs.values() if j.tags.get("reflex.trigger", "").startswith("drift:")]
    assert job.tags["reflex.batch"] == batch_key and job.name.startswith("reflex-train-")
    assert len(env.published("DriftDetected")) == 1
    # the retraining's run completes: its record closes (health stops polling the job), the batch's stays
    fake_platform.finish_job(job.name, metrics={"auc": 0.5})
    registration.handle_run_event(fake_platform.events[-1], env.deps)
    (record,) = blob_state.records("retrains/")
    assert record.value["status"] == "trained" and record.value["job"] == job.name
    clock.advance(DAY)  # next window: the schedule retrains (a new job name), drift would be a duplicate
    assert retrain.scheduled_retrain(env.deps).status == "acted"
    assert retrain_jobs(fake_platform) == 2


def retrain_jobs(platform: FakePlatform) -> int:
    return sum(1 for j in platform.jobs.values() if j.tags.get("reflex.trigger", "").startswith(("drift:", "sched")))


def test_scheduled_retrain_disabled_and_waiting_for_a_slot(container_factory: Callable[[str], Any],
                                                           blob_state: BlobStateStore, fake_platform: FakePlatform,
                                                           clock: Clock) -> None:
    off = Env(container_factory, blob_state, fake_platform, clock)
    assert off.deps and retrain.scheduled_retrain(off.deps).reason.endswith("(REFLEX_RETRAIN_ENABLED=false)")
    env = Env(container_factory, blob_state, fake_platform, clock, REFLEX_RETRAIN_ENABLED="true",
              REFLEX_MAX_CONCURRENT_TRAINING="1")
    env.train_batch()
    blob_state.create("training/admission", {"running": {"busy": {"batch": "x", "at": clock()}},
                                             "day": "", "started_today": 0})
    waiting = retrain.scheduled_retrain(env.deps)
    assert waiting.details.get("waiting") and retrain_jobs(fake_platform) == 0
    blob_state.update("training/admission", lambda v: {**(v or {}), "running": {}})
    retrain.scheduled_retrain(env.deps)  # resumes the window's waiting retraining, does not add one
    assert retrain_jobs(fake_platform) == 1
    assert len(blob_state.keys("retrains/")) == 1


def test_window_ids() -> None:
    assert retrain.window_id(1_700_000_000) == retrain.window_id(1_700_000_000 - 1_700_000_000 % DAY)
    assert retrain.window_id(1_700_000_000) != retrain.window_id(1_700_000_000 + DAY)
