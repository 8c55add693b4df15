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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.core.ledger import Ledger
    from shared.core.platform import MLPlatform
    from shared.core.publish import Publisher
    from shared.core.settings import Settings
    from shared.core.state import StateStore

__all__ = ["Deps", "get_deps", "reset_deps"]


@dataclass
class Deps:
    settings: Settings
    state: StateStore
    publisher: Publisher
    platform_factory: Callable[[], MLPlatform] = field(repr=False)
    clock: Callable[[], float] = time.time
    ledger: Ledger | None = None  # where every reaction run is recorded (shared/core/ledger.py); None: not recorded

    @cached_property
    def platform(self) -> MLPlatform:
        return self.platform_factory()


@lru_cache(maxsize=1)
def get_deps() -> Deps:
    """The worker's dependencies from app settings (validated here, once)."""
    from shared.core.ledger import BlobLedger
    from shared.core.platform import get_platform
    from shared.core.publish import Publisher
    from shared.core.settings import get_settings
    from shared.core.state import BlobStateStore

    settings = get_settings()
    return Deps(settings=settings, state=BlobStateStore.from_settings(settings),
                publisher=Publisher.from_settings(settings), platform_factory=lambda: get_platform(settings),
                ledger=BlobLedger.from_settings(settings, time.time))


def reset_deps() -> None:
    get_deps.cache_clear()
