"""Shared fixtures: real Azurite storage (unique containers per test), settings, the fake platform, a clock.

Every test starts from the same process state, whatever ran before it (`process_state_restored`, autouse):
the environment, MLflow's process-wide tracking and registry URIs, and the settings and dependency caches
built from them. Tests pass alone and in any order (`make test` runs them in a random order, see the
Makefile); a module fixture that sets such state itself restores it with `process_state()`.
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.core.deps import Deps  # noqa: E402
from shared.core.ledger import MemoryLedger  # noqa: E402
from shared.core.publish import Publisher  # noqa: E402
from shared.core.settings import Settings, load  # noqa: E402
from shared.core.state import BlobStateStore, MemoryStateStore, StateStore  # noqa: E402
from testing.fake_platform import FakePlatform  # noqa: E402

AZURITE = os.environ.get("REFLEX_TEST_STORAGE", "UseDevelopmentStorage=true")

BASE_ENV = {
    "AzureWebJobsStorage": AZURITE,
    "REFLEX_PLATFORM": "local",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
}


SHUFFLE_SEED = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shuffle", default="", metavar="SEED|random",
                     help="run the tests in an order shuffled by SEED ('random': a new seed, shown in the header). "
                          "Modules, classes within them and tests within those are shuffled; a module's or class's "
                          "tests stay together, so their fixtures are still made once.")


def pytest_configure(config: pytest.Config) -> None:
    value = config.getoption("--shuffle")
    worker = getattr(config, "workerinput", None)  # a pytest-xdist worker: the controller chose the seed
    if worker is not None and "reflex_shuffle_seed" in worker:
        config.stash[SHUFFLE_SEED] = int(worker["reflex_shuffle_seed"])
    elif value:
        config.stash[SHUFFLE_SEED] = random.SystemRandom().randrange(1, 10**6) if value == "random" else int(value)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: every worker shuffles with the controller's seed, so all collect the same order (xdist
    refuses workers whose collections differ) and the seed printed repeats the run."""
    seed = node.config.stash.get(SHUFFLE_SEED, None)
    if seed is not None:
        node.workerinput["reflex_shuffle_seed"] = seed


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.stash.get(SHUFFLE_SEED, None)
    return None if seed is None else f"shuffled order: seed {seed} (the same order again: --shuffle={seed})"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if (header := pytest_report_header(config)) is not None:  # also under -q, which hides the header
        terminalreporter.write_line(header)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Shuffle by `--shuffle` (see pytest_addoption), then group for pytest-xdist (`_group_for_workers`)."""
    _shuffle(config, items)
    _group_for_workers(items)


def _group_for_workers(items: list[pytest.Item]) -> None:
    """`make test` runs on pytest-xdist workers with `--dist loadgroup`: a group runs on one worker. A module is
    one group (its module-scoped fixtures, an MLflow server or a trained model, start once), except the stack
    tests, each of which starts its own stack (a class of them shares one: the class is the group): they are the
    longest tests (40-130 s), so they go first, each on whichever worker is free, instead of one module of them
    running last on one worker while the other idles (it did: 6 minutes of a 13-minute run)."""
    for item in items:
        owner = getattr(item, "cls", None)
        module = item.nodeid.split("::", 1)[0]
        spread = item.get_closest_marker("stack") is not None
        group = (f"{module}::{owner.__qualname__}" if owner else item.nodeid) if spread else module
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.get_closest_marker("stack") is None)  # stable: the order within each kept


def _shuffle(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order dependence shows up as a failure with its seed."""
    seed = config.stash.get(SHUFFLE_SEED, None)
    if seed is None:
        return
    rnd = random.Random(seed)
    modules: dict[str, dict[str, list[pytest.Item]]] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        owner = getattr(item, "cls", None)
        modules.setdefault(module, {}).setdefault(owner.__qualname__ if owner else "", []).append(item)
    order = list(modules.values())
    rnd.shuffle(order)
    shuffled: list[pytest.Item] = []
    for groups in order:
        buckets = list(groups.values())
        rnd.shuffle(buckets)
        for bucket in buckets:
            rnd.shuffle(bucket)
            shuffled.extend(bucket)
    items[:] = shuffled


def make_settings(**overrides: str) -> Settings:
    """Settings for tests: the local platform with Azurite, plus `REFLEX_…` overrides by env name."""
    return load({**BASE_ENV, **overrides})


def _mlflow_uris() -> tuple[object, object] | None:
    """MLflow's process-wide URIs as `set_tracking_uri` / `set_registry_uri` keep them (module globals in
    mlflow/tracking/_tracking_service/utils.py and mlflow/tracking/_model_registry/utils.py, mlflow 3.x; both
    setters also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into os.environ). None while mlflow is not
    imported: this must not import it (tests/test_cold_start.py)."""
    if "mlflow" not in sys.modules:
        return None
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    return tracking._tracking_uri, registry._registry_uri


def _set_mlflow_uris(saved: tuple[object, object] | None) -> None:
    if "mlflow" not in sys.modules:
        return
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    tracking_uri, registry_uri = saved or (None, None)
    if tracking._tracking_uri != tracking_uri:
        tracking._tracking_uri = tracking_uri
        from mlflow.tracing.provider import reset  # the tracer keeps the URI it exported to (set_tracking_uri)

        reset()
    registry._registry_uri = registry_uri


