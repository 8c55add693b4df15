"""Fuzz of the input side (#18 item 7): mutated events against Reflex's real function handlers, in process and over
the local host's Event Grid webhook, and concurrent redelivery of every event.

Seeds are the real payload samples the tests use (tests/fixtures/eventgrid/ BlobCreated, verbatim from Microsoft's
docs; tests/events/ Azure ML events), the BlobCreated ones pointed at blobs that really are in a fresh Azurite
container. Each input is a seed with one to three mutations: the id as a number, a list, NaN, a lone surrogate,
missing or 1 MB; a field deleted or replaced by another JSON type, a 1 MB string, a lone surrogate, NaN, or JSON
nested 50 to 990 deep; `modelVersion` 10^20; a null eTag; a 990-character blob name.

Phases:

1. **in process** (`--inputs`, default 10,000): the worker's own converter decodes each (local.host.invoke
   `decode_event`, azure-functions' `EventGridEvent`), then the function of its event type runs (function_app's
   `on_data_blob`, `on_scoring_blob`, `on_run_event`, `on_model_registered`) on in-memory state and ledger and the
   behavioural fake platform. A function that raises is what the real host answers 500 to.
2. **over HTTP** (`--http`, default 600): the same kind of inputs POSTed in arrays of 1 to 5 to the local host's
   webhook (`python -m local.host`'s handler, in-process server, real function_app), with Azurite state.
3. **concurrent redelivery** (`--redeliver`, default 300 events): every event delivered 3 times from 6 threads at
   once, Azurite state.

Counted: `inputs` (all invocations), `http_5xx` (HTTP 5xx answers plus in-process invocations that raised: each
would be a 500 from the real host), `lost` (an input that reached a function and ended with no ledger outcome, or
an event id of the redelivery phase with none), `duplicate_acted` (event ids with more than one `acted` outcome
in the redelivery phase), `conflicts` (CAS `Conflict`s given up, left to redelivery), `extra_letters` (dead letters
beyond one per reaction and event id), `undecodable` (inputs the worker's converter rejects before any Reflex
code) and `http_5xx_undecodable` (the HTTP answers to those: 500, from the real host as from the local one, see
local/host/eventgrid.py; counted apart from `http_5xx` because no Reflex code can run on them). Baseline in the
same run: the unmutated seeds through the same path (`seeds_5xx` must be 0 on any code).

Run: `.venv/bin/python bench/faults.py [--inputs 10000] [--http 600] [--redeliver 300] [--seed 18]`.
Ends with one `RESULT faults ...` line.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AZURITE = "UseDevelopmentStorage=true"
FUNCTION_OF = {"Microsoft.Storage.BlobCreated": "on_data_blob",
               "Microsoft.MachineLearningServices.RunCompleted": "on_run_event",
               "Microsoft.MachineLearningServices.RunStatusChanged": "on_run_event",
               "Microsoft.MachineLearningServices.ModelRegistered": "on_model_registered"}
SEED_FILES = ("tests/fixtures/eventgrid/blob_created.eventgrid.json",
              "tests/fixtures/eventgrid/blob_created.functions-doc.json", "tests/events/run_completed.json",
              "tests/events/run_status_changed.json",
              "tests/events/model_registered_camel.json", "tests/events/model_registered_pascal.json")


# ----------------------------------------------------------------------------------------------- inputs
def _deep(rng: random.Random) -> Any:
    value: Any = "bottom"
    for _ in range(rng.choice((50, 200, 600, 990))):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _hostile(rng: random.Random) -> Any:
    return rng.choice([
        lambda: 10**20, lambda: -1, lambda: math.nan, lambda: math.inf, lambda: True, lambda: None, lambda: [],
        lambda: {}, lambda: [1, "two", None], lambda: "x" * 1_000_000, lambda: "lone \ud800 surrogate",
        lambda: "\udfff", lambda: "", lambda: " ", lambda: "a/" * 300, lambda: _deep(rng), lambda: 3.5,
    ])()


def _paths(event: dict[str, Any]) -> list[tuple[Any, ...]]:
    paths: list[tuple[Any, ...]] = [(k,) for k in event]
    data = event.get("data")
    if isinstance(data, dict):
        paths += [("data", k) for k in data]
    return paths


def _set(event: dict[str, Any], path: tuple[Any, ...], value: Any, *, delete: bool = False) -> None:
    target: Any = event
    for part in path[:-1]:
        target = target.get(part) if isinstance(target, dict) else None
    if isinstance(target, dict):
        if delete:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value


def mutate(seed: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One hostile variant of `seed` (one to three mutations)."""
    event = copy.deepcopy(seed)
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.25:
            event["id"] = rng.choice([5, [1, 2], math.nan, "ev-\ud800", None, "", "i" * 1_000_000,
                                      str(uuid.UUID(int=rng.getrandbits(128)))])
        elif kind < 0.4:
            _set(event, rng.choice(_paths(event)), None, delete=True)
        elif kind < 0.8:
            _set(event, rng.choice(_paths(event)), _hostile(rng))
        elif kind < 0.87:
            data = event.get("data") if isinstance(event.get("data"), dict) else {}
            data["modelVersion" if "modelName" in data else "eTag"] = rng.choice([10**20, None])
            event["data"] = data
        elif kind < 0.94 and str(event.get("eventType", "")).endswith("BlobCreated"):
            name = "d/b/" + "n" * 986
            event["subject"] = str(event.get("subject", "")).rsplit("/blobs/", 1)[0] + "/blobs/" + name
        else:
            event["data"] = _deep(rng)
    return event


