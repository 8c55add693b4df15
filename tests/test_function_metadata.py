"""Function metadata as a value: trigger types, paths, connections, Event Grid source and %SETTING% schedules."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.settings import SPEC

SETTINGS = {f.metadata["env"] for f in SPEC}


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    import function_app

    function_app.app.functions_bindings = None  # get_functions() is not idempotent (python-worker#1867)
    table = {}
    for f in function_app.app.get_functions():
        trigger = f.get_trigger()
        table[f.get_function_name()] = (trigger.type, trigger.get_dict_repr())
    return table


def test_blob_triggers_use_event_grid_source_and_app_storage(functions: dict[str, Any]) -> None:
    for name, (kind, spec) in functions.items():
        if kind != "blobTrigger":
            continue
        assert spec["source"] == "EventGrid", name  # Flex Consumption supports only the Event Grid source
        assert spec["connection"] == "AzureWebJobsStorage", name
        container = re.fullmatch(r"%([A-Z_]+)%/(.+)", spec["path"])
        assert container and container.group(1) in SETTINGS and "{name}" in container.group(2), spec["path"]


def test_timers_read_their_schedule_from_a_setting(functions: dict[str, Any]) -> None:
    for name, (kind, spec) in functions.items():
        if kind != "timerTrigger":
            continue
        match = re.fullmatch(r"%([A-Z_]+)%", spec["schedule"])
        assert match and match.group(1) in SETTINGS, (name, spec["schedule"])
        assert not spec.get("runOnStartup"), name  # never in production


def test_only_known_trigger_types(functions: dict[str, Any]) -> None:
    assert {kind for kind, _ in functions.values()} <= {"blobTrigger", "eventGridTrigger", "timerTrigger"}
