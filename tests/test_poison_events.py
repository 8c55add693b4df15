"""#18 item 5: poison input ends as a dead letter or a skip, never as a 500, with exactly one dead letter per
event id, and each event of a delivered array gets its own outcome.

Reflex's own function_app runs in the local host in-process, posted to over HTTP like Event Grid does; its
state and ledger are Azurite containers (tests/test_blob_intake.py's `host` fixture). On the code before this
change every case here answered 500 (TypeError in `key_part`, UnicodeEncodeError in the state key, RecursionError
in the host) or wrote a new dead letter per redelivery.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from typing import Any

import pytest
import requests

from local.host.invoke import decode_event
from shared.core import reaction
from shared.core.events import raw_from_function_event
from shared.core.reaction import event_id_of
from shared.core.state import BlobStateStore, key_part
from tests import test_blob_intake
from tests.conftest import make_deps
from tests.test_blob_intake import documented_event_for

# the real function_app in the local host, on Azurite state and ledger (the fixtures of tests/test_blob_intake.py)
env = test_blob_intake.env
host = test_blob_intake.host

WEBHOOK = "/runtime/webhooks/eventgrid?functionName="
HEADERS = {"aeg-event-type": "Notification", "Content-Type": "application/json"}


def _post(running: Any, function: str, body: Any) -> requests.Response:
    """POST like Event Grid: the JSON text as given (NaN and lone surrogates included, as `json.dumps` writes)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{running.url}{WEBHOOK}{function}", data=data, headers=HEADERS, timeout=60)


def _model_registered(event_id: Any, **data: Any) -> dict[str, Any]:
    return {"id": event_id, "topic": "/subscriptions/s/resourceGroups/rg/providers/"
            "Microsoft.MachineLearningServices/workspaces/ws", "subject": "models/m:1",
            "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
            "eventTime": "2024-06-01T12:00:00.1234567Z", "dataVersion": "2", "metadataVersion": "1",
            "data": {"modelName": "m", "modelVersion": "1", **data}}


def _letters(deps: Any, event_id: str) -> list[Any]:
    return [r for r in deps.state.dead_letters() if r.value.get("event_id") == event_id]


@pytest.mark.parametrize("raw_id", [5, [1, 2], math.nan, "ev-\ud800-lone", None],
                         ids=["number", "list", "nan", "lone-surrogate", "missing"])
def test_an_event_id_of_any_json_value_ends_as_exactly_one_dead_letter(host: tuple[Any, Any], raw_id: Any) -> None:
    running, deps = host
    # a BlobCreated without an eTag is poison whatever its id: the id is what must not break the dead letter
    event = {"id": raw_id, "topic": "/t", "subject": "/blobServices/default/containers/c/blobs/d/b/x.csv",
             "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2024-06-01T12:00:00Z", "dataVersion": "",
             "data": {"api": "PutBlob", "url": "http://127.0.0.1:10000/devstoreaccount1/c/d/b/x.csv"}}
    for _ in range(3):  # Event Grid redelivers
        reply = _post(running, "on_data_blob", [event])
        assert reply.status_code == 202, reply.text
    wanted = event_id_of(raw_from_function_event(decode_event(json.loads(json.dumps(event)))))
    [letter] = _letters(deps, wanted)
    assert letter.value["error_type"] == "InvalidEvent"
    assert "eTag" in letter.value["error"] or "id is missing" in letter.value["error"]
    outcomes = Counter(e["status"] for e in deps.ledger.entries() if e["event_id"] == wanted)
    assert outcomes == {"dead-lettered": 1, "duplicate": 2}


def test_event_ids_are_bounded_text_that_never_collide() -> None:
    assert event_id_of({"id": 5}) == "int:5" != event_id_of({"id": "5"}) == "5"
    assert event_id_of({"id": math.nan}) == "float:nan"
    assert event_id_of({"id": "a\ud800"}) == "a\\ud800"
    long = event_id_of({"id": "x" * 1_000_000})
    assert len(long) <= 200 and long != event_id_of({"id": "x" * 999_999})
    assert event_id_of({"data": {"a": 1}}) == event_id_of({"data": {"a": 1}}) != event_id_of({"data": {"a": 2}})
    assert key_part([1, 2]) != key_part("[1, 2]".replace(" ", "_")) and key_part("\udfff").startswith("_~")


def test_one_poison_event_in_an_array_leaves_the_good_ones_their_own_outcome(host: tuple[Any, Any],
                                                                             env: dict[str, Any]) -> None:
    running, deps = host
    body = b"age,DEATH_EVENT\n60,1\n"
    blob = env["_data"].get_blob_client("heart/b1/part-0.csv")
    blob.upload_blob(body)
    good = documented_event_for(blob, body)
    poison = {**good, "id": ["not", "a", "string"], "data": {**good["data"], "contentLength": "many"}}
    for attempt in range(2):
        reply = _post(running, "on_data_blob", [good, poison])
        assert reply.status_code == 202, reply.text  # before: 500, so Event Grid resent the good event too
        statuses = [e["status"] for e in deps.ledger.entries() if e["event_id"] == good["id"]]
        assert statuses[0] == ("acted" if attempt == 0 else "duplicate")
    assert len(_letters(deps, event_id_of(raw_from_function_event(decode_event(poison))))) == 1
    assert not _letters(deps, good["id"])


