"""The stored records' owner types read what earlier versions wrote, keep what they do not know, and write the
same JSON back (shared/core/typed_record.py, shared/registration/records.py, shared/monitoring/records.py,
shared/rollout/machine.py `Rollout`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.core.findings import Finding, Reported
from shared.monitoring.records import DriftState, EndedJob
from shared.registration.records import OutsideEvaluation, ReadyToRoll, Registration, VersionCounter
from shared.rollout.discovery import Handled
from shared.rollout.machine import Observation, Rollout, advance, decide, read
from shared.rollout.plan import Plan

# as the dict-building code wrote them before the types (shared/registration/flow.py, outside_models.py at c7ab977)
STORED: list[tuple[type[Any], dict[str, Any]]] = [
    (Registration, {"job": "j1", "status": "registered", "version": "3", "event_id": "e1", "by": "t0",
                    "decision": {"register": True, "reason": "first model", "rows": {"source": "holdout"}}}),
    (Registration, {"job": "j2", "status": "evaluating", "event_id": "e2",
                    "evaluation": {"job": "reflex-eval-1", "champion": "m:1", "source": "holdout", "data": "d:b"}}),
    (VersionCounter, {"model": "m", "next": 4}),
    (OutsideEvaluation, {"model": "m", "version": "2", "endpoint": "ep", "status": "evaluating", "job": "ev",
                         "champion": "m:1", "event_id": "e3", "rows": {"source": "holdout", "data": "d:b"}}),
    (ReadyToRoll, {"model": "m", "version": "2", "endpoint": "ep", "event_id": "e3"}),
    (DriftState, {"checked_until": 1000.0, "window": "20261201T0000Z",
                  "baseline": {"model": "m:1", "source": "training data", "detail": "d:b"},
                  "last": {"at": 1000.0, "model": "m:1", "rows": 200, "drifted": ["age"], "max_psi": 0.4}}),
    (EndedJob, {"job": "j", "status": "Failed", "seen_at": 12.5}),
    (Handled, {"model": "m", "version": "7"}),
]


@pytest.mark.parametrize(("kind", "value"), STORED, ids=[f"{k.__name__}-{i}" for i, (k, _) in enumerate(STORED)])
def test_what_was_stored_reads_and_writes_back_unchanged(kind: type[Any], value: dict[str, Any]) -> None:
    assert kind.from_dict(value).to_dict() == value
    assert json.loads(json.dumps(kind.from_dict(value).to_dict())) == value


def test_unknown_keys_are_kept_through_a_change_and_versions_read_as_strings() -> None:
    stored = {"job": "j", "status": "registering", "version": 3, "written_by": "a newer Reflex"}
    r = Registration.from_dict(stored)
    assert r.version == "3" and r.extra == {"written_by": "a newer Reflex"} and not r.final
    done = r.but(status="registered", by="t1")
    assert done.final and done.to_dict() == {"job": "j", "status": "registered", "version": "3", "by": "t1",
                                             "written_by": "a newer Reflex"}
    assert VersionCounter.from_dict({}).next == 1


def test_a_field_of_the_wrong_kind_is_not_such_a_record() -> None:
    with pytest.raises(TypeError):
        Registration.from_dict({"job": "j", "decision": "registered"})
    with pytest.raises(ValueError):
        VersionCounter.from_dict({"model": "m", "next": "many"})


def test_the_ready_record_s_key_is_where_it_was_read_not_what_it_stores() -> None:
    ready = ReadyToRoll.from_dict({"model": "m", "version": "2", "endpoint": "ep"}).but(key="evaluations/ready/m/2")
    assert ready.key == ReadyToRoll.key_of("m", "2") and "key" not in ready.to_dict()


def test_a_reported_finding_is_the_finding_as_published() -> None:
    finding = Finding("traffic", "endpoint/e", "bad split", {"traffic": {"a": 60}}, {"problems": ["sum"]})
    stored = Reported.of(finding).to_dict()
    assert stored == {"finding": finding.to_dict()}
    assert Reported.from_dict(stored) == Reported.of(finding) and Reported.from_dict(stored).finding == finding.id


def test_awaiting_approval_is_a_field_set_by_the_approval_wait_and_read_from_older_records() -> None:
    pending = Rollout("ep", "m", "2", "m-v2", Plan(), created_at=0.0)
    waiting = advance(pending, decide(pending, Observation(endpoint_state="Succeeded", approval="pending"), 5.0), 5.0)
    assert waiting.awaiting_approval and waiting.to_dict()["awaiting_approval"] is True
    # the same wait again (one history entry), then approval: the next step clears it
    again = advance(waiting, decide(waiting, Observation(endpoint_state="Succeeded", approval="pending"), 9.0), 9.0)
    assert again.awaiting_approval and len(again.history) == 1
    other = decide(again, Observation(endpoint_state="Creating", approval="approved"), 10.0)
    assert not advance(again, other, 10.0).awaiting_approval
    # a record written before the field: its last step is the approval wait, so it awaits approval
    legacy = {k: v for k, v in waiting.to_dict().items() if k != "awaiting_approval"}
    assert Rollout.from_dict(legacy).awaiting_approval
    assert not Rollout.from_dict({**legacy, "status": "failed"}).awaiting_approval
    assert read({"status": "pending"}) is None and read(legacy) == Rollout.from_dict(legacy)
