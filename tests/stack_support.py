"""A whole local stack for one end-to-end test: MLflow, the scoring server and the local host as processes.

Each test gets its own (or, for the tests of one class, a shared one: tests/test_stack_e2e.py `shared_live`):
a temporary root (MLflow registry, run folders), free ports, its own containers in the
shared Azurite, so tests never see each other's models or records and never touch a stack the user runs.
Everything is driven from outside as a user (or Event Grid) would: blobs uploaded, events POSTed to the host's
webhooks, the host process killed and restarted. Outcomes are read from the platform, the state container,
the ledger and the events Reflex published; never from logs.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from local.stack import Stack, ephemeral

T = TypeVar("T")


@dataclass
class LiveStack:
    stack: Stack
    env: dict[str, str]
    deps: Any

    @property
    def host_url(self) -> str:
        return self.env["REFLEX_LOCAL_HOST_URL"]

    def post(self, path: str, body: Any, *, event_type: str = "Notification") -> int:
        """POST to the host as Event Grid does; the HTTP status."""
        request = urllib.request.Request(f"{self.host_url}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "aeg-event-type": event_type})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def deliver(self, path: str, events: list[dict[str, Any]], attempts: int = 6) -> int:
        """POST as Event Grid does: a 5xx (a transient failure in the function) is retried with backoff."""
        for attempt in range(attempts):
            status = self.post(path, events)
            if status < 500:
                return status
            time.sleep(0.5 * 2**attempt)
        return status

    def published(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The `Reflex.*` events the app published to the local topic (since this stack started)."""
        with urllib.request.urlopen(self.env["REFLEX_EVENTGRID_TOPIC_ENDPOINT"], timeout=10) as response:
            body = json.loads(response.read())
        events = body if isinstance(body, list) else body.get("events", [])
        return [e for e in events if event_type is None or e.get("eventType") == f"Reflex.{event_type}"]


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 180.0, every: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (and the last value) on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@functools.cache
def empty_registry() -> Path:
    """An empty MLflow SQLite store at the schema's head, made once per test process; each stack starts on a copy.

    Why: a fresh `mlflow server` on a new SQLite file runs every Alembic migration before it answers (measured
    at load 7 on this machine: 9.5 s of a stack's ~30 s start, 8 stacks a CI run). The server creates tables only
    when they are absent (mlflow 3.17.2 `mlflow/store/tracking/sqlalchemy_store.py` `SqlAlchemyStore.__init__`:
    `_all_tables_exist` else `_initialize_tables`), so on a copy it only checks the schema. The store is made as
    the server makes it: with `--artifacts-destination` the server's default artifact root is
    `mlflow-artifacts:/` (`mlflow/utils/server_cli_utils.py` `resolve_default_artifact_root`, DEFAULT_ARTIFACTS_URI),
    the Default experiment's location `mlflow-artifacts:/0`.
    """
    from mlflow.store.tracking import DEFAULT_ARTIFACTS_URI
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="reflex-empty-registry-"))
    atexit.register(shutil.rmtree, folder, True)
    store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", DEFAULT_ARTIFACTS_URI)
    store.engine.dispose()
    return folder / "mlflow.db"


def live_stack(root: Path, setenv: Callable[[str, str], None],
               extra: Mapping[str, str] | None = None, *, func: bool = False,
               environ: Mapping[str, str] | None = None) -> Iterator[LiveStack]:
    """A stack of this test's own (`local.stack.ephemeral`), its settings seen by this process too.

    Settings are layered as `make stack` does: `<root>/local.settings.json` (a test may write one first, as a
    user would), then `environ` (default: this process's environment), then the quick plan and `extra`."""
    from shared.core.deps import get_deps, reset_deps
    from shared.core.settings import reset_cache

    # the demo's plan, faster: bake 4 s instead of 10, the reconciler every 2 s instead of 5. Models registered
    # by hand get no client traffic, so no minimum of requests; and a busy CI machine must not decide a canary
    # by latency noise (that judgement is tested on the fake platform): ratio 10.
    quick = {"REFLEX_BAKE_SECONDS": "4", "REFLEX_RECONCILE_SCHEDULE": "*/2 * * * * *", "REFLEX_MIN_REQUESTS": "0",
             "REFLEX_MAX_LATENCY_RATIO": "10", "REFLEX_MAX_LATENCY_MS": "10000"}
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "mlflow.db").exists():
        shutil.copyfile(empty_registry(), root / "mlflow.db")
    with ephemeral(root, {**quick, **(extra or {})}, func=func, environ=environ) as stack:
        env = stack.env()
        for key, value in env.items():
            setenv(key, value)
        reset_cache()
        reset_deps()
        try:
            yield LiveStack(stack, env, get_deps())
        finally:
            reset_cache()
            reset_deps()
