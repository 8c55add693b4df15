"""The one place where a reaction's outcome is decided to be acted, skipped, held or dead-lettered.

Every trigger function is a thin adapter: it turns its trigger into the raw payload (the original event dict:
BlobCreated, an Azure ML event, or a timer's `{"past_due": ...}`) and calls `run(name, payload, …)`. `run`
sets the log context, holds the event when automation is paused, calls the handler registered for `name`, and
maps errors to outcomes:

* `TransientError` -> logged and re-raised, so the platform's own redelivery retries (Event Grid: 30 tries in
  24 h, then the subscription's dead-letter container);
* `PermanentError` (including `InvalidEvent`) -> dead-lettered with the original payload, the error and the
  time, logged, and the function returns normally: no crash loop. Exactly one dead letter per reaction and
  event id: a redelivery (or a concurrent copy) that fails again is a `duplicate` of it (`_dead_letter`);
* any other exception is a bug: dead-lettered the same way with its type, so it can be replayed once fixed.

Every run is one OpenTelemetry span, `reflex.<name>` (shared/core/trace.py `reaction_span`): it continues the trace
context the payload carries (a job's or model's `reflex.traceparent` tag in an Azure ML event, `data.traceparent`
of a `Reflex.*` event: shared/core/events.py `trace_carrier`), else starts a new root; it carries the reaction,
the event id, the outcome and the refs the ledger records as attributes; a dead-lettered error is recorded on it
as an exception and sets its status to ERROR, as does a `TransientError` leaving it.

Handlers are registered by name (`@handler("data.arrival")`) so the CLI can replay a dead letter or a held
event through exactly the code path the trigger uses. Each outcome is appended to `deps.ledger` (the lineage
ledger, shared/core/ledger.py; `get_deps()` sets it, tests hand theirs in `Deps`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core.errors import ReflexError, TransientError, safe_json, safe_text
from shared.core.log import configure, context, explain_id
from shared.core.state import key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["HANDLERS", "Outcome", "event_id_of", "handler", "replaying", "run", "run_event"]

log = logging.getLogger("reflex.reaction")

Handler = Callable[[Any, "Deps"], "Outcome"]
HANDLERS: dict[str, Handler] = {}
_ID_LIMIT = 200  # characters of an event id kept readable; a longer one ends in a hash of the whole
# a dead letter keeps the payload for replay: an Event Grid event is at most 1 MB (so are its strings), but its
# nesting is cut at shared.core.errors' depth limit, which the JSON encoder then cannot overflow
_PAYLOAD_TEXT_LIMIT = 1024 * 1024


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
    deps.state.create(key, {"reaction": name, "event_id": event_id,
                            "payload": safe_json(payload, limit=_PAYLOAD_TEXT_LIMIT)})
    return Outcome("held", "automation is paused: kept for replay on resume", {"held": key})


_REPLAY: ContextVar[bool] = ContextVar("reflex_replay", default=False)


def replaying() -> bool:
    """Whether the running handler was called for an operator's replay of a dead letter.

    A flow may then reopen work that a permanent failure closed (arrival: a `submit-failed` batch, once the
    operator fixed the cause), which a mere redelivery of the same event must not do: that would retry a
    permanent failure on every duplicate delivery.
    """
    return _REPLAY.get()


def event_id_of(raw: Any) -> str:
    """The id an event is known by in dead letters, claims, the ledger and logs: always a bounded, encodable str.

    Event Grid's schema says `id` is a string, but the binding passes whatever the JSON held
    (azure-functions-python-library azure/functions/eventgrid.py: `id=body.get('id')`), and a hand-made POST
    to the webhook can hold anything. A string id is kept (lone surrogates escaped, as `shared.core.errors.safe_text`
    does everywhere); another value is named by its type and text (`int:5`, `list:[1, 2]`, `float:nan`), so it
    cannot collide with the string "5"; a missing or empty id becomes a hash of the event, the same on every
    redelivery; an id longer than 200 characters keeps its first 160 and a hash of the whole.
    """
    value = raw.get("id") if isinstance(raw, Mapping) else None
    if value is None or value == "":
        body = json.dumps(safe_json(raw, limit=_PAYLOAD_TEXT_LIMIT), sort_keys=True, default=str)
        return "noid-" + hashlib.sha256(body.encode()).hexdigest()[:32]
    text = value if isinstance(value, str) else f"{type(value).__name__}:{safe_text(value, 10 * _ID_LIMIT)}"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > _ID_LIMIT:
        text = f"{text[:160]}~{hashlib.sha256(text.encode()).hexdigest()[:32]}"
    return text


def run_event(name: str, event: Any, *, keyed: bool = True) -> Outcome:
    """The Event Grid trigger adapter (every `functions/*` Event Grid function calls it with its trigger object).

    The real host runs a function once per event of a delivered array and answers 500 to the whole delivery when
    any invocation fails, so Event Grid resends all of it (`ProcessEventsAsync` in Azure/azure-sdk-for-net
    sdk/eventgrid/Microsoft.Azure.WebJobs.Extensions.EventGrid; local/host/eventgrid.py does the same). So one
    poison event must end here, as its own dead letter, and never raise: only a `TransientError` (a dependency
    that may come back) leaves this function, making the platform redeliver.
    """
    from shared.core import events

    try:
        raw: Any = events.raw_from_function_event(event)
    except Exception as exc:  # not an EventGridEvent/CloudEvent, or one whose fields do not convert
        raw = {"id": getattr(event, "id", None), "unreadable": safe_text(repr(event)), "error": safe_text(exc)}
    subject = raw.get("subject") if isinstance(raw, Mapping) else ""
    return run(name, raw, event_id=event_id_of(raw), key=safe_text(subject or "", 300) if keyed else "")


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
    from shared.core import trace  # here, not at import: cold start loads nothing of tracing
    from shared.core.events import trace_carrier

    trace.configure(getattr(deps, "settings", None))
    with context(function=name, event_id=safe_text(event_id or "-", _ID_LIMIT), key=safe_text(key or "-", 300)), \
            trace.reaction_span(name, trace_carrier(payload), event_id) as span:
        try:
            if honour_pause:  # every reaction honours pause: a paused rollout stays where it is, traffic untouched
                from shared.core.control import read_control

                if read_control(deps).paused:
                    outcome = _hold(name, payload, event_id, deps) if event_id else Outcome(
                        "skipped", "automation is paused")
                    return _ended(name, event_id, payload, outcome, deps, span)
            outcome = HANDLERS[name](payload, deps)
        except TransientError as exc:
            transient = Outcome("transient-failure", str(exc))
            log.warning("transient failure, the trigger will redeliver (retry after %ss): %s", exc.retry_after, exc,
                        extra=_dimensions(name, event_id, transient, _refs(name, payload, transient)))
            trace.annotate(span, transient.status, transient.reason, _refs(name, payload, transient))
            raise  # recorded on the span as it leaves it (status ERROR)
        except ReflexError as exc:
            outcome = _dead_letter(name, payload, exc, safe_text(exc), event_id, deps)
            log.log(logging.ERROR if outcome.status == "dead-lettered" else logging.INFO, "%s as %s: %s",
                    outcome.status, outcome.details["dead_letter"], outcome.reason)
            trace.failed(span, exc, outcome.reason)
        except Exception as exc:
            log.error("unexpected %s; dead-lettered for replay once fixed: %s", type(exc).__name__, safe_text(exc),
                      exc_info=not isinstance(exc, RecursionError))
            outcome = _dead_letter(name, payload, exc, f"unexpected {type(exc).__name__}: {safe_text(exc)}",
                                   event_id, deps)
            trace.failed(span, exc, outcome.reason)
        return _ended(name, event_id, payload, outcome, deps, span)


def _ended(name: str, event_id: str, payload: Any, outcome: Outcome, deps: Deps, span: Any) -> Outcome:
    """Log the outcome line, put the outcome and its refs on the reaction's span, append it to the ledger."""
    from shared.core import trace

    refs = _refs(name, payload, outcome)
    log.info("%s: %s", outcome.status, safe_text(outcome.reason), extra=_dimensions(name, event_id, outcome, refs))
    trace.annotate(span, outcome.status, safe_text(outcome.reason), refs)
    _record(name, event_id, payload, outcome, deps)
    return outcome


