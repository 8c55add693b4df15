"""Typed, read-only views of the events Reflex reacts to, parsed from raw Event Grid or CloudEvents JSON.

Why parse eagerly into frozen dataclasses: every reaction is keyed on fields of its event (event id, blob
URL + ETag, model name + version). A missing or mistyped field must fail at the door with `InvalidEvent`
naming the field and the event id, so it is dead-lettered with a reason instead of failing halfway through a
reaction. Real payloads demand tolerance elsewhere (see ../shared/reference/functions-eventgrid.md §4):

* Azure ML `data` keys come camelCase (REST spec, real payloads) or PascalCase (doc samples): read them
  case-insensitively;
* model versions arrive as int or string: always exposed as `str`;
* blob ETags arrive quoted (`"\\"0x8D…\\""`, the Event Grid doc's BlobCreated sample) or bare (the Functions
  doc's sample): always exposed bare (tests/fixtures/eventgrid/ holds both samples);
* unknown fields are ignored, and unknown event types parse as a plain `Event`.

`parse` never raises anything but `InvalidEvent`, whatever JSON it is given (a hypothesis test holds it to that).

Every event type Reflex consumes is here: Azure ML's and Blob Storage's, and `Reflex.ModelRegistered`, Reflex's own
event that it both publishes (the registration gate) and consumes (the rollout; infra subscribes the rollout's
trigger to Azure ML's and Reflex's topic alike). The other `Reflex.*` events are published only
(shared/core/publish.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.core.errors import PermanentError

__all__ = [
    "InvalidEvent", "Event", "BlobCreated", "RunCompleted", "RunStatusChanged", "ModelRegistered",
    "ReflexModelRegistered", "parse", "from_function_event", "blob_created", "raw_from_function_event",
    "BLOB_CREATED", "BLOB_COMPLETING_APIS", "RUN_COMPLETED", "RUN_STATUS_CHANGED", "MODEL_REGISTERED",
    "REFLEX_MODEL_REGISTERED", "blob_subject", "blob_url_parts", "trace_carrier",
]

_AML = "Microsoft.MachineLearningServices."
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
RUN_COMPLETED = _AML + "RunCompleted"
RUN_STATUS_CHANGED = _AML + "RunStatusChanged"
MODEL_REGISTERED = _AML + "ModelRegistered"
REFLEX_MODEL_REGISTERED = "Reflex.ModelRegistered"

# The `data.api` values of a BlobCreated that mean "this blob is complete" (MicrosoftDocs/azure-docs
# articles/event-grid/event-schema-blob-storage.md: PutBlob, PutBlockList and CopyBlob fire once the block blob is
# committed; on Data Lake Gen2 only FlushWithClose does, CreateFile fires for an empty file being created).
BLOB_COMPLETING_APIS: frozenset[str] = frozenset({"PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"})
_SUBJECT_PREFIX = "/blobServices/default/containers/"


class InvalidEvent(PermanentError):
    """The event cannot be acted on: `field` is missing or mistyped in event `event_id`."""

    def __init__(self, message: str, *, event_id: str = "?", field: str = "") -> None:
        super().__init__(f"invalid event {event_id}: {message}")
        self.event_id = event_id
        self.field = field


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Event:
    """Any event, in either schema. `source` is Event Grid's `topic` or CloudEvents' `source`."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime | None
    data: Mapping[str, Any] = field(repr=False)
    schema: str = "eventgrid"  # or "cloudevents"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class BlobCreated(Event):
    """`Microsoft.Storage.BlobCreated` from the storage account's system topic: which blob version exists now.

    Blob intake reads only this (url, eTag, contentLength, contentType, api), never the blob's content: a blob
    trigger would have the host read the whole blob and push it to the worker, and would hand over an ETag that
    JSON.NET serializes as `{}` (see functions/data_arrival.py).
    """

    url: str = ""
    container: str = ""
    blob_name: str = ""
    etag: str = ""
    content_length: int | None = None
    content_type: str = ""
    blob_type: str = "BlockBlob"
    api: str = ""
    sequencer: str = ""

    @property
    def key(self) -> str:
        """Idempotency key of this blob version: the blob (container/name, as in its URL) and ETag, not the
        event id, so a redelivered event and a second event for the same version coalesce."""
        return f"{self.container}/{self.blob_name}@{self.etag}"

    @property
    def completes_blob(self) -> bool:
        """True when `api` is a call that leaves a complete blob (`BLOB_COMPLETING_APIS`)."""
        return self.api in BLOB_COMPLETING_APIS


