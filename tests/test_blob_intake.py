"""#14's proof for blob intake: Microsoft's documented BlobCreated, posted to the local host's Event Grid webhook
for a blob that is really in Azurite, records that blob in its batch, and `python -m reflex explain <url>`
shows it; and the scoring trigger takes the same event the worker builds.

Reflex's own function_app runs in the local host in-process (the same index and webhook handler as
`python -m local.host`); its dependencies are Azurite state and ledger containers and the fake platform.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from local.host.index import build_index, load_app
from local.host.invoke import decode_event
from local.host.runtime import Host
from shared.arrival.flow import arrival_key
from shared.batches import entries
from shared.batches.paths import parse_blob_path
from shared.core.ledger import BlobLedger
from shared.core.state import BlobStateStore
from testing.fake_platform import FakePlatform
from tests.conftest import AZURITE, ROOT, Clock, make_deps, make_settings

SAMPLE = ROOT / "tests" / "fixtures" / "eventgrid" / "blob_created.eventgrid.json"


def documented_event_for(blob: Any, body: bytes) -> dict[str, Any]:
    """Microsoft's sample (verbatim in the fixture) with subject, url, eTag and contentLength rewritten to `blob`."""
    [event] = json.loads(SAMPLE.read_text())
    event["subject"] = f"/blobServices/default/containers/{blob.container_name}/blobs/{blob.blob_name}"
    event["data"].update(url=blob.url, eTag=blob.get_blob_properties().etag, contentLength=len(body))
    return event


@pytest.fixture
def env(container_factory: Callable[[str], Any]) -> dict[str, str]:
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    data, state = container_factory("data"), container_factory("state")
    return {**{k: str(v) for k, v in values.items()}, "AzureWebJobsStorage": AZURITE,
            "REFLEX_DATA_CONTAINER": data.container_name, "REFLEX_STATE_CONTAINER": state.container_name,
            "_data": data, "_state": state}  # type: ignore[dict-item]


@pytest.fixture
def host(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Host, Any]]:
    settings = make_settings(**{k: v for k, v in env.items() if k.startswith("REFLEX_") and k not in (
        "REFLEX_PLATFORM",)})
    clock = Clock(time.time())  # the CLI looks back 30 days from now
    deps = make_deps(settings, state=BlobStateStore(env["_state"]), platform=FakePlatform(clock=clock),
                     clock=clock, ledger=BlobLedger(env["_state"], clock))
    monkeypatch.setattr("shared.core.deps.get_deps", lambda: deps)
    _, app = load_app("function_app", ROOT)
    app.functions_bindings = None  # get_functions() is not idempotent (python-worker#1867)
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    with Host(build_index(app, plain), port=0, host_id="blob-intake-test", timers=False, blob_poll=False,
              env=plain) as running:
        yield running, deps


def test_documented_blob_created_posted_to_the_webhook_records_the_blob_and_explain_shows_it(
        host: tuple[Host, Any], env: dict[str, Any]) -> None:
    running, deps = host
    body = b"age,DEATH_EVENT\n60,1\n"
    blob = env["_data"].get_blob_client("heart/b1/part-0.csv")
    blob.upload_blob(body)
    event = documented_event_for(blob, body)

    reply = requests.post(f"{running.url}/runtime/webhooks/eventgrid?functionName=on_data_blob", json=[event],
                          headers={"aeg-event-type": "Notification"}, timeout=30)
    assert reply.status_code == 202, reply.text
    key = arrival_key(parse_blob_path(env["REFLEX_DATA_CONTAINER"], "heart/b1/part-0.csv"))
    record = deps.state.get(key)
    assert record is not None and record.value["status"] == "collecting"
    entry = entries.read(deps, key, "part-0.csv", event["data"]["eTag"].strip('"'))  # the blob version's entry
    assert entry is not None and entry["size"] == len(body) and entry["url"] == blob.url
    # Event Grid redelivers the same event: still one file, recorded once
    again = requests.post(f"{running.url}/runtime/webhooks/eventgrid?functionName=on_data_blob", json=[event],
                          headers={"aeg-event-type": "Notification"}, timeout=30)
    assert again.status_code == 202

    cli_env = {**os.environ, **{k: v for k, v in env.items() if isinstance(v, str)}}
    shown = subprocess.run([sys.executable, "-m", "reflex", "--json", "explain", blob.url], cwd=ROOT, env=cli_env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    assert result["lineage"]["blob"] == [blob.url]
    assert result["lineage"]["batch"] == [f"{env['REFLEX_DATA_CONTAINER']}/heart/b1"]
    statuses = [(e["reaction"], e["status"]) for e in result["entries"]]
    assert sorted(statuses) == [("data.arrival", "acted"), ("data.arrival", "duplicate")]
    assert any("recorded part-0.csv in batch" in e["reason"] for e in result["entries"])


def test_on_scoring_blob_takes_the_event_the_worker_builds(container_factory: Callable[[str], Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import batch_scoring

    scoring = container_factory("scoring")
    clock = Clock()
    deps = make_deps(make_settings(REFLEX_SCORING_CONTAINER=scoring.container_name), clock=clock)
    monkeypatch.setattr("shared.core.deps.get_deps", lambda: deps)
    body = b"age\n60\n"
    blob = scoring.get_blob_client("patients/b1/part-0.csv")
    blob.upload_blob(body)
    batch_scoring.on_scoring_blob(decode_event(documented_event_for(blob, body)))
    from shared.scoring.flow import scoring_key

    key = scoring_key(parse_blob_path(scoring.container_name, "patients/b1/part-0.csv"))
    record = deps.state.get(key)
    etag = blob.get_blob_properties().etag.strip('"')
    assert record is not None and record.value["status"] == "collecting" and entries.read(deps, key, "part-0.csv", etag)
