"""Detached helper processes (job runs, deployment provisioning), servers and their process groups.

Why detached: `submit_training`, `invoke_batch` and `begin_create_deployment` must return at once, as Azure ML's
`begin_*` calls do, and the work must survive the caller (a function invocation, a CLI). A new session keeps
the child alive when the parent exits; a reaper thread collects it when the parent outlives it, so a finished
child is never mistaken for a live one (a zombie still has a /proc entry).

Servers (the stack's components, a test's MLflow server) start in a session of their own too, so that stopping
one stops everything it forked: `mlflow server` is a CLI that forks uvicorn (and, with job execution on, a job
runner and huey consumers), and a SIGTERM to the leader alone can leave those running. `start_server` waits
for readiness, not for a fixed time, and stops the whole group when the start fails, however it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from local.env import ROOT

__all__ = ["START_TIMEOUT", "alive", "exists", "group_pids", "spawn", "start_server", "stop_group"]

# How long a server may take to become ready. A bound for a broken start, not an expectation: the wait ends as
# soon as the server answers. MLflow's server took over 60 s to start on a loaded 2-core machine (issue #18).
START_TIMEOUT = 300.0


def spawn(args: list[str], *, log_path: Path, env: Mapping[str, str]) -> int:
    """Start `python -m <args…>` in the repo root, detached, output appended to `log_path`; its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=dict(env), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid


def alive(pid: int | None, marker: str = "local.") -> bool:
    """Whether `pid` is a running (not zombie) process whose command line contains `marker`."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        try:  # no procfs (macOS): signal 0 tells whether the pid exists
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X") and marker in cmdline


class StartFailed(RuntimeError):
    """A server exited or never became ready; its process group has been stopped. Names the log to read."""


def start_server(args: list[str], *, env: Mapping[str, str], log_path: Path, ready: Callable[[], bool],
                 what: str, timeout: float = START_TIMEOUT, cwd: Path = ROOT) -> subprocess.Popen:
    """Start `python <args…>` in a session of its own and wait until `ready()`.

    Whatever ends the wait early (the process exits, `timeout` passes, Ctrl-C, a failing `ready`) stops the
    whole process group before the error propagates, so a failed start never leaves a server behind.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=dict(env), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise StartFailed(f"{what} exited with code {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise StartFailed(f"{what} did not become ready within {timeout:.0f} s; see {log_path}")
            time.sleep(0.2)
    except BaseException:
        stop_group(proc.pid)
        raise
    return proc


def exists(pid: int) -> bool:
    """Whether a process `pid` exists (a zombie too: see `alive` for one that runs)."""
    return _signal0(os.kill, pid)


def _signal0(kill: Callable[[int, int], None], target: int) -> bool:
    try:
        kill(target, 0)
    except OSError:
        return False
    return True


def stop_group(pid: int, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal the process group `pid` leads, wait up to `grace` for the leader, then SIGKILL what is left.

    The final SIGKILL goes to the group even when the leader has exited: its children (uvicorn workers, a job
    runner) keep the group id and would otherwise outlive it. A pid that leads no group is signalled alone.
    """
    kill: Callable[[int, int], None] = os.killpg
    try:
        os.killpg(pid, sig)
    except OSError:
        kill = os.kill
        try:
            os.kill(pid, sig)
        except OSError:
            return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (exists(pid) or (kill is os.killpg and _signal0(os.killpg, pid))):
        _reap(pid)
        time.sleep(0.1)
    if kill is os.killpg or exists(pid):  # a lone pid that is gone may have been reused: leave it
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    settle = time.monotonic() + grace  # SIGKILL is delivered asynchronously: return once the group is gone
    while time.monotonic() < settle and kill is os.killpg and _signal0(os.killpg, pid) and not _only_zombies(pid):
        _reap(pid)
        time.sleep(0.05)
    _reap(pid)


def _only_zombies(pgid: int) -> bool:
    """Whether every process left in group `pgid` has exited (zombies wait for a parent that may not be us)."""
    states = []
    for member in group_pids(pgid):
        try:
            states.append(Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue
    return all(state in ("Z", "X") for state in states)


def _reap(pid: int) -> None:
    """Collect `pid` if it is our child and has exited, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def group_pids(leader: int) -> list[int]:
    """The leader and every process descended from it or in its process group (Linux /proc; [] elsewhere)."""
    parents: dict[int, int] = {}
    groups: dict[int, int] = {}
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)], groups[int(entry.name)] = int(fields[1]), int(fields[2])
    found = {p for p, g in groups.items() if g == leader} | ({leader} if leader in parents else set())
    grew = True
    while grew:
        more = {p for p, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)