def test_json_1000_deep_gets_the_real_hosts_500_and_900_deep_is_dead_lettered(host: tuple[Any, Any]) -> None:
    running, deps = host
    deep = "[" * 1000 + "]" * 1000
    body = json.dumps([_model_registered("deep-1")]).replace('"modelName": "m"', f'"x": {deep}, "modelName": "m"')
    reply = _post(running, "on_model_registered", body.encode())
    # the real host's worker fails this invocation before any Reflex code: 500 (before: a RecursionError's 500
    # with a traceback; now a clear error naming the nesting)
    assert reply.status_code == 500 and "nested deeper" in reply.json()["error"]

    nested: Any = "bottom"
    for _ in range(900):
        nested = [nested]
    reply = _post(running, "on_model_registered", [_model_registered("deep-2", extra=nested)])
    assert reply.status_code == 202, reply.text
    entries = [e for e in deps.ledger.entries() if e["event_id"] == "deep-2"]
    assert len(entries) == 1 and entries[0]["status"] in ("dead-lettered", "skipped", "acted")
    for letter in _letters(deps, "deep-2"):  # a letter, if any, holds the payload cut at a depth JSON can encode
        assert "nested deeper" in json.dumps(letter.value["payload"])
    assert _post(running, "on_model_registered", [_model_registered("after-deep")]).status_code == 202


def test_an_element_the_worker_cannot_decode_gets_500_and_the_others_still_run(host: tuple[Any, Any]) -> None:
    running, deps = host
    bad_time = {**_model_registered("bad-time"), "eventTime": "not a time"}
    reply = _post(running, "on_model_registered", [_model_registered("decodable"), bad_time, 7])
    assert reply.status_code == 500 and "2 of 3 events could not be decoded" in reply.json()["error"]
    assert [e["event_id"] for e in deps.ledger.entries()] == ["decodable"]


@pytest.mark.parametrize("store", ["memory", "azurite"])
def test_concurrent_copies_of_a_poison_event_write_one_dead_letter(store: str, blob_state: BlobStateStore) -> None:
    deps = make_deps(state=blob_state if store == "azurite" else None)
    event = _model_registered(["same", "poison"])
    outcomes: list[str] = []
    lock = threading.Lock()

    def deliver() -> None:
        for _ in range(3):
            status = reaction.run("rollout.model_registered", event, event_id=event_id_of(event), deps=deps).status
            with lock:
                outcomes.append(status)

    import functions.rollout  # noqa: F401  (registers the handler)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(outcomes) == {"dead-lettered": 1, "duplicate": 17}
    assert len(deps.state.dead_letters()) == 1


def test_a_replay_that_fails_again_gets_a_new_letter_and_the_claim_follows(blob_state: BlobStateStore) -> None:
    import functions.rollout  # noqa: F401  (registers the handler)

    deps = make_deps(state=blob_state)
    event = _model_registered(17)
    first = reaction.run("rollout.model_registered", event, event_id="int:17", deps=deps)
    again = reaction.run("rollout.model_registered", event, event_id="int:17", deps=deps, replay=True)
    assert first.status == again.status == "dead-lettered"
    assert first.details["dead_letter"] != again.details["dead_letter"]
    blob_state.delete(first.details["dead_letter"])  # what `reflex replay` does with the replayed letter
    later = reaction.run("rollout.model_registered", event, event_id="int:17", deps=deps)
    assert later.status == "duplicate" and later.details["dead_letter"] == again.details["dead_letter"]
    assert [r.key for r in blob_state.dead_letters()] == [again.details["dead_letter"]]


def test_a_null_etag_is_one_dead_letter_naming_the_field_and_receipts_refuse_it(host: tuple[Any, Any],
                                                                               env: dict[str, Any]) -> None:
    from local.host.receipts import quote_etag

    running, deps = host
    body = b"age,DEATH_EVENT\n60,1\n"
    blob = env["_data"].get_blob_client("heart/b2/part-0.csv")
    blob.upload_blob(body)
    event = documented_event_for(blob, body)
    event["data"]["eTag"] = None
    for _ in range(2):
        assert _post(running, "on_data_blob", [event]).status_code == 202
    [letter] = _letters(deps, event["id"])
    assert "data.eTag" in letter.value["error"]
    assert quote_etag("0x8D") == quote_etag('"0x8D"') == '"0x8D"'
    for missing in (None, "", '""'):
        with pytest.raises(ValueError, match="needs the blob's ETag"):
            quote_etag(missing)  # before: AttributeError on None, and '""' named a receipt for no version
