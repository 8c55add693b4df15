"""The rollout state machine: `decide(record, observation, now) -> Action` and `advance(...)`. Pure, no I/O.

Why pure: a rollout is the riskiest thing Reflex does (it moves production traffic), so every decision is a
plain function of the persisted record and a frozen snapshot of the platform, table-tested and property-tested.
The flow (shared/rollout/flow.py) observes, calls `decide`, executes exactly one action, and stores
`advance(record, action, now, result)` with compare-and-swap. Because each action is idempotent (names derive
from model and version; traffic is set as a whole) a crash between acting and recording only repeats a step.

Persisted record (`rollouts/<endpoint>`, one JSON object; see `Rollout.to_dict`)::

    endpoint, model, version, deployment     what is rolled out where (deployment name derived)
    status      pending -> creating -> smoke -> [mirroring] -> baking (phase i) ... -> promoted -> retiring -> done
                (promoted: the tick after Promote untags the former champion, `Demote`, then the retention waits)
                any active status -> rolling_back -> rolled_back | superseded ; failed (nothing to undo)
    previous, previous_traffic               the live deployment and split when the rollout started
    plan        shared.rollout.plan.Plan as a dict (copied at start: settings changes do not alter it)
    phase, phase_started_at                  index into plan.steps (-1: mirror), when the phase's bake clock
                                             started (the phase began, or the new deployment was last seen
                                             transitional: see `decide`)
    created_at, started_at, deadline         epoch seconds
    awaiting_approval                        true while pending on the model's reflex.approval=pending tag
                                             (records written before the field: read from their last Wait)
    smoke       {"ok", "detail", "status", "latency_ms"} of the last smoke test
    queued      {"model", "version", "event_id", "trace"} of a newer model that supersedes this rollout
    trace       the W3C traceparent of the reaction that recorded the rollout (shared/core/trace.py): every
                reconcile step of this rollout is a span in that trace, a child of that reaction's span
    reason, evidence, final                  why it ended (rollback reason and the numbers behind it)
    history     the last 50 steps: {"at", "action", "status", "detail"}
    demote      versions the promotion took the champion from that still carry the tag (untagged by `Demote`)
    suspect     {"at", "reason", "evidence"} of a latency-ratio breach not yet confirmed (see `metrics_window`)

Transitional provisioning states (Creating, Updating, Scaling: `shared.core.platform.TRANSITIONAL`) pass by
themselves: Azure ML puts a deployment in Updating when its traffic or instance count changes or during
platform maintenance, and the endpoint in Updating for a few seconds after every traffic update. They mean
Wait (naming the state), never RollBack; Failed, Canceled, Deleting (of the new deployment) and missing still
roll back, and the rollout deadline bounds every wait. Traffic moves and phases complete only while the
endpoint and every deployment involved are settled, because Azure refuses or races an update in flight.

A bake phase's checks (`metrics_breach`): an error-rate or backstop breach rolls back at once; a breach of the
latency ratio alone holds the phase (`suspect`), neither advanced nor rolled back, until the whole minutes after
it confirm it (roll back) or not (the bake goes on): see `metrics_window` for why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.core.platform import SUCCEEDED, TRANSITIONAL, DeploymentMetrics, QuotaCheck
from shared.rollout.plan import Plan, split_traffic, version_key

__all__ = [
    "ACTIVE", "CONFIRM_SECONDS", "TERMINAL", "ROLLBACK_SETTLE_SECONDS", "Action", "Begin", "CreateDeployment",
    "CreateEndpoint", "DeleteDeployment", "Demote", "Finish", "Observation", "Promote", "RollBack", "Rollout",
    "SetTraffic", "SmokeTest", "Wait", "admit", "advance", "decide", "defer_rollback", "metrics_breach",
    "metrics_window", "read", "rollback_hold", "rolling_back",
]

TERMINAL = frozenset({"done", "rolled_back", "failed", "superseded"})  # the statuses a rollout ends in (the only set)
ACTIVE = frozenset({"creating", "smoke", "mirroring", "baking"})  # the new deployment may hold traffic
ROLLBACK_SETTLE_SECONDS = 1_800  # a rollback waits this long for the live deployment to settle, then gives up
HISTORY = 50
_APPROVAL_WAIT = "awaiting approval"  # how the Wait on approval begins (legacy records hold only that)


@dataclass(frozen=True)
class Rollout:
    endpoint: str
    model: str
    version: str
    deployment: str
    plan: Plan
    created_at: float
    status: str = "pending"
    event_id: str = ""
    previous: str | None = None
    previous_traffic: Mapping[str, int] = field(default_factory=dict)
    phase: int = 0
    phase_started_at: float = 0.0
    started_at: float = 0.0
    deadline: float = 0.0
    smoke: Mapping[str, Any] | None = None
    queued: Mapping[str, str] | None = None
    reason: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    final: str = ""
    attempts: int = 0
    history: tuple[Mapping[str, Any], ...] = ()
    awaiting_approval: bool = False
    demote: tuple[str, ...] = ()
    trace: str = ""
    suspect: Mapping[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint, "model": self.model, "version": self.version, "deployment": self.deployment,
            "plan": self.plan.to_dict(), "created_at": self.created_at, "status": self.status,
            "event_id": self.event_id, "previous": self.previous, "previous_traffic": dict(self.previous_traffic),
            "phase": self.phase, "phase_started_at": self.phase_started_at, "started_at": self.started_at,
            "deadline": self.deadline, "smoke": dict(self.smoke) if self.smoke is not None else None,
            "queued": dict(self.queued) if self.queued else None, "reason": self.reason,
            "evidence": dict(self.evidence), "final": self.final, "attempts": self.attempts,
            "history": [dict(h) for h in self.history], "awaiting_approval": self.awaiting_approval,
            "demote": list(self.demote),
            "trace": self.trace, "suspect": dict(self.suspect) if self.suspect else None,
        }

    @classmethod
    def from_dict(cls, v: Mapping[str, Any]) -> Rollout:
        """The record as stored (see the module docstring); unknown keys are ignored, and this is the one place
        that reads keys of older records.

        Raises:
            KeyError, TypeError, ValueError: not a rollout record (endpoint, model, version or deployment missing,
                a field of the wrong type).
        """
        history = tuple(v.get("history") or ())
        return cls(
            endpoint=v["endpoint"], model=v["model"], version=str(v["version"]), deployment=v["deployment"],
            plan=Plan.from_dict(v.get("plan") or {}), created_at=float(v.get("created_at", 0.0)),
            status=v.get("status", "pending"), event_id=v.get("event_id", ""), previous=v.get("previous"),
            previous_traffic={k: int(p) for k, p in (v.get("previous_traffic") or {}).items()},
            phase=int(v.get("phase", 0)), phase_started_at=float(v.get("phase_started_at", 0.0)),
            started_at=float(v.get("started_at", 0.0)), deadline=float(v.get("deadline", 0.0)),
            smoke=v.get("smoke"), queued=v.get("queued") or None, reason=v.get("reason", ""),
            evidence=v.get("evidence") or {}, final=v.get("final", ""), attempts=int(v.get("attempts", 0)),
            history=history,
            awaiting_approval=bool(v["awaiting_approval"]) if "awaiting_approval" in v else (
                v.get("status", "pending") == "pending" and _approval_wait(history)),
            demote=tuple(str(d) for d in v.get("demote") or ()),
            trace=v["trace"] if isinstance(v.get("trace"), str) else "",
            suspect=_suspect(v.get("suspect")),
        )


def read(value: Mapping[str, Any]) -> Rollout | None:
    """The rollout record `value`, or None when it is not one (for readers that report rather than act: the
    health check, `python -m reflex status`; the reconciler lets `Rollout.from_dict` raise)."""
    try:
        return Rollout.from_dict(value)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _suspect(value: Any) -> Mapping[str, Any] | None:
    """A stored `suspect`, or None (records from before the field; anything without its moment)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("at"), (int, float)):
        return None
    return {"at": float(value["at"]), "reason": str(value.get("reason", "")),
            "evidence": value.get("evidence") if isinstance(value.get("evidence"), Mapping) else {}}


