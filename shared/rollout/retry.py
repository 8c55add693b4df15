"""A new rollout attempt of a registered model version, for an operator (`python -m reflex rollout MODEL:VERSION`).

Why: a version whose rollout failed (no smoke request yet, a bad setting since fixed, a transient platform
problem that outlasted the deadline), or that was registered while automation was in dry-run, would otherwise
never be rolled out: its ModelRegistered event was consumed, and a redelivery of it is rightly a duplicate.

How: the request becomes a `Reflex.ModelRegistered` event (Event Grid schema, Reflex's own event type that the
rollout reaction already accepts: `shared.core.events.ReflexModelRegistered`) carrying `retryOf`, the event id of
the attempt it follows, and it goes through the rollout reaction (`reaction.run("rollout.model_registered", …)`):
pause, dry-run, the model checks,
admission (`rollout_machine.admit`), supersede and the first step are exactly what a registration gets. Its id
derives from the attempt it follows, so a second copy of the same request (two operators, a replayed dead
letter) is a duplicate, and so is any redelivery of the original registration.

Refused before anything is sent, each with its reason: a model without an endpoint, a version that is not
registered, one already serving all of the endpoint's traffic, one whose rollout is in progress or queued.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core.events import REFLEX_MODEL_REGISTERED
from shared.rollout.flow import rollout_key
from shared.rollout.machine import Rollout
from shared.rollout.plan import deployment_name

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["RetryRequest", "attempt_event_id", "plan_attempt"]


@dataclass(frozen=True)
class RetryRequest:
    """What the command does: `refusal` (nothing sent, and why), or `event` to run through the reaction."""

    endpoint: str = ""
    refusal: str = ""
    retry_of: str = ""
    previous: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict)


def attempt_event_id(model: str, version: str, retry_of: str) -> str:
    """The id of the attempt that follows `retry_of` ("" for a first attempt): the same request, the same id."""
    digest = hashlib.sha256(f"{model}:{version}|{retry_of}".encode()).hexdigest()[:16]
    return f"reflex-rollout-{digest}"


def _event(model: str, version: str, retry_of: str, *, by: str, why: str, now: float) -> dict[str, Any]:
    when = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"id": attempt_event_id(model, version, retry_of), "eventType": REFLEX_MODEL_REGISTERED,
            "subject": f"models/{model}:{version}", "eventTime": when, "dataVersion": "1", "topic": "",
            "data": {"modelName": model, "modelVersion": version, "retryOf": retry_of, "requestedBy": by,
                     "why": why}}


def plan_attempt(deps: Deps, model: str, version: str, *, by: str, why: str) -> RetryRequest:
    """Check the request against the endpoint and its rollout record; the event to send, or why not."""
    ref = f"{model}:{version}"
    endpoint = deps.settings.endpoint_for(model)
    if endpoint is None:
        return RetryRequest(refusal=f"model {model} has no endpoint configured (REFLEX_ENDPOINTS): nothing to "
                                    "roll it out to")
    if deps.platform.get_model(model, version) is None:
        return RetryRequest(endpoint, refusal=f"model {ref} is not registered")
    live = deps.platform.get_endpoint(endpoint)
    deployment = deployment_name(model, version)
    if live is not None and live.traffic.get(deployment, 0) == 100:
        return RetryRequest(endpoint, refusal=f"{ref} already serves all traffic of {endpoint} (deployment "
                                              f"{deployment}): nothing to roll out")
    record = deps.state.get(rollout_key(endpoint))
    current = Rollout.from_dict(record.value) if record is not None else None
    retry_of, previous = "", {}
    if current is not None:
        queued = current.queued or {}
        if current.ref == ref and not current.terminal:
            return RetryRequest(endpoint, refusal=f"the rollout of {ref} on {endpoint} is in progress ("
                                                  f"{current.status}): see `python -m reflex status`; roll it "
                                                  "back first to start it again")
        if (queued.get("model"), str(queued.get("version"))) == (model, version):
            return RetryRequest(endpoint, refusal=f"{ref} is queued on {endpoint}: it starts once the rollout of "
                                                  f"{current.ref} ({current.status}) has been taken back")
        if current.ref == ref:
            retry_of = current.event_id
            previous = {"status": current.status, "reason": current.reason, "event_id": current.event_id}
    event = _event(model, version, retry_of, by=by, why=why, now=deps.clock())
    return RetryRequest(endpoint, retry_of=retry_of, previous=previous, event=event)
