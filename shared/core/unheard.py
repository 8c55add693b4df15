"""Jobs whose end no event announced: the Azure ML run event that end would have sent, built from the job as
the platform reports it, and handled by the very reaction the real event runs (#18.2).

Why: Azure ML's run events are preview, Event Grid gives up after its retries, and locally the job runner
cannot reach a host that is down. A timer that finds such a job must not decide on its own (marking the batch
`trained` without the gate lost every model it found): it hands the job to `registration.run_event` through
`reaction.run`, so the gate runs (or TrainingFailed goes out) once, in the ledger, paused and dry-run honoured,
dead-lettered like any event.

The event is the Event Grid schema form of Microsoft's samples (tests/events/run_completed.json and
run_status_changed.json, after MicrosoftDocs/azure-docs `articles/event-grid/event-schema-machine-learning.md`):
`RunCompleted` for a Completed job, `RunStatusChanged` with `runStatus` in lower case otherwise. Its id is
derived from the job and its status (`unheard:<job>:<status>`), so every sweep that finds the job sends the
same event (held once while paused), and Reflex's idempotency is by the job, not the id: a real event that
arrives late finds the job's record decided and answers `duplicate`, as a sweep after the real event does.
The experiment id Azure ML puts in the subject is not part of the job as reported; the subject names the
experiment instead (the reaction reads `runId` only).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core import events
from shared.core.platform import Job
from shared.core.state import key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.reaction import Outcome

__all__ = ["AWAITED", "RUN_REACTION", "awaited_evaluations", "awaiting_key", "handle", "run_event"]

RUN_REACTION = "registration.run_event"
# Evaluation jobs a gate waits for (its record `registrations/jobs/<job>` is `evaluating`): they hold no training
# slot, so the gate leaves a marker here while it waits (shared/registration/flow.py) and the sweep lists only
# these, not every gate record ever written.
AWAITED = "registrations/awaiting/"


def awaiting_key(evaluation_job: str) -> str:
    return f"{AWAITED}{key_part(evaluation_job)}"


def run_event(job: Job, *, topic: str = "") -> dict[str, Any]:
    """The Event Grid event Azure ML sends when `job` ends (a terminal job), built from the job itself."""
    completed = job.status == "Completed"
    data: dict[str, Any] = {"experimentId": "", "experimentName": job.experiment_name, "runId": job.name,
                            "runType": "batch" if job.kind == "batch" else None, "runTags": dict(job.tags),
                            "runProperties": {}}
    if not completed:
        data["runStatus"] = job.status.lower()
    return {"id": f"unheard:{job.name}:{job.status.lower()}", "topic": topic,
            "subject": f"experiments/{job.experiment_name or '-'}/runs/{job.name}",
            "eventType": events.RUN_COMPLETED if completed else events.RUN_STATUS_CHANGED,
            "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": data, "dataVersion": "", "metadataVersion": "1"}


def handle(deps: Deps, job: Job) -> Outcome:
    """Run the reaction the job's own event runs, on the event built from it.

    Raises:
        TransientError: the reaction could not finish now; the next tick of the timer tries again.
    """
    from shared.core import reaction

    if RUN_REACTION not in reaction.HANDLERS:  # a caller outside the app's entry points (functions/, the CLI)
        raise RuntimeError(f"the {RUN_REACTION} handler is not registered: import shared.handlers first")
    event = run_event(job)
    return reaction.run(RUN_REACTION, event, event_id=event["id"], key=job.name, deps=deps)


def awaited_evaluations(deps: Deps) -> list[str]:
    """The evaluation jobs gates still wait for; a marker whose gate record moved on is dropped."""
    found: list[str] = []
    for marker in deps.state.records(AWAITED):
        gate = deps.state.get(str(marker.value.get("record") or ""))
        waiting = gate is not None and gate.value.get("status") == "evaluating" and \
            (gate.value.get("evaluation") or {}).get("job") == marker.value.get("job")
        if waiting:
            found.append(str(marker.value["job"]))
        else:
            deps.state.delete(marker.key, marker.etag)
    return found