def _approval_wait(history: tuple[Mapping[str, Any], ...]) -> bool:
    """A record from before `awaiting_approval`: its last step is the Wait on approval."""
    last = history[-1] if history and isinstance(history[-1], Mapping) else {}
    return last.get("action") == "Wait" and str(last.get("detail", "")).startswith(_APPROVAL_WAIT)


@dataclass(frozen=True)
class Observation:
    """What the flow saw on the platform just before deciding. `endpoint_state` None: no such endpoint."""

    endpoint_state: str | None = None
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror: Mapping[str, int] = field(default_factory=dict)
    deployments: Mapping[str, str] = field(default_factory=dict)  # name -> provisioning state
    model_found: bool = True
    approval: str = ""                                           # value of the reflex.approval tag
    smoke_configured: bool = True
    smoke_problem: str = ""                                      # why no smoke request was found
    quota: QuotaCheck | None = None
    new_metrics: DeploymentMetrics | None = None
    live_metrics: DeploymentMetrics | None = None

    def live_split(self, exclude: str) -> dict[str, int]:
        return {n: p for n, p in self.traffic.items() if p > 0 and n != exclude}


# ------------------------------------------------------------------------------------------------ actions
@dataclass(frozen=True)
class Action:
    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Wait(Action):
    """Nothing to do yet. `restart_clock`: the bake clock restarts now (the new deployment is transitional);
    `approval`: the wait is for the model's approval (`Rollout.awaiting_approval`); `suspect`: a latency-ratio
    breach to confirm is recorded (`Rollout.suspect`); `cleared`: the one recorded was not confirmed."""

    reason: str
    restart_clock: bool = False
    approval: bool = False
    suspect: Mapping[str, Any] | None = None
    cleared: bool = False


@dataclass(frozen=True)
class Begin(Action):
    """Leave `pending` recording the live split (the new deployment already exists: a resumed step)."""

    previous: str | None
    previous_traffic: Mapping[str, int]


@dataclass(frozen=True)
class CreateEndpoint(Action):
    pass


@dataclass(frozen=True)
class CreateDeployment(Action):
    previous: str | None
    previous_traffic: Mapping[str, int]


@dataclass(frozen=True)
class SmokeTest(Action):
    pass


