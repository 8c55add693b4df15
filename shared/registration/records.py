"""The records the registration reaction keeps, one owner type each: what is stored and how it is read back.

Why types: these records are written by one reaction and read by others (the rollout reconciler takes the
outside models that passed their evaluation; the stack test and operators read the gate's decisions), so their
fields are declared once here. Each type reads a stored value with `from_dict` and writes it with `to_dict`
(`shared.core.typed_record.TypedRecord`: keys it does not know are kept in `extra` and written back unchanged, the
one place for them, and what is unset is left out, so the stored JSON is what earlier versions wrote).

* `Registration`, `registrations/jobs/<job>`: the gate's decision for one training job (shared/registration/flow.py);
* `VersionCounter`, `registrations/models/<model>`: the next model version to allocate;
* `OutsideEvaluation`, `evaluations/outside/<model>/<version>`: a model registered outside Reflex, being or
  having been evaluated against the champion (shared/registration/outside_models.py);
* `ReadyToRoll`, `evaluations/ready/<model>/<version>`: one that passed and whose rollout has not started yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.core.state import key_part
from shared.core.typed_record import TypedRecord

__all__ = ["FINAL", "OutsideEvaluation", "ReadyToRoll", "Registration", "VersionCounter"]

FINAL = frozenset({"registered", "skipped"})  # a registration that is decided for good


@dataclass(frozen=True)
class Registration(TypedRecord):
    """The gate's decision for training job `job`.

    status: evaluating | registering | registered | skipped | dry-run; `version` is allocated before registering
    (a redelivery reuses it); `decision` is `gate.GateDecision.as_dict()`; `evaluation` the evaluation job
    scoring it ({"job", "champion", "source", "data"}); `by` the invocation that decided it (CAS token).
    """

    job: str = ""
    status: str = ""
    version: str = ""
    decision: Mapping[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = ""
    by: str = ""

    @staticmethod
    def key_of(job: str) -> str:
        return f"registrations/jobs/{key_part(job)}"

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class VersionCounter(TypedRecord):
    """The next version `next` to allocate for `model` (never below the highest existing version + 1)."""

    model: str = ""
    next: int = 1

    @staticmethod
    def key_of(model: str) -> str:
        return f"registrations/models/{key_part(model)}"


@dataclass(frozen=True)
class OutsideEvaluation(TypedRecord):
    """A model version registered outside Reflex: `status` evaluating | passed | failed against `champion` by
    evaluation `job` on `rows` ({"source", "data"}); `decision` and `reason` once concluded; `by` the CAS token
    of the invocation that concluded it; `event_id` the registration event, for the rollout it may start."""

    model: str = ""
    version: str = ""
    endpoint: str = ""
    status: str = ""
    job: str = ""
    champion: str = ""
    event_id: str = ""
    rows: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    decision: Mapping[str, Any] = field(default_factory=dict)
    by: str = ""

    @staticmethod
    def key_of(model: str, version: str) -> str:
        return f"evaluations/outside/{key_part(model)}/{key_part(version)}"


@dataclass(frozen=True)
class ReadyToRoll(TypedRecord):
    """An outside model that passed: the rollout reconciler starts its rollout on `endpoint`, then deletes this
    record (`key`, where it was read from; not stored)."""

    PREFIX = "evaluations/ready/"

    model: str = ""
    version: str = ""
    endpoint: str = ""
    event_id: str = ""
    key: str = field(default="", compare=False)

    @classmethod
    def key_of(cls, model: str, version: str) -> str:
        return f"{cls.PREFIX}{key_part(model)}/{key_part(version)}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if k != "key"}
