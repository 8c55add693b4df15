"""`make stack` / `make stop`: the local stack in the background, health-checked, with one run folder.

    python -m local.stack start     Azurite (unless one already listens), MLflow server (SQLite), the scoring
                                    server (+ MLflow webhook relay) and the local host, if present
    python -m local.stack stop      stops exactly the processes this stack started (pids in run/current)

Layout: `run/<timestamp>/` holds every log, `pids.json`, the job and deployment folders; `run/current` points
at it. Durable data lives beside it and survives restarts: `run/mlflow.db`, `run/mlartifacts/`, `run/azurite/`.
The environment is local/env.py's (`local.settings.example.json` is generated from the same source).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from local import azurite
from local.env import PORTS, ROOT, local_env
from local.mlflow_relay import SERVER_ENV, ensure_webhook

__all__ = ["ensure_running", "start", "stop"]

RUN = ROOT / "run"
SECRET_ENV = "REFLEX_LOCAL_WEBHOOK_SECRET"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(name: str, proc: subprocess.Popen, check: object, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with code {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not become healthy within {timeout:.0f}s; see {log}")
        time.sleep(0.3)


def _launch(name: str, args: list[str], run_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    log = run_dir / f"{name}.log"
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def start() -> int:
    current = RUN / "current"
    if (current / "pids.json").exists():
        raise SystemExit(f"a stack is already running (see {current.resolve()}/pids.json): run `make stop` first")
    for name in ("mlflow", "serving", "host"):
        if azurite.is_listening(PORTS[name]):
            raise SystemExit(f"port {PORTS[name]} ({name}) is already in use: stop whatever listens there first")
    run_dir = RUN / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True)
    if current.is_symlink() or current.exists():
        current.unlink()
    current.symlink_to(run_dir.name)
    env = {**os.environ, **local_env(run_dir=run_dir), SECRET_ENV: os.environ.get(SECRET_ENV, "local-webhook-secret")}
    pids: dict[str, int] = {}

    def save() -> None:
        (run_dir / "pids.json").write_text(json.dumps(pids, indent=2))

    try:
        if azurite.is_listening(PORTS["blob"]):
            print(f"azurite   reusing the one on 127.0.0.1:{PORTS['blob']} (not stopped by make stop)")
        else:
            proc = azurite.start(str(RUN / "azurite"), str(run_dir / "azurite.log"))
            pids["azurite"] = proc.pid
            save()
        mlflow_url = env["MLFLOW_TRACKING_URI"]
        # MLflow encrypts webhook secrets with this key; without a stable one, a restarted server cannot read
        # the webhook it stored before (every list answers 500). Kept beside run/mlflow.db, never committed.
        key_file = RUN / "webhook-encryption.key"
        if not key_file.exists():
            from cryptography.fernet import Fernet

            key_file.write_bytes(Fernet.generate_key())
            key_file.chmod(0o600)
        env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] = key_file.read_text().strip()
        proc = _launch("mlflow", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                  f"sqlite:///{RUN / 'mlflow.db'}", "--artifacts-destination", str(RUN / "mlartifacts"),
                                  "--host", "127.0.0.1", "--port", str(PORTS["mlflow"]), "--workers", "1"],
                       run_dir, {**env, **SERVER_ENV})
        pids["mlflow"] = proc.pid
        save()
        _wait("mlflow", proc, lambda: _healthy(f"{mlflow_url}/health"), run_dir / "mlflow.log")
        serving_url = env["REFLEX_LOCAL_SERVING_URL"]
        proc = _launch("serving", [sys.executable, "-m", "local.serving", "--port", str(PORTS["serving"])],
                       run_dir, env)
        pids["serving"] = proc.pid
        save()
        _wait("serving", proc, lambda: _healthy(f"{serving_url}/health"), run_dir / "serving.log")
        from mlflow import MlflowClient

        ensure_webhook(MlflowClient(mlflow_url, mlflow_url), f"{serving_url}/mlflow/webhooks", env[SECRET_ENV])
        if (ROOT / "local" / "host").is_dir():
            proc = _launch("host", [sys.executable, "-m", "local.host", "--port", str(PORTS["host"]),
                                    "--events-log", str(run_dir / "events.jsonl")], run_dir, env)
            pids["host"] = proc.pid
            save()
            _wait("host", proc, lambda: azurite.is_listening(PORTS["host"]), run_dir / "host.log")
            host = f"http://127.0.0.1:{PORTS['host']}"
        else:
            host = "NOT STARTED: local/host is not in this tree (events from the platform will not be delivered)"
    except BaseException:
        stop()
        raise
    print(f"stack up; logs and pids in {run_dir}\n"
          f"  storage  UseDevelopmentStorage=true (127.0.0.1:{PORTS['blob']})\n"
          f"  mlflow   {env['MLFLOW_TRACKING_URI']}\n"
          f"  scoring  {env['REFLEX_LOCAL_SERVING_URL']}/endpoints/<name>/score\n"
          f"  host     {host}\n"
          f"stop with: make stop")
    return 0


def ensure_running() -> None:
    """Start the stack unless a healthy one is already up (the demo calls this; `make demo` relies on it)."""
    env = local_env()
    up = (_healthy(f"{env['MLFLOW_TRACKING_URI']}/health")
          and _healthy(f"{env['REFLEX_LOCAL_HOST_URL']}/admin/host/status") and azurite.is_listening(PORTS["blob"]))
    if up:
        print("stack: already running")
        return
    if (RUN / "current" / "pids.json").exists():
        print("stack: a previous stack is not healthy; restarting it")
        stop()
    start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop() -> int:
    """Stop the processes recorded in run/current/pids.json (their process groups), newest first."""
    pids_file = RUN / "current" / "pids.json"
    if not pids_file.exists():
        print("no stack is running (run/current/pids.json is absent)")
        return 0
    pids: dict[str, int] = json.loads(pids_file.read_text())
    for name, pid in reversed(list(pids.items())):
        if not _alive(pid):
            print(f"{name:9} pid {pid} already gone")
            continue
        try:
            os.killpg(pid, signal.SIGTERM)  # each was started in its own session: pgid == pid
        except OSError:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        print(f"{name:9} pid {pid} stopped")
    pids_file.unlink()
    return 0


if __name__ == "__main__":
    command = sys.argv[1:2]
    if command == ["start"]:
        sys.exit(start())
    if command == ["stop"]:
        sys.exit(stop())
    raise SystemExit("usage: python -m local.stack start|stop")
