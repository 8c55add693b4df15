"""Indexing a v2 app as the worker does: one get_functions() call, %SETTING% resolution, local.settings."""

from __future__ import annotations

import json
import types
from pathlib import Path

import azure.functions as func
import pytest

from local.host.index import (
    SettingError,
    build_index,
    find_app,
    functions_of,
    load_app,
    load_local_settings,
    resolve_settings,
)

HOSTAPP = Path(__file__).parent / "hostapp"
ENV = {"TEST_CONTAINER": "uploads", "TEST_SCHEDULE": "0 */5 * * * *", "AzureWebJobsStorage": "x"}


@pytest.fixture(scope="module")
def app() -> func.FunctionApp:
    return load_app("function_app_fixture", HOSTAPP)[1]


def test_index_has_each_trigger_with_resolved_settings(app: func.FunctionApp) -> None:
    index = build_index(app, ENV)
    assert {name: (e.trigger_type, e.arg_name) for name, e in index.items()} == {
        "on_event": ("eventGridTrigger", "event"),
        "on_blob": ("eventGridTrigger", "event"),
        "on_timer": ("timerTrigger", "timer"),
    }
    assert index["on_blob"].settings == {}
    assert index["on_timer"].settings["schedule"] == "0 */5 * * * *"
    assert index["on_blob"].function_id == "Host.Functions.on_blob"
    assert callable(index["on_event"].func)


def test_get_functions_is_called_once_per_app(app: func.FunctionApp) -> None:
    first = functions_of(app)
    # A second direct call raises on the real library; the index keeps working because it caches.
    with pytest.raises(ValueError, match="unique function name"):
        app.get_functions()
    assert functions_of(app) is first
    assert build_index(app, {**ENV, "TEST_SCHEDULE": "0 0 * * * *"})["on_timer"].settings["schedule"] == "0 0 * * * *"


def test_missing_setting_is_named(app: func.FunctionApp) -> None:
    from local.host.blobs import subscriptions_for

    with pytest.raises(SettingError, match="TEST_SCHEDULE"):
        build_index(app, {"TEST_CONTAINER": "c"})
    index = build_index(app, {"TEST_SCHEDULE": "0 * * * * *"})
    with pytest.raises(SettingError, match="TEST_CONTAINER"):  # a blob subscription's container setting
        subscriptions_for(index, {"on_blob": "%TEST_CONTAINER%"}, {})


def test_disabled_function_is_skipped(app: func.FunctionApp) -> None:
    index = build_index(app, {**ENV, "AzureWebJobs.on_timer.Disabled": "true"})
    assert "on_timer" not in index and "on_event" in index


@pytest.mark.parametrize(("text", "expected"), [
    ("%A%/{name}", "alpha/{name}"),
    ("%A%/in/%B%-{name}", "alpha/in/beta-{name}"),
    ("no-settings/{name}", "no-settings/{name}"),
])
def test_resolve_settings(text: str, expected: str) -> None:
    assert resolve_settings(text, {"A": "alpha", "B": "beta"}) == expected


def test_resolve_settings_error_names_setting_and_text() -> None:
    with pytest.raises(SettingError) as err:
        resolve_settings("%MISSING_ONE%/{name}", {})
    assert "MISSING_ONE" in str(err.value) and "%MISSING_ONE%/{name}" in str(err.value)


def test_local_settings_fill_only_unset_values(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(json.dumps(
        {"IsEncrypted": False, "Values": {"A": "from-file", "B": "from-file"}}))
    env = {"A": "already-set"}
    assert load_local_settings(tmp_path, env) == ["B"]
    assert env == {"A": "already-set", "B": "from-file"}
    assert load_local_settings(tmp_path / "nowhere", env) == []


def test_find_app_errors_as_the_worker_words_them() -> None:
    none = types.ModuleType("none")
    with pytest.raises(ValueError, match="Could not find top level function app"):
        find_app(none)
    two = types.ModuleType("two")
    two.a, two.b = func.FunctionApp(), func.FunctionApp()
    with pytest.raises(ValueError, match="More than one FunctionApp"):
        find_app(two)
