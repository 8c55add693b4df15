"""The records the monitoring timers keep, one owner type each (`shared.core.typed_record.TypedRecord`: explicit
fields, `from_dict` / `to_dict`, unknown keys kept in `extra`).

* `DriftState`, `drift/<model>`: where the drift check stands for the model (shared/monitoring/drift_check.py);
* `DriftReported`, `claims/drift/<model>/<window>`: `Reflex.DriftDetected` went out for that window;
* `EndedJob`, `health/ended/<job>`: when the health check first saw a job ended badly (shared/monitoring/health.py).

Health's reported findings (`claims/health/<id>`) are `shared.core.findings.Reported`, in core with the finding
itself, which the rollout's own check produces too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.core.state import key_part
from shared.core.typed_record import TypedRecord

__all__ = ["DriftReported", "DriftState", "EndedJob"]


@dataclass(frozen=True)
class DriftState(TypedRecord):
    """`checked_until`: the end of the last check that had enough rows (recent data starts after it);
    `baseline`: the champion's baseline {"model", "source", "detail"}; `window` and `last` ({"at", "model",
    "rows", "drifted", "max_psi"}): the last window compared."""

    checked_until: float | None = None
    baseline: Mapping[str, Any] = field(default_factory=dict)
    window: str = ""
    last: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def key_of(model: str) -> str:
        return f"drift/{key_part(model)}"


@dataclass(frozen=True)
class DriftReported(TypedRecord):
    """What was reported (`summary`) for the model in one window: the claim that makes the event go out once."""

    summary: str = ""

    @staticmethod
    def key_of(model: str, window: str) -> str:
        return f"claims/drift/{key_part(model)}/{key_part(window)}"


@dataclass(frozen=True)
class EndedJob(TypedRecord):
    """When health first saw `job` ended badly (`seen_at`; the platform reports no end time), in `status`;
    `reported`: health published its finding, so the platform is never asked about the job again."""

    job: str = ""
    status: str = ""
    seen_at: float | None = None
    reported: bool | None = None

    @staticmethod
    def key_of(job: str) -> str:
        return f"health/ended/{key_part(job)}"
