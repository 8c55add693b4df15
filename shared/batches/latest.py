"""The latest training batch that can be trained on again: what a retraining (drift, schedule) and the evaluation
of a model registered outside Reflex (shared/registration/outside_models.py) both start from.

Why in the batch service: both read the arrival records (`arrivals/<container>/<dataset>/<batch>`,
shared/batches/record.py), and reactions share logic only through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.core.state import key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["RETRAINABLE", "latest_batch"]

# arrival statuses whose manifest is frozen and non-empty enough to train on again
RETRAINABLE = frozenset({"trained", "submitted", "complete", "waiting", "failed"})


def latest_batch(deps: Deps) -> tuple[str, dict[str, Any]] | None:
    """The most recently completed training batch with usable files: (arrival key, record), or None."""
    best: tuple[float, str, dict[str, Any]] | None = None
    prefix = f"arrivals/{key_part(deps.settings.data_container)}/"
    for record in deps.state.records(prefix):
        value = record.value
        if value.get("status") not in RETRAINABLE or not value.get("files"):
            continue
        at = float(value.get("completed_at") or 0)
        if best is None or (at, record.key) > (best[0], best[1]):
            best = (at, record.key, value)
    return None if best is None else (best[1], best[2])