def _refs(name: str, payload: Any, outcome: Outcome) -> Mapping[str, list[str]]:
    """The ids this run touched, as the ledger records them (shared/core/ledger.py `refs_from`)."""
    from shared.core.ledger import refs_from, scope_of

    try:
        return refs_from(outcome.details, payload, scope=scope_of(name))
    except Exception:  # a line's dimensions must never turn a handled event into a failure
        return {}


def _dimensions(name: str, event_id: str, outcome: Outcome, refs: Mapping[str, Any]) -> dict[str, str]:
    """The outcome line's own fields (customDimensions in Application Insights, see shared/core/log.py): what the
    alert rules in infra/app/alerts.bicep filter and split on. `outcome` is the status, or "transient-failure"
    for a run the trigger redelivers; `explain_id` the id `python -m reflex explain` takes for this run."""
    fields = {"reaction": name, "outcome": outcome.status, "explain_id": explain_id(refs, event_id)}
    if outcome.details.get("dead_letter"):
        fields["dead_letter"] = str(outcome.details["dead_letter"])
    return fields


def _dead_letter(name: str, payload: Any, exc: BaseException, reason: str, event_id: str, deps: Deps) -> Outcome:
    """Exactly one dead letter per (reaction, event id), however often and however concurrently it is redelivered.

    The letter's key is claimed first (`claims/dead-letters/<reaction>/<event id>`, create-if-absent: one winner)
    and the letter is then created at the claimed key (create-if-absent too), so a copy that lost the race, or a
    redelivery after a crash between the two writes, writes the same single letter and answers `duplicate`. An
    operator's replay that fails again gets a new letter (the CLI deletes the replayed one) and moves the claim.
    Without an event id (a timer run) every failure is its own letter. The payload is kept for replay, bounded
    (`safe_json`) so that no payload can make the letter unwritable.
    """
    kept = safe_json(payload, limit=_PAYLOAD_TEXT_LIMIT)
    if not event_id:
        return Outcome("dead-lettered", reason, {"dead_letter": deps.state.dead_letter(name, kept, exc)})
    now = datetime.now(UTC)
    planned = f"deadletters/{now:%Y%m%d}/{now:%H%M%S%f}-{name}-{key_part(event_id, limit=60)}"
    claim = f"claims/dead-letters/{name}/{key_part(event_id)}"
    if replaying():
        deps.state.update(claim, lambda _: {"dead_letter": planned, "at": now.isoformat()})
    deps.state.claim(claim, {"dead_letter": planned})
    record = deps.state.get(claim)
    letter = str(record.value.get("dead_letter") or planned) if record is not None else planned
    deps.state.dead_letter(name, kept, exc, event_id=event_id, key=letter)
    if letter == planned:
        return Outcome("dead-lettered", reason, {"dead_letter": letter})
    return Outcome("duplicate", f"already dead-lettered as {letter}: {reason}", {"dead_letter": letter})


def _record(name: str, event_id: str, payload: Any, outcome: Outcome, deps: Deps) -> None:
    ledger = getattr(deps, "ledger", None)
    if ledger is not None:
        try:
            ledger.record(name, event_id, payload, outcome, deps)
        except Exception:  # the ledger must never turn a handled event into a failure
            log.exception("could not append to the ledger")
