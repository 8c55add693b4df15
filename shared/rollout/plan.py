"""The rollout plan (policy as data, from settings), deployment naming and traffic arithmetic. No I/O.

Why a separate module: the plan is copied into each rollout record when it starts, so a settings change never
alters a rollout halfway through, and the traffic arithmetic (scaling the live split around the new
deployment, restoring it on rollback) is the part most worth testing exhaustively on its own.

Deployment names derive from model name and version (Azure ML: 3-32 characters, letters, digits and hyphens,
starting with a letter), so a repeated step finds the deployment it created before instead of making another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.core.settings import Settings

__all__ = ["Plan", "deployment_name", "split_traffic", "restore_traffic", "version_key"]

MAX_DEPLOYMENT_NAME = 32


@dataclass(frozen=True)
class Plan:
    """Phases and thresholds of one rollout: optional mirror, then `steps` (percent, ending at 100)."""

    steps: tuple[int, ...] = (10, 50, 100)
    bake_seconds: int = 600
    mirror_percent: int = 0
    mirror_seconds: int = 0
    retain_seconds: int = 3600
    deadline_seconds: int = 14_400
    max_error_rate: float = 0.02
    max_latency_ms: float = 5000.0  # a backstop: see shared.rollout.machine.metrics_breach
    max_latency_ratio: float = 1.5
    min_requests: int = 0
    instance_type: str = "Standard_DS3_v2"
    instance_count: int = 1
    delete_on_rollback: bool = True
    approval_timeout_seconds: int = 7 * 86_400  # a model awaiting approval this long is given up

    @classmethod
    def from_settings(cls, s: Settings) -> Plan:
        return cls(steps=tuple(s.rollout_steps), bake_seconds=s.bake_seconds, mirror_percent=s.mirror_percent,
                   mirror_seconds=s.mirror_seconds, retain_seconds=s.retain_seconds,
                   deadline_seconds=s.rollout_deadline_seconds, max_error_rate=s.max_error_rate,
                   max_latency_ms=s.max_latency_ms, max_latency_ratio=s.max_latency_ratio,
                   min_requests=s.min_requests, instance_type=s.instance_type, instance_count=s.instance_count,
                   delete_on_rollback=s.delete_on_rollback, approval_timeout_seconds=s.approval_timeout_seconds)

    def to_dict(self) -> dict[str, Any]:
        value = asdict(self)
        value["steps"] = list(self.steps)
        return value

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Plan:
        known = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        known["steps"] = tuple(int(p) for p in known.get("steps", (100,)))
        return cls(**known)


def deployment_name(model: str, version: str) -> str:
    """`m-<model>-v<version>-<hash>`, shortened to 32 characters; stable for the same model and version.

    Examples:
        >>> deployment_name("churn", "3")
        'm-churn-v3-79c0ef'
        >>> len(deployment_name("a" * 80, "12345678901234567890"))
        32
    """
    digest = hashlib.sha256(f"{model}:{version}".encode()).hexdigest()[:6]
    clean = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "model"
    ver = re.sub(r"[^a-z0-9]+", "-", str(version).lower()).strip("-")[:12] or "0"
    tail = f"-v{ver}-{digest}"
    head = ("m-" + clean)[: MAX_DEPLOYMENT_NAME - len(tail)].rstrip("-")
    return head + tail


def split_traffic(previous: Mapping[str, int], new: str, percent: int) -> dict[str, int]:
    """Live traffic with `new` at `percent` and the previous split scaled into the rest (sums to 100).

    With no previous traffic the new deployment takes 100 (nothing else can serve).
    """
    others = {n: p for n, p in previous.items() if n != new and p > 0}
    total = sum(others.values())
    if not total:
        return {new: 100}
    rest = 100 - percent
    exact = {n: p * rest / total for n, p in others.items()}
    out = {n: int(v) for n, v in exact.items()}
    short = rest - sum(out.values())
    for n in sorted(exact, key=lambda k: (exact[k] - out[k], k), reverse=True)[:short]:
        out[n] += 1
    out[new] = percent
    return out


def restore_traffic(previous: Mapping[str, int], states: Mapping[str, str], new: str) -> dict[str, int]:
    """The split to roll back to: the previous one, over those of its deployments still Succeeded (rescaled).

    Empty (nothing serves) when none of them is left: traffic may then only be 0, never on the failed one.
    """
    alive = {n: p for n, p in previous.items() if n != new and p > 0 and states.get(n) == "Succeeded"}
    if not alive:
        return {}
    total = sum(alive.values())
    out = {n: p * 100 // total for n, p in alive.items()}
    top = max(alive, key=lambda n: (alive[n], n))
    out[top] += 100 - sum(out.values())
    return out


def version_key(version: str) -> tuple[int, int, str]:
    """Orders model versions: numbers numerically, before any non-numeric label (compared as text)."""
    text = str(version).strip()
    return (0, int(text), "") if text.isdigit() else (1, 0, text)
