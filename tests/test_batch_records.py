"""The batch side's record types: stored forms kept as they are, unknown keys kept, transitions pure."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from shared.batches import admission
from shared.batches.paths import BatchPath
from shared.batches.record import ArrivalRecord, DataRef, Lease, RetrainRecord, ScoringRecord, as_update

# As the arrival flow stores them once trained (a second attempt; `future` is a key this version does not know).
ARRIVAL = {
    "container": "reflex-data", "dataset": "sales", "batch": "b1", "status": "trained",
    "files": {"x.csv": {"url": "http://h/reflex-data/sales/b1/x.csv", "etag": "0x1", "size": 5}},
    "rejected": {"n.txt": {"url": "http://h/reflex-data/sales/b1/n.txt", "etag": "0x2", "size": 3,
                           "reason": "n.txt: unreadable format for training"}},
    "late_files": {}, "marker": {"url": "http://h/reflex-data/sales/b1/_SUCCESS", "etag": "0x3"},
    "first_seen": 1.0, "last_seen": 2.0, "completed_at": 3.0, "completing_event": "ev-1", "job": "reflex-train-1",
    "data": {"name": "sales", "version": "b1", "path": "azureml://datastores/d/paths/sales/b1/"},
    "reason": "run completed", "history": [[1.0, "collecting", "first blob"], [3.0, "complete", "marker arrived"],
                                           [9.0, "trained", "run completed"]],
    "submitted_at": 4.0, "job_url": "https://ml.azure.com/runs/reflex-train-1", "attempt": 2, "reopened_by": "t",
    "future": {"kept": True},
}
SCORING = {
    "container": "reflex-scoring", "dataset": "sales", "batch": "s1", "status": "completed", "files": {},
    "rejected": {}, "late_files": {}, "marker": None, "first_seen": 1.0, "last_seen": 1.0, "completed_at": 2.0,
    "completing_event": "tracker:2", "job": "reflex-score-1", "data": None, "reason": "batch job completed",
    "history": [[1.0, "collecting", "first blob"]], "model": "m:2", "deployment": "reflex-v2", "endpoint": "be",
    "input": "azureml://datastores/s/paths/sales/s1/", "output": "azureml://datastores/o/paths/scoring/sales/s1/j/",
    "submitted_at": 3.0, "job_url": "https://ml.azure.com/runs/reflex-score-1", "finished_at": 4.0,
    "previous": [{"model": "m:1", "job": "reflex-score-0", "output": "o", "status": "completed", "reason": "r"}],
}
RETRAIN = {"model": "m", "window": "20261201T0000Z", "trigger": "drift:20261201T0000Z",
           "batch": "arrivals/reflex-data/sales/b1", "event_id": "ev", "status": "submitted", "job": "reflex-train-2",
           "reason": "training submitted", "evidence": {"psi": 0.4},
           "history": [[1.0, "pending", "drift:20261201T0000Z"], [2.0, "submitted", "training submitted"]]}
ADMISSION = {"running": {"reflex-train-2": {"batch": "retrains/m/20261201T0000Z", "at": 2.0}}, "day": "2026-12-01",
             "started_today": 3}


@pytest.mark.parametrize(("kind", "stored"), [(ArrivalRecord, ARRIVAL), (ScoringRecord, SCORING),
                                              (RetrainRecord, RETRAIN), (admission.AdmissionRecord, ADMISSION)])
def test_a_stored_record_reads_and_writes_back_exactly_as_it_was(kind: Any, stored: dict[str, Any]) -> None:
    assert json.loads(json.dumps(kind.from_dict(stored).to_dict())) == stored


def test_the_fields_are_typed_and_the_batch_id_is_built_in_one_place() -> None:
    batch = ArrivalRecord.from_dict(ARRIVAL)
    assert batch.batch_id == "reflex-data/sales/b1" and batch.path == BatchPath("reflex-data", "sales", "b1", "")
    assert batch.data == DataRef("sales", "b1", "azureml://datastores/d/paths/sales/b1/")
    assert batch.data.ref == "sales:b1"
    assert batch.attempt_number == 2 and batch.changed_at == 9.0
    # a record written before #17 holds its manifest: kept as it is, read through `legacy_files` (manifest.load)
    assert batch.extra == {"future": {"kept": True}, "files": ARRIVAL["files"]} and batch.file_count == 1
    assert batch.legacy_files == ARRIVAL["files"] and batch.manifest is None
    assert ArrivalRecord.from_dict({"status": "starting", "lease": {"until": 5}}).lease == Lease("", 5.0)


def test_a_record_written_by_hand_or_an_older_version_is_read_with_defaults() -> None:
    batch = ArrivalRecord.from_dict({"status": "submitted", "job": "j"})
    assert (batch.status, batch.job, batch.file_count, batch.attempt_number, batch.changed_at) == ("submitted", "j", 0,
                                                                                                   1, None)
    assert batch.lease_free(0.0) and RetrainRecord.from_dict({}).status == ""


def test_a_transition_keeps_unknown_keys_and_is_pure() -> None:
    """`StateStore.update` may run a transition several times: the same input gives the same output, untouched."""
    before = copy.deepcopy(ARRIVAL)
    update = as_update(ArrivalRecord, lambda r: r.with_status("failed", 10.0, allowed_from=("trained",),
                                                              reason="x", job="j2") if r else None)
    first, second = update(ARRIVAL), update(ARRIVAL)
    assert before == ARRIVAL and first == second and first is not None
    assert first["status"] == "failed" and first["job"] == "j2" and first["future"] == {"kept": True}
    assert first["history"][-1] == [10.0, "failed", "x"]
    assert update(None) is None
    assert as_update(ArrivalRecord, lambda r: r.with_status("failed", 1.0, allowed_from=("collecting",)) if r
                     else None)(ARRIVAL) is None  # not allowed from its status: no change


def test_a_transition_names_only_fields_the_record_has() -> None:
    with pytest.raises(TypeError):
        ArrivalRecord.from_dict(ARRIVAL).with_status("failed", 1.0, allowed_from=("trained",), no_such_field=1)


def test_a_released_lease_is_not_stored() -> None:
    """The start lease is written while held; released, it is left out (readers treat absent and null alike)."""
    held = ArrivalRecord.from_dict({**ARRIVAL, "status": "starting", "lease": {"token": "t", "until": 5.0}})
    assert held.to_dict()["lease"] == {"token": "t", "until": 5.0} and not held.lease_free(4.0)
    moved = held.with_status("complete", 6.0, allowed_from=("starting",), lease=None)
    assert moved is not None and "lease" not in moved.to_dict() and moved.lease_free(0.0)