@dataclass(frozen=True)
class RunCompleted(Event):
    """`Microsoft.MachineLearningServices.RunCompleted` (camelCase keys in real payloads)."""

    experiment_id: str = ""
    experiment_name: str = ""
    run_id: str = ""
    run_type: str | None = None
    run_tags: Mapping[str, Any] = field(default_factory=dict)
    run_properties: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RunStatusChanged(RunCompleted):
    """`…RunStatusChanged`; Azure ML sends it only for failures, but `run_status` says which."""

    run_status: str = ""


@dataclass(frozen=True)
class ModelRegistered(Event):
    """`…ModelRegistered`; the version is always a string, whatever the payload carried."""

    model_name: str = ""
    model_version: str = ""
    model_tags: Mapping[str, Any] = field(default_factory=dict)
    model_properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReflexModelRegistered(ModelRegistered):
    """`Reflex.ModelRegistered`: Reflex registered a model, or wants one rolled out; the rollout reacts to it as to
    Azure ML's own ModelRegistered.

    Sent three ways, all in the Event Grid schema: the registration gate publishes it to Reflex's topic
    (`outbound`, shared/registration/flow.py; Event Grid adds `topic` and `metadataVersion` on delivery), the
    reconciler hands one to the rollout reaction for a version no event announced (shared/rollout/discovery.py),
    and so does an operator's new rollout attempt (shared/rollout/retry.py). The model is `data.model` and
    `data.version` (gate, discovery) or `data.modelName` and `data.modelVersion` (a new attempt), read
    case-insensitively as every `data` key; `retry_of` is a new attempt's `data.retryOf`.
    """

    retry_of: str = ""

    @staticmethod
    def outbound(model: str, version: str, details: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """(event type, subject, data) of the gate's event: its outcome's `details` with `model` and `version`."""
        return REFLEX_MODEL_REGISTERED, f"models/{model}:{version}", {**details, "model": model, "version": version}


# ------------------------------------------------------------------------------------------------ helpers


class _Data:
    """Case-insensitive, type-checked access to an event's `data` object."""

    def __init__(self, data: Mapping[str, Any], event_id: str) -> None:
        self._by_lower = {str(k).lower(): v for k, v in data.items()}
        self._id = event_id

    def _fail(self, key: str, expected: str, value: Any = None, missing: bool = False) -> InvalidEvent:
        what = "is missing" if missing else f"must be {expected}, got {type(value).__name__}"
        return InvalidEvent(f"data.{key} {what}", event_id=self._id, field=f"data.{key}")

    def get(self, key: str, default: Any = None) -> Any:
        return self._by_lower.get(key.lower(), default)

    def text(self, key: str, *, required: bool = True, default: str = "") -> str:
        value = self.get(key)
        if value is None:
            if required:
                raise self._fail(key, "a string", missing=True)
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self._fail(key, "a string", value)
        text = str(value)
        if required and not text.strip():
            raise InvalidEvent(f"data.{key} is empty", event_id=self._id, field=f"data.{key}")
        return text

    def version(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise self._fail(key, "a version", missing=True)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self._fail(key, "an integer or string version", value)
        text = str(value).strip()
        if not text:
            raise InvalidEvent(f"data.{key} is empty", event_id=self._id, field=f"data.{key}")
        return text

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.get(key)
        if value is None:
            return _frozen({})
        if not isinstance(value, Mapping):
            raise self._fail(key, "an object", value)
        return _frozen(value)


def _parse_time(value: str, event_id: str, name: str) -> datetime:
    """ISO-8601 with up to 7 fractional digits (Event Grid) and a `Z` or offset suffix."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{(digits + '000000')[:6]}{rest}" if digits else head + rest
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent(f"{name} is not an ISO-8601 time: {value[:40]!r}", event_id=event_id,
                           field=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def blob_url_parts(url: str) -> tuple[str, str]:
    """(container, blob name) from a blob URL, Azure (`acct.blob.core.windows.net/c/b`) or Azurite
    (`127.0.0.1:10000/devstoreaccount1/c/b`) style; the name is URL-decoded."""
    parts = urlsplit(url)
    segments = parts.path.lstrip("/").split("/")
    host = parts.hostname or ""
    if not host.endswith((".blob.core.windows.net", ".dfs.core.windows.net")) and len(segments) > 2:
        segments = segments[1:]  # path-style (emulator): the first segment is the account
    if len(segments) < 2 or not segments[0] or not segments[-1]:
        raise ValueError(f"not a blob URL: {url!r}")
    return segments[0], unquote("/".join(segments[1:]))


def blob_subject(container: str, blob_name: str) -> str:
    """The subject a storage account gives a blob's events: `/blobServices/default/containers/<c>/blobs/<name>`."""
    return f"{_SUBJECT_PREFIX}{container}/blobs/{blob_name}"


def _blob_from_subject(subject: str) -> tuple[str, str] | None:
    if not subject.startswith(_SUBJECT_PREFIX):
        return None
    container, sep, blob = subject[len(_SUBJECT_PREFIX):].partition("/blobs/")
    return (container, blob) if sep and container and blob else None


def _envelope(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The schema-independent envelope; raises InvalidEvent for a missing id/type or mistyped fields."""
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise InvalidEvent("id is missing or not a string", event_id=str(event_id)[:80] if event_id else "?",
                           field="id")
    cloud = "specversion" in raw
    names = ("type", "source", "time") if cloud else ("eventType", "topic", "eventTime")
    event_type = raw.get(names[0])
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidEvent(f"{names[0]} is missing or not a string", event_id=event_id, field=names[0])
    source = raw.get(names[1], "")
    subject = raw.get("subject", "")
    for name, value in ((names[1], source), ("subject", subject)):
        if value is not None and not isinstance(value, str):
            raise InvalidEvent(f"{name} must be a string", event_id=event_id, field=name)
    time_raw = raw.get(names[2])
    if time_raw is not None and not isinstance(time_raw, str):
        raise InvalidEvent(f"{names[2]} must be a string", event_id=event_id, field=names[2])
    data = raw.get("data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InvalidEvent("data must be an object", event_id=event_id, field="data")
    return {
        "id": event_id, "type": event_type, "source": source or "", "subject": subject or "",
        "time": _parse_time(time_raw, event_id, names[2]) if time_raw else None,
        "data": _frozen(data), "schema": "cloudevents" if cloud else "eventgrid", "raw": _frozen(raw),
    }


def _blob_created(env: dict[str, Any], d: _Data) -> BlobCreated:
    """Container and name come from the subject, which the subscription's `subjectBeginsWith` filter matches (the
    docs' sample spells its subject container `test-container` but its URL's `testcontainer`); the URL is the
    fallback for a subject that is not a blob path."""
    url = d.text("url")
    located = _blob_from_subject(env["subject"])
    if located is None:
        try:
            located = blob_url_parts(url)
        except ValueError:
            raise InvalidEvent(f"neither subject {env['subject'][:120]!r} nor data.url {url[:120]!r} names a blob",
                               event_id=env["id"], field="subject") from None
    container, blob = located
    length = d.get("contentLength")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
        raise InvalidEvent("data.contentLength must be an integer", event_id=env["id"], field="data.contentLength")
    etag = d.text("eTag").strip().strip('"')
    if not etag:
        raise InvalidEvent("data.eTag is empty", event_id=env["id"], field="data.eTag")
    return BlobCreated(**env, url=url, container=container, blob_name=blob, etag=etag, content_length=length,
                       content_type=d.text("contentType", required=False),
                       blob_type=d.text("blobType", required=False, default="BlockBlob"),
                       api=d.text("api", required=False), sequencer=d.text("sequencer", required=False))


def _run(env: dict[str, Any], d: _Data) -> dict[str, Any]:
    run_type = d.get("runType")
    return {
        "experiment_id": d.text("experimentId", required=False),
        "experiment_name": d.text("experimentName", required=False),
        "run_id": d.text("runId"),
        "run_type": run_type if isinstance(run_type, str) else None,
        "run_tags": d.mapping("runTags"),
        "run_properties": d.mapping("runProperties"),
    }


def _either(d: _Data, key: str, alias: str) -> str:
    """`key`, or `alias` when only that is there (the missing-field error then names `key`)."""
    return alias if d.get(key) is None and d.get(alias) is not None else key


def parse(raw: Any) -> Event:
    """Parse one event dict (Event Grid or CloudEvents 1.0 schema) into its typed view.

    Raises:
        InvalidEvent: the event is not an object, or a required field is missing or mistyped. Nothing else.

    Examples:
        >>> e = parse({"id": "1", "eventType": MODEL_REGISTERED, "subject": "models/m:3", "topic": "t",
        ...            "eventTime": "2024-01-01T00:00:00.1234567Z", "dataVersion": "1",
        ...            "data": {"ModelName": "m", "ModelVersion": 3}})
        >>> (type(e).__name__, e.model_name, e.model_version)
        ('ModelRegistered', 'm', '3')
    """
    if not isinstance(raw, Mapping):
        raise InvalidEvent(f"an event must be a JSON object, got {type(raw).__name__}")
    try:
        env = _envelope(raw)
        d = _Data(env["data"], env["id"])
        kind = env["type"]
        if kind == BLOB_CREATED:
            return _blob_created(env, d)
        if kind == RUN_COMPLETED:
            return RunCompleted(**env, **_run(env, d))
        if kind == RUN_STATUS_CHANGED:
            return RunStatusChanged(**env, **_run(env, d), run_status=d.text("runStatus"))
        if kind == MODEL_REGISTERED:
            return ModelRegistered(**env, model_name=d.text("modelName"), model_version=d.version("modelVersion"),
                                   model_tags=d.mapping("modelTags"), model_properties=d.mapping("modelProperties"))
        if kind == REFLEX_MODEL_REGISTERED:
            retry_of = d.get("retryOf")
            return ReflexModelRegistered(**env, model_name=d.text(_either(d, "modelName", "model")),
                                         model_version=d.version(_either(d, "modelVersion", "version")),
                                         retry_of=retry_of if isinstance(retry_of, str) else "")
        return Event(**env)
    except InvalidEvent:
        raise
    except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        # Defence in depth: whatever slipped past the field checks is still a bad event, never a crash.
        raise InvalidEvent(f"unreadable event: {type(exc).__name__}: {str(exc)[:200]}",
                           event_id=str(raw.get("id", "?"))[:80]) from exc


def trace_carrier(raw: Any) -> str:
    """The W3C traceparent an event carries (unchecked: shared/core/trace.py `context_of` validates it), or "".

    Where each form carries it, first found wins: a CloudEvents-schema event's `traceparent` extension attribute
    (cloudevents/spec cloudevents/extensions/distributed-tracing.md); a `Reflex.*` event's `data.traceparent` (the
    Event Grid schema has no extension attributes, so Reflex puts it in `data`: shared/core/publish.py); an Azure ML
    run or model event's Reflex tag, `data.runTags` / `data.modelTags` `reflex.traceparent` (Azure ML sends the job's
    and the model's tags there: MicrosoftDocs/azure-docs articles/event-grid/event-schema-machine-learning.md, and
    tests/events/). `data` keys are read case-insensitively, as everywhere here. Never raises.
    """
    from shared.core.trace import TAG, TRACEPARENT

    if not isinstance(raw, Mapping):
        return ""
    found = raw.get(TRACEPARENT)
    if isinstance(found, str) and found:
        return found
    data = raw.get("data")
    if not isinstance(data, Mapping):
        return ""
    try:
        d = _Data(data, "")
    except Exception:  # keys that do not stringify: no carrier
        return ""
    candidates = [d.get(TRACEPARENT)]
    for key in ("runTags", "modelTags"):
        tags = d.get(key)
        if isinstance(tags, Mapping):
            candidates.append(tags.get(TAG))
    return next((c for c in candidates if isinstance(c, str) and c), "")


def raw_from_function_event(event: Any) -> dict[str, Any]:
    """The raw event dict behind the trigger's `func.EventGridEvent` or `func.CloudEvent` (for dead letters
    and replays, which must keep the original payload)."""
    if hasattr(event, "event_type"):  # func.EventGridEvent
        when = event.event_time
        return {"id": event.id, "eventType": event.event_type, "topic": event.topic or "",
                "subject": event.subject or "", "dataVersion": event.data_version or "",
                "eventTime": when.isoformat() if isinstance(when, datetime) else when,
                "data": event.get_json()}
    if hasattr(event, "specversion"):  # func.CloudEvent
        when = getattr(event, "time", None)
        raw = {"id": event.id, "type": event.type, "source": event.source, "specversion": event.specversion,
               "subject": getattr(event, "subject", "") or "",
               "time": when.isoformat() if isinstance(when, datetime) else when, "data": event.get_json()}
        # the binding keeps the attributes it does not know as extensions (azure-functions-python-library
        # azure/functions/eventgrid.py `decode`, `CloudEvent.extension_attrs`): the distributed-tracing one is kept
        extensions = getattr(event, "extension_attrs", None)
        carried = extensions.get("traceparent") if isinstance(extensions, Mapping) else None
        if isinstance(carried, str):
            raw["traceparent"] = carried
        return raw
    raise InvalidEvent(f"not an Event Grid or CloudEvent trigger object: {type(event).__name__}")


def from_function_event(event: Any) -> Event:
    """Build the typed view from the Functions trigger's `func.EventGridEvent` or `func.CloudEvent`."""
    return parse(raw_from_function_event(event))


def blob_created(raw: Any) -> BlobCreated:
    """A blob reaction's payload (the raw BlobCreated event, either schema, as the trigger or a replay hands it)
    as a `BlobCreated`.

    Raises:
        InvalidEvent: not an event object, another event type, or a BlobCreated without a usable url or eTag.
    """
    event = parse(raw)
    if not isinstance(event, BlobCreated):
        raise InvalidEvent(f"expected {BLOB_CREATED}, got {event.type}", event_id=event.id, field="eventType")
    return event
