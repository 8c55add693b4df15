"""One source of settings for the stack, its components, the CLI and the demo: local.settings.json, then the
environment (as `func start` layers them), then explicit overrides; a bad setting stops the stack, named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local.env import ROOT, layered_settings, local_env
from local.stack import Stack, mismatches

EXAMPLE = ROOT / "local.settings.example.json"


def _write(folder: Path, **values: str) -> Path:
    path = folder / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {**local_env(), **values}}, indent=2))
    return path


def test_the_file_is_created_from_the_example_when_absent(tmp_path: Path) -> None:
    layered = layered_settings(tmp_path, {})
    assert layered.created and layered.path == tmp_path / "local.settings.json"
    assert layered.path.read_bytes() == EXAMPLE.read_bytes()
    assert layered.values == json.loads(EXAMPLE.read_text())["Values"]
    assert set(layered.sources.values()) == {"local.settings.json"}
    assert not layered_settings(tmp_path, {}).created            # created once, then only read


def test_the_files_values_apply(tmp_path: Path) -> None:
    path = _write(tmp_path, REFLEX_LABEL_COLUMN="target", REFLEX_MODEL_NAME="cancer")
    before = path.read_bytes()
    layered = layered_settings(tmp_path, {})
    assert (layered.values["REFLEX_LABEL_COLUMN"], layered.values["REFLEX_MODEL_NAME"]) == ("target", "cancer")
    assert path.read_bytes() == before


def test_the_environment_wins_as_in_core_tools(tmp_path: Path) -> None:
    """StartHostAction.UpdateEnvironmentVariables: a non-empty variable wins; an empty one counts as unset."""
    _write(tmp_path, REFLEX_LABEL_COLUMN="target", REFLEX_TASK="classification")
    environ = {"REFLEX_LABEL_COLUMN": "DEATH", "REFLEX_TASK": "", "REFLEX_DRIFT_RETRAIN": "true", "HOME": "/h"}
    layered = layered_settings(tmp_path, environ)
    assert layered.values["REFLEX_LABEL_COLUMN"] == "DEATH"
    assert layered.sources["REFLEX_LABEL_COLUMN"] == "the environment"
    assert layered.values["REFLEX_TASK"] == "classification"           # empty in the environment: the file's
    assert layered.values["REFLEX_DRIFT_RETRAIN"] == "true"            # an app setting the file does not name
    assert "HOME" not in layered.values                                # not an app setting
    assert layered.from_source("the environment") == ["REFLEX_DRIFT_RETRAIN", "REFLEX_LABEL_COLUMN"]


def test_the_stack_gives_its_components_the_layered_values_with_its_own_on_top(tmp_path: Path) -> None:
    _write(tmp_path, REFLEX_LABEL_COLUMN="target", MLFLOW_TRACKING_URI="http://127.0.0.1:5999")
    stack = Stack(root=tmp_path / "run", settings_dir=tmp_path, environ={"REFLEX_TASK": "regression"},
                  ports={"mlflow": 6111}, overrides={"REFLEX_DATA_CONTAINER": "mine-data"})
    env = stack.env(tmp_path / "run" / "r1")
    assert (env["REFLEX_LABEL_COLUMN"], env["REFLEX_TASK"]) == ("target", "regression")
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:6111"        # the stack's own port, not the file's
    assert env["REFLEX_LOCAL_RUN_DIR"] == str(tmp_path / "run" / "r1")
    assert env["REFLEX_DATA_CONTAINER"] == "mine-data"
    (tmp_path / "run").mkdir()
    process = stack._process_env(tmp_path / "run" / "r1")
    assert process["REFLEX_TASK"] == "regression" and process["REFLEX_LABEL_COLUMN"] == "target"


def test_a_started_stacks_record_is_what_its_components_get(tmp_path: Path) -> None:
    """Restarted components get the values of the start, even when the file changed since."""
    _write(tmp_path)
    stack = Stack(root=tmp_path / "run", settings_dir=tmp_path, environ={})
    run = tmp_path / "run" / "r1"
    run.mkdir(parents=True)
    (tmp_path / "run" / "current").symlink_to("r1")
    (run / "settings.json").write_text(json.dumps({"values": {"REFLEX_LABEL_COLUMN": "at-start"}, "sources": {}}))
    _write(tmp_path, REFLEX_LABEL_COLUMN="edited-later")
    assert stack.env()["REFLEX_LABEL_COLUMN"] == "at-start"
    assert stack._process_env(run.resolve())["REFLEX_LABEL_COLUMN"] == "at-start"


def test_demo_settings_are_overrides_and_never_touch_the_users_file(tmp_path: Path) -> None:
    from local.demo import DEMO_SETTINGS
    from reflex.stack import load_local_settings

    path = _write(tmp_path, REFLEX_LABEL_COLUMN="target", REFLEX_MODEL_NAME="cancer", REFLEX_BAKE_SECONDS="600")
    before = path.read_bytes()
    stack = Stack(root=tmp_path / "run", settings_dir=tmp_path, environ={"REFLEX_TASK": "regression"},
                  overrides=DEMO_SETTINGS, overrides_label="the demo's settings")
    env = stack.env(tmp_path / "run" / "r1")
    assert (env["REFLEX_LABEL_COLUMN"], env["REFLEX_MODEL_NAME"], env["REFLEX_TASK"]) == (
        "DEATH_EVENT", "heart-failure", "classification")
    assert env["REFLEX_BAKE_SECONDS"] == "10"
    assert stack.settings(tmp_path / "run" / "r1").sources["REFLEX_TASK"] == "the demo's settings"
    assert path.read_bytes() == before
    # the CLI, outside the demo, still reads the user's own settings
    cli_env = {"REFLEX_TASK": "regression"}
    load_local_settings(cli_env, tmp_path)
    assert (cli_env["REFLEX_LABEL_COLUMN"], cli_env["REFLEX_TASK"]) == ("target", "regression")
    assert path.read_bytes() == before


def test_the_cli_layers_the_same_way(tmp_path: Path) -> None:
    from reflex.stack import load_local_settings

    _write(tmp_path, REFLEX_LABEL_COLUMN="target")
    env = {"REFLEX_LABEL_COLUMN": "", "REFLEX_MODEL_NAME": "from-env"}
    assert load_local_settings(env, tmp_path) == tmp_path / "local.settings.json"
    expected = Stack(settings_dir=tmp_path, environ={"REFLEX_MODEL_NAME": "from-env"}).settings(tmp_path)
    shared_keys = set(expected.values) - set(expected.from_source("the stack"))
    assert {k: env[k] for k in shared_keys} == {k: expected.values[k] for k in shared_keys}


@pytest.mark.parametrize("environ, named, origin", [
    ({"REFLEX_TASK": "regression"}, "REFLEX_GATE_METRIC", "REFLEX_GATE_METRIC (from local.settings.json)"),
    ({"REFLEX_BAKE_SECONDS": "soon"}, "REFLEX_BAKE_SECONDS", "REFLEX_BAKE_SECONDS (from the environment)"),
])
def test_a_bad_setting_stops_the_stack_before_anything_starts(tmp_path: Path, environ: dict[str, str], named: str,
                                                              origin: str) -> None:
    told: list[str] = []
    stack = Stack(root=tmp_path / "run", settings_dir=tmp_path, environ=environ, echo=told.append)
    with pytest.raises(SystemExit) as stopped:
        stack.start()
    message = str(stopped.value.code)
    assert f"- {named}:" in message and origin in message and "nothing was started" in message
    assert not (tmp_path / "run").exists() and told == []


def test_make_stack_prints_the_bad_setting_on_the_console() -> None:
    """`python -m local.stack start` (what `make stack` runs): the message on stderr, exit 1, nothing started."""
    created = not (ROOT / "local.settings.json").exists()
    env = {**os.environ, "REFLEX_TASK": "regression", "REFLEX_GATE_METRIC": "auc"}
    try:
        done = subprocess.run([sys.executable, "-m", "local.stack", "start"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        if created:
            (ROOT / "local.settings.json").unlink(missing_ok=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "REFLEX_GATE_METRIC: 'auc' is not a metric the training job logs for REFLEX_TASK=regression" in done.stderr
    assert "REFLEX_GATE_METRIC (from the environment)" in done.stderr and "stack up" not in done.stdout


def test_mismatches_name_what_a_running_stack_lacks() -> None:
    assert mismatches({"A": "1", "B": "2"}, {"A": "1", "B": "3", "C": "4"}) == ["B is '2', needs '3'",
                                                                              "C is unset, needs '4'"]
