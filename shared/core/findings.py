"""A health finding: a failure Azure ML never announces, as the health timer reports it (`Reflex.HealthCheckFailed`).

Why in core: the health timer (shared/monitoring/health.py) gathers findings from several owners: its own endpoint
and job checks, and the rollout's check of its records (shared/rollout/health.py), which the monitoring function
hands it (functions/monitoring.py), as reactions do not import each other. Both sides speak this type.

"Once": a finding's id hashes its kind, resource and evidence *state* (what identifies the broken state), never
the time; the timer claims `claims/health/<id>` (a `Reported` record) before publishing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["Finding", "HealthCheck", "Reported"]


@dataclass(frozen=True)
class Finding:
    kind: str
    resource: str
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)  # what identifies this broken state

    @property
    def id(self) -> str:
        text = json.dumps([self.kind, self.resource, self.state], sort_keys=True, default=str)
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"

    def to_dict(self) -> dict[str, Any]:
        """The finding as published (the `Reflex.HealthCheckFailed` data) and as reported (`Reported`)."""
        return {"finding": self.id, "kind": self.kind, "resource": self.resource, "summary": self.summary,
                "evidence": dict(self.evidence)}


@dataclass(frozen=True)
class Reported:
    """Record `claims/health/<finding id>`: this finding was published once; `{"finding": Finding.to_dict()}`."""

    finding: str
    kind: str
    resource: str
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, finding: Finding) -> Reported:
        return cls(finding.id, finding.kind, finding.resource, finding.summary, dict(finding.evidence))

    def to_dict(self) -> dict[str, Any]:
        return {"finding": {"finding": self.finding, "kind": self.kind, "resource": self.resource,
                            "summary": self.summary, "evidence": dict(self.evidence)}}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Reported:
        v = value.get("finding") or {}
        return cls(str(v.get("finding", "")), str(v.get("kind", "")), str(v.get("resource", "")),
                   str(v.get("summary", "")), dict(v.get("evidence") or {}))


class HealthCheck(Protocol):
    """Findings of one owner, for the health timer: `kinds` it reports; `findings` at `now`; `remediate` one of
    them when REFLEX_HEALTH_REMEDIATE allows (what happened, or None when nothing was done)."""

    kinds: frozenset[str]

    def findings(self, deps: Deps, now: float) -> Iterable[Finding]: ...

    def remediate(self, deps: Deps, finding: Finding) -> str | None: ...
