"""Settings are validated once, and every problem names the setting and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import settings as settings_mod
from shared.settings import SettingsError, load

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
    text = (Path(settings_mod.__file__).resolve().parent.parent / "README.md").read_text()
    for f in settings_mod.SPEC:
        assert f"`{f.metadata['env']}`" in table
        assert f"`{f.metadata['env']}`" in text, f"README lacks {f.metadata['env']}"
