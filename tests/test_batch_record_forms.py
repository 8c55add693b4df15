"""The batch side's stored records and what it sends the platform stay as the untyped code wrote them.

One scenario through the real flows (Azurite data and scoring containers, the behavioural fake platform): a batch
with a rejected, an empty and a late file, a second batch waiting for the one training slot, a failed job swept,
a batch completing during dry-run, an operator's second attempt, a scheduled retraining waiting then submitted,
and a scoring batch waiting for a champion, then deployed, submitted and completed. Every `arrivals/`,
`scoring/`, `retrains/` and `training/admission` record, every training request, data asset and published event
is compared with tests/fixtures/records/batch-side.json, which the same `scenario` wrote at commit c7ab977, before
the records had types (see the fixtures README). Names that differ run to run (containers, etags, job names,
event ids, the tokens of leases and attempts, the manifests' digests of those etags, also where their first 16
hex name a frozen folder) are replaced by labels in the order they appear.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import functions.batch_scoring
import functions.data_arrival
import functions.monitoring
from shared.arrival.retry import train_again
from shared.core import reaction
from shared.core.control import write_control
from shared.core.platform import CHAMPION_TAG
from shared.core.publish import Publisher
from shared.core.state import MemoryStateStore
from testing.fake_platform import FakePlatform
from tests.conftest import Clock, make_deps, make_settings
from tests.timers_support import upload

FIXTURE = Path(__file__).parent / "fixtures" / "records" / "batch-side.json"
HANDLERS = (functions.batch_scoring, functions.data_arrival, functions.monitoring)  # they register the reactions
ROWS = b"a,label\n1,0\n"


def scenario(data: Any, scoring: Any) -> dict[str, Any]:
    """Run the scenario (module docstring) on two fresh containers; what it stored and sent, labelled."""
    clock = Clock()
    platform = FakePlatform(clock=clock)
    state = MemoryStateStore()
    published: list[Any] = []
    deps = dataclasses.replace(make_deps(make_settings(
        REFLEX_DATA_CONTAINER=data.container_name, REFLEX_SCORING_CONTAINER=scoring.container_name,
        REFLEX_MAX_CONCURRENT_TRAINING="1", REFLEX_RETRAIN_ENABLED="true"), state=state, platform=platform,
        clock=clock), publisher=Publisher(sink=published.append))
    events: list[dict[str, Any]] = []

    def put(container: Any, name: str, body: bytes = ROWS) -> dict[str, Any]:
        events.append(upload(container, name, body))
        return events[-1]

    def run(name: str, raw: dict[str, Any]) -> None:
        reaction.run(name, raw, event_id=raw.get("id", ""), deps=deps)

    for name, body in (("a.csv", ROWS), ("n.txt", ROWS), ("e.csv", b"")):
        run("data.arrival", put(data, f"sales/b1/{name}", body))
        clock.advance(1)
    run("data.arrival", put(data, "sales/b1/_SUCCESS", b""))
    clock.advance(1)
    run("data.arrival", put(data, "sales/b1/late.csv"))
    run("data.arrival", put(data, "sales/b2/x.csv"))
    run("data.arrival", put(data, "sales/b2/_SUCCESS", b""))  # waits for the one slot
    first = next(iter(platform.jobs))
    clock.advance(5)
    platform.finish_job(first, "Failed", error="boom")
    clock.advance(5)
    run("data.sweep", {})  # b1 failed (no event reached us), b2 submitted
    clock.advance(5)
    write_control(deps, dry_run=True, by="t", why="w")
    run("data.arrival", put(data, "sales/b3/x.csv"))
    run("data.arrival", put(data, "sales/b3/_SUCCESS", b""))
    write_control(deps, dry_run=False, by="t", why="w")
    clock.advance(5)
    train_again(deps, "arrivals/" + data.container_name + "/sales/b1", by="op", why="fixed")  # waits for b2
    second = next(j for j in platform.jobs if j != first)
    platform.finish_job(second, "Completed")
    clock.advance(5)
    run("data.sweep", {})  # b2 trained, b1's attempt 2 submitted
    clock.advance(5)
    run("monitoring.retrain", {})  # waits for the slot
    run("scoring.blob", put(scoring, "sales/s1/x.csv"))
    run("scoring.blob", put(scoring, "sales/s1/bad.txt"))
    run("scoring.blob", put(scoring, "sales/s1/_SUCCESS", b""))
    clock.advance(5)
    run("scoring.track", {})  # no champion yet
    third = next(j for j in platform.jobs if j not in (first, second))
    platform.finish_job(third, "Completed", outputs={"model": "azureml://jobs/x/outputs/model"})
    platform.register_model(name="reflex-model", version="1", job_name=third, tags={CHAMPION_TAG: "true"})
    clock.advance(5)
    run("data.sweep", {})
    run("monitoring.retrain", {})  # submitted
    for _ in range(6):
        clock.advance(120)
        run("scoring.track", {})
        run("data.sweep", {})
    platform.finish_job(next(j for j, v in platform.jobs.items() if v.kind == "batch"), "Completed")
    clock.advance(5)
    run("scoring.track", {})
    stored = {r.key: r.value for p in ("arrivals/", "scoring/", "retrains/", "training/") for r in state.records(p)}
    sent = {"requests": [dataclasses.asdict(r) for r in platform.job_requests.values()],
            "data": [dataclasses.asdict(d) for d in platform.data.values()],
            "published": [[e.type, e.subject, e.data] for e in published]}
    labels = {data.container_name: "DATA", scoring.container_name: "SCORING"}
    jobs = [*platform.jobs, *(str(stored[k].get("job")) for k in sorted(stored) if stored[k].get("job"))]
    labels.update({job: f"JOB{i}" for i, job in enumerate(dict.fromkeys(jobs))})  # a dry run's job is not submitted
    labels.update({raw["id"]: f"EVENT{i}" for i, raw in enumerate(events)})
    labels.update({raw["data"]["eTag"].strip('"'): f"ETAG{i}" for i, raw in enumerate(events)})
    digests = [str(v["manifest"]["digest"]) for k, v in sorted(stored.items()) if v.get("manifest")]
    labels.update({d: f"DIGEST{i}" for i, d in enumerate(digests)})  # of the etags: differ run to run too
    labels.update({d[:32]: f"DIGEST{i}" for i, d in enumerate(digests)})  # in the manifest's key
    # and in a frozen folder's name: `.reflex-frozen/<dataset>/<batch>/<digest16>/` (shared/batches/freeze.py)
    labels.update({d[:16]: f"DIGEST{i}" for i, d in enumerate(digests)})
    text = json.dumps({"stored": stored, "sent": sent}, sort_keys=True, default=str)
    text = re.sub("|".join(re.escape(k) for k in sorted(labels, key=len, reverse=True)), lambda m: labels[m[0]],
                  text)
    text = re.sub(r'"[0-9a-f]{32}"', '"TOKEN"', text)  # lease and attempt tokens (uuid4)
    return json.loads(text)


def _without_released_leases(value: Any) -> Any:
    """A released start lease was stored as null and is now left out; readers take both as no lease."""
    if isinstance(value, dict):
        return {k: _without_released_leases(v) for k, v in value.items() if not (k == "lease" and v is None)}
    if isinstance(value, list):
        return [_without_released_leases(v) for v in value]
    return value


def test_the_stored_records_and_requests_are_those_of_the_untyped_code(
        container_factory: Callable[[str], Any]) -> None:
    found = scenario(container_factory("data"), container_factory("scoring"))
    expected = json.loads(FIXTURE.read_text())
    assert set(found["stored"]) == set(expected["stored"])  # the same records
    statuses = {k: v.get("status") for k, v in found["stored"].items()}
    assert statuses == {"arrivals/DATA/sales/b1": "trained", "arrivals/DATA/sales/b2": "trained",
                        "arrivals/DATA/sales/b3": "dry-run", "retrains/reflex-model/20231114T0000Z": "submitted",
                        "scoring/SCORING/sales/s1": "completed", "training/admission": None}
    assert found["stored"] == _without_released_leases(expected["stored"])
    assert found["sent"] == expected["sent"]
