"""`python -m local.host` as a process: local.settings.json, the printed URL, delivery, clean SIGTERM stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient

from local.host.receipts import HOSTS_CONTAINER

REPO = Path(__file__).resolve().parents[1]
CONN = "UseDevelopmentStorage=true"


@pytest.fixture
def container() -> Iterator[ContainerClient]:
    client = BlobServiceClient.from_connection_string(CONN).get_container_client(f"hostcli-{uuid.uuid4().hex[:12]}")
    client.create_container()
    yield client
    client.delete_container()


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_cli_runs_the_app_from_local_settings_and_stops_on_sigterm(tmp_path: Path,
                                                                   container: ContainerClient) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(REPO / "tests" / "hostapp" / "function_app_fixture.py", app_dir / "function_app.py")
    record_file = tmp_path / "records.jsonl"
    (app_dir / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "AzureWebJobsStorage": CONN, "FUNCTIONS_WORKER_RUNTIME": "python",
        "TEST_CONTAINER": container.container_name, "TEST_SCHEDULE": "0 0 0 1 1 *",
        "HOSTAPP_RECORD_FILE": str(record_file)}}))
    host_id = f"test-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("TEST_CONTAINER", "TEST_SCHEDULE", "HOSTAPP_RECORD_FILE", "HOSTAPP_TIMER_FAIL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.host", "--app-dir", str(app_dir), "--port", "0", "--poll-seconds", "0.2",
         "--host-id", host_id, "--events-log", str(tmp_path / "events.jsonl")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, "host exited early:\n" + "".join(lines)
            lines.append(line)
            if "listening on" in line:
                url = line.rsplit(" ", 1)[-1].strip()
                break
        assert requests.get(url + "/admin/host/status", timeout=5).json()["state"] == "Running"

        event = {"id": "cli-1", "topic": "t", "subject": "s", "eventType": "X", "eventTime": "2024-06-01T00:00:00Z",
                 "dataVersion": "1", "data": {}}
        reply = requests.post(url + "/runtime/webhooks/eventgrid?functionName=on_event", json=[event],
                              headers={"aeg-event-type": "Notification"}, timeout=10)
        assert reply.status_code == 202
        container.upload_blob("cli.txt", b"from the cli test")
        deadline = time.monotonic() + 15
        while len(read_records(record_file)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        records = read_records(record_file)
        assert {r["function"] for r in records} == {"on_event", "on_blob"}
        assert next(r for r in records if r["function"] == "on_blob")["name"] == f"{container.container_name}/cli.txt"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        output = "".join(lines) + proc.stdout.read()
        assert "local.settings.json: set" in output and "TEST_CONTAINER" in output
        assert "stopping..." in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hosts = BlobServiceClient.from_connection_string(CONN).get_container_client(HOSTS_CONTAINER)
        for blob in hosts.list_blobs(name_starts_with=f"blobreceipts/{host_id}/"):
            hosts.delete_blob(blob.name)
