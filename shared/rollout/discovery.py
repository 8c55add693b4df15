"""Registrations no event announced: the reconcile timer finds them within one period.

Why: Azure ML's Event Grid events are still preview, and an event can be lost or dead-lettered. So every tick
asks the platform, once per model that has an endpoint in `REFLEX_ENDPOINTS`, for its newest version
(`MLPlatform.get_latest_model`: ONE request, never a listing of every version) and hands a version the rollout
has not seen to the very reaction its `ModelRegistered` event would have reached, as a `Reflex.ModelRegistered`
event with an id derived from the version. The reaction is idempotent, so a real event arriving later is a
duplicate, and a discovered version the rollout already knows costs nothing but that one request.

What "seen" means is the rollout record's own rule (`rollout_machine.admit`): the version is the record's model
or the one queued behind it, or older than either. A version the reaction declined for good (not an MLflow
model, say) is remembered under `discovered/models/<model>` (`Handled`) so it is not fetched again every tick; a
dry run is not remembered, so the version is handled once dry-run is switched off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core.errors import PermanentError, TransientError
from shared.core.events import REFLEX_MODEL_REGISTERED
from shared.core.reaction import Outcome
from shared.core.state import key_part
from shared.core.trace import TAG, TRACEPARENT
from shared.core.typed_record import TypedRecord
from shared.rollout.flow import rollout_key
from shared.rollout.machine import Rollout, admit

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.platform import ModelVersion

__all__ = ["Handled", "discover", "discovery_event", "MEMO_PREFIX"]

log = logging.getLogger("reflex.rollout")

MEMO_PREFIX = "discovered/models/"


@dataclass(frozen=True)
class Handled(TypedRecord):
    """Record `discovered/models/<model>`: the newest `version` found, which the reaction declined for good (or
    acted on): not fetched again until a newer one appears."""

    model: str = ""
    version: str = ""

    @staticmethod
    def key_of(model: str) -> str:
        return MEMO_PREFIX + key_part(model)


def discovery_event(model: str, version: str, when: datetime | None = None, *, traceparent: str = ""
                    ) -> dict[str, Any]:
    """The `Reflex.ModelRegistered` event (Event Grid schema, as the gate publishes it) for a found version.

    Its id is the same for every tick that finds this version, so repeated discoveries are one delivery. The
    model's `reflex.traceparent` tag (set by the gate's registration) rides as `data.traceparent`, as in the event
    the gate published, so the rollout continues the registration's trace even though its event never came.
    """
    data: dict[str, Any] = {"model": model, "version": version, "discoveredBy": "reconcile"}
    if traceparent:
        data[TRACEPARENT] = traceparent
    return {"id": f"reconcile-{model}-{version}", "eventType": REFLEX_MODEL_REGISTERED,
            "subject": f"models/{model}:{version}", "dataVersion": "1",
            "eventTime": (when or datetime.now(UTC)).isoformat().replace("+00:00", "Z"), "data": data}


def _seen(deps: Deps, endpoint: str, model: str, version: str) -> bool:
    record = deps.state.get(rollout_key(endpoint))
    if record is not None and admit(Rollout.from_dict(record.value), model, version) in ("duplicate", "older"):
        return True
    memo = deps.state.get(Handled.key_of(model))
    return memo is not None and Handled.from_dict(memo.value).version == version


def discover(deps: Deps, react: Callable[[Any, Deps], Outcome]) -> dict[str, dict[str, Any]]:
    """One `get_latest_model` per served model; `react` (the ModelRegistered reaction) for each unseen version.

    Returns what was found, by model: the version and the reaction's outcome. One model's failure is logged and
    reported, never blocks the others (a transient one is simply asked again next tick).
    """
    found: dict[str, dict[str, Any]] = {}
    for model, endpoint in deps.settings.endpoints.items():
        latest: ModelVersion | None = None  # set before react() runs: a refusal of the listing itself has none
        try:
            latest = deps.platform.get_latest_model(model)
            if latest is None or _seen(deps, endpoint, model, latest.version):
                continue
            outcome = react(discovery_event(model, latest.version, traceparent=latest.tags.get(TAG, "")), deps)
        except TransientError as exc:
            log.warning("newest version of %s: transient failure, asked again next tick: %s", model, exc)
            found[model] = {"error": str(exc)}
            continue
        except PermanentError as exc:  # declined for good: the same answer every tick, so remember it
            log.error("newest version of %s: %s", model, exc)
            if latest is None:  # the platform refused to say which is newest: nothing to remember, asked again
                found[model] = {"error": str(exc)}
                continue
            _remember(deps, model, latest.version)
            found[model] = {"model": latest.ref, "version": latest.version, "error": str(exc)}
            continue
        except Exception as exc:
            log.exception("newest version of %s could not be handled", model)
            found[model] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        assert latest is not None  # `continue`d above otherwise
        log.info("model %s was found by the reconciler, not announced by an event: %s", latest.ref, outcome.reason)
        if outcome.status != "dry-run":
            _remember(deps, model, latest.version)
        found[model] = {**dict(outcome.details), "model": latest.ref, "version": latest.version,
                        "outcome": outcome.status, "reason": outcome.reason}
    return found


def _remember(deps: Deps, model: str, version: str) -> None:
    deps.state.update(Handled.key_of(model), lambda _v: Handled(model=model, version=version).to_dict())