@dataclass(frozen=True)
class SetTraffic(Action):
    traffic: Mapping[str, int]
    mirror: Mapping[str, int]
    status: str
    phase: int


@dataclass(frozen=True)
class Promote(Action):
    pass


@dataclass(frozen=True)
class Demote(Action):
    """Take the champion tag off `versions`, former champions (the pointer moved at Promote)."""

    versions: tuple[str, ...]


@dataclass(frozen=True)
class DeleteDeployment(Action):
    names: tuple[str, ...]


@dataclass(frozen=True)
class RollBack(Action):
    reason: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    final: str = "rolled_back"


@dataclass(frozen=True)
class Finish(Action):
    status: str
    reason: str


# ------------------------------------------------------------------------------------------------ admission
def admit(current: Rollout | None, model: str, version: str, *, retry_of: str = "") -> str:
    """What a registration of `model:version` means for the endpoint's current record.

    `start` (no record, or a finished one for an older version), `duplicate` (same model and version),
    `older` (an older version than the one already rolled out or queued: skipped), `supersede` (a newer model
    while a rollout runs: it is queued and the running one is taken back first).

    `retry_of`: an operator's new attempt (`python -m reflex rollout`) names the attempt it follows, by that
    attempt's event id. It starts only while the record still holds that very attempt, finished; a redelivery
    of any earlier event, or a second copy of the same request, stays a duplicate.
    """
    if current is None:
        return "start"
    if retry_of and current.ref == f"{model}:{version}" and current.terminal and not current.queued \
            and current.event_id == retry_of:
        return "start"
    candidates = [(current.model, current.version)]
    if current.queued:
        candidates.append((current.queued["model"], current.queued["version"]))
    if (model, version) in candidates:
        return "duplicate"
    if any(m == model and version_key(version) < version_key(v) for m, v in candidates):
        return "older"
    return "start" if current.terminal and not current.queued else "supersede"


# ------------------------------------------------------------------------------------------------ checks
RATIO_MIN_SAMPLE = 5
"""Requests each deployment must have served in the window before their latencies are compared: a median of
five stays put with two of them stalled or cold, a median of one is that one request."""


def metrics_breach(plan: Plan, new: DeploymentMetrics | None, live: DeploymentMetrics | None) -> str:
    """Why the new deployment's metrics fail the plan's thresholds ("" when they pass or there is no data).

    A breach of the ratio alone rolls back only once confirmed over a later minute (`metrics_window`); the
    error rate and the backstop roll back at once.

    A canary is judged on `plan.min_requests` requests at least: one slow or failed request among three is
    noise (a cold first request, the smoke test), not a regression. Before that many are in, it breaches only
    when the outcome is already certain: when the error rate or the backstop would be exceeded even if every
    request still missing were instant and succeeded (errors / min_requests, latency sum / min_requests).

    Latency is judged against the live deployment over the same window (`max_latency_ratio`): both serve the
    same requests on the same kind of machine at the same time, so a slow moment (a loaded host, a busy region)
    slows both and is not the new model's fault. The ratio compares like with like (#18.6): only once both
    deployments served `min_requests` requests (and `RATIO_MIN_SAMPLE` at least, whatever the setting) in the
    window, never from a partial canary sample, and on the median request where the platform reports it for both.
    The floor holds with `REFLEX_MIN_REQUESTS=0` too: that setting says "advance without waiting for traffic",
    not "let one request decide"; a CI run rolled a sound canary back on its only request, a cold one (2,820 ms
    against the live deployment's median of 72 ms over 47 requests). On a loaded machine single requests stall
    for seconds while the median hardly moves (measured: a median of 10-12 ms for both models, stalls to 1.8 s),
    so the mean of a canary's ten requests against the mean of the live one's hundreds is decided by whether one
    stall or the smoke test's cold request fell into the canary's few; a canary that is slower at its typical
    request, as a real regression is, moves the median as much as the mean.

    `max_latency_ms` is only a backstop, on the mean (every request, stalls included), for a canary without a
    live deployment to compare with (the first model, the last step where the live one serves nothing) or one
    both too slow to keep; its default is Azure ML's own request timeout (azure-ai-ml
    `OnlineRequestSettings.request_timeout_ms`, 5000 ms), beyond which requests fail anyway.
    """
    return _judge(plan, new, live)[0]


def _judge(plan: Plan, new: DeploymentMetrics | None, live: DeploymentMetrics | None) -> tuple[str, str]:
    """`metrics_breach`'s reason and which check it is: "errors", "ratio", "backstop" ("" with no breach)."""
    if new is None or new.requests <= 0:
        return "", ""
    sample = max(new.requests, plan.min_requests)
    error_rate = new.errors / sample
    if error_rate > plan.max_error_rate:
        return (f"error rate {error_rate:.3f} ({new.errors}/{sample}"
                f"{'' if sample == new.requests else ' at least'}) exceeds {plan.max_error_rate:.3f}", "errors")
    if new.latency_ms is None:
        return "", ""
    compared = _comparable_latency(new, live, _ratio_sample(plan))
    latency = new.latency_ms * new.requests / sample
    if latency > plan.max_latency_ms:
        bound = "" if sample == new.requests else f" (at least, over {sample} requests)"
        against = "" if compared is None else f" (the live deployment's: {compared[2]:.0f} ms)"
        return f"latency {latency:.0f} ms{bound} exceeds the {plan.max_latency_ms:.0f} ms backstop{against}", \
            "backstop"
    if compared is not None:
        what, new_ms, live_ms = compared
        if new_ms > live_ms * plan.max_latency_ratio:
            return (f"{what} {new_ms:.0f} ms exceeds {plan.max_latency_ratio}x the live deployment's "
                    f"{live_ms:.0f} ms over the same {new.window_seconds} s ({new.requests} and "
                    f"{live.requests if live else 0} requests)"), "ratio"
    return "", ""


