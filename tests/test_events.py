"""Parsing of real-shaped payloads: each property against the raw dict, absent and present cases, and a
property test that `parse` raises nothing but InvalidEvent on arbitrary JSON."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core import events
from shared.core.events import InvalidEvent, parse

EVENTS = Path(__file__).parent / "events"
EVENTGRID = Path(__file__).parent / "fixtures" / "eventgrid"  # Microsoft's BlobCreated samples, see its README


def load_event(name: str) -> dict[str, Any]:
    body = json.loads((EVENTS / name).read_text())
    return body[0] if isinstance(body, list) else body


def test_model_registered_pascal_case_int_version() -> None:
    raw = load_event("model_registered_pascal.json")
    e = parse(raw)
    assert isinstance(e, events.ModelRegistered)
    assert e.model_name == raw["data"]["ModelName"]
    assert e.model_version == "20" and isinstance(e.model_version, str)
    assert dict(e.model_tags) == raw["data"]["ModelTags"]
    assert dict(e.model_properties) == raw["data"]["ModelProperties"]
    assert e.id == raw["id"] and e.source == raw["topic"] and e.subject == raw["subject"]
    assert e.time == dt.datetime(2017, 6, 26, 18, 41, 0, 958410, tzinfo=dt.UTC)
    assert e.schema == "eventgrid"


def test_model_registered_camel_case_real_payload() -> None:
    raw = load_event("model_registered_camel.json")
    e = parse(raw)
    assert isinstance(e, events.ModelRegistered)
    assert (e.model_name, e.model_version) == ("heart-failure-model", "1")
    assert e.model_tags["reflex.managed"] == "true"


def test_model_registered_cloudevents_schema() -> None:
    raw = load_event("model_registered_cloudevent.json")
    e = parse(raw)
    assert isinstance(e, events.ModelRegistered) and e.schema == "cloudevents"
    assert e.source == raw["source"] and e.type == raw["type"]
    assert e.model_version == "20"


def test_model_registered_absent_optional_fields_default_empty() -> None:
    raw = load_event("model_registered_camel.json")
    raw["data"] = {"modelName": "m", "modelVersion": "7"}
    e = parse(raw)
    assert isinstance(e, events.ModelRegistered)
    assert dict(e.model_tags) == {} and dict(e.model_properties) == {}


@pytest.mark.parametrize("data, field", [
    ({"modelVersion": 1}, "data.modelName"),
    ({"modelName": "m"}, "data.modelVersion"),
    ({"modelName": "m", "modelVersion": [1]}, "data.modelVersion"),
    ({"modelName": 5.5, "modelVersion": 1}, "data.modelName"),
    ({"modelName": "m", "modelVersion": 1, "modelTags": "x"}, "data.modelTags"),
])
def test_model_registered_missing_or_mistyped_fields_name_field_and_id(data: dict, field: str) -> None:
    raw = load_event("model_registered_camel.json")
    raw["data"] = data
    with pytest.raises(InvalidEvent) as info:
        parse(raw)
    assert info.value.field.lower() == field.lower()
    assert raw["id"] in str(info.value)


def test_run_completed() -> None:
    raw = load_event("run_completed.json")
    e = parse(raw)
    assert isinstance(e, events.RunCompleted) and not isinstance(e, events.RunStatusChanged)
    assert e.run_id == raw["data"]["runId"] and e.experiment_name == raw["data"]["experimentName"]
    assert e.run_type is None and dict(e.run_tags) == {}
    assert e.run_properties["iteration"] == "5"


def test_run_status_changed_carries_status() -> None:
    e = parse(load_event("run_status_changed.json"))
    assert isinstance(e, events.RunStatusChanged) and e.run_status == "failed"


def load_sample(name: str) -> dict[str, Any]:
    [event] = json.loads((EVENTGRID / name).read_text())
    return event


@pytest.mark.parametrize(("name", "schema"), [("blob_created.eventgrid.json", "eventgrid"),
                                              ("blob_created.cloudevents.json", "cloudevents")])
def test_documented_blob_created_in_both_schemas(name: str, schema: str) -> None:
    raw = load_sample(name)
    e = events.blob_created(raw)
    assert e.schema == schema and e.id == "831e1650-001e-001b-66ab-eeb76e069631"
    assert raw["data"]["eTag"] == '"0x8D4BCC2E4835CD0"' and e.etag == "0x8D4BCC2E4835CD0"  # quoted in the sample
    assert (e.content_length, e.content_type, e.api, e.blob_type) == (524288, "text/plain", "PutBlockList",
                                                                      "BlockBlob")
    assert e.url == "https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt"
    # the sample's subject says test-container, its URL testcontainer: the subject (what the filter matches) wins
    assert (e.container, e.blob_name) == ("test-container", "new-file.txt")
    assert e.completes_blob and e.key == "test-container/new-file.txt@0x8D4BCC2E4835CD0"


def test_documented_blob_created_with_a_bare_etag_through_the_workers_event_object() -> None:
    """The Functions doc's sample has the bare eTag; parsed from the `func.EventGridEvent` the worker builds."""
    from local.host.invoke import decode_event

    raw = load_sample("blob_created.functions-doc.json")
    fe = decode_event(raw)
    assert isinstance(fe, func.EventGridEvent)
    e = events.blob_created(events.raw_from_function_event(fe))
    assert (e.etag, e.content_length, e.api, e.blob_name) == ("0x8D562831044DDD0", 2248, "PutBlockList", "blobname.jpg")
    assert e.key == events.blob_created(raw).key  # same version, same key, whichever way it arrived
    cloud = events.raw_from_function_event(decode_event(load_sample("blob_created.cloudevents.json")))
    assert events.blob_created(cloud).etag == "0x8D4BCC2E4835CD0"


