"""Blob triggers by polling Azurite: receipts deliver each version once per function, poison after 5 tries."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient

from local.host.blobs import POISON_QUEUE, BlobDelivery, BlobPath, BlobPoller
from local.host.index import FunctionEntry, build_index, load_app
from local.host.invoke import Invoker
from local.host.receipts import HOSTS_CONTAINER, ReceiptStore
from local.host.runtime import Host

HOSTAPP = Path(__file__).parent / "hostapp"
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
def index(app_module: ModuleType, container: ContainerClient) -> dict[str, FunctionEntry]:
    return build_index(app_module.app, env(container))


def env(container: ContainerClient) -> dict[str, str]:
    return {"AzureWebJobsStorage": CONN, "TEST_CONTAINER": container.container_name, "TEST_SCHEDULE": "0 0 0 1 1 *"}


def make_poller(service: BlobServiceClient, index: dict[str, FunctionEntry], host_id: str,
                container: ContainerClient) -> BlobPoller:
    invoker = Invoker(max_workers=4)
    delivery = BlobDelivery(invoker, ReceiptStore(service, host_id), env=env(container))
    return BlobPoller(index, delivery, invoker, env=env(container))


def delivered(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((r["name"], r["etag"]) for r in records if r["function"] == "on_blob")


def test_each_blob_version_is_delivered_once(service: BlobServiceClient, container: ContainerClient,
                                             index: dict[str, FunctionEntry], host_id: str, records: list) -> None:
    name = container.container_name
    etags = {n: container.upload_blob(n, f"body of {n}".encode()).get_blob_properties().etag
             for n in ("a.csv", "dir/b.csv", "c d.csv")}
    poller = make_poller(service, index, host_id, container)

    assert poller.poll_once() == {"succeeded": 3}
    assert delivered(records) == sorted((f"{name}/{n}", etag) for n, etag in etags.items())
    got = {r["name"]: r for r in records}
    assert got[f"{name}/dir/b.csv"]["body"] == "body of dir/b.csv" and got[f"{name}/dir/b.csv"]["length"] == 17
    assert got[f"{name}/c d.csv"]["uri"].endswith(f"/{name}/c%20d.csv")

    assert poller.poll_once() == {}  # nothing new
    assert make_poller(service, index, host_id, container).poll_once() == {"done": 3}  # receipts are durable
    assert len(records) == 3

    new_etag = container.upload_blob("a.csv", b"changed", overwrite=True).get_blob_properties().etag
    assert poller.poll_once() == {"succeeded": 1}
    assert (f"{name}/a.csv", new_etag) in delivered(records)
    assert len(records) == 4 and records[-1]["body"] == "changed"

    receipt = f'blobreceipts/{host_id}/Host.Functions.on_blob/{new_etag}/{name}/a.csv'
    metadata = service.get_blob_client(HOSTS_CONTAINER, receipt).get_blob_properties().metadata
    assert metadata == {"Status": "Done", "Attempts": "1", "Outcome": "Succeeded"}


def test_two_concurrent_pollers_deliver_each_blob_once(service: BlobServiceClient, container: ContainerClient,
                                                       index: dict[str, FunctionEntry], host_id: str,
                                                       records: list) -> None:
    for n in range(3):
        container.upload_blob(f"blob-{n}.txt", b"x")
    pollers = [make_poller(service, index, host_id, container) for _ in range(2)]
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


def test_failing_blob_goes_to_the_poison_queue_after_five_attempts(
        service: BlobServiceClient, container: ContainerClient, index: dict[str, FunctionEntry], host_id: str,
        records: list) -> None:
    etag = container.upload_blob("bad.csv", b"FAIL please").get_blob_properties().etag
    poller = make_poller(service, index, host_id, container)
    outcomes = [poller.poll_once() for _ in range(6)]
    assert outcomes == [{"failed": 1}] * 4 + [{"poisoned": 1}, {}]
    assert len(records) == 5

    queue = QueueClient.from_connection_string(CONN, POISON_QUEUE)
    ours = []
    for message in queue.receive_messages(messages_per_page=32, visibility_timeout=5):
        body = json.loads(base64.b64decode(message.content))
        if body.get("ContainerName") == container.container_name:
            ours.append(body)
            queue.delete_message(message)
    assert ours == [{"Type": "BlobTrigger", "FunctionId": "Host.Functions.on_blob", "BlobType": "BlockBlob",
                     "ContainerName": container.container_name, "BlobName": "bad.csv", "ETag": etag}]
    assert make_poller(service, index, host_id, container).poll_once() == {"done": 1}  # poisoned = done
    assert len(records) == 5


def test_host_polls_on_its_own_and_ignores_blobs_outside_the_path(
        app_module: ModuleType, service: BlobServiceClient, container: ContainerClient, host_id: str,
        records: list) -> None:
    with Host(build_index(app_module.app, env(container)), port=0, host_id=host_id, timers=False,
              poll_seconds=0.1, env=env(container)):
        container.upload_blob("live.txt", b"live")
        deadline = time.monotonic() + 10
        while not records and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [r["name"] for r in records] == [f"{container.container_name}/live.txt"]


@pytest.mark.parametrize(("path", "blob", "expected"), [
    ("c/{name}", "a/b.csv", {"name": "a/b.csv"}),
    ("c/in/{name}", "in/x.csv", {"name": "x.csv"}),
    ("c/in/{name}", "out/x.csv", None),
    ("c/in/{name}.csv", "in/x.csv", {"name": "x"}),
    ("c/in/{name}.csv", "in/x.txt", None),
    ("c/{dataset}/{batch}/_SUCCESS", "sales/2024-06/_SUCCESS", {"dataset": "sales", "batch": "2024-06"}),
    ("c", "anything", {}),
])
def test_blob_path_patterns(path: str, blob: str, expected: dict | None) -> None:
    assert BlobPath.parse(path).match(blob) == expected


def test_blob_path_prefix_and_container() -> None:
    parsed = BlobPath.parse("data/in/{name}")
    assert (parsed.container, parsed.prefix) == ("data", "in/")
    with pytest.raises(ValueError, match="literal container"):
        BlobPath.parse("{c}/{name}")


def test_poller_lists_only_along_the_path_prefix(service: BlobServiceClient, container: ContainerClient,
                                                 host_id: str) -> None:
    seen: list[str] = []
    entry = FunctionEntry(name="on_in", trigger_type="blobTrigger", arg_name="blob",
                          settings={"path": f"{container.container_name}/in/{{name}}.csv"},
                          func=lambda blob: seen.append(blob.name))
    for blob_name in ("in/x.csv", "in/y.txt", "out/z.csv"):
        container.upload_blob(blob_name, b"1")
    poller = make_poller(service, {"on_in": entry}, host_id, container)
    assert poller.poll_once() == {"succeeded": 1}
    assert seen == [f"{container.container_name}/in/x.csv"]


def test_the_hosts_own_container_is_not_polled(service: BlobServiceClient, host_id: str) -> None:
    entry = FunctionEntry(name="watch_hosts", trigger_type="blobTrigger", arg_name="blob",
                          settings={"path": f"{HOSTS_CONTAINER}/{{name}}", "connection": "AzureWebJobsStorage"},
                          func=lambda blob: None)
    invoker = Invoker(max_workers=1)
    delivery = BlobDelivery(invoker, ReceiptStore(service, host_id), env={"AzureWebJobsStorage": CONN})
    assert BlobPoller({"watch_hosts": entry}, delivery, invoker, env={"AzureWebJobsStorage": CONN}).targets == []


def test_feeder_forwards_each_new_blob_version_to_another_host_once(
        service: BlobServiceClient, container: ContainerClient, index: dict[str, FunctionEntry], host_id: str,
        records: list) -> None:
    """`--forward-to` (for `func start`): polled blobs reach the other host's blobs webhook as BlobCreated events,
    each version once; while that host is down, nothing is lost: the version is sent on a later poll."""
    from local.host.forward import ForwardingDelivery
    from local.stack import free_port

    target_port = free_port()
    feeder = BlobPoller(index, ForwardingDelivery(ReceiptStore(service, host_id), f"http://127.0.0.1:{target_port}",
                                                  env=env(container), timeout=10), Invoker(max_workers=2),
                        env=env(container))
    etag = container.upload_blob("a.csv", b"first").get_blob_properties().etag
    assert feeder.poll_once() == {"failed": 1}  # the functions host is not up yet
    assert records == []

    with Host(index, port=target_port, host_id=f"{host_id}-target", timers=False, blob_poll=False,
              env=env(container)):
        assert feeder.poll_once() == {"succeeded": 1}
        wait_until(lambda: len(records) == 1)
        assert feeder.poll_once() == {}
        new_etag = container.upload_blob("a.csv", b"second", overwrite=True).get_blob_properties().etag
        container.upload_blob("b.csv", b"other")
        assert feeder.poll_once() == {"succeeded": 2}
        wait_until(lambda: len(records) == 3)
    name = container.container_name
    assert sorted((r["name"], r["body"]) for r in records) == [
        (f"{name}/a.csv", "first"), (f"{name}/a.csv", "second"), (f"{name}/b.csv", "other")]
    assert {r["etag"] for r in records if r["body"] != "other"} == {etag, new_etag}


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