CONFIRM_SECONDS = 60
"""How long a latency-ratio breach is judged again before it rolls back: one grain of Azure Monitor's metrics
(PT1M), over whole minutes that began after the breach was seen."""


def _next_minute(at: float) -> float:
    """The start of the first whole minute after `at`: where a confirming window begins."""
    return (int(at // 60) + 1) * 60.0


def _confirm_from(r: Rollout) -> float | None:
    """Where the window that confirms `r.suspect` starts: the first whole minute after the breach was seen."""
    return _next_minute(float(r.suspect["at"])) if r.suspect else None


def metrics_window(r: Rollout, now: float) -> int:
    """The window, in seconds up to `now`, over which the flow reads both deployments' metrics.

    The phase so far (at least a minute, Azure Monitor's grain). While a latency-ratio breach waits for its
    confirmation, from the first whole minute after it was seen: the confirming sample shares no request with
    the one that breached. Why confirm at all (#18.6): the breaching sample can be one that a moment made slow
    rather than the model. A CI run on a quiet machine rolled a sound canary back at 50%: "median latency
    904 ms exceeds 10.0x live's 71 ms over the same 60 s (5 and 44 requests)". The canary's five requests had
    come in the seconds after its traffic moved, the live deployment's 44 over the whole window (its minute
    buckets reach back before the move), so a stall of those seconds was the canary's median and a sliver of
    the live one's. Over a window inside one traffic step, both deployments' requests are interleaved over the
    same seconds, and a stall slows both; a model that is really slower is slower in that minute too.
    """
    start = r.phase_started_at
    confirm = _confirm_from(r)
    if confirm is not None:
        start = max(start, confirm)
    return max(60, int(now - start))


def _ratio_sample(plan: Plan) -> int:
    """Requests each deployment must have served in a window before their latencies are compared."""
    return max(RATIO_MIN_SAMPLE, plan.min_requests)


def _comparable_latency(new: DeploymentMetrics, live: DeploymentMetrics | None,
                        need: int) -> tuple[str, float, float] | None:
    """(what is compared, the new deployment's, the live one's) latency when the two can be compared: both
    served `need` requests at least in a window of the same length (shared.rollout.flow.observe asks for both
    with one window); the medians when both are reported, else the means. Else None."""
    if live is None or live.window_seconds != new.window_seconds or min(new.requests, live.requests) < need:
        return None
    if new.latency_p50_ms is not None and live.latency_p50_ms:
        return "median latency", new.latency_p50_ms, live.latency_p50_ms
    if new.latency_ms is None or not live.latency_ms:
        return None
    return "latency", new.latency_ms, live.latency_ms


def _metrics_evidence(o: Observation) -> dict[str, Any]:
    def one(m: DeploymentMetrics | None) -> dict[str, Any] | None:
        if m is None:
            return None
        return {"requests": m.requests, "errors": m.errors, "error_rate": round(m.error_rate, 6),
                "latency_ms": m.latency_ms, "latency_p50_ms": m.latency_p50_ms, "window_seconds": m.window_seconds}

    return {"new": one(o.new_metrics), "live": one(o.live_metrics), "traffic": dict(o.traffic),
            "mirror": dict(o.mirror)}


# ------------------------------------------------------------------------------------------------ decide
def _utc(epoch: float) -> str:
    """A moment as operators read it in a wait reason: `2026-12-01T12:05:00Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(r: Rollout, o: Observation, now: float) -> Action:
    """The one next action for rollout `r` given what was observed. See the module docstring for the states."""
    if r.terminal:
        return Finish(r.status, r.reason)
    if r.status == "rolling_back":
        return RollBack(r.reason, r.evidence, r.final or "rolled_back")
    if r.status in ("promoted", "retiring") and r.demote:
        return Demote(r.demote[:1])   # one version per tick: a tick stays within the naive request count (#17.3)
    if r.queued:
        return _superseded(r, o)
    if r.status == "pending":
        return _pending(r, o, now)
    if r.status in ("promoted", "retiring"):
        return _retire(r, o, now)
    if now >= r.deadline:
        state = o.deployments.get(r.deployment)
        stuck = f"; new deployment {r.deployment} is {state}" if state in TRANSITIONAL else ""
        return RollBack(f"deadline passed while {r.status} (started {int(now - r.started_at)} s ago){stuck}",
                        _metrics_evidence(o))
    if r.status == "creating":
        return _provision(r, o)
    state = o.deployments.get(r.deployment)
    if state in TRANSITIONAL:
        return _transitional(r, state)
    if state != SUCCEEDED:
        return RollBack(f"new deployment {r.deployment} is {state or 'missing'}", {"state": state})
    if r.status == "smoke":
        return _after_smoke(r, o)
    return _bake(r, o, now)


def _transitional(r: Rollout, state: str) -> Wait:
    """Wait while the new deployment is Creating, Updating or Scaling; in a bake phase, restart its clock.

    Why restart: metrics are read only while the deployment is Succeeded, and what it served before or during
    an update says little about what it serves after. So a bake phase completes only after the deployment was
    seen Succeeded at every observation for the whole bake duration, its metrics read over that window (the
    window starts at the last observation that saw it transitional, so it errs towards more data, never less).
    A deployment that keeps changing is rolled back by the rollout deadline, with that reason.
    """
    baking = r.status in ("mirroring", "baking")
    then = "the bake clock restarts" if baking else "continuing"
    return Wait(f"new deployment {r.deployment} is {state}: waiting until it is Succeeded, then {then}",
                restart_clock=baking)


def _unsettled(r: Rollout, o: Observation, traffic: Mapping[str, int]) -> str:
    """What is still transitional among the endpoint and the deployments a traffic move or comparison involves."""
    if o.endpoint_state in TRANSITIONAL:
        return f"endpoint {r.endpoint} is {o.endpoint_state}"
    involved = {n for n, p in r.previous_traffic.items() if p} | {n for n, p in traffic.items() if p}
    for name in sorted(involved):
        if o.deployments.get(name) in TRANSITIONAL:
            return f"deployment {name} is {o.deployments[name]}"
    return ""


def _when_settled(action: SetTraffic | Promote, r: Rollout, o: Observation) -> Action:
    why = _unsettled(r, o, action.traffic if isinstance(action, SetTraffic) else {})
    return Wait(f"{why}: {action.name} waits until it is Succeeded") if why else action


def _delete_when_settled(r: Rollout, olds: tuple[str, ...], o: Observation) -> Action:
    busy = [f"endpoint {r.endpoint} is {o.endpoint_state}"] if o.endpoint_state in TRANSITIONAL else []
    busy += [f"deployment {n} is {o.deployments[n]}" for n in olds if o.deployments.get(n) in TRANSITIONAL]
    return Wait(f"{', '.join(busy)}: deleting {', '.join(olds)} waits until it is Succeeded") if busy else (
        DeleteDeployment(olds))


def _superseded(r: Rollout, o: Observation) -> Action:
    q = r.queued or {}
    why = f"superseded by {q.get('model')}:{q.get('version')}"
    if r.status == "pending":
        return Finish("superseded", why)
    if r.status in ("promoted", "retiring"):
        olds = _olds(r, o)
        if olds and not any(o.traffic.get(n, 0) or o.mirror.get(n, 0) for n in olds):
            return _delete_when_settled(r, olds, o)
        return Finish("done", f"promoted; retention cut short: {why}")
    return RollBack(why, {"traffic": dict(o.traffic), "mirror": dict(o.mirror)}, "superseded")


def _pending(r: Rollout, o: Observation, now: float) -> Action:
    if not o.model_found:
        return Finish("failed", f"model {r.ref} no longer exists")
    if o.approval == "rejected":
        return Finish("failed", f"model {r.ref} was rejected (reflex.approval=rejected)")
    if o.approval == "pending":
        if now - r.created_at > r.plan.approval_timeout_seconds:
            return Finish("failed", f"model {r.ref} was not approved within {r.plan.approval_timeout_seconds} s")
        return Wait(f"{_APPROVAL_WAIT}: set tag reflex.approval=approved to start the rollout", approval=True)
    if r.deadline and now >= r.deadline:
        return Finish("failed", f"could not start before the deadline (endpoint {r.endpoint} is "
                                f"{o.endpoint_state or 'missing'})")
    if not o.smoke_configured:
        why = f" and no row of its training data could be used ({o.smoke_problem})" if o.smoke_problem else ""
        return Finish("failed", f"no smoke request for {r.ref}: REFLEX_SMOKE_REQUEST is empty, there is no "
                                f"smoke/{r.model}.json in the state container{why}; provide one of them, then start "
                                f"a new attempt with `python -m reflex rollout {r.ref}`")
    if o.endpoint_state is None:
        return CreateEndpoint()
    if o.endpoint_state != SUCCEEDED:
        if o.endpoint_state == "Failed":
            return Finish("failed", f"endpoint {r.endpoint} is Failed")
        return Wait(f"endpoint {r.endpoint} is {o.endpoint_state}")
    live = o.live_split(r.deployment)
    previous = max(sorted(live), key=lambda n: live[n]) if live else None
    if o.traffic.get(r.deployment, 0) == 100 and o.deployments.get(r.deployment) == SUCCEEDED:
        return Finish("done", f"{r.deployment} already serves 100% of {r.endpoint}")
    if o.deployments.get(r.deployment) == "Deleting":  # an earlier attempt's deployment, on its way out
        return Wait(f"deployment {r.deployment} of an earlier attempt is being deleted: this attempt creates it "
                    "again once it is gone")
    if r.deployment in o.deployments:
        return Begin(previous, live)
    return _quota_then(CreateDeployment(previous, live), r, o)


def _quota_then(action: Action, r: Rollout, o: Observation) -> Action:
    q = o.quota
    if q is None:
        return Wait("quota not known yet")
    if not q.ok:
        return Finish("failed", f"quota: {r.plan.instance_count} x {q.instance_type} needs {q.needed} "
                                f"{q.family} cores; {q.used} of {q.limit} are in use, {q.limit - q.used} free; "
                                f"the live deployment is untouched")
    return action


def _provision(r: Rollout, o: Observation) -> Action:
    if o.endpoint_state is None:
        return RollBack(f"endpoint {r.endpoint} disappeared", {}, "failed")
    if o.endpoint_state != SUCCEEDED:
        if o.endpoint_state == "Failed":
            return RollBack(f"endpoint {r.endpoint} is Failed", {}, "failed")
        return Wait(f"endpoint {r.endpoint} is {o.endpoint_state}")
    state = o.deployments.get(r.deployment)
    if state is None:
        return _quota_then(CreateDeployment(r.previous, r.previous_traffic), r, o)
    if state == SUCCEEDED:
        return SmokeTest()
    if state in ("Failed", "Canceled"):
        return RollBack(f"new deployment {r.deployment} provisioning {state}", {"state": state})
    if state == "Deleting":
        return RollBack(f"new deployment {r.deployment} is being deleted", {"state": state})
    return Wait(f"new deployment {r.deployment} is {state}")


def _after_smoke(r: Rollout, o: Observation) -> Action:
    smoke = r.smoke or {}
    if not smoke.get("ok"):
        return RollBack(f"smoke test failed: {smoke.get('detail', 'no result')}", dict(smoke))
    if not r.previous_traffic:  # first model on this endpoint: nothing to compare with or fall back to
        move = SetTraffic({r.deployment: 100}, {}, "baking", len(r.plan.steps) - 1)
    elif r.plan.mirror_percent:
        keep = {**{n: 0 for n in o.traffic}, **r.previous_traffic, r.deployment: 0}
        move = SetTraffic(keep, {r.deployment: r.plan.mirror_percent}, "mirroring", -1)
    else:
        move = SetTraffic(split_traffic(r.previous_traffic, r.deployment, r.plan.steps[0]), {}, "baking", 0)
    return _when_settled(move, r, o)


def _bake(r: Rollout, o: Observation, now: float) -> Action:
    steps = r.plan.steps
    if r.status == "baking" and r.previous_traffic:
        allowed = {steps[r.phase]} | ({steps[r.phase + 1]} if r.phase + 1 < len(steps) else set())
        if o.traffic.get(r.deployment, 0) not in allowed:
            return RollBack(f"traffic of {r.deployment} was changed outside Reflex to "
                            f"{o.traffic.get(r.deployment, 0)}% (expected {steps[r.phase]}%)", _metrics_evidence(o))
    if r.status == "baking" and not r.previous_traffic:
        return Promote()
    live = _live_beside(r, o)
    breach, kind = _judge(r.plan, o.new_metrics, live)
    where = "mirror" if r.status == "mirroring" else f"{o.traffic.get(r.deployment, steps[r.phase])}%"
    if breach and kind != "ratio":
        return RollBack(f"at {where}: {breach}", _metrics_evidence(o))
    if not (r.suspect or breach):
        return _bake_on(r, o, now, where)
    held = _confirm(r, o, live, now, where, breach)
    if held is not None:
        return held
    then = _bake_on(r, o, now, where)
    if not (isinstance(then, Wait) and r.suspect):
        return then   # a step other than a Wait ends the confirmation itself (`advance`)
    return replace(then, cleared=True, reason=f"latency confirmed as sound over the minute after "
                                              f"{_utc(float(r.suspect['at']))}; {then.reason}")


def _confirm(r: Rollout, o: Observation, live: DeploymentMetrics | None, now: float, where: str,
             breach: str) -> Action | None:
    """What a latency-ratio breach, or one waiting for confirmation, means now; None when it was not confirmed.

    A first breach is recorded (`Wait.suspect`) and the canary holds its share, neither advanced nor rolled back,
    until the window that starts at the next whole minute (`metrics_window`) spans `CONFIRM_SECONDS` with enough
    requests of both deployments to compare (the sample the first judgement needed). The breach again over
    that window rolls back, with both judgements as evidence; no breach there clears it. The error rate and the
    backstop are not held: they roll back at once, during a confirmation too. The rollout deadline bounds it.
    """
    if not r.suspect:
        return Wait(f"at {where}: {breach}; holding the traffic as it is to confirm it over the minute from "
                    f"{_utc(_next_minute(now))} before rolling back",
                    suspect={"at": now, "reason": breach, "evidence": _metrics_evidence(o)})
    start = _confirm_from(r) or now
    first = f"{r.suspect.get('reason', '')} (at {_utc(float(r.suspect['at']))})"
    if now - start < CONFIRM_SECONDS:
        return Wait(f"at {where}: confirming {first} over the minute from {_utc(start)}")
    if breach:
        return RollBack(f"at {where}: {breach}; confirmed over the minute after the first breach: {first}",
                        {**_metrics_evidence(o), "first": dict(r.suspect.get("evidence") or {}),
                         "first_reason": r.suspect.get("reason", "")})
    new = o.new_metrics
    if new is None or _comparable_latency(new, live, _ratio_sample(r.plan)) is None:
        return Wait(f"at {where}: confirming {first}: since {_utc(start)} {new.requests if new else 0} and "
                    f"{live.requests if live else 0} requests served, {_ratio_sample(r.plan)} of each needed "
                    "to compare")
    return None


def _live_beside(r: Rollout, o: Observation) -> DeploymentMetrics | None:
    """The live deployment's metrics to compare the new one's with: only while it serves a share of the traffic.

    At the last step (100%) every live request in the window predates the move (the window reaches back a
    minute at least), the very mismatch `metrics_window` describes, and no later minute can confirm a breach: the
    bench (bench/canary_noise.py) measured 2 of 300 sound canaries rolled back there on five requests that
    came in a stall after the move. The comparison is made before that move instead (`_bake_on`).
    """
    return o.live_metrics if o.traffic.get(r.deployment, 0) < 100 else None


def _bake_on(r: Rollout, o: Observation, now: float, where: str) -> Action:
    """The bake once the metrics pass: wait out the phase and its requests, then the next step."""
    steps = r.plan.steps
    duration = r.plan.mirror_seconds if r.status == "mirroring" else r.plan.bake_seconds
    if now - r.phase_started_at < duration:
        return Wait(f"baking at {where} until {_utc(r.phase_started_at + duration)}")
    served = o.new_metrics.requests if o.new_metrics else 0
    if served < r.plan.min_requests:
        if o.new_metrics is not None and not o.new_metrics.has_data:
            # Azure Monitor has no series for the deployment yet (ingestion lags): unknown, not zero requests
            return Wait(f"at {where}: no metrics data yet for {r.deployment} (Azure Monitor has reported no "
                        f"requests so far); {r.plan.min_requests} requests needed before advancing")
        return Wait(f"at {where}: {served} of {r.plan.min_requests} requests served, waiting for the rest "
                    "before advancing")
    if r.status == "mirroring":
        return _when_settled(SetTraffic(split_traffic(r.previous_traffic, r.deployment, steps[0]), {}, "baking", 0),
                             r, o)
    if steps[r.phase] >= 100:
        return _when_settled(Promote(), r, o)
    nxt = r.phase + 1
    need, live = _ratio_sample(r.plan), o.live_metrics
    if steps[nxt] >= 100 and live is not None and live.requests >= need and served < need:
        return Wait(f"at {where}: {served} of {need} requests served beside the live deployment's "
                    f"{live.requests}: its latency is compared with the live one's before it takes all the traffic")
    return _when_settled(SetTraffic(split_traffic(r.previous_traffic, r.deployment, steps[nxt]), {}, "baking", nxt),
                         r, o)


def _olds(r: Rollout, o: Observation) -> tuple[str, ...]:
    return tuple(sorted(n for n in r.previous_traffic if n != r.deployment and n in o.deployments))


def _retire(r: Rollout, o: Observation, now: float) -> Action:
    olds = _olds(r, o)
    if not olds:  # the same reason whether this step or a crashed earlier one deleted them
        had = any(n != r.deployment and p for n, p in r.previous_traffic.items())
        return Finish("done", "promoted; previous deployment retired" if had else "promoted; nothing to retire")
    busy = [n for n in olds if o.traffic.get(n, 0) or o.mirror.get(n, 0)]
    if busy:
        return Finish("done", f"promoted; kept {', '.join(busy)}: it receives traffic again")
    if r.status == "retiring":
        deleting = [n for n in olds if o.deployments.get(n) == "Deleting"]
        return Wait(f"deleting {', '.join(deleting)}") if deleting else _delete_when_settled(r, olds, o)
    if now - r.phase_started_at < r.plan.retain_seconds:
        return Wait(f"keeping {', '.join(olds)} at 0% until {_utc(r.phase_started_at + r.plan.retain_seconds)}")
    return _delete_when_settled(r, olds, o)


# ------------------------------------------------------------------------------------------------ advance
def _note(r: Rollout, now: float, action: Action, status: str, detail: str) -> tuple[Mapping[str, Any], ...]:
    entry = {"at": now, "action": action.name, "status": status, "detail": detail[:500]}
    return (*r.history, entry)[-HISTORY:]


def advance(r: Rollout, action: Action, now: float, result: Mapping[str, Any] | None = None) -> Rollout:
    """The record after `action` was executed at `now` (`result`: the smoke test's outcome for SmokeTest, the
    promotion's `{"demoted": [versions]}` for Promote)."""
    if isinstance(action, Wait):
        clock: dict[str, Any] = {"phase_started_at": now} if action.restart_clock else {}
        if action.suspect is not None:
            clock["suspect"] = dict(action.suspect)
        elif action.cleared or action.restart_clock:  # metrics from before an update say little of after it
            clock["suspect"] = None
        last = r.history[-1] if r.history else {}
        if last.get("action") == "Wait" and last.get("detail") == action.reason[:500]:
            return replace(r, **clock, awaiting_approval=action.approval)
        return replace(r, **clock, awaiting_approval=action.approval,
                       history=_note(r, now, action, r.status, action.reason))
    r = replace(r, awaiting_approval=False, suspect=None)  # a step other than a Wait ends a confirmation
    start: dict[str, Any] = {}
    if r.status == "pending" and not isinstance(action, Finish):
        start = {"started_at": now, "deadline": now + r.plan.deadline_seconds}
    if isinstance(action, (Begin, CreateDeployment)):
        prev: dict[str, Any] = (
            {"previous": action.previous, "previous_traffic": dict(action.previous_traffic)} if start else {})
        detail = f"{r.deployment} ({r.plan.instance_count} x {r.plan.instance_type}) beside {action.previous}"
        return replace(r, status="creating", **start, **prev,
                       history=_note(r, now, action, "creating", detail))
    if isinstance(action, CreateEndpoint):
        return replace(r, status="creating", **start, previous=None, previous_traffic={},
                       history=_note(r, now, action, "creating", f"endpoint {r.endpoint}"))
    if isinstance(action, SmokeTest):
        smoke = dict(result or {"ok": False, "detail": "no result"})
        return replace(r, status="smoke", smoke=smoke, history=_note(r, now, action, "smoke", str(smoke)))
    if isinstance(action, SetTraffic):
        detail = f"traffic {dict(action.traffic)} mirror {dict(action.mirror)}"
        return replace(r, status=action.status, phase=action.phase, phase_started_at=now,
                       history=_note(r, now, action, action.status, detail))
    if isinstance(action, Promote):
        demote = tuple(str(v) for v in (result or {}).get("demoted", ()))
        return replace(r, status="promoted", phase_started_at=now, demote=demote,
                       history=_note(r, now, action, "promoted", f"{r.ref} is champion on {r.endpoint}"))
    if isinstance(action, Demote):
        left = tuple(v for v in r.demote if v not in action.versions)
        detail = f"{', '.join(f'{r.model}:{v}' for v in action.versions)} no longer tagged champion"
        return replace(r, demote=left, history=_note(r, now, action, r.status, detail))
    if isinstance(action, DeleteDeployment):
        return replace(r, status="retiring", history=_note(r, now, action, "retiring", ", ".join(action.names)))
    if isinstance(action, RollBack):
        return replace(r, status=action.final, reason=action.reason, evidence=dict(action.evidence),
                       final=action.final, history=_note(r, now, action, action.final, action.reason))
    if isinstance(action, Finish):
        return replace(r, status=action.status, reason=action.reason,
                       history=_note(r, now, action, action.status, action.reason))
    raise TypeError(f"unknown action {action!r}")


def rolling_back(r: Rollout, action: RollBack, now: float) -> Rollout:
    """The write-ahead record stored before a rollback touches traffic (a crash then resumes the rollback)."""
    return replace(r, status="rolling_back", reason=action.reason, evidence=dict(action.evidence),
                   final=action.final, attempts=r.attempts + 1, awaiting_approval=False,
                   history=_note(r, now, action, "rolling_back", action.reason))


# ------------------------------------------------------------------------------------------------ rollback hold
def _rollback_since(r: Rollout, now: float) -> float:
    """When the rollback began: its write-ahead entry (the rollout's start if that left the bounded history)."""
    if r.status != "rolling_back":
        return now
    ahead = [h for h in r.history if h.get("action") == "RollBack" and h.get("status") == "rolling_back"]
    return float(ahead[-1]["at"]) if ahead else r.started_at


def rollback_hold(r: Rollout, o: Observation, now: float) -> Action | None:
    """Whether rollback `r` must hold off moving traffic: None (go), Wait (defer) or Finish (give up).

    Why: every adapter refuses traffic on a deployment that is not Succeeded (and Azure may answer an endpoint
    update in flight with 409), while restoring over the Succeeded ones only would drop a deployment that is
    merely updating, possibly leaving the endpoint serving nothing. So the rollback waits for them, without
    spending a rollback attempt, for at most `ROLLBACK_SETTLE_SECONDS`; then it gives up as failed with traffic
    left as it is, for an operator.
    """
    if not o.traffic.get(r.deployment, 0) and not any(o.mirror.values()):
        return None  # no traffic to move: deleting the new deployment does not need the others settled
    busy = [n for n, p in sorted(r.previous_traffic.items())
            if p and n != r.deployment and o.deployments.get(n) in TRANSITIONAL]
    why = (f"endpoint {r.endpoint} is {o.endpoint_state}" if o.endpoint_state in TRANSITIONAL
           else f"deployment {busy[0]} is {o.deployments[busy[0]]}" if busy else "")
    if not why:
        return None
    waited = now - _rollback_since(r, now)
    if waited >= ROLLBACK_SETTLE_SECONDS:
        return Finish("failed", f"rollback could not restore traffic: {why} after {int(waited)} s; traffic is "
                                f"left as it is for an operator ({r.reason})")
    return Wait(f"rollback waits: {why}")


def defer_rollback(r: Rollout, action: RollBack, hold: Wait, now: float) -> Rollout:
    """The record of a rollback that waits (`rollback_hold`): written ahead once, no attempt spent."""
    ahead = r if r.status == "rolling_back" else replace(rolling_back(r, action, now), attempts=r.attempts)
    return advance(ahead, hold, now)