@pytest.mark.parametrize(("api", "completes"), [("PutBlob", True), ("PutBlockList", True), ("CopyBlob", True),
                                                ("FlushWithClose", True), ("CreateFile", False),
                                                ("SftpCreate", False), ("", False)])
def test_which_apis_complete_a_blob(api: str, completes: bool) -> None:
    raw = load_sample("blob_created.eventgrid.json")
    raw["data"]["api"] = api
    assert events.blob_created(raw).completes_blob is completes


def test_blob_created_without_a_usable_etag_or_blob_is_invalid() -> None:
    raw = load_sample("blob_created.eventgrid.json")
    raw["data"]["eTag"] = {}  # what the blob trigger's serialized Properties.ETag is
    with pytest.raises(InvalidEvent, match=r"data\.eTag must be a string"):
        events.blob_created(raw)
    raw["data"]["eTag"] = '""'
    with pytest.raises(InvalidEvent, match=r"data\.eTag is empty"):
        events.blob_created(raw)
    raw = load_sample("blob_created.eventgrid.json")
    raw["subject"], raw["data"]["url"] = "elsewhere", "not a url"
    with pytest.raises(InvalidEvent, match="names a blob"):
        events.blob_created(raw)
    raw = load_sample("blob_created.eventgrid.json")
    raw["subject"] = ""  # no subject: the URL names the blob
    assert (events.blob_created(raw).container, events.blob_created(raw).blob_name) == ("testcontainer",
                                                                                       "new-file.txt")


def test_blob_url_parts_azure_and_azurite() -> None:
    assert events.blob_url_parts("https://acct.blob.core.windows.net/data/ds/b1/a%20b.csv") == ("data", "ds/b1/a b.csv")
    assert events.blob_url_parts("http://127.0.0.1:10000/devstoreaccount1/data/ds/b1/x.csv") == ("data", "ds/b1/x.csv")


def test_unknown_type_parses_as_generic_event() -> None:
    e = parse({"id": "1", "eventType": "Contoso.Thing", "subject": "s", "data": {"x": 1}})
    assert type(e) is events.Event and e.data["x"] == 1


