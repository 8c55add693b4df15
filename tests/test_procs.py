"""Servers and their process groups (local/procs.py): a failed start leaves nothing behind, a stop stops all.

Real processes: a Python "server" that forks a child, as `mlflow server` forks uvicorn (and its job runner).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from local import procs
from local.stack import mlflow_server_env

# a leader that starts a child in its own group, writes the child's pid, then never becomes ready
FORKING = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Not running: absent, or a zombie waiting for a parent that is not this test."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return not procs.exists(pid)
    return state in ("Z", "X")


def _child_pid(path: Path) -> int:
    deadline = time.monotonic() + 120  # a bound for a loaded machine; the file appears as soon as the child runs
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, "the leader never started its child"
        time.sleep(0.05)
    return int(path.read_text())


def test_a_start_that_never_becomes_ready_stops_the_leader_and_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    seen: list[int] = []

    def ready() -> bool:  # never ready; remembers the child once it exists
        if marker.exists() and marker.read_text() and not seen:
            seen.append(int(marker.read_text()))
        return False

    with pytest.raises(procs.StartFailed, match=r"forking server did not become ready within 3 s; see .*srv\.log"):
        procs.start_server(["-c", FORKING, str(marker)], env=os.environ, log_path=tmp_path / "srv.log",
                           ready=ready, what="forking server", timeout=3)
    child = seen[0] if seen else _child_pid(marker)
    assert _gone(child), "the server's child outlived a failed start"


def test_an_interrupted_start_stops_the_group_too(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"

    def interrupted() -> bool:
        if marker.exists() and marker.read_text():
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        procs.start_server(["-c", FORKING, str(marker)], env=os.environ, log_path=tmp_path / "srv.log",
                           ready=interrupted, what="forking server")
    assert _gone(int(marker.read_text()))


def test_a_server_that_exits_names_its_code_and_log(tmp_path: Path) -> None:
    with pytest.raises(procs.StartFailed, match=r"broken exited with code 3; see .*broken\.log"):
        procs.start_server(["-c", "import sys; sys.exit(3)"], env=os.environ, log_path=tmp_path / "broken.log",
                           ready=lambda: False, what="broken")


def test_stop_group_stops_children_that_outlive_their_leader(tmp_path: Path) -> None:
    """The leader exits on SIGTERM at once; its child ignores SIGTERM, as a busy worker may: SIGKILL follows."""
    marker = tmp_path / "child.pid"
    stubborn = ("import signal, subprocess, sys, time\n"
                "child = subprocess.Popen([sys.executable, '-c', 'import signal, sys, time; "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); open(sys.argv[1], \"w\").write(\"x\"); "
                "time.sleep(600)', sys.argv[1]])\n"
                "time.sleep(600)\n")
    proc = procs.start_server(["-c", stubborn, str(marker)], env=os.environ, log_path=tmp_path / "s.log",
                              ready=lambda: marker.exists() and bool(marker.read_text()), what="stubborn",
                              timeout=120)
    members = procs.group_pids(proc.pid)
    assert proc.pid in members and len(members) == 2
    procs.stop_group(proc.pid, grace=1.0)
    assert all(_gone(pid) for pid in members)  # stop_group returns once the SIGKILL has taken effect


def test_mlflow_runs_without_job_execution_unless_the_environment_asks() -> None:
    """MLFLOW_SERVER_ENABLE_JOB_EXECUTION (mlflow/environment_variables.py, default True) gates MLflow's job
    runner and huey consumers (mlflow/server/__init__.py); Reflex uses neither."""
    assert mlflow_server_env({})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    asked = mlflow_server_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})
    assert asked["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    assert asked["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"  # the relay's webhook to loopback still allowed


def test_group_pids_is_empty_for_a_pid_that_does_not_exist() -> None:
    assert procs.group_pids(2**22 + 12345) == []  # above any pid_max: no such process
