"""Settings are validated once, and every problem names the setting and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.core import settings as settings_mod
from shared.core.settings import SettingsError, load

AZURE = {"AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.windows.net",
         "AZUREML_SUBSCRIPTION_ID": "sub", "AZUREML_RESOURCE_GROUP": "rg", "AZUREML_WORKSPACE": "ws"}


def test_azure_defaults() -> None:
    s = load(AZURE)
    assert s.platform == "azureml" and s.workspace == "ws"
    assert s.storage_blob_uri == "https://acct.blob.core.windows.net" and s.storage_connection == ""
    assert s.rollout_steps == (10, 50, 100) and s.endpoint_for("reflex-model") == "reflex-endpoint"
    assert s.endpoint_for("other") is None
    assert s.completion_marker == "_SUCCESS"


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        load({"REFLEX_ROLLOUT_STEPS": "50,10", "REFLEX_MAX_ERROR_RATE": "2", "REFLEX_BAKE_SECONDS": "soon"})
    names = {name for name, _ in info.value.problems}
    assert names == {"AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE",
                     "REFLEX_ROLLOUT_STEPS", "REFLEX_MAX_ERROR_RATE", "REFLEX_BAKE_SECONDS", "AzureWebJobsStorage"}
    text = str(info.value)
    assert "REFLEX_BAKE_SECONDS: expected a whole number" in text
    assert "ending with 100" in text


@pytest.mark.parametrize("name, value, expected", [
    ("REFLEX_TRAINING_ENVIRONMENT", "azureml:train@latest", "pinned"),
    ("REFLEX_TRAINING_ENVIRONMENT", "train", "azureml:<name>:<version>"),
    ("REFLEX_DATA_CONTAINER", "Bad_Name", "blob container name"),
    ("REFLEX_ENDPOINTS", "reflex-model", "model=endpoint"),
    ("REFLEX_ENDPOINTS", "m=1endpoint", "endpoint name"),
    ("REFLEX_RECONCILE_SCHEDULE", "*/5 * * * *", "six-field"),
    ("REFLEX_PLATFORM", "sagemaker", "one of azureml, local"),
    ("REFLEX_SMOKE_REQUEST", "[1]", "JSON object"),
    ("REFLEX_PAUSED", "maybe", "true or false"),
    ("REFLEX_EVENTGRID_TOPIC_ENDPOINT", "topic.example", "http(s) URL"),
])
def test_malformed_values(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load({**AZURE, name: value})
    assert [n for n, _ in info.value.problems] == [name]
    assert expected in info.value.problems[0][1]


def test_local_platform_needs_tracking_uri_not_workspace() -> None:
    with pytest.raises(SettingsError) as info:
        load({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "REFLEX_PLATFORM": "local"})
    assert [n for n, _ in info.value.problems] == ["MLFLOW_TRACKING_URI"]
    s = load({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "REFLEX_PLATFORM": "local",
              "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert s.workspace == "" and s.storage_connection == "UseDevelopmentStorage=true"


def test_explicit_empty_marker_means_quiet_window() -> None:
    assert load({**AZURE, "REFLEX_COMPLETION_MARKER": ""}).completion_marker == ""


def test_mirror_needs_a_duration() -> None:
    with pytest.raises(SettingsError, match="REFLEX_MIRROR_SECONDS"):
        load({**AZURE, "REFLEX_MIRROR_PERCENT": "10"})


def test_settings_are_read_only() -> None:
    s = load(AZURE)
    with pytest.raises(AttributeError):
        s.bake_seconds = 1  # type: ignore[misc]


def test_readme_table_lists_every_setting() -> None:
    table = settings_mod.markdown_table()
    text = (Path(settings_mod.__file__).resolve().parents[2] / "README.md").read_text()
    for f in settings_mod.SPEC:
        assert f"`{f.metadata['env']}`" in table
        assert f"`{f.metadata['env']}`" in text, f"README lacks {f.metadata['env']}"


# ------------------------------------------------------------------ cross-checks (shared/core/settings_checks.py)
LOCAL = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "REFLEX_PLATFORM": "local",
         "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}


def _problems(**env: str) -> dict[str, str]:
    try:
        load({**LOCAL, **env})
    except SettingsError as exc:
        return dict(exc.problems)
    return {}


def test_gate_metric_of_the_other_task_is_refused_naming_both_settings_and_what_fits() -> None:
    problems = _problems(REFLEX_TASK="regression")          # the default gate metric is auc
    assert list(problems) == ["REFLEX_GATE_METRIC"]
    assert "'auc'" in problems["REFLEX_GATE_METRIC"] and "REFLEX_TASK=regression" in problems["REFLEX_GATE_METRIC"]
    assert "rmse, r2" in problems["REFLEX_GATE_METRIC"]
    assert _problems(REFLEX_TASK="regression", REFLEX_GATE_METRIC="r2") == {}
    assert "auc, accuracy" in _problems(REFLEX_GATE_METRIC="rmse", REFLEX_GATE_DIRECTION="min")["REFLEX_GATE_METRIC"]


def test_command_mode_refuses_a_metric_the_training_job_never_logs() -> None:
    assert "REFLEX_GATE_METRIC" in _problems(REFLEX_GATE_METRIC="AUC")      # names are exact, as the gate reads them


def test_gate_direction_must_fit_a_known_metric() -> None:
    problems = _problems(REFLEX_TASK="regression", REFLEX_GATE_METRIC="rmse")   # direction defaults to max
    assert list(problems) == ["REFLEX_GATE_DIRECTION"]
    assert "lower" in problems["REFLEX_GATE_DIRECTION"] and "expected min" in problems["REFLEX_GATE_DIRECTION"]
    assert _problems(REFLEX_TASK="regression", REFLEX_GATE_METRIC="rmse", REFLEX_GATE_DIRECTION="min") == {}


def test_automl_mode_refuses_other_task_metrics_only() -> None:
    automl = {"REFLEX_TRAINING_MODE": "automl", "REFLEX_TASK": "regression",
              "REFLEX_AUTOML_PRIMARY_METRIC": "r2_score"}
    assert list(_problems(**automl, REFLEX_GATE_METRIC="AUC_weighted")) == ["REFLEX_GATE_METRIC"]
    assert _problems(**automl, REFLEX_GATE_METRIC="spearman_correlation") == {}
    assert _problems(**automl, REFLEX_GATE_METRIC="explained_variance") == {}  # AutoML logs more than we list


def test_automl_primary_metric_must_belong_to_the_task() -> None:
    problems = _problems(REFLEX_TRAINING_MODE="automl", REFLEX_TASK="regression", REFLEX_GATE_METRIC="r2")
    assert list(problems) == ["REFLEX_AUTOML_PRIMARY_METRIC"]         # the default AUC_weighted is classification's
    assert "normalized_root_mean_squared_error" in problems["REFLEX_AUTOML_PRIMARY_METRIC"]
    assert _problems(REFLEX_TRAINING_MODE="automl", REFLEX_TASK="regression", REFLEX_GATE_METRIC="r2",
                     REFLEX_AUTOML_PRIMARY_METRIC="R2Score") == {}
    # command mode submits no AutoML job: the primary metric is not looked at
    assert _problems(REFLEX_TASK="regression", REFLEX_GATE_METRIC="r2") == {}


@pytest.mark.parametrize("value", ["AUC_weighted", "AUCWeighted", "accuracy", "Accuracy", "r2_score", "R2Score",
                                   "NormalizedRootMeanSquaredError", "normalized_mean_absolute_error",
                                   "AUC_Weighted", "auc", "spearmanCorrelation"])
def test_primary_metric_lookup_is_the_sdks(value: str) -> None:
    """The same answer as azure-ai-ml's ClassificationJob/RegressionJob.primary_metric setter."""
    from azure.ai.ml._utils.utils import camel_to_snake
    from azure.ai.ml.automl import ClassificationPrimaryMetrics, RegressionPrimaryMetrics

    from shared.core.settings_checks import AUTOML_PRIMARY_METRICS, automl_metric_key

    assert automl_metric_key(value) == camel_to_snake(value).upper()
    for task, enum in (("classification", ClassificationPrimaryMetrics), ("regression", RegressionPrimaryMetrics)):
        ours = {automl_metric_key(n) for n in AUTOML_PRIMARY_METRICS[task]}
        assert ours == set(enum.__members__)