@pytest.mark.parametrize("raw, field", [
    ({"eventType": "x"}, "id"),
    ({"id": "1"}, "eventType"),
    ({"id": "1", "specversion": "1.0"}, "type"),
    ({"id": "1", "eventType": "x", "data": [1]}, "data"),
    ({"id": "1", "eventType": "x", "eventTime": "yesterday"}, "eventTime"),
])
def test_envelope_errors(raw: dict, field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse(raw)
    assert info.value.field == field


def test_from_function_event_eventgrid_and_cloudevent() -> None:
    raw = load_event("model_registered_camel.json")
    fe = func.EventGridEvent(id=raw["id"], data=raw["data"], topic=raw["topic"], subject=raw["subject"],
                             event_type=raw["eventType"], event_time=dt.datetime(2020, 3, 11, tzinfo=dt.UTC),
                             data_version="1")
    e = events.from_function_event(fe)
    assert isinstance(e, events.ModelRegistered) and e.model_version == "1"
    ce = func.CloudEvent(id="c1", source="/ws", type=events.MODEL_REGISTERED, specversion="1.0",
                         data={"ModelName": "m", "ModelVersion": 2}, subject="models/m:2")
    e2 = events.from_function_event(ce)
    assert isinstance(e2, events.ModelRegistered) and e2.model_version == "2"


def _delivered(data: dict[str, Any]) -> dict[str, Any]:
    """`Reflex.ModelRegistered` as Event Grid delivers the gate's event: what `Publisher` sends (shared/core/publish.py
    `as_eventgrid`) with `topic` and `metadataVersion`, which Event Grid stamps onto an event that lacks them
    (https://learn.microsoft.com/javascript/api/@azure/functions/eventgridpartialevent: "If not included, Event
    Grid will stamp onto the event")."""
    from shared.core.publish import OutboundEvent

    event_type, subject, body = events.ReflexModelRegistered.outbound("m", "3", data)
    sent = OutboundEvent(event_type, subject, body).as_eventgrid()
    return {**sent, "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/topics/reflex",
            "metadataVersion": "1"}


def test_reflex_model_registered_as_the_gate_publishes_it() -> None:
    e = parse(_delivered({"job": "j1", "model": "m", "decision": {"register": True}, "version": "3"}))
    assert isinstance(e, events.ReflexModelRegistered) and isinstance(e, events.ModelRegistered)
    assert (e.type, e.model_name, e.model_version, e.retry_of, e.subject) == (
        "Reflex.ModelRegistered", "m", "3", "", "models/m:3")
    assert e.data["job"] == "j1" and e.data["decision"] == {"register": True}  # the gate's details ride along


def test_reflex_model_registered_from_discovery_and_an_operators_new_attempt() -> None:
    from shared.rollout.discovery import discovery_event

    found = parse(discovery_event("m", "4"))
    assert isinstance(found, events.ReflexModelRegistered) and (found.model_name, found.model_version) == ("m", "4")
    again = parse({"id": "r1", "eventType": "Reflex.ModelRegistered", "subject": "models/m:4", "topic": "",
                   "data": {"modelName": "m", "modelVersion": 4, "retryOf": "e0", "requestedBy": "op"}})
    assert isinstance(again, events.ReflexModelRegistered)
    assert (again.model_name, again.model_version, again.retry_of) == ("m", "4", "e0")


@pytest.mark.parametrize(("data", "field"), [
    ({"version": "1"}, "data.modelName"),
    ({"model": "m"}, "data.modelVersion"),
    ({"model": "", "version": "1"}, "data.model"),
    ({"modelName": "m", "modelVersion": True}, "data.modelVersion"),
])
def test_reflex_model_registered_without_a_model_is_invalid(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse({"id": "r2", "eventType": "Reflex.ModelRegistered", "subject": "models/m", "data": data})
    assert caught.value.field == field and "r2" in str(caught.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20)
event_keys = st.sampled_from(["id", "eventType", "type", "specversion", "topic", "source", "subject", "eventTime",
                              "time", "data", "dataVersion"])
event_types = st.sampled_from([events.BLOB_CREATED, events.RUN_COMPLETED, events.RUN_STATUS_CHANGED,
                               events.MODEL_REGISTERED, events.REFLEX_MODEL_REGISTERED, "x"])
data_keys = st.sampled_from(["url", "eTag", "contentLength", "runId", "runTags", "modelName", "ModelVersion",
                             "modelTags", "model", "version", "retryOf", "runStatus", "blobType"])
shaped = st.fixed_dictionaries(
    {"id": st.text(max_size=8) | st.integers(), "eventType": event_types},
    optional={"data": st.dictionaries(data_keys, json_values, max_size=6), "eventTime": st.text(max_size=30),
              "subject": json_values, "topic": json_values})


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, st.dictionaries(event_keys, json_values, max_size=8), shaped))
def test_parse_raises_only_invalid_event(raw: Any) -> None:
    try:
        parse(raw)
    except InvalidEvent:
        pass


def test_blob_created_accepts_blobcreated_events_only() -> None:
    with pytest.raises(InvalidEvent, match=r"expected Microsoft\.Storage\.BlobCreated"):
        events.blob_created(load_event("run_completed.json"))
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        events.blob_created(["not", "an", "event"])
