"""Detached helper processes (job runs, deployment provisioning) and whether they are still alive.

Why detached: `submit_training`, `invoke_batch` and `begin_create_deployment` must return at once, as Azure ML's
`begin_*` calls do, and the work must survive the caller (a function invocation, a CLI). A new session keeps
the child alive when the parent exits; a reaper thread collects it when the parent outlives it, so a finished
child is never mistaken for a live one (a zombie still has a /proc entry).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from local.env import ROOT

__all__ = ["spawn", "alive"]


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
