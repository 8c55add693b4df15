"""The fair gate on the fake platform: champion and challenger compared on the same rows, in command and AutoML
modes, with an evaluation job where the training job could not score the champion; and models registered
outside Reflex, evaluated before rollout unless trusted, never blocking the next challenger."""

from __future__ import annotations

from typing import Any

import pytest

from functions import rollout as _rollout_handlers  # noqa: F401 - registers the rollout reactions
from shared.core import reaction
from shared.core.deps import Deps
from shared.core.platform import CHAMPION_TAG, REFLEX_TAG
from shared.core.state import StateStore
from shared.registration.flow import job_key
from shared.registration.outside_models import EVALUATION_TAG, READY_PREFIX, record_key
from shared.rollout.flow import PREFIX
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.test_registration_flow import champion, deliver3, submit


def sent(deps: Deps) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, dict(e.data)) for e in deps.publisher.sent]


@pytest.fixture
def deps(blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> Deps:
    return make_deps(make_settings(), state=blob_state, platform=fake_platform, clock=clock)


def finish_evaluation(fake: FakePlatform, metrics: dict[str, float]) -> str:
    [name] = [n for n in fake.evaluation_requests if fake.jobs[n].status == "Queued"]
    fake.finish_job(name, metrics=metrics)
    return name


def test_a_model_trained_on_fewer_rows_no_longer_wins_by_being_scored_on_other_rows(
        deps: Deps, fake_platform: FakePlatform) -> None:
    """The issue's numbers: the champion (304 training rows) logged auc 0.972 on its own 61-row holdout; the
    challenger (96 rows) 0.992 on its own 24. The training job scored the champion on the challenger's 24 rows
    too: 0.995. Compared on the same rows, the challenger loses; the record and the event say which rows."""
    champion(fake_platform, 0.972)
    job = submit(fake_platform, "reflex-train-small", scored="reflex-model:1")
    fake_platform.finish_job(job, metrics={"auc": 0.992, "n_train": 96, "n_test": 24, "champion.auc": 0.995,
                                           "champion.failed": 0})
    outcome = deliver3(fake_platform, deps)[0]
    assert outcome.status == "skipped"
    assert outcome.reason == ("auc 0.992 does not beat the champion 0.995 (max, margin 0) on 24 rows of holdout "
                              "ds:b1")
    record = deps.state.get(job_key(job)).value  # type: ignore[union-attr]
    assert record["status"] == "skipped"
    assert (record["decision"]["challenger"], record["decision"]["champion"]) == (0.992, 0.995)
    assert record["decision"]["rows"] == {"source": "holdout", "data": "ds:b1", "count": 24, "job": job, "note": ""}
    [(kind, data)] = sent(deps)
    assert kind == "Reflex.ModelRegistrationSkipped" and data["decision"]["rows"]["count"] == 24
    assert ("reflex-model", "2") not in fake_platform.models


def test_a_champion_crowned_while_the_challenger_trained_is_scored_by_an_evaluation_job(
        deps: Deps, fake_platform: FakePlatform) -> None:
    champion(fake_platform, 0.9, version="1")
    job = submit(fake_platform, "reflex-train-late", scored="none")  # no champion when it was submitted
    fake_platform.finish_job(job, metrics={"auc": 0.93, "n_test": 30})
    outcomes = deliver3(fake_platform, deps)
    assert [o.status for o in outcomes] == ["acted", "duplicate", "duplicate"]
    assert "evaluating reflex-train-late against the champion reflex-model:1 on the same rows" in outcomes[0].reason
    [name] = fake_platform.evaluation_requests
    request = fake_platform.evaluation_requests[name]
    assert request.models == {"challenger": f"azureml://jobs/{job}/outputs/model",
                              "champion": "azureml:reflex-model:1"}
    assert (request.data_name, request.data_version, request.holdout) == ("ds", "b1", True)
    assert deps.state.get(job_key(job)).value["status"] == "evaluating"  # type: ignore[union-attr]
    assert not fake_platform.calls["register_model"] - 1  # only the champion's

    finish_evaluation(fake_platform, {"challenger.auc": 0.93, "challenger.failed": 0, "champion.auc": 0.95,
                                      "champion.failed": 0, "eval.rows": 30})
    outcomes = deliver3(fake_platform, deps)
    assert [o.status for o in outcomes] == ["skipped", "duplicate", "duplicate"]
    assert outcomes[0].reason == ("auc 0.93 does not beat the champion 0.95 (max, margin 0) on 30 rows of batch "
                                  "holdout ds:b1")
    record = deps.state.get(job_key(job)).value  # type: ignore[union-attr]
    assert record["decision"]["rows"]["job"] == name and record["decision"]["champion_version"] == "1"
    assert [t for t, _ in sent(deps)] == ["Reflex.ModelRegistrationSkipped"]
    # a late redelivery after another champion was crowned: decided already, no second evaluation
    fake_platform.update_model_tags("reflex-model", "1", remove=(CHAMPION_TAG,))
    late = reaction.run("registration.run_event", fake_platform.events[-1], deps=deps)
    assert late.status == "duplicate" and len(fake_platform.evaluation_requests) == 1


def test_automl_is_evaluated_by_our_script_and_registered_from_best_model(
        blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = make_deps(make_settings(REFLEX_TRAINING_MODE="automl"), state=blob_state, platform=fake_platform,
                     clock=clock)
    champion(fake_platform, 0.7, version="1")
    job = submit(fake_platform, "reflex-automl-1", mode="automl")
    fake_platform.finish_job(job, metrics={"AUC_weighted": 0.99},
                             outputs={"best_model": f"azureml://jobs/{job}/outputs/best_model"})
    assert deliver3(fake_platform, deps)[0].status == "acted"
    [name] = fake_platform.evaluation_requests
    assert fake_platform.evaluation_requests[name].models["challenger"] == f"azureml://jobs/{job}/outputs/best_model"
    assert fake_platform.jobs[name].tags["reflex.eval.note"].startswith("in-sample for the challenger")
    finish_evaluation(fake_platform, {"challenger.auc": 0.88, "challenger.failed": 0, "champion.auc": 0.8,
                                      "champion.failed": 0, "eval.rows": 20})
    outcome = deliver3(fake_platform, deps)[0]
    assert outcome.status == "acted" and "auc 0.88 beats the champion 0.8" in outcome.reason
    assert "in-sample for the challenger" in outcome.reason
    model = fake_platform.models[("reflex-model", "2")]
    # the documented job-output URI of AutoML's output (shared.core.platform.job_output_uri)
    assert model.path == f"azureml://jobs/{job}/outputs/best_model/paths/" and model.job_name == job
    assert set(fake_platform.jobs[job].outputs) == {"best_model"}  # what the service reports for AutoML


def test_a_fixed_evaluation_set_scores_both_models_on_its_rows(
        blob_state: StateStore, fake_platform: FakePlatform, clock: Clock) -> None:
    deps = make_deps(make_settings(REFLEX_EVAL_DATA="heart/_eval"), state=blob_state, platform=fake_platform,
                     clock=clock)
    champion(fake_platform, 0.9)
    job = submit(fake_platform, "reflex-train-eval")
    fake_platform.finish_job(job, metrics={"auc": 0.99})
    deliver3(fake_platform, deps)
    [request] = fake_platform.evaluation_requests.values()
    asset = fake_platform.data[(request.data_name, request.data_version)]
    assert asset.path == "azureml://datastores/reflexdata/paths/heart/_eval/" and not request.holdout
    finish_evaluation(fake_platform, {"challenger.auc": 0.91, "challenger.failed": 0, "champion.auc": 0.9,
                                      "champion.failed": 0, "eval.rows": 200})
    outcome = deliver3(fake_platform, deps)[0]
    assert outcome.status == "acted" and "on 200 rows of evaluation set heart-eval:" in outcome.reason


def test_a_failed_evaluation_skips_the_challenger_with_the_reason(deps: Deps, fake_platform: FakePlatform) -> None:
    champion(fake_platform, 0.9)
    job = submit(fake_platform, "reflex-train-x", scored="none")
    fake_platform.finish_job(job, metrics={"auc": 0.95})
    deliver3(fake_platform, deps)
    [name] = fake_platform.evaluation_requests
    fake_platform.finish_job(name, "Failed", error="compute lost")
    outcome = deliver3(fake_platform, deps)[0]
    assert outcome.status == "skipped" and f"evaluation job {name} failed: compute lost" in outcome.reason
    assert [t for t, _ in sent(deps)] == ["Reflex.ModelRegistrationSkipped"]  # no TrainingFailed


# ------------------------------------------------------------------------------------------ outside models


def notebook_model(fake: FakePlatform, version: str, *, tags: dict[str, str] | None = None) -> None:
    """A person logs a model from a notebook under the served name: no Reflex tags, no reflex.metric.*."""
    job = f"notebook-run-{version}"
    fake.register_data(name="nb", version="1", path="azureml://datastores/other/paths/nb/", tags={})
    submit(fake, job, reflex=False)
    fake.finish_job(job, metrics={"my_score": 1.0})
    fake.register_model(name="reflex-model", version=version, job_name=job, tags=dict(tags or {}))


def on_registered(fake: FakePlatform, deps: Deps, version: str) -> reaction.Outcome:
    event = next(e for e in reversed(fake.events) if e["eventType"].endswith("ModelRegistered")
                 and e["data"]["modelVersion"] == version)
    return reaction.run("rollout.model_registered", event, event_id=event["id"], deps=deps)


def test_a_notebook_model_is_evaluated_before_rollout_and_rolls_out_only_if_it_wins(
        deps: Deps, fake_platform: FakePlatform) -> None:
    champion(fake_platform, 0.9, version="1")
    notebook_model(fake_platform, "2")
    outcome = on_registered(fake_platform, deps, "2")
    assert outcome.status == "acted" and "registered outside Reflex: evaluating it against the champion" in \
        outcome.reason
    assert not list(deps.state.records(PREFIX))  # nothing rolls out before the verdict
    assert fake_platform.models[("reflex-model", "2")].tags[EVALUATION_TAG] == "pending"
    assert on_registered(fake_platform, deps, "2").status == "duplicate"
    [name] = fake_platform.evaluation_requests
    assert fake_platform.evaluation_requests[name].models == {"challenger": "azureml:reflex-model:2",
                                                               "champion": "azureml:reflex-model:1"}
    finish_evaluation(fake_platform, {"challenger.auc": 0.85, "challenger.failed": 0, "champion.auc": 0.9,
                                      "champion.failed": 0, "eval.rows": 30})
    event = fake_platform.events[-1]
    outcome = reaction.run("registration.run_event", event, event_id=event["id"], deps=deps)
    assert outcome.status == "acted" and "failed: not rolled out" in outcome.reason
    assert fake_platform.models[("reflex-model", "2")].tags[EVALUATION_TAG] == "failed"
    assert deps.state.get(record_key("reflex-model", "2")).value["status"] == "failed"  # type: ignore[union-attr]
    assert not list(deps.state.records(READY_PREFIX))
    again = on_registered(fake_platform, deps, "2")
    assert again.status == "skipped" and "did not pass its evaluation" in again.reason


def test_a_winning_notebook_model_is_rolled_out_by_the_reconciler(deps: Deps, fake_platform: FakePlatform) -> None:
    champion(fake_platform, 0.9, version="1")
    notebook_model(fake_platform, "2")
    on_registered(fake_platform, deps, "2")
    finish_evaluation(fake_platform, {"challenger.auc": 0.97, "challenger.failed": 0, "champion.auc": 0.9,
                                      "champion.failed": 0, "eval.rows": 30})
    event = fake_platform.events[-1]
    assert "passed" in reaction.run("registration.run_event", event, event_id=event["id"], deps=deps).reason
    assert [t for t, _ in sent(deps)] == ["Reflex.ModelEvaluated"]
    assert list(deps.state.records(READY_PREFIX))
    reaction.run("rollout.reconcile", {}, deps=deps)
    [rollout] = list(deps.state.records(PREFIX))
    assert (rollout.value["model"], rollout.value["version"]) == ("reflex-model", "2")
    assert not list(deps.state.records(READY_PREFIX))


def test_a_trusted_notebook_model_rolls_out_without_evaluation(deps: Deps, fake_platform: FakePlatform) -> None:
    champion(fake_platform, 0.9, version="1")
    notebook_model(fake_platform, "2", tags={"reflex.trusted": "true"})
    outcome = on_registered(fake_platform, deps, "2")
    assert outcome.status == "acted" and "rollout of reflex-model:2" in outcome.reason
    assert not fake_platform.evaluation_requests


def test_a_notebook_champion_without_reflex_metrics_does_not_block_the_next_challenger(
        deps: Deps, fake_platform: FakePlatform) -> None:
    notebook_model(fake_platform, "1", tags={CHAMPION_TAG: "true"})  # was "has no 'auc'": refused forever
    assert REFLEX_TAG not in fake_platform.models[("reflex-model", "1")].tags
    job = submit(fake_platform, "reflex-train-next", scored="reflex-model:1")
    fake_platform.finish_job(job, metrics={"auc": 0.93, "n_test": 40, "champion.auc": 0.88, "champion.failed": 0})
    outcome = deliver3(fake_platform, deps)[0]
    assert outcome.status == "acted" and "auc 0.93 beats the champion 0.88" in outcome.reason
    assert ("reflex-model", "2") in fake_platform.models
