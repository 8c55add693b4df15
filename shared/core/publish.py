"""Outbound `Reflex.*` events, so people and other systems can subscribe to what Reflex did.

Published to a custom Event Grid topic (`REFLEX_EVENTGRID_TOPIC_ENDPOINT`) in the Event Grid schema, with the
managed identity in Azure or an access key locally (`REFLEX_EVENTGRID_TOPIC_KEY`). With no topic configured it
says so once in the log and does nothing else: publishing is a notification, never a reason to fail a reaction
that already acted. Every event carries the publishing span's trace context as `data.traceparent` (`_traced`).
Every published event is also handed to the optional `sink` (the ledger, tests), and
logged once with its type, subject, data and explain id as fields (`reflex_event`, `reflex_subject`,
`reflex_data`, `explain_id`: customDimensions in Application Insights, see shared/core/log.py), which is what the
alert rules and the workbook in infra/ read: Event Grid keeps no log of what a custom topic received.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.core.errors import PermanentError, map_azure_error

__all__ = ["OutboundEvent", "Publisher"]

log = logging.getLogger("reflex.publish")


@dataclass(frozen=True)
class OutboundEvent:
    """One `Reflex.*` event: `type` without the prefix is added by `Publisher.publish`."""

    type: str
    subject: str
    data: Mapping[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def as_eventgrid(self) -> dict[str, Any]:
        return {"id": self.id, "eventType": self.type, "subject": self.subject, "data": dict(self.data),
                "eventTime": self.time, "dataVersion": "1"}


def _dimensions(event: OutboundEvent) -> dict[str, str]:
    """The published event as log fields; its explain id from the ids in its data (a rollout's `model` and
    `version` name the model "name:version"; a health finding's are in its `evidence`), else the event id of the
    run that published it."""
    from shared.core.ledger import refs_from
    from shared.core.log import current_context, explain_id

    evidence = event.data.get("evidence")
    ids = {**(evidence if isinstance(evidence, Mapping) else {}), **event.data}
    if "version" in ids and "model_version" not in ids:
        ids["model_version"] = ids["version"]
    try:
        refs = refs_from(ids)
    except Exception:  # a line's fields must never fail the reaction that published
        refs = {}
    return {"reflex_event": event.type, "reflex_subject": event.subject,
            "reflex_data": json.dumps(dict(event.data), default=str, sort_keys=True),
            "explain_id": explain_id(refs, current_context().get("event_id", ""))}


def _traced(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`data` with the trace context of the span publishing it as `traceparent` (shared/core/trace.py: the
    CloudEvents distributed-tracing extension's attribute, carried in `data` because the Event Grid schema Reflex
    publishes in is not extensible), so a subscriber, and Reflex's own rollout, continue the chain's trace. A
    `traceparent` the data already holds is kept; outside any span the data is unchanged."""
    from shared.core.trace import TRACEPARENT, traceparent

    current = traceparent() if TRACEPARENT not in data else ""
    return {**data, TRACEPARENT: current} if current else data


class Publisher:
    """Publishes `Reflex.*` events; the client is built lazily on the first event."""

    def __init__(self, endpoint: str = "", *, key: str = "",
                 sink: Callable[[OutboundEvent], None] | None = None, client: Any = None,
                 credential: Callable[[], Any] | None = None) -> None:
        self._endpoint = endpoint
        self._credential = credential
        self._key = key
        self._client = client
        self._sink = sink
        self._warned = False
        self.sent: list[OutboundEvent] = []  # what this publisher handed on, in order (bounded below)

    @classmethod
    def from_settings(cls, settings: Any, *, sink: Callable[[OutboundEvent], None] | None = None,
                      credential: Callable[[], Any] | None = None) -> Publisher:
        """`credential` builds the Entra ID credential used when no topic key is set (shared/core/deps.py passes the
        storage adapter's, the same managed identity the app's storage uses)."""
        return cls(settings.topic_endpoint, key=settings.topic_key, sink=sink,
                   credential=credential)

    def _get_client(self) -> Any:
        if self._client is None:
            from azure.eventgrid import EventGridPublisherClient

            if self._key:
                from azure.core.credentials import AzureKeyCredential

                credential: Any = AzureKeyCredential(self._key)
            elif self._credential is not None:
                credential = self._credential()
            else:
                raise PermanentError("publishing to the Reflex topic needs REFLEX_EVENTGRID_TOPIC_KEY or a credential "
                                     "(the worker's deps pass the managed identity's)")
            self._client = EventGridPublisherClient(self._endpoint, credential)
        return self._client

    def publish(self, event_type: str, subject: str, data: Mapping[str, Any]) -> OutboundEvent:
        """Publish `Reflex.<event_type>`; failures are logged with context, never raised to the reaction."""
        full_type = event_type if event_type.startswith("Reflex.") else f"Reflex.{event_type}"
        event = OutboundEvent(full_type, subject, _traced(data))
        self.sent.append(event)
        del self.sent[:-1000]
        if self._sink is not None:
            self._sink(event)
        log.info("published %s for %s", full_type, subject, extra=_dimensions(event))
        if not self._endpoint:
            if not self._warned:
                log.info("REFLEX_EVENTGRID_TOPIC_ENDPOINT is not set: Reflex.* events are not published")
                self._warned = True
            return event
        try:
            self._get_client().send([event.as_eventgrid()])
        except Exception as exc:
            err = map_azure_error(exc, f"event topic {self._endpoint}")
            log.warning("could not publish %s for %s: %s", full_type, subject, err)
        return event
