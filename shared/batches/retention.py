"""What retention keeps, and the newest scoring batch: the records the timers still need after they finished.

Why here: finished records are deleted `REFLEX_RETENTION_DAYS` after they finished (`StateStore.purge`, run by the
health timer), but two finished records are still inputs: the newest trained batch (scheduled and drift
retraining train on it: shared/batches/training.py `latest_batch`) and the newest scored batch (scheduled
re-scoring scores it again with a new champion: shared/scoring/flow.py `scheduled`). A deployment that receives no
new data for longer than the retention keeps retraining and re-scoring on them. Both are found through
`StateStore.newest` (the unfinished records and the finished ones newest day first), never by reading history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.batches.record import ScoringRecord
from shared.batches.training import latest_batch
from shared.core.state import Record, key_part

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["kept", "latest_scoring_batch"]


def _scored(record: Record) -> float | None:
    """When a scoring batch with usable files completed (None: still collecting, or nothing to score)."""
    batch = ScoringRecord.from_dict(record.value)
    usable = batch.status not in ("collecting", "skipped") and batch.file_count
    return float(batch.completed_at or 0) if usable else None


def latest_scoring_batch(deps: Deps) -> Record | None:
    """The most recently completed scoring batch with usable files, or None."""
    return deps.state.newest(f"scoring/{key_part(deps.settings.scoring_container)}/", _scored)


def kept(deps: Deps) -> list[str]:
    """The record keys retention keeps whatever their age."""
    training = latest_batch(deps)
    scoring = latest_scoring_batch(deps)
    return [key for key in (training[0] if training else None, scoring.key if scoring else None) if key]
