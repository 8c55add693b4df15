"""`make stack` / `make stop`: the local stack in the background, health-checked, with one run folder.

    python -m local.stack start     Azurite (unless one already listens), MLflow server (SQLite), the scoring
                                    server (+ MLflow webhook relay) and the local host
    python -m local.stack start --func   the same for Core Tools users: no local host on 7071 (`func start`
                                    runs the functions there) but a feeder on 7072 that POSTs BlobCreated
                                    events for new blobs to it and serves the local topic; writes
                                    local.settings.json for `func` when there is none
    python -m local.stack stop      stops exactly the processes this stack started (pids in run/current)

Layout: `<root>/<timestamp>/` holds every log, `pids.json`, the job and deployment folders; `<root>/current`
points at it. Durable data lives beside it and survives restarts: `mlflow.db`, `mlartifacts/`, `azurite/`.
The root is `run/` for `make stack`; the end-to-end tests and `bench/chain.py` build a `Stack` on a temporary
root, free ports and their own containers, so they never touch a stack the user has running.

Settings: `local.settings.json` Values (created from the example when absent), then the environment wins
(local/env.py `layered_settings`, as `func start` does), then the stack's own (ports, run folder) and any
explicit overrides (the demo's, a test's). They are validated with shared/core/settings.py before anything starts:
a bad setting stops `make stack` with the setting named on the console. The result is written to
`<run>/settings.json` and every component gets exactly those values, also when restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from local import azurite, procs
from local.env import EXAMPLE_FILE, PORTS, ROOT, Layered, layered_settings, stack_settings
from local.mlflow_relay import SERVER_ENV, ensure_webhook

__all__ = ["Stack", "ensure_running", "ephemeral", "mismatches", "mlflow_server_args", "mlflow_server_env", "reset",
           "start", "stop"]

RUN = ROOT / "run"
SECRET_ENV = "REFLEX_LOCAL_WEBHOOK_SECRET"
COMPONENTS = ("mlflow", "serving", "host")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def mlflow_server_args(root: Path, port: int) -> list[str]:
    """`python -m mlflow server …` as Reflex runs it: SQLite registry, proxied artifacts, one worker, loopback."""
    return ["-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]


def mlflow_server_env(env: Mapping[str, str]) -> dict[str, str]:
    """The MLflow server's environment: `env`, webhooks allowed to loopback, job execution off unless `env` asks.

    MLflow's server starts a job runner and huey consumers unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION is false
    (mlflow/environment_variables.py: a boolean, default True; mlflow/server/__init__.py `_run_server` launches
    `_launch_job_execution_runner` only when it is true; checked in mlflow 3.17.2 and at github:mlflow/mlflow).
    Reflex uses none of MLflow's jobs (its own runner is local/jobrunner.py; webhooks are delivered from a
    thread pool in the server, mlflow/webhooks/delivery.py), and they were 8 of the stack's 13 processes.
    """
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **env, **SERVER_ENV}


@dataclass
class Stack:
    """One local stack: where it keeps its files, which ports it uses, where its settings come from.

    `settings_dir` holds `local.settings.json`; `environ` is the environment that wins over it (default: this
    process's); `overrides` are explicit values on top of both (labelled `overrides_label` in messages).
    """

    root: Path = RUN
    ports: Mapping[str, int] = field(default_factory=lambda: dict(PORTS))
    overrides: Mapping[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] = print
    func: bool = False  # Core Tools runs the functions: start the feeder instead of the local host
    settings_dir: Path = ROOT
    environ: Mapping[str, str] | None = None
    overrides_label: str = "an explicit override"

    @property
    def components(self) -> tuple[str, ...]:
        return ("mlflow", "serving", "feeder") if self.func else COMPONENTS

    def __post_init__(self) -> None:
        self.ports = {**PORTS, **self.ports}  # a partial mapping overrides some ports only

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def pids_file(self) -> Path:
        return self.current / "pids.json"

    @property
    def _environ(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def settings(self, run_dir: Path | None = None) -> Layered:
        """The file, then the environment, then the stack's own settings, then the explicit overrides."""
        run_dir = run_dir or self.current.resolve()
        own = stack_settings(run_dir=run_dir, ports=self.ports, func=self.func)
        return (layered_settings(self.settings_dir, self._environ).with_overrides("the stack", own)
                .with_overrides(self.overrides_label, self.overrides))

    def recorded(self, run_dir: Path | None = None) -> dict[str, str] | None:
        """The settings a started stack gave its components (`<run>/settings.json`), or None."""
        path = (run_dir or self.current) / "settings.json"
        return dict(json.loads(path.read_text())["values"]) if path.is_file() else None

    def env(self, run_dir: Path | None = None) -> dict[str, str]:
        """The app settings every component (and a test or bench driving the stack) sees: those recorded at
        start when this stack runs, else those it would start with."""
        return self.recorded(run_dir) or self.settings(run_dir).values

    def _check(self, layered: Layered) -> None:
        """Validate before anything starts; a bad setting stops here, named, with where its value came from."""
        from shared.core.settings import SettingsError, load

        try:
            load({**self._environ, **layered.values})
        except SettingsError as exc:
            names = list(dict.fromkeys(name for name, _ in exc.problems))
            raise SystemExit(f"{exc}\n  where the values come from: {layered.origin(names)}\n"
                             f"  fix them in {layered.path} or in the environment; nothing was started") from None

    def _tell(self, layered: Layered) -> None:
        """Say where the settings come from, as `func start` names the ones the environment overrides."""
        made = f" (created from {EXAMPLE_FILE})" if layered.created else ""
        self.echo(f"settings  {layered.path}{made}")
        for label in ("the environment", self.overrides_label):
            if names := layered.from_source(label):
                self.echo(textwrap.fill(", ".join(names), 118, initial_indent=f"          from {label}: ",
                                        subsequent_indent=" " * 12))
        file_values = layered_settings(self.settings_dir, self._environ).values
        ignored = [k for k in layered.from_source("the stack") if k in file_values and file_values[k] !=
                   layered.values[k] and k != "REFLEX_LOCAL_RUN_DIR"]
        for key in ignored:
            self.echo(f"          note: the stack sets {key}={layered.values[key]} itself (its ports); "
                      f"{file_values[key]} is not used")

    def pids(self) -> dict[str, int]:
        return json.loads(self.pids_file.read_text()) if self.pids_file.exists() else {}

    def _save(self, pids: Mapping[str, int]) -> None:
        self.pids_file.write_text(json.dumps(dict(pids), indent=2))

    def _process_env(self, run_dir: Path, values: Mapping[str, str] | None = None) -> dict[str, str]:
        values = self.env(run_dir) if values is None else values
        env = {**self._environ, **values, SECRET_ENV: self._environ.get(SECRET_ENV, "local-webhook-secret")}
        # MLflow encrypts webhook secrets with this key; without a stable one, a restarted server cannot read
        # the webhook it stored before (every list answers 500). Kept beside mlflow.db, never committed.
        key_file = self.root / "webhook-encryption.key"
        if not key_file.exists():
            from cryptography.fernet import Fernet

            key_file.write_bytes(Fernet.generate_key())
            key_file.chmod(0o600)
        env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] = key_file.read_text().strip()
        return env

    def _launch(self, name: str, run_dir: Path, env: dict[str, str]) -> subprocess.Popen:
        ports = self.ports
        args = {
            "mlflow": mlflow_server_args(self.root, ports["mlflow"]),
            "serving": ["-m", "local.serving", "--port", str(ports["serving"])],
            "host": ["-m", "local.host", "--port", str(ports["host"]), "--events-log", str(run_dir / "events.jsonl")],
            "feeder": ["-m", "local.host", "--port", str(ports["feeder"]), "--events-log",
                       str(run_dir / "events.jsonl"), "--forward-to", env["REFLEX_LOCAL_HOST_URL"]],
        }[name]
        url = self._health_url(name, env)
        try:
            return procs.start_server(args, env=mlflow_server_env(env) if name == "mlflow" else env,
                                      log_path=run_dir / f"{name}.log", ready=lambda: _healthy(url), what=name)
        except procs.StartFailed as exc:
            raise SystemExit(str(exc)) from None

    def _health_url(self, name: str, env: Mapping[str, str]) -> str:
        return {"mlflow": f"{env['MLFLOW_TRACKING_URI']}/health",
                "serving": f"{env['REFLEX_LOCAL_SERVING_URL']}/health",
                "host": f"{env['REFLEX_LOCAL_HOST_URL']}/admin/host/status",
                "feeder": f"http://127.0.0.1:{self.ports['feeder']}/admin/host/status"}[name]

    def start(self) -> Path:
        """Start every component, health-checked; on any failure stop what was started. Returns the run folder."""
        run_dir = self.root.resolve() / datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        layered = self.settings(run_dir)
        self._check(layered)
        if self.pids_file.exists():
            raise SystemExit(f"a stack is already running (see {self.pids_file.resolve()}): run `make stop` first")
        for name in self.components:
            if azurite.is_listening(self.ports[name]):
                raise SystemExit(f"port {self.ports[name]} ({name}) is already in use: stop whatever listens there")
        self._tell(layered)
        self.root.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True)
        if self.current.is_symlink() or self.current.exists():
            self.current.unlink()
        self.current.symlink_to(run_dir.name)
        record = run_dir / "settings.json"
        record.write_text(json.dumps({"values": layered.values, "sources": layered.sources}, indent=2) + "\n")
        record.chmod(0o600)
        env = self._process_env(run_dir, layered.values)
        pids: dict[str, int] = {}
        try:
            if azurite.is_listening(self.ports["blob"]):
                self.echo(f"azurite   reusing the one on 127.0.0.1:{self.ports['blob']} (not stopped by make stop)")
            else:
                pids["azurite"] = azurite.start(str(self.root / "azurite"), str(run_dir / "azurite.log")).pid
                self._save(pids)
            for name in self.components:
                pids[name] = self._launch(name, run_dir, env).pid
                self._save(pids)
                if name == "serving":
                    from mlflow import MlflowClient

                    url = env["MLFLOW_TRACKING_URI"]
                    ensure_webhook(MlflowClient(url, url), f"{env['REFLEX_LOCAL_SERVING_URL']}/mlflow/webhooks",
                                   env[SECRET_ENV])
        except BaseException:
            self._save(pids)
            self.stop()
            raise
        self.echo(f"stack up; logs and pids in {run_dir}\n"
                  f"  storage  UseDevelopmentStorage=true (127.0.0.1:{self.ports['blob']})\n"
                  f"  mlflow   {env['MLFLOW_TRACKING_URI']}\n"
                  f"  scoring  {env['REFLEX_LOCAL_SERVING_URL']}/endpoints/<name>/score\n"
                  + (f"  feeder   http://127.0.0.1:{self.ports['feeder']} (blob events -> "
                     f"{env['REFLEX_LOCAL_HOST_URL']}, topic {env['REFLEX_EVENTGRID_TOPIC_ENDPOINT']})\n"
                     f"  now run: func start   (port {self.ports['host']}, reads local.settings.json)\n"
                     if self.func else f"  host     {env['REFLEX_LOCAL_HOST_URL']}\n")
                  + "stop with: make stop")
        return run_dir

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one component (SIGKILL by default: a crash, not a clean stop), as a host dies mid-work."""
        pids = self.pids()
        if name not in pids:
            raise KeyError(f"{name} is not part of this stack ({sorted(pids)})")
        procs.stop_group(pids[name], sig, grace=10.0)

    def restart(self, name: str) -> None:
        """Start one component again in the same run folder (after `kill` or a crash)."""
        pids = self.pids()
        if name in pids and procs.exists(pids[name]):
            procs.stop_group(pids[name])
        run_dir = self.current.resolve()
        pids[name] = self._launch(name, run_dir, self._process_env(run_dir)).pid
        self._save(pids)

    def healthy(self) -> bool:
        env = self.env()
        return azurite.is_listening(self.ports["blob"]) and all(
            _healthy(self._health_url(name, env)) for name in self.components)

    def stop(self) -> int:
        """Stop the processes recorded in pids.json (their process groups), newest first."""
        if not self.pids_file.exists():
            self.echo(f"no stack is running ({self.pids_file} is absent)")
            return 0
        for name, pid in reversed(list(self.pids().items())):
            if not procs.exists(pid):
                self.echo(f"{name:9} pid {pid} already gone")
                continue
            procs.stop_group(pid)
            self.echo(f"{name:9} pid {pid} stopped")
        self.pids_file.unlink()
        return 0


free_port = azurite.free_port  # one definition (local/azurite.py), named here as tests import it


def own_containers(suffix: str) -> dict[str, str]:
    """Settings giving a stack containers of its own in a shared Azurite."""
    return {"REFLEX_STATE_CONTAINER": f"stack-state-{suffix}", "REFLEX_DATA_CONTAINER": f"stack-data-{suffix}",
            "REFLEX_SCORING_CONTAINER": f"stack-scoring-{suffix}", "REFLEX_OUTPUT_CONTAINER": f"stack-out-{suffix}"}


@contextmanager
def ephemeral(root: Path, extra: Mapping[str, str] | None = None, *, func: bool = False,
              environ: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """A whole stack on `root`, free ports and containers of its own, removed afterwards (tests, benches).

    Its settings are layered as `make stack` layers them, from `<root>/local.settings.json` (created from the
    example unless the caller wrote one, as a user would) and `environ` (default: this process's), with the
    containers and `extra` as explicit overrides on top.
    Azurite must already listen (`make test` and the benches start it); its containers are shared with
    whatever else runs, so this stack's are named with a random suffix and deleted when it stops.
    """
    from azure.storage.blob import BlobServiceClient

    if not azurite.is_listening(PORTS["blob"]):
        raise SystemExit(f"Azurite is not listening on 127.0.0.1:{PORTS['blob']}: start it (make stack / make test)")
    containers = own_containers(uuid.uuid4().hex[:10])
    stack = Stack(root=root, ports={name: free_port() for name in (*COMPONENTS, "feeder")},
                  overrides={**containers, **(extra or {})}, echo=lambda _: None, func=func, settings_dir=root,
                  environ=environ)
    service = BlobServiceClient.from_connection_string(stack.env(root)["AzureWebJobsStorage"])
    for name in containers.values():
        service.create_container(name)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        for name in containers.values():
            service.delete_container(name)


def reset(stack: Stack) -> None:
    """Forget what the local stack did (`make demo-fresh`): stop it, drop the MLflow registry and runs, and
    delete Reflex's containers (state, data, scoring, outputs) in Azurite. Nothing else is touched."""
    import shutil

    from azure.storage.blob import BlobServiceClient

    env = stack.env(stack.root)
    if azurite.is_listening(stack.ports["blob"]):
        service = BlobServiceClient.from_connection_string(env["AzureWebJobsStorage"])
        for setting in ("REFLEX_STATE_CONTAINER", "REFLEX_DATA_CONTAINER", "REFLEX_SCORING_CONTAINER",
                        "REFLEX_OUTPUT_CONTAINER"):
            container = service.get_container_client(env[setting])
            if container.exists():
                container.delete_container()
                stack.echo(f"deleted container {env[setting]}")
    elif (stack.root / "azurite").is_dir():  # the stack's own Azurite is down: its data folder is all there is
        shutil.rmtree(stack.root / "azurite")
        stack.echo(f"removed {stack.root / 'azurite'}")
    stack.stop()
    for path in (stack.root / "mlflow.db", stack.root / "mlartifacts"):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        stack.echo(f"removed {path}")


def _settings_for_func(stack: Stack) -> None:
    """`func start` reads local.settings.json itself: write the Core Tools variant when absent, else name the
    values that do not point at this stack's processes (the other values are the user's to choose)."""
    from local.env import SETTINGS_FILE, settings_file

    path = stack.settings_dir / SETTINGS_FILE
    if not path.exists():
        path.write_text(json.dumps(settings_file(func=True), indent=2) + "\n")
        stack.echo(f"wrote {path.name} for func (from local/env.py)")
        return
    values = json.loads(path.read_text()).get("Values", {})
    own = stack_settings(ports=stack.ports, func=True)
    differ = sorted(k for k, v in own.items() if values.get(k) != v)
    if differ:
        stack.echo(f"warning: {path.name} differs from this stack's settings in {', '.join(differ)}; "
                   f"`func start` reads that file: set {', '.join(f'{k}={own[k]}' for k in differ)} there")


def start(func: bool = False) -> int:
    stack = Stack(func=func)
    if func:
        _settings_for_func(stack)
    stack.start()
    return 0


def stop() -> int:
    return Stack().stop()


def ensure_running(overrides: Mapping[str, str] | None = None, label: str = "an explicit override") -> Stack:
    """Start the stack with `overrides` unless a healthy one is already up; the stack (the demo calls this).

    A running stack is never changed: when its settings differ from `overrides`, SystemExit names them.
    """
    wanted = dict(overrides or {})
    stack = Stack(overrides=wanted, overrides_label=label)
    if stack.healthy():
        differ = mismatches(stack.recorded() or {}, wanted)
        if differ:
            raise SystemExit(f"a stack is running with settings other than {label}: {'; '.join(differ)}.\n"
                             f"It is left as it is: stop it with `make stop` and run this again, which starts one "
                             f"with {label} (your local.settings.json is not changed; `make stack` afterwards "
                             "starts yours again).")
        print("stack: already running")
        return stack
    if stack.pids_file.exists():
        print("stack: a previous stack is not healthy; restarting it")
        stack.stop()
    stack.start()
    return stack


def mismatches(recorded: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """`NAME is 'x', needs 'y'` for each wanted setting the recorded ones do not hold."""
    return [f"{k} is {recorded[k]!r}, needs {v!r}" if k in recorded else f"{k} is unset, needs {v!r}"
            for k, v in wanted.items() if recorded.get(k) != v]


if __name__ == "__main__":
    command = sys.argv[1:2]
    if command == ["start"]:
        sys.exit(start(func="--func" in sys.argv[2:]))
    if command == ["stop"]:
        sys.exit(stop())
    raise SystemExit("usage: python -m local.stack start [--func] | stop")
