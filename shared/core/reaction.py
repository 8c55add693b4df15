"""The one place where a reaction's outcome is decided to be acted, skipped, held or dead-lettered.

Every trigger function is a thin adapter: it turns its trigger into the raw payload (the original event dict:
BlobCreated, an Azure ML event, or a timer's `{"past_due": ...}`) and calls `run(name, payload, …)`. `run`
sets the log context, holds the event when automation is paused, calls the handler registered for `name`, and
maps errors to outcomes:

* `TransientError` -> logged and re-raised, so the platform's own redelivery retries (Event Grid: 30 tries in
  24 h, then the subscription's dead-letter container);
* `PermanentError` (including `InvalidEvent`) -> dead-lettered with the original payload, the error and the
  time, logged, and the function returns normally: no crash loop;
* any other exception is a bug: dead-lettered the same way with its type, so it can be replayed once fixed.

Handlers are registered by name (`@handler("data.arrival")`) so the CLI can replay a dead letter or a held
event through exactly the code path the trigger uses. Each outcome is appended to `deps.ledger` (the lineage
ledger, shared/core/ledger.py; `get_deps()` sets it, tests hand theirs in `Deps`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.core.errors import ReflexError, TransientError
from shared.core.log import configure, context
from shared.core.state import key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["HANDLERS", "Outcome", "handler", "replaying", "run"]

log = logging.getLogger("reflex.reaction")

Handler = Callable[[Any, "Deps"], "Outcome"]
HANDLERS: dict[str, Handler] = {}


@dataclass(frozen=True)
class Outcome:
    """How one event ended: acted | skipped | duplicate | held | dry-run | dead-lettered."""

    status: str
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register the handler that `run(name, …)` and the CLI's replay call."""

    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def _hold(name: str, payload: Any, event_id: str, deps: Deps) -> Outcome:
    key = f"held/{name}/{key_part(event_id or 'timer', limit=100)}"
    deps.state.create(key, {"reaction": name, "event_id": event_id, "payload": payload})
    return Outcome("held", "automation is paused: kept for replay on resume", {"held": key})


_REPLAY: ContextVar[bool] = ContextVar("reflex_replay", default=False)


def replaying() -> bool:
    """Whether the running handler was called for an operator's replay of a dead letter.

    A flow may then reopen work that a permanent failure closed (arrival: a `submit-failed` batch, once the
    operator fixed the cause), which a mere redelivery of the same event must not do: that would retry a
    permanent failure on every duplicate delivery.
    """
    return _REPLAY.get()


def run(name: str, payload: Any, *, event_id: str = "", key: str = "", deps: Deps | None = None,
        honour_pause: bool = True, replay: bool = False) -> Outcome:
    """Run the handler registered as `name` on `payload` and return how it ended (see module docstring).

    `replay`: an operator replays a dead letter (`python -m reflex replay`); see `replaying()`.

    Raises:
        TransientError: the work may succeed later; the trigger's redelivery retries it.
    """
    token = _REPLAY.set(replay)
    try:
        return _run(name, payload, event_id=event_id, key=key, deps=deps, honour_pause=honour_pause)
    finally:
        _REPLAY.reset(token)


def _run(name: str, payload: Any, *, event_id: str, key: str, deps: Deps | None, honour_pause: bool) -> Outcome:
    configure()
    if deps is None:
        from shared.core.deps import get_deps

        deps = get_deps()
    with context(function=name, event_id=event_id or "-", key=key or "-"):
        try:
            if honour_pause:  # every reaction honours pause: a paused rollout stays where it is, traffic untouched
                from shared.core.control import read_control

                if read_control(deps).paused:
                    outcome = _hold(name, payload, event_id, deps) if event_id else Outcome(
                        "skipped", "automation is paused")
                    log.info("%s: %s", outcome.status, outcome.reason)
                    _record(name, event_id, payload, outcome, deps)
                    return outcome
            outcome = HANDLERS[name](payload, deps)
        except TransientError as exc:
            log.warning("transient failure, the trigger will redeliver (retry after %ss): %s", exc.retry_after, exc)
            raise
        except ReflexError as exc:
            letter = deps.state.dead_letter(name, payload, exc, event_id=event_id)
            log.error("dead-lettered as %s: %s", letter, exc)
            outcome = Outcome("dead-lettered", str(exc), {"dead_letter": letter})
        except Exception as exc:
            log.exception("unexpected %s; dead-lettered for replay once fixed", type(exc).__name__)
            letter = deps.state.dead_letter(name, payload, exc, event_id=event_id)
            outcome = Outcome("dead-lettered", f"unexpected {type(exc).__name__}: {exc}", {"dead_letter": letter})
        log.info("%s: %s", outcome.status, outcome.reason)
        _record(name, event_id, payload, outcome, deps)
        return outcome


def _record(name: str, event_id: str, payload: Any, outcome: Outcome, deps: Deps) -> None:
    ledger = getattr(deps, "ledger", None)
    if ledger is not None:
        try:
            ledger.record(name, event_id, payload, outcome, deps)
        except Exception:  # the ledger must never turn a handled event into a failure
            log.exception("could not append to the ledger")
