"""The local host's HTTP contracts: Event Grid webhook status codes (BlobCreated too), admin API, local topic.

The host runs in-process on an ephemeral port with the small test app of tests/hostapp; blob cases use a
unique container on Azurite.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient

from local.host.index import build_index, load_app
from local.host.receipts import HOSTS_CONTAINER
from local.host.runtime import Host

HOSTAPP = Path(__file__).parent / "hostapp"
FIXTURES = Path(__file__).parent / "fixtures" / "eventgrid"
CONN = "UseDevelopmentStorage=true"


def event(event_id: str | None = None, **data: Any) -> dict[str, Any]:
    return {"id": event_id or str(uuid.uuid4()), "topic": "/subscriptions/x/resourceGroups/rg/providers/"
            "Microsoft.MachineLearningServices/workspaces/ws", "subject": "models/m:1",
            "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
            "eventTime": "2024-06-01T12:00:00.1234567Z", "data": {"modelName": "m", **data},
            "dataVersion": "2", "metadataVersion": "1"}


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def app_module() -> ModuleType:
    return load_app("function_app_fixture", HOSTAPP)[0]


@pytest.fixture
def records(app_module: ModuleType) -> list[dict[str, Any]]:
    app_module.RECORDS.clear()
    return app_module.RECORDS


@pytest.fixture(scope="module")
def container() -> Iterator[ContainerClient]:
    client = BlobServiceClient.from_connection_string(CONN).get_container_client(f"hostweb-{uuid.uuid4().hex[:12]}")
    client.create_container()
    yield client
    client.delete_container()


@pytest.fixture(scope="module")
def host(app_module: ModuleType, container: ContainerClient, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[Host]:
    env = {"AzureWebJobsStorage": CONN, "TEST_CONTAINER": container.container_name, "TEST_SCHEDULE": "0 0 0 1 1 *"}
    host_id = f"test-{uuid.uuid4().hex[:12]}"
    events_log = tmp_path_factory.mktemp("topic") / "events.jsonl"
    with Host(build_index(app_module.app, env), port=0, host_id=host_id, timers=False, blob_poll=False, env=env,
              events_log=events_log) as running:
        yield running
    hosts = BlobServiceClient.from_connection_string(CONN).get_container_client(HOSTS_CONTAINER)
    for blob in hosts.list_blobs(name_starts_with=f"blobreceipts/{host_id}/"):
        hosts.delete_blob(blob.name)


def post(host: Host, path: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(host.url + path, data=data, timeout=10,
                         headers={"Content-Type": "application/json", **(headers or {})})


EG = "/runtime/webhooks/eventgrid?functionName="
NOTIFY = {"aeg-event-type": "Notification"}


def test_subscription_validation_answers_the_code(host: Host, records: list) -> None:
    validation = {"id": "v1", "topic": "/subscriptions/x", "subject": "", "eventTime": "2024-06-01T12:00:00Z",
                  "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "dataVersion": "1",
                  "metadataVersion": "1", "data": {"validationCode": "CODE-123", "validationUrl": "https://x"}}
    reply = post(host, EG + "on_event", [validation], {"aeg-event-type": "SubscriptionValidation"})
    assert reply.status_code == 200
    assert reply.json() == {"validationResponse": "CODE-123"}
    assert records == []


def test_notification_runs_once_per_event_and_answers_202(host: Host, records: list) -> None:
    reply = post(host, EG + "on_event", [event("e1"), event("e2")], NOTIFY)
    assert reply.status_code == 202
    assert sorted(r["id"] for r in records) == ["e1", "e2"]
    assert {r["type"] for r in records} == {"EventGridEvent"}
    assert records[0]["event_type"] == "Microsoft.MachineLearningServices.ModelRegistered"
    assert records[0]["data"]["modelName"] == "m"


def test_one_failing_event_fails_the_batch_with_500(host: Host, records: list,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="reflex.host"):
        reply = post(host, EG + "on_event", [event("ok1"), event("bad", fail=True), event("ok2")], NOTIFY)
    assert reply.status_code == 500
    assert sorted(r["id"] for r in records) == ["bad", "ok1", "ok2"]  # every element still ran
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "on_event" in r.getMessage()]
    assert len(failures) == 1 and "event_id=bad" in failures[0].getMessage()
    assert failures[0].exc_info and "asked to fail on event bad" in str(failures[0].exc_info[1])
    assert post(host, EG + "on_event", [event("after")], NOTIFY).status_code == 202  # the host carries on


def test_single_object_body_is_one_event(host: Host, records: list) -> None:
    assert post(host, EG + "on_event", event("solo"), NOTIFY).status_code == 202
    assert [r["id"] for r in records] == ["solo"]


def test_cloud_event_is_decoded_as_cloud_event(host: Host, records: list) -> None:
    cloud = {"id": "ce1", "source": "/subscriptions/x", "type": "Microsoft.Storage.BlobCreated",
             "specversion": "1.0", "time": "2024-06-01T12:00:00Z", "data": {"url": "u"}}
    assert post(host, EG + "on_event", [cloud], NOTIFY).status_code == 202
    assert records[0]["type"] == "CloudEvent" and records[0]["id"] == "ce1"


def test_path_and_function_name_are_case_insensitive(host: Host, records: list) -> None:
    reply = post(host, "/runtime/webhooks/EventGrid?functionName=ON_EVENT", [event("ci")], NOTIFY)
    assert reply.status_code == 202 and [r["id"] for r in records] == ["ci"]


def test_unsubscribe_is_202_and_runs_nothing(host: Host, records: list) -> None:
    assert post(host, EG + "on_event", [event()], {"aeg-event-type": "Unsubscribe"}).status_code == 202
    assert records == []


@pytest.mark.parametrize("headers", [{}, {"aeg-event-type": "Something"}])
def test_missing_or_unknown_event_type_header_is_400(host: Host, records: list, headers: dict) -> None:
    assert post(host, EG + "on_event", [event()], headers).status_code == 400
    assert records == []


@pytest.mark.parametrize("name", ["nope", "on_timer", ""])
def test_unknown_or_non_event_grid_function_is_404(host: Host, records: list, name: str) -> None:
    assert post(host, EG + name, [event()], NOTIFY).status_code == 404
    assert records == []


def test_body_that_is_not_json_is_500_as_from_the_real_host(host: Host, records: list) -> None:
    assert post(host, EG + "on_event", b"{not json", NOTIFY).status_code == 500
    assert records == []


def test_admin_runs_a_timer_now(host: Host, records: list) -> None:
    assert post(host, "/admin/functions/on_timer", {"input": ""}).status_code == 202
    wait_for(lambda: len(records) == 1)
    assert records[0] == {"function": "on_timer", "past_due": False, "type": "TimerRequest", "next": None}


def real_blob_event(name: str, container: ContainerClient, body: bytes = b"x,y\n1,2\n") -> dict[str, Any]:
    """Microsoft's documented BlobCreated sample (tests/fixtures/eventgrid/), schema as `name` has it, with
    subject, url, eTag and contentLength rewritten to a blob that is really in Azurite."""
    [sample] = json.loads((FIXTURES / name).read_text())
    blob = container.get_blob_client(f"docs/{name}")
    blob.upload_blob(body, overwrite=True)
    sample["subject"] = f"/blobServices/default/containers/{container.container_name}/blobs/docs/{name}"
    sample["data"].update(url=blob.url, eTag=blob.get_blob_properties().etag, contentLength=len(body))
    return sample


@pytest.mark.parametrize(("fixture", "kind"), [("blob_created.eventgrid.json", "EventGridEvent"),
                                               ("blob_created.cloudevents.json", "CloudEvent")])
def test_documented_blob_created_reaches_the_function_through_the_eventgrid_webhook(
        host: Host, records: list, container: ContainerClient, fixture: str, kind: str) -> None:
    event = real_blob_event(fixture, container)
    assert post(host, EG + "on_blob", [event], NOTIFY).status_code == 202
    [got] = records
    assert got["type"] == kind and got["event_type"] == "Microsoft.Storage.BlobCreated"
    assert got["name"] == f"{container.container_name}/docs/{fixture}"
    assert (got["url"], got["etag"], got["length"], got["api"]) == (
        event["data"]["url"], event["data"]["eTag"], 8, "PutBlockList")
    # the blob trigger's webhook is gone: nothing real posts there any more
    assert post(host, "/runtime/webhooks/blobs?functionName=Host.Functions.on_blob", [event], NOTIFY
                ).status_code == 404


def test_admin_runs_a_blob_function_on_an_event(host: Host, records: list, container: ContainerClient) -> None:
    event = real_blob_event("blob_created.eventgrid.json", container)
    assert post(host, "/admin/functions/on_blob", {"input": json.dumps(event)}).status_code == 202
    wait_for(lambda: len(records) == 1)
    assert records[0]["etag"] == event["data"]["eTag"] and records[0]["type"] == "EventGridEvent"


def test_admin_unknown_function_is_404_and_bad_body_400(host: Host) -> None:
    assert post(host, "/admin/functions/nope", {"input": ""}).status_code == 404
    assert post(host, "/admin/functions/on_timer", b"[1]").status_code == 400


def test_host_status(host: Host) -> None:
    reply = requests.get(host.url + "/admin/host/status", timeout=5)
    assert reply.status_code == 200
    body = reply.json()
    assert body["state"] == "Running" and body["functions"] == ["on_blob", "on_event", "on_timer"]
    assert body["id"] == host.host_id


def test_local_topic_takes_what_the_eventgrid_publisher_sends(host: Host) -> None:
    from azure.core.credentials import AzureKeyCredential
    from azure.eventgrid import EventGridEvent, EventGridPublisherClient

    client = EventGridPublisherClient(host.url + "/api/events", AzureKeyCredential("local-key"))
    subject = f"rollouts/{uuid.uuid4()}"
    client.send([EventGridEvent(subject=subject, event_type="Reflex.RolloutStepCompleted", data={"step": 1},
                                data_version="1")])
    listed = [e for e in requests.get(host.url + "/api/events", timeout=5).json() if e["subject"] == subject]
    assert len(listed) == 1 and listed[0]["eventType"] == "Reflex.RolloutStepCompleted"
    assert listed[0]["data"] == {"step": 1}
    logged = [json.loads(line) for line in host.topic.log_path.read_text().splitlines()]
    assert any(e["subject"] == subject for e in logged)
    assert post(host, "/api/events", b"nope").status_code == 400