def seeds(data_container: Any) -> list[dict[str, Any]]:
    """The real samples, BlobCreated ones pointed at a blob that is in Azurite (so arrival lists a real batch)."""
    blob = data_container.get_blob_client("heart/b1/part-0.csv")
    blob.upload_blob(b"age,DEATH_EVENT\n60,1\n", overwrite=True)
    etag = blob.get_blob_properties().etag
    out = []
    for path in SEED_FILES:
        loaded = json.loads((ROOT / path).read_text())
        for event in loaded if isinstance(loaded, list) else [loaded]:
            if str(event.get("eventType", "")).endswith("BlobCreated"):
                event["subject"] = f"/blobServices/default/containers/{data_container.container_name}/blobs/" \
                                   f"{blob.blob_name}"
                event["data"].update(url=blob.url, eTag=etag, contentLength=21)
            out.append(event)
    return out


def _fresh_id(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A distinct id for a seed copy, so every input is its own event (mutations may still break it)."""
    return {**event, "id": str(uuid.UUID(int=rng.getrandbits(128)))}


# ----------------------------------------------------------------------------------------------- running
class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n


def _invoke(functions: dict[str, Callable[[Any], None]], element: Any, tally: Tally) -> str | None:
    """Decode one element with the worker's converter and run its function; the event id it ran under, or None."""
    from local.host.invoke import decode_event
    from shared.core.errors import TransientError
    from shared.core.events import raw_from_function_event
    from shared.core.reaction import event_id_of
    from shared.core.state import Conflict

    tally.add("inputs")
    try:
        text = json.dumps(element)
        decoded = decode_event(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        tally.add("undecodable")
        return None
    name = FUNCTION_OF.get(str(getattr(decoded, "event_type", "") or ""), "on_model_registered")
    try:
        functions[name](decoded)
    except Conflict:
        tally.add("conflicts")
        tally.add("http_5xx")
        return None
    except TransientError:
        tally.add("transient")
        tally.add("http_5xx")
        return None
    except Exception as exc:  # what the real host answers 500 to
        tally.add("http_5xx")
        tally.add(f"raised:{type(exc).__name__}")
        return None
    return event_id_of(raw_from_function_event(decoded))


@contextmanager
def app_with(deps: Any) -> Iterator[tuple[Any, dict[str, Callable[[Any], None]]]]:
    """Reflex's function_app with `deps` as the worker's dependencies (what get_deps() returns)."""
    import shared.core.deps

    saved = shared.core.deps.get_deps
    shared.core.deps.get_deps = lambda: deps  # type: ignore[assignment]
    try:
        import function_app
        from functions import batch_scoring, data_arrival, registration, rollout

        functions = {"on_data_blob": data_arrival.on_data_blob, "on_scoring_blob": batch_scoring.on_scoring_blob,
                     "on_run_event": registration.on_run_event, "on_model_registered": rollout.on_model_registered}
        yield function_app, functions
    finally:
        shared.core.deps.get_deps = saved  # type: ignore[assignment]


def _deps(settings: Any, state: Any) -> Any:
    from shared.core.deps import Deps
    from shared.core.ledger import MemoryLedger
    from shared.core.publish import Publisher
    from testing.fake_platform import FakePlatform

    platform = FakePlatform()
    from shared.adapters.storage import blob_service

    return Deps(settings=settings, state=state, publisher=Publisher(), platform_factory=lambda: platform,
                clock=time.time, ledger=MemoryLedger(time.time), blob_factory=lambda: blob_service(settings))


def _outcomes(deps: Any) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in deps.ledger.entries(days=2):
        found.setdefault(str(entry.get("event_id")), []).append(str(entry.get("status")))
    return found


def in_process(settings: Any, inputs: list[dict[str, Any]], tally: Tally) -> None:
    from shared.core.state import MemoryStateStore

    deps = _deps(settings, MemoryStateStore())
    ran: list[str] = []
    with app_with(deps) as (_, functions):
        for event in inputs:
            event_id = _invoke(functions, event, tally)
            if event_id is not None:
                ran.append(event_id)
    outcomes = _outcomes(deps)
    tally.add("lost", sum(1 for event_id in set(ran) if event_id not in outcomes))


def over_http(settings: Any, env: dict[str, str], state: Any, inputs: list[dict[str, Any]], rng: random.Random,
              tally: Tally) -> None:
    import requests

    from local.host.index import build_index
    from local.host.runtime import Host

    deps = _deps(settings, state)
    with app_with(deps) as (app_module, _):
        app = app_module.app
        app.functions_bindings = None  # get_functions() is not idempotent (python-worker#1867)
        with Host(build_index(app, env), port=0, host_id=f"faults-{uuid.uuid4().hex[:8]}", timers=False,
                  blob_poll=False, env=env) as host:
            position = 0
            while position < len(inputs):
                batch = inputs[position:position + rng.randint(1, 5)]
                position += len(batch)
                function = FUNCTION_OF.get(str(batch[0].get("eventType", "")), "on_model_registered") \
                    if isinstance(batch[0].get("eventType"), str) else "on_model_registered"
                try:
                    reply = requests.post(f"{host.url}/runtime/webhooks/eventgrid?functionName={function}",
                                          data=json.dumps(batch).encode(), timeout=120,
                                          headers={"aeg-event-type": "Notification",
                                                   "Content-Type": "application/json"})
                    status = reply.status_code
                except requests.RequestException:
                    status = 0
                tally.add("inputs", len(batch))
                tally.add("http_requests")
                tally.add(f"http_{status}")
                if status >= 500 and "bad Event Grid body" in reply.text:
                    tally.add("http_5xx_undecodable")  # the worker's converter refused it, as the real host's does
                elif status >= 500 or status == 0:
                    tally.add("http_5xx")


def redelivery(settings: Any, state: Any, events: list[dict[str, Any]], tally: Tally) -> None:
    """Every event 3 times from 6 threads at once, on Azurite state: one outcome acted (or one dead letter)."""
    deps = _deps(settings, state)
    deliveries = [event for event in events for _ in range(3)]
    random.Random(7).shuffle(deliveries)
    ran: set[str] = set()
    lock = threading.Lock()
    with app_with(deps) as (_, functions):
        def deliver(event: dict[str, Any]) -> None:
            event_id = _invoke(functions, event, tally)
            if event_id is not None:
                with lock:
                    ran.add(event_id)

        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(deliver, deliveries))
    outcomes = _outcomes(deps)
    tally.add("lost", sum(1 for event_id in ran if event_id not in outcomes))
    tally.add("duplicate_acted", sum(1 for statuses in outcomes.values() if statuses.count("acted") > 1))
    letters = Counter((str(r.value.get("reaction")), str(r.value.get("event_id"))) for r in state.dead_letters())
    tally.add("extra_letters", sum(n - 1 for n in letters.values() if n > 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--http", type=int, default=600)
    parser.add_argument("--redeliver", type=int, default=300)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()

    import logging

    logging.disable(logging.CRITICAL)  # 10,000 dead letters would be 10,000 error lines
    from azure.storage.blob import BlobServiceClient

    from shared.core.settings import load
    from shared.core.state import BlobStateStore

    rng = random.Random(args.seed)
    service = BlobServiceClient.from_connection_string(AZURITE)
    suffix = uuid.uuid4().hex[:10]
    containers = {role: service.get_container_client(f"faults-{role}-{suffix}") for role in ("data", "state")}
    for container in containers.values():
        container.create_container()
    try:
        values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
        env = {**{k: str(v) for k, v in values.items()}, "AzureWebJobsStorage": AZURITE,
               "REFLEX_PLATFORM": "local", "REFLEX_DATA_CONTAINER": containers["data"].container_name,
               "REFLEX_STATE_CONTAINER": containers["state"].container_name}
        settings = load(env)
        base = seeds(containers["data"])
        state = BlobStateStore(containers["state"])

        baseline = Tally()
        started = time.perf_counter()
        in_process(settings, [_fresh_id(e, rng) for e in base], baseline)
        fuzz = [mutate(_fresh_id(rng.choice(base), rng), rng) for _ in range(args.inputs)]
        tally = Tally()
        in_process(settings, fuzz, tally)
        in_process_s = time.perf_counter() - started
        over_http(settings, env, state, [mutate(_fresh_id(rng.choice(base), rng), rng) for _ in range(args.http)],
                  rng, tally)
        mixed = [mutate(_fresh_id(rng.choice(base), rng), rng) if i % 2 else _fresh_id(rng.choice(base), rng)
                 for i in range(args.redeliver)]
        redelivery(settings, state, mixed, tally)
    finally:
        for container in containers.values():
            container.delete_container()
    c = tally.counts
    raised = " ".join(f"{k}={v}" for k, v in sorted(c.items()) if k.startswith(("raised:", "http_")) and
                      k not in ("http_5xx", "http_requests", "http_5xx_undecodable"))
    print(f"in process: {args.inputs} inputs in {in_process_s:.1f} s; over HTTP: {c['http_requests']} requests; "
          f"redelivered: {args.redeliver} events x3 from 6 threads; {raised}")
    print(f"RESULT faults inputs={c['inputs']} http_5xx={c['http_5xx']} lost={c['lost']} "
          f"duplicate_acted={c['duplicate_acted']} conflicts={c['conflicts']} extra_letters={c['extra_letters']} "
          f"undecodable={c['undecodable']} http_5xx_undecodable={c['http_5xx_undecodable']} "
          f"transient={c['transient']} seeds={baseline.counts['inputs']} "
          f"seeds_5xx={baseline.counts['http_5xx']}")
    return 0 if c["http_5xx"] == 0 and c["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
