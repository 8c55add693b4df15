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
ledger, shared/core/ledger.py; `get_deps()` sets it) and handed to any extra sink (see `set_ledger_sink`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.core.errors import ReflexError, TransientError
from shared.core.log import configure, context, explain_id
from shared.core.state import key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["HANDLERS", "Outcome", "handler", "run", "set_ledger_sink"]

log = logging.getLogger("reflex.reaction")

Handler = Callable[[Any, "Deps"], "Outcome"]
HANDLERS: dict[str, Handler] = {}
_ledger_sink: list[Callable[[str, str, Any, Outcome, Deps], None]] = []

# Reactions that must keep running while automation is paused: none by default; the rollout reconciler
# still honours pause (a paused rollout stays where it is, traffic untouched).
ALWAYS_RUN: frozenset[str] = frozenset()


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


def set_ledger_sink(sink: Callable[[str, str, Any, Outcome, Deps], None] | None) -> None:
    """Install the ledger writer (called with reaction, event id, payload, outcome, deps) after each run."""
    _ledger_sink.clear()
    if sink is not None:
        _ledger_sink.append(sink)


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
            if honour_pause and name not in ALWAYS_RUN:
                from shared.core.control import read_control

                if read_control(deps).paused:
                    outcome = _hold(name, payload, event_id, deps) if event_id else Outcome(
                        "skipped", "automation is paused")
                    log.info("%s: %s", outcome.status, outcome.reason,
                             extra=_dimensions(name, event_id, payload, outcome))
                    _record(name, event_id, payload, outcome, deps)
                    return outcome
            outcome = HANDLERS[name](payload, deps)
        except TransientError as exc:
            log.warning("transient failure, the trigger will redeliver (retry after %ss): %s", exc.retry_after, exc,
                        extra=_dimensions(name, event_id, payload, Outcome("transient-failure", str(exc))))
            raise
        except ReflexError as exc:
            letter = deps.state.dead_letter(name, payload, exc, event_id=event_id)
            log.error("dead-lettered as %s: %s", letter, exc)
            outcome = Outcome("dead-lettered", str(exc), {"dead_letter": letter})
        except Exception as exc:
            log.exception("unexpected %s; dead-lettered for replay once fixed", type(exc).__name__)
            letter = deps.state.dead_letter(name, payload, exc, event_id=event_id)
            outcome = Outcome("dead-lettered", f"unexpected {type(exc).__name__}: {exc}", {"dead_letter": letter})
        log.info("%s: %s", outcome.status, outcome.reason, extra=_dimensions(name, event_id, payload, outcome))
        _record(name, event_id, payload, outcome, deps)
        return outcome


def _dimensions(name: str, event_id: str, payload: Any, outcome: Outcome) -> dict[str, str]:
    """The outcome line's own fields (customDimensions in Application Insights, see shared/core/log.py): what the
    alert rules in infra/app/alerts.bicep filter and split on. `outcome` is the status, or "transient-failure"
    for a run the trigger redelivers; `explain_id` the id `python -m reflex explain` takes for this run."""
    from shared.core.ledger import refs_from, scope_of

    try:
        refs = refs_from(outcome.details, payload, scope=scope_of(name))
    except Exception:  # a line's dimensions must never turn a handled event into a failure
        refs = {}
    fields = {"reaction": name, "outcome": outcome.status, "explain_id": explain_id(refs, event_id)}
    if outcome.details.get("dead_letter"):
        fields["dead_letter"] = str(outcome.details["dead_letter"])
    return fields


def _record(name: str, event_id: str, payload: Any, outcome: Outcome, deps: Deps) -> None:
    ledger = getattr(deps, "ledger", None)
    if ledger is not None:
        try:
            ledger.record(name, event_id, payload, outcome, deps)
        except Exception:  # the ledger must never turn a handled event into a failure
            log.exception("could not append to the ledger")
    for sink in _ledger_sink:
        try:
            sink(name, event_id, payload, outcome, deps)
        except Exception:  # the ledger must never turn a handled event into a failure
            log.exception("could not append to the ledger")
