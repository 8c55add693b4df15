"""Shared fixtures: real Azurite storage (unique containers per test), settings, the fake platform, a clock."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
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


def make_settings(**overrides: str) -> Settings:
    """Settings for tests: the local platform with Azurite, plus `REFLEX_…` overrides by env name."""
    return load({**BASE_ENV, **overrides})


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
    """The Azurite account; fails (does not skip) when Azurite is not running: `make test` starts it."""
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(AZURITE, retry_total=0)
    try:
        client.get_service_properties(timeout=5)
    except Exception as exc:  # pragma: no cover - environment problem, reported clearly
        pytest.fail(f"Azurite is not reachable ({type(exc).__name__}); run the tests with `make test`")
    return client


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