@pytest.mark.parametrize("body, ok", [
    ('{"data": [{"age": 70}]}', True),
    ('{"input_data": {"columns": ["a"], "data": [[1]]}}', True),
    ('{"dataframe_split": {"columns": ["a"], "data": [[1]]}}', True),
    ('{"dataframe_records": [{"a": 1}]}', True),
    ('{"instances": [[1]]}', True),
    ('{"inputs": [[1]]}', True),
    ("", True),                                   # empty: a row of the training data is sent
    ('{"rows": [{"a": 1}]}', False),
    ('{"data": []}', False),
    ('{"data": {"a": 1}}', False),
])
def test_smoke_request_shape(body: str, ok: bool) -> None:
    problems = _problems(REFLEX_SMOKE_REQUEST=body)
    assert (problems == {}) is ok
    if not ok:
        assert list(problems) == ["REFLEX_SMOKE_REQUEST"] and "dataframe_split" in problems["REFLEX_SMOKE_REQUEST"]


@pytest.mark.parametrize("schedule, ok", [
    ("0 30 9 * Jan Mon", True),          # the timer trigger docs' example
    ("*/15 * * * * *", True),
    ("0 0 24 * * *", False),             # six fields, but no hour 24: the local host could not run it
    ("0 */0 * * * *", False),
    ("0 */5 * * *", False),
])
def test_schedules_are_parsed_by_the_hosts_parser(schedule: str, ok: bool) -> None:
    from shared.core.ncrontab import parse

    problems = _problems(REFLEX_HEALTH_SCHEDULE=schedule)
    assert (problems == {}) is ok
    if not ok:
        with pytest.raises(ValueError) as parsed:
            parse(schedule)
        assert str(parsed.value) in problems["REFLEX_HEALTH_SCHEDULE"]    # the host's own words


def test_every_cross_check_problem_is_reported_at_once() -> None:
    problems = _problems(REFLEX_TASK="regression", REFLEX_SMOKE_REQUEST='{"rows": []}', REFLEX_BAKE_SECONDS="x")
    assert set(problems) == {"REFLEX_GATE_METRIC", "REFLEX_SMOKE_REQUEST", "REFLEX_BAKE_SECONDS"}
