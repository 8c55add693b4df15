"""#18 item 5: every field that reaches the ledger, a reason or a log is bounded and safely encoded, and the CLI
reads a ledger that is being appended to and prints what it holds.

Real Azurite (append blobs) and the real CLI in a subprocess. On the code before this change: a 1 MB field made a
~2 MB line, `explain` crashed with ResourceModifiedError while the day's blob grew between two chunks of its
download, and with UnicodeEncodeError printing a lone surrogate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from azure.core.exceptions import ResourceModifiedError
from azure.storage.blob import ContainerClient

from shared.core import reaction
from shared.core.errors import TEXT_LIMIT, safe_text
from shared.core.ledger import BlobLedger
from shared.core.state import BlobStateStore
from tests import test_blob_intake
from tests.conftest import AZURITE, ROOT, Clock, make_deps

env = test_blob_intake.env  # the app's settings on unique Azurite data and state containers


def _model_registered(event_id: str, name: str) -> dict[str, Any]:
    return {"id": event_id, "topic": "/t", "subject": f"models/{name}:1", "dataVersion": "2",
            "eventType": "Microsoft.MachineLearningServices.ModelRegistered", "eventTime": "2024-06-01T12:00:00Z",
            "data": {"modelName": name, "modelVersion": "1", "modelTags": {"blob": "b" * 1_000_000}}}


def _raw_lines(container: ContainerClient) -> list[bytes]:
    return [line for blob in container.list_blobs(name_starts_with="ledger/")
            for line in container.get_blob_client(blob.name).download_blob().readall().splitlines()]


def test_a_1_mb_field_makes_a_small_line_and_a_bounded_dead_letter_error(env: dict[str, Any]) -> None:
    import functions.rollout  # noqa: F401  (registers the handler)

    state = env["_state"]
    clock = Clock()
    deps = make_deps(state=BlobStateStore(state), clock=clock, ledger=BlobLedger(state, clock))
    huge = "m" * 1_000_000 + "\ud800"
    out = reaction.run("rollout.model_registered", _model_registered("big-1", huge), event_id="big-1", deps=deps)
    assert out.status in ("dead-lettered", "skipped")
    [line] = _raw_lines(state)
    assert len(line) < 16 * 1024  # before: ~2 MB (the model ref, the reason and the decision each held the name)
    entry = json.loads(line)
    # cut, and no lone surrogate left as an escape
    assert "…(+" in json.dumps(entry, ensure_ascii=False) and "\\ud800" not in line.decode()
    for letter in deps.state.dead_letters():
        assert len(letter.value["error"]) <= 4 * TEXT_LIMIT + 40


def test_the_ledger_is_read_while_it_is_appended_to(env: dict[str, Any]) -> None:
    """A download in chunks sends If-Match with each later chunk; an append between two chunks used to fail it."""
    state: ContainerClient = env["_state"]
    clock = Clock()
    writer = BlobLedger(state, clock)
    for i in range(40):
        writer.append({"at": "2023-11-14T22:13:20.000Z", "reaction": "test", "event_id": f"e{i}", "status": "acted",
                       "reason": "r" * 100, "refs": {}, "decision": {}})
    appended: list[str] = []

    def append_once_after_the_first_chunk(response: Any) -> None:
        request = response.http_request
        if request.method == "GET" and "/ledger/" in request.url and not appended:
            appended.append("x")
            writer.append({"at": "2023-11-14T22:13:21.000Z", "reaction": "test", "event_id": "late",
                           "status": "acted", "reason": "", "refs": {}, "decision": {}})

    def chunked() -> ContainerClient:
        appended.clear()
        return ContainerClient.from_connection_string(
            AZURITE, state.container_name, max_single_get_size=1024, max_chunk_get_size=1024,
            raw_response_hook=append_once_after_the_first_chunk)

    blob = chunked().get_blob_client("ledger/2023-11-14.jsonl")
    with pytest.raises(ResourceModifiedError):  # the race is real: the SDK's own download fails on it
        blob.download_blob().readall()
    reader = BlobLedger(chunked(), clock)
    ids = [e["event_id"] for e in reader.entries(days=3)]
    assert appended and ids[-1] == "e0" and {f"e{i}" for i in range(40)} <= set(ids)


def test_explain_prints_an_old_line_with_a_lone_surrogate(env: dict[str, Any]) -> None:
    state: ContainerClient = env["_state"]
    ledger = BlobLedger(state, Clock(__import__("time").time()))
    # a line as the ledger wrote it before it bounded its fields: json.dumps escapes the lone surrogate as \ud800
    old = {"at": ledger_now(ledger), "reaction": "data.arrival", "event_id": "ev-sur", "event_type": "",
           "status": "dead-lettered", "reason": "invalid event ev-sur: bad \ud800 name", "refs": {}, "decision": {}}
    ledger.append(old)  # the current writer escapes it on its own; the raw line below is the old form
    blob = state.get_blob_client(f"ledger/{ledger_now(ledger)[:10]}.jsonl")
    blob.append_block((json.dumps(old) + "\n").encode())
    cli_env = {**os.environ, **{k: v for k, v in env.items() if isinstance(v, str)}, "PYTHONIOENCODING": "utf-8"}
    shown = subprocess.run([sys.executable, "-m", "reflex", "explain", "ev-sur"], cwd=ROOT, env=cli_env,
                           capture_output=True, timeout=120)
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    assert "bad \\ud800 name" in shown.stdout.decode()  # printed as its escape, never as a crash


def ledger_now(ledger: BlobLedger) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ledger.clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_safe_text_is_the_bound_everything_uses() -> None:
    assert safe_text("x" * (TEXT_LIMIT + 5)).endswith("…(+5 chars)")
    assert safe_text("\udc80").encode("utf-8") == b"\\udc80"
    assert safe_text(b"\xff"[0:0]) == "b''"
