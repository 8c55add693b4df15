"""What a reaction needs from the outside world, built once per worker and passed in explicitly.

Flows take a `Deps` instead of reaching for globals, so tests hand them a `MemoryStateStore` or an Azurite
store, the behavioural fake platform and a test clock. In the worker, `get_deps()` builds the real ones on
first use; the platform adapter is built only when a reaction first touches it, so a reaction that skips an
event never pays for importing azure.ai.ml.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.core.ledger import Ledger
    from shared.core.platform import MLPlatform
    from shared.core.publish import Publisher
    from shared.core.settings import Settings
    from shared.core.state import StateStore

__all__ = ["Deps", "get_deps", "get_platform", "reset_deps"]


@dataclass
class Deps:
    settings: Settings
    state: StateStore
    publisher: Publisher
    platform_factory: Callable[[], MLPlatform] = field(repr=False)
    clock: Callable[[], float] = time.time
    ledger: Ledger | None = None  # where every reaction run is recorded (shared/core/ledger.py); None: not recorded
    # the app's Blob Storage (a BlobServiceClient), for flows that list or write data blobs; None: a test without it
    blob_factory: Callable[[], Any] | None = field(default=None, repr=False)

    @cached_property
    def platform(self) -> MLPlatform:
        return self.platform_factory()

    @cached_property
    def blobs(self) -> Any:
        """The app's BlobServiceClient (shared/adapters/storage.py), built on first use."""
        if self.blob_factory is None:
            raise RuntimeError("these deps have no blob storage (pass blob_factory)")
        return self.blob_factory()


@lru_cache(maxsize=1)
def get_deps() -> Deps:
    """The worker's dependencies from app settings (validated here, once)."""
    from shared.adapters.storage import blob_service, credential
    from shared.core.ledger import BlobLedger
    from shared.core.publish import Publisher
    from shared.core.settings import get_settings
    from shared.core.state import BlobStateStore

    settings = get_settings()
    service = blob_service(settings)
    return Deps(settings=settings, state=BlobStateStore.from_service(service, settings),
                publisher=Publisher.from_settings(settings, credential=lambda: credential(settings.client_id)),
                platform_factory=lambda: get_platform(settings),
                ledger=BlobLedger.from_service(service, settings, time.time), blob_factory=lambda: service)


def get_platform(settings: Settings) -> MLPlatform:
    """The adapter named by `REFLEX_PLATFORM`, imported only now (azure.ai.ml and MLflow are heavy).

    This factory is the one place the core reaches up to an adapter (the import-linter contracts in pyproject.toml
    name it as their only exception): the reactions see the `MLPlatform` protocol, never an implementation.
    """
    if settings.platform == "azureml":
        from shared.adapters.azureml import AzureMLPlatform

        return AzureMLPlatform.from_settings(settings)
    from local.platform import LocalPlatform

    return LocalPlatform.from_settings(settings)


def reset_deps() -> None:
    get_deps.cache_clear()