@contextmanager
def process_state() -> Iterator[None]:
    """Restore on exit what code under test may change process-wide: os.environ, MLflow's tracking and registry
    URIs (LocalPlatform sets both, so does a test pointing MLflow at its own store), and the settings and
    dependency caches (`get_settings`, `get_deps`) that were built from them."""
    from shared.core.deps import reset_deps
    from shared.core.settings import reset_cache

    environ = dict(os.environ)
    uris = _mlflow_uris()
    try:
        yield
    finally:
        if dict(os.environ) != environ:
            os.environ.clear()
            os.environ.update(environ)
        _set_mlflow_uris(uris)
        reset_cache()
        reset_deps()


@pytest.fixture(autouse=True)
def process_state_restored() -> Iterator[None]:
    """No test sees what an earlier one left behind (see the module docstring)."""
    with process_state():
        yield


@pytest.fixture(scope="class", autouse=True)
def process_state_restored_per_class() -> Iterator[None]:
    """The same around a class's fixtures (see `process_state_restored_per_module`)."""
    with process_state():
        yield


@pytest.fixture(scope="module", autouse=True)
def process_state_restored_per_module() -> Iterator[None]:
    """The same around a module's fixtures. A module fixture's teardown runs after its last test's own restore;
    pytest sets an autouse fixture up before the other fixtures of its scope and tears it down after them, so
    whatever a module fixture's teardown leaves behind ends with its module. Found by `make test`'s shuffle under
    load (seed 540776): tests/test_scoring_input.py's fixture set "the previous" MLflow URI back from its teardown,
    which writes MLflow's default `sqlite:///<cwd>/mlflow.db` into os.environ, and the CLI of a later module's
    test refused to start on it (tests/test_conftest_isolation.py)."""
    with process_state():
        yield


class Clock:
    """A test clock: `clock()` returns the time, `clock.advance(s)` moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def blob_service() -> Any:
    """The Azurite account; fails (does not skip) when Azurite is not running: `make test` starts it.

    One request per call for every answer the service gives (a 503 surfaces at once: tests/test_freeze_contract.py
    counts on it), but a connection the server dropped is tried again, up to 3 times half a second apart, as the
    app's own clients (the SDK's default policy) do. Why: Azurite closes a connection idle for 5 s (its
    `DEFAULT_BLOB_KEEP_ALIVE_TIMEOUT`, Node's keepAliveTimeout), and a request sent on a pooled one just as it
    closes ends in ConnectionResetError; with no retry at all that failed a CI run's test setup (create_container
    in tests/test_batch_scoring.py). azure-storage-blob `StorageRetryPolicy.increment`: a dropped connection
    counts against `retry_connect`/`retry_read`, an answer against `retry_status`, here 0.
    """
    from azure.storage.blob import BlobServiceClient, LinearRetry

    probe = BlobServiceClient.from_connection_string(AZURITE, retry_total=0)
    try:
        probe.get_service_properties(timeout=5)
    except Exception as exc:  # pragma: no cover - environment problem, reported clearly
        pytest.fail(f"Azurite is not reachable ({type(exc).__name__}); run the tests with `make test`")
    return BlobServiceClient.from_connection_string(AZURITE, retry_policy=LinearRetry(
        backoff=0.5, random_jitter_range=0, retry_total=3, retry_status=0))


@pytest.fixture
def container_factory(blob_service: Any) -> Iterator[Callable[[str], Any]]:
    """Creates uniquely named containers and deletes them after the test."""
    made: list[Any] = []

    def make(prefix: str = "t") -> Any:
        container = blob_service.get_container_client(f"{prefix}-{uuid.uuid4().hex[:20]}")
        container.create_container()
        made.append(container)
        return container

    yield make
    for container in made:
        try:
            container.delete_container()
        except Exception:
            pass


@pytest.fixture
def blob_state(container_factory: Callable[[str], Any]) -> BlobStateStore:
    return BlobStateStore(container_factory("state"))


@pytest.fixture
def fake_platform(clock: Clock) -> FakePlatform:
    return FakePlatform(clock=clock)


class OutcomeLedger(MemoryLedger):
    """A ledger that also keeps each run's `Outcome` as the runner recorded it (`Deps.ledger`), for tests that
    check how a delivery through a trigger function ended."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.outcomes: list[tuple[str, Any]] = []

    def record(self, reaction: str, event_id: str, payload: Any, outcome: Any, deps: Deps) -> dict[str, Any]:
        self.outcomes.append((reaction, outcome))
        return super().record(reaction, event_id, payload, outcome, deps)


def make_deps(settings: Settings | None = None, *, state: StateStore | None = None,
              platform: FakePlatform | None = None, clock: Callable[[], float] | None = None,
              ledger: Any = None) -> Deps:
    settings = settings or make_settings()
    platform = platform or FakePlatform()
    from shared.adapters.storage import blob_service

    return Deps(settings=settings, state=state or MemoryStateStore(), publisher=Publisher(),
                platform_factory=lambda: platform, clock=clock or Clock(), ledger=ledger,
                blob_factory=lambda: blob_service(settings))
