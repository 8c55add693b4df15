"""Function metadata as a value: trigger types, %SETTING% schedules, and no function that receives blob content."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from shared.core.settings import SPEC

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


def test_no_function_receives_blob_content(functions: dict[str, Any]) -> None:
    """No blob trigger or blob input binding (the host would read the blob and push its bytes to the worker,
    Azure/azure-functions-python-worker#1449) and no `InputStream` parameter: blob intake is BlobCreated events."""
    import azure.functions as func

    import function_app

    for name, (kind, _) in functions.items():
        assert kind in ("eventGridTrigger", "timerTrigger"), name
    for f in function_app.app._function_builders:
        built = f.build()
        bindings = built.get_bindings_dict()["bindings"]
        assert not [b for b in bindings if "blob" in str(b["type"]).lower()], built.get_function_name()
        params = inspect.signature(built.get_user_function()).parameters.values()
        streams = [p for p in params if p.annotation in (func.InputStream, "func.InputStream")]
        assert not streams, built.get_function_name()


def test_blob_subscriptions_name_event_grid_functions_and_container_settings(functions: dict[str, Any]) -> None:
    """What the local host delivers BlobCreated to (and infra subscribes): Event Grid triggers, each on a container
    named by a setting."""
    from function_app import BLOB_SUBSCRIPTIONS

    assert set(BLOB_SUBSCRIPTIONS) == {"on_data_blob", "on_scoring_blob"}
    for name, container in BLOB_SUBSCRIPTIONS.items():
        assert functions[name][0] == "eventGridTrigger", name
        match = re.fullmatch(r"%([A-Z_]+)%", container)
        assert match and match.group(1) in SETTINGS, container


def test_timers_read_their_schedule_from_a_setting(functions: dict[str, Any]) -> None:
    for name, (kind, spec) in functions.items():
        if kind != "timerTrigger":
            continue
        match = re.fullmatch(r"%([A-Z_]+)%", spec["schedule"])
        assert match and match.group(1) in SETTINGS, (name, spec["schedule"])
        assert not spec.get("runOnStartup"), name  # never in production


EXPECTED = {
    "on_data_blob": ("eventGridTrigger", None),
    "on_scoring_blob": ("eventGridTrigger", None),
    "on_run_event": ("eventGridTrigger", None),
    "on_model_registered": ("eventGridTrigger", None),
    "sweep_batches": ("timerTrigger", "%REFLEX_SWEEP_SCHEDULE%"),
    "reconcile": ("timerTrigger", "%REFLEX_RECONCILE_SCHEDULE%"),
    "batch_tracker": ("timerTrigger", "%REFLEX_RECONCILE_SCHEDULE%"),
    "health_check": ("timerTrigger", "%REFLEX_HEALTH_SCHEDULE%"),
    "drift_check": ("timerTrigger", "%REFLEX_DRIFT_SCHEDULE%"),
    "scheduled_retrain": ("timerTrigger", "%REFLEX_RETRAIN_SCHEDULE%"),
    "ledger_index": ("timerTrigger", "%REFLEX_LEDGER_INDEX_SCHEDULE%"),
    "scheduled_scoring": ("timerTrigger", "%REFLEX_BATCH_SCHEDULE%"),
}


def test_exactly_the_expected_functions(functions: dict[str, Any]) -> None:
    """The infra wires Event Grid to these names: a rename here must be a rename there."""
    actual = {name: (kind, spec.get("path") or spec.get("schedule")) for name, (kind, spec) in functions.items()}
    assert actual == EXPECTED


def test_only_known_trigger_types(functions: dict[str, Any]) -> None:
    assert {kind for kind, _ in functions.values()} <= {"eventGridTrigger", "timerTrigger"}
