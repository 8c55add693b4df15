"""BlobCreated from Azurite: the poller builds Microsoft's documented event from each new blob version and
delivers it through the Event Grid webhook, once per version per function, with Event Grid's retry and dead
letter."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from local.host.blobs import BlobEventDelivery, BlobPoller, BlobSubscription, blob_created_event, subscriptions_for
from local.host.index import build_index, load_app
from local.host.receipts import HOSTS_CONTAINER, ReceiptStore
from local.host.runtime import Host

HOSTAPP = Path(__file__).parent / "hostapp"
FIXTURES = Path(__file__).parent / "fixtures" / "eventgrid"
CONN = "UseDevelopmentStorage=true"


@pytest.fixture(scope="module")
def app_module() -> ModuleType:
    return load_app("function_app_fixture", HOSTAPP)[0]


@pytest.fixture
def records(app_module: ModuleType) -> list[dict[str, Any]]:
    app_module.RECORDS.clear()
    return app_module.RECORDS


@pytest.fixture
def service() -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(CONN)


@pytest.fixture
def container(service: BlobServiceClient) -> Iterator[ContainerClient]:
    client = service.get_container_client(f"hostpoll-{uuid.uuid4().hex[:12]}")
    client.create_container()
    yield client
    client.delete_container()


@pytest.fixture
def host_id(service: BlobServiceClient) -> Iterator[str]:
    value = f"test-{uuid.uuid4().hex[:12]}"
    yield value
    hosts = service.get_container_client(HOSTS_CONTAINER)
    for blob in hosts.list_blobs(name_starts_with=f"blobreceipts/{value}/"):
        hosts.delete_blob(blob.name)


@pytest.fixture
def dead_letters(service: BlobServiceClient) -> Iterator[ContainerClient]:
    client = service.get_container_client(f"deadletter-{uuid.uuid4().hex[:12]}")
    yield client
    if client.exists():
        client.delete_container()


@contextmanager
def idle_host(app_module: ModuleType, container: ContainerClient, host_id: str, **options: Any) -> Iterator[Host]:
    """A host whose threads are not started: the test drives its poller with `poll_once`."""
    host = Host(build_index(app_module.app, env(container)), port=0, host_id=host_id, timers=False,
                env=env(container), blob_subscriptions=app_module.BLOB_SUBSCRIPTIONS, **options)
    try:
        yield host
    finally:
        host.invoker.shutdown(wait=True)
        host.server.server_close()


@pytest.fixture
def host(app_module: ModuleType, container: ContainerClient, host_id: str,
         dead_letters: ContainerClient) -> Iterator[Host]:
    """Retries due at once, dead letter after 3 attempts (infra: Event Grid's schedule, 30 attempts)."""
    with idle_host(app_module, container, host_id, max_blob_attempts=3, blob_retry_delays=(0.0,),
                   dead_letter_container=dead_letters.container_name) as idle:
        yield idle


def env(container: ContainerClient) -> dict[str, str]:
    return {"AzureWebJobsStorage": CONN, "TEST_CONTAINER": container.container_name, "TEST_SCHEDULE": "0 0 0 1 1 *"}


def poller_of(host: Host) -> BlobPoller:
    assert host.poller is not None
    return host.poller


def delivered(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((r["name"], r["etag"]) for r in records if r["function"] == "on_blob")


def fresh_poller(host: Host, container: ContainerClient) -> BlobPoller:
    """A second poller on the same receipts (another host, or this one restarted)."""
    assert host.delivery is not None
    return BlobPoller(poller_of(host).subscriptions, host.delivery, env=env(container))


def test_events_have_the_documented_shape_with_the_real_blob_properties(
        service: BlobServiceClient, container: ContainerClient) -> None:
    """Same keys, same forms as Microsoft's sample (tests/fixtures/eventgrid/blob_created.eventgrid.json): a
    quoted ETag, an integer length, the Azurite account URL; `api` says how the blob was written."""
    [sample] = json.loads((FIXTURES / "blob_created.eventgrid.json").read_text())
    small = container.get_blob_client("ds/b1/a b.csv")
    small.upload_blob(b"a,b\n1,2\n", content_type="text/csv")
    staged = container.get_blob_client("ds/b1/staged.csv")
    staged.stage_block("YmxvY2sx", b"x,y\n")
    staged.commit_block_list(["YmxvY2sx"])

    event = blob_created_event(small, small.get_blob_properties())
    assert list(event) == list(sample) and list(event["data"]) == list(sample["data"])
    props = small.get_blob_properties()
    data = event["data"]
    assert data["eTag"] == props.etag and data["eTag"].startswith('"') and data["eTag"].endswith('"')
    assert (data["contentLength"], data["contentType"], data["api"], data["blobType"]) == (
        8, "text/csv", "PutBlob", "BlockBlob")
    assert data["url"] == f"http://127.0.0.1:10000/devstoreaccount1/{container.container_name}/ds/b1/a%20b.csv"
    assert event["subject"] == f"/blobServices/default/containers/{container.container_name}/blobs/ds/b1/a b.csv"
    assert event["topic"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    assert (event["eventType"], event["dataVersion"], event["metadataVersion"]) == (
        "Microsoft.Storage.BlobCreated", "", "1")
    assert blob_created_event(small, props)["id"] == event["id"]  # a retry resends the same event
    assert blob_created_event(staged, staged.get_blob_properties())["data"]["api"] == "PutBlockList"


def test_each_blob_version_is_delivered_once_per_function(host: Host, service: BlobServiceClient,
                                                          container: ContainerClient, host_id: str,
                                                          records: list) -> None:
    name = container.container_name
    etags = {n: container.upload_blob(n, f"body of {n}".encode()).get_blob_properties().etag
             for n in ("a.csv", "dir/b.csv", "c d.csv")}
    poller = poller_of(host)

    assert poller.poll_once() == {"succeeded": 3}
    assert delivered(records) == sorted((f"{name}/{n}", etag) for n, etag in etags.items())
    got = {r["name"]: r for r in records}
    assert got[f"{name}/dir/b.csv"]["length"] == 17 and got[f"{name}/dir/b.csv"]["api"] == "PutBlob"
    assert got[f"{name}/c d.csv"]["url"].endswith(f"/{name}/c%20d.csv")
    assert {r["type"] for r in records} == {"EventGridEvent"}  # what the worker builds for an Event Grid trigger
    assert "body" not in got[f"{name}/a.csv"]  # the function never sees blob content

    assert poller.poll_once() == {}  # nothing new
    assert fresh_poller(host, container).poll_once() == {"done": 3}  # receipts are durable
    assert len(records) == 3

    new_etag = container.upload_blob("a.csv", b"changed", overwrite=True).get_blob_properties().etag
    assert poller.poll_once() == {"succeeded": 1}
    assert (f"{name}/a.csv", new_etag) in delivered(records)
    assert len(records) == 4 and records[-1]["length"] == len(b"changed")

    receipt = f'blobreceipts/{host_id}/Host.Functions.on_blob/{new_etag}/{name}/a.csv'
    metadata = service.get_blob_client(HOSTS_CONTAINER, receipt).get_blob_properties().metadata
    assert metadata == {"Status": "Done", "Attempts": "1", "Outcome": "Succeeded"}


def test_two_concurrent_pollers_deliver_each_blob_once(host: Host, container: ContainerClient,
                                                       records: list) -> None:
    for n in range(3):
        container.upload_blob(f"blob-{n}.txt", b"x")
    pollers = [poller_of(host), fresh_poller(host, container)]
    start = threading.Barrier(2)

    def run(poller: BlobPoller) -> None:
        start.wait()
        for _ in range(3):
            poller.poll_once()

    threads = [threading.Thread(target=run, args=(p,)) for p in pollers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    names = [r["name"] for r in records]
    assert sorted(names) == sorted(f"{container.container_name}/blob-{n}.txt" for n in range(3))


def test_a_failing_function_is_retried_then_dead_lettered_as_event_grid_does(
        host: Host, container: ContainerClient, dead_letters: ContainerClient, records: list) -> None:
    """500 from the webhook (the function raised) -> retried; after max attempts (3 here, 30 in infra) the event
    goes to the dead-letter container in Event Grid's layout, and is not delivered again."""
    etag = container.upload_blob("FAIL.csv", b"x").get_blob_properties().etag
    poller = poller_of(host)
    outcomes = [poller.poll_once() for _ in range(4)]
    assert outcomes == [{"failed": 1}, {"failed": 1}, {"dead-lettered": 1}, {}]
    assert len(records) == 3 and {r["id"] for r in records} == {records[0]["id"]}  # the same event, resent

    [letter_blob] = list(dead_letters.list_blobs())
    assert letter_blob.name.startswith("LOCAL-ON-BLOB/") and letter_blob.name.endswith(".json")
    [letter] = json.loads(dead_letters.download_blob(letter_blob.name).readall())
    assert (letter["deadLetterReason"], letter["deliveryAttempts"], letter["lastHttpStatusCode"]) == (
        "MaxDeliveryAttemptsExceeded", 3, 500)
    assert letter["eventType"] == "Microsoft.Storage.BlobCreated" and letter["data"]["eTag"] == etag
    assert fresh_poller(host, container).poll_once() == {"done": 1}  # dead-lettered = done
    assert len(records) == 3


def test_a_retry_waits_for_event_grids_backoff(service: BlobServiceClient, container: ContainerClient,
                                               host_id: str) -> None:
    """With Event Grid's schedule, a failed delivery is not retried before its delay (10 s first)."""
    now = [1000.0]
    sent: list[str] = []

    def refuse(function: str, body: bytes) -> int:
        sent.append(function)
        return 503

    delivery = BlobEventDelivery(ReceiptStore(service, host_id), refuse, env={"AzureWebJobsStorage": CONN},
                                 clock=lambda: now[0])
    poller = BlobPoller([BlobSubscription("f", container.container_name)], delivery,
                        env={"AzureWebJobsStorage": CONN})
    container.upload_blob("x.csv", b"1")
    assert poller.poll_once() == {"failed": 1}
    now[0] += 9
    assert poller.poll_once() == {"waiting": 1}
    now[0] += 2
    assert poller.poll_once() == {"failed": 1}
    assert sent == ["f", "f"]


def test_a_bad_request_is_dead_lettered_at_once(service: BlobServiceClient, container: ContainerClient,
                                                host_id: str, dead_letters: ContainerClient) -> None:
    delivery = BlobEventDelivery(ReceiptStore(service, host_id), lambda f, b: 400,
                                 dead_letter_container=dead_letters.container_name, env={"AzureWebJobsStorage": CONN})
    poller = BlobPoller([BlobSubscription("f", container.container_name)], delivery,
                        env={"AzureWebJobsStorage": CONN})
    container.upload_blob("x.csv", b"1")
    assert poller.poll_once() == {"dead-lettered": 1}
    [letter] = json.loads(dead_letters.download_blob(next(iter(dead_letters.list_blobs())).name).readall())
    assert (letter["deadLetterReason"], letter["deliveryAttempts"]) == ("UndeliverableDueToHttpBadRequest", 1)


def test_host_polls_on_its_own(app_module: ModuleType, container: ContainerClient, host_id: str,
                               records: list) -> None:
    with Host(build_index(app_module.app, env(container)), port=0, host_id=host_id, timers=False,
              poll_seconds=0.1, env=env(container), blob_subscriptions=app_module.BLOB_SUBSCRIPTIONS):
        container.upload_blob("live.txt", b"live")
        wait_until(lambda: records)
    assert [r["name"] for r in records] == [f"{container.container_name}/live.txt"]


def test_subscriptions_name_event_grid_functions_only(app_module: ModuleType, container: ContainerClient) -> None:
    index = build_index(app_module.app, env(container))
    [sub] = subscriptions_for(index, {"on_blob": "%TEST_CONTAINER%"}, env(container))
    assert sub.subject_begins_with == f"/blobServices/default/containers/{container.container_name}/blobs/"
    assert subscriptions_for(index, {"missing": "c"}, env(container)) == []
    with pytest.raises(ValueError, match="Event Grid triggers"):
        subscriptions_for(index, {"on_timer": "c"}, env(container))
    assert subscriptions_for(index, {"on_blob": HOSTS_CONTAINER}, env(container)) == []  # the host's own


def test_feeder_posts_each_new_blob_version_to_the_other_hosts_eventgrid_webhook(
        app_module: ModuleType, container: ContainerClient, host_id: str, records: list) -> None:
    """`--forward-to` (for `func start`): polled blobs reach the other host's Event Grid webhook as BlobCreated
    events, each version once; while that host is down, nothing is lost: the version is sent again later."""
    from local.stack import free_port

    target_port = free_port()
    index = build_index(app_module.app, env(container))
    with idle_host(app_module, container, host_id, forward_to=f"http://127.0.0.1:{target_port}",
                   blob_retry_delays=(0.0,)) as feeder_host:
        feeder = poller_of(feeder_host)
        etag = container.upload_blob("a.csv", b"first").get_blob_properties().etag
        assert feeder.poll_once() == {"failed": 1}  # the functions host is not up yet
        assert records == []

        with Host(index, port=target_port, host_id=f"{host_id}-target", timers=False, blob_poll=False,
                  env=env(container)):
            assert feeder.poll_once() == {"succeeded": 1}
            assert len(records) == 1  # the webhook answered after the function ran, as the real one does
            assert feeder.poll_once() == {}
            new_etag = container.upload_blob("a.csv", b"second", overwrite=True).get_blob_properties().etag
            container.upload_blob("b.csv", b"other")
            assert feeder.poll_once() == {"succeeded": 2}
    name = container.container_name
    assert sorted((r["name"], r["length"]) for r in records) == [
        (f"{name}/a.csv", 5), (f"{name}/a.csv", 6), (f"{name}/b.csv", 5)]
    assert {r["etag"] for r in records if r["name"].endswith("a.csv")} == {etag, new_etag}


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)

