"""A small v2 function app for the local host's tests (not Reflex's app): one function per trigger family.

Each function records its invocation in `RECORDS` (and, when `HOSTAPP_RECORD_FILE` is set, as a JSON line in
that file, for a host running in a subprocess). Failures are asked for by the data itself: an event whose
data has `"fail": true`, a blob whose name contains `FAIL` (its BlobCreated event fails), or
`HOSTAPP_TIMER_FAIL=1` for the timer. `on_blob` gets the BlobCreated events of %TEST_CONTAINER%
(`BLOB_SUBSCRIPTIONS`, as Reflex's function_app declares its own).
"""

from __future__ import annotations

import json
import os
import threading

import azure.functions as func

app = func.FunctionApp()

RECORDS: list[dict] = []
_lock = threading.Lock()


def _record(entry: dict) -> None:
    with _lock:
        RECORDS.append(entry)
        path = os.environ.get("HOSTAPP_RECORD_FILE")
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")


@app.function_name("on_event")
@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    data = event.get_json()
    _record({"function": "on_event", "id": event.id, "type": type(event).__name__,
             "event_type": getattr(event, "event_type", None) or getattr(event, "type", None), "data": data})
    if isinstance(data, dict) and data.get("fail"):
        raise RuntimeError(f"asked to fail on event {event.id}")


BLOB_SUBSCRIPTIONS = {"on_blob": "%TEST_CONTAINER%"}


@app.function_name("on_blob")
@app.event_grid_trigger(arg_name="event")
def on_blob(event: func.EventGridEvent) -> None:
    data = event.get_json()
    name = event.subject.removeprefix("/blobServices/default/containers/").replace("/blobs/", "/", 1)
    kind = getattr(event, "event_type", None) or getattr(event, "type", None)  # EventGridEvent or CloudEvent
    _record({"function": "on_blob", "id": event.id, "event_type": kind, "name": name,
             "url": data["url"], "length": data["contentLength"], "etag": data["eTag"], "api": data["api"],
             "content_type": data["contentType"], "type": type(event).__name__})
    if "FAIL" in name:
        raise RuntimeError(f"asked to fail on blob {name}")


@app.timer_trigger(arg_name="timer", schedule="%TEST_SCHEDULE%", run_on_startup=False, use_monitor=False)
def on_timer(timer: func.TimerRequest) -> None:
    _record({"function": "on_timer", "past_due": timer.past_due, "type": type(timer).__name__,
             "next": (timer.schedule_status or {}).get("Next")})
    if os.environ.get("HOSTAPP_TIMER_FAIL") == "1":
        raise RuntimeError("asked to fail the timer")
