"""A small v2 function app for the local host's tests (not Reflex's app): one function per trigger family.

Each function records its invocation in `RECORDS` (and, when `HOSTAPP_RECORD_FILE` is set, as a JSON line in
that file, for a host running in a subprocess). Failures are asked for by the data itself: an event whose
data has `"fail": true`, a blob whose content starts with `FAIL`, or `HOSTAPP_TIMER_FAIL=1` for the timer.
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


@app.blob_trigger(arg_name="blob", path="%TEST_CONTAINER%/{name}", connection="AzureWebJobsStorage",
                  source=func.BlobSource.EVENT_GRID)
def on_blob(blob: func.InputStream) -> None:
    body = blob.read()
    _record({"function": "on_blob", "name": blob.name, "uri": blob.uri, "length": blob.length,
             "etag": (blob.blob_properties or {}).get("ETag"), "body": body.decode("utf-8", "replace"),
             "type": type(blob).__name__})
    if body.startswith(b"FAIL"):
        raise RuntimeError(f"asked to fail on blob {blob.name}")


@app.timer_trigger(arg_name="timer", schedule="%TEST_SCHEDULE%", run_on_startup=False, use_monitor=False)
def on_timer(timer: func.TimerRequest) -> None:
    _record({"function": "on_timer", "past_due": timer.past_due, "type": type(timer).__name__,
             "next": (timer.schedule_status or {}).get("Next")})
    if os.environ.get("HOSTAPP_TIMER_FAIL") == "1":
        raise RuntimeError("asked to fail the timer")
