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


EXPECTED = {
    "on_data_blob": ("blobTrigger", "%REFLEX_DATA_CONTAINER%/{name}"),
    "on_scoring_blob": ("blobTrigger", "%REFLEX_SCORING_CONTAINER%/{name}"),
    "on_run_event": ("eventGridTrigger", None),
    "on_model_registered": ("eventGridTrigger", None),
    "sweep_batches": ("timerTrigger", "%REFLEX_SWEEP_SCHEDULE%"),
    "reconcile": ("timerTrigger", "%REFLEX_RECONCILE_SCHEDULE%"),
    "batch_tracker": ("timerTrigger", "%REFLEX_RECONCILE_SCHEDULE%"),
    "health_check": ("timerTrigger", "%REFLEX_HEALTH_SCHEDULE%"),
    "drift_check": ("timerTrigger", "%REFLEX_DRIFT_SCHEDULE%"),
    "scheduled_retrain": ("timerTrigger", "%REFLEX_RETRAIN_SCHEDULE%"),
    "scheduled_scoring": ("timerTrigger", "%REFLEX_BATCH_SCHEDULE%"),
}


def test_exactly_the_expected_functions(functions: dict[str, Any]) -> None:
    """The infra wires Event Grid to these names: a rename here must be a rename there."""
    actual = {name: (kind, spec.get("path") or spec.get("schedule")) for name, (kind, spec) in functions.items()}
    assert actual == EXPECTED


def test_only_known_trigger_types(functions: dict[str, Any]) -> None:
    assert {kind for kind, _ in functions.values()} <= {"blobTrigger", "eventGridTrigger", "timerTrigger"}
