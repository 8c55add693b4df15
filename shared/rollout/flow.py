"""The one place where rollouts touch the world: observe, decide (pure), execute one action, record with CAS.

Why one step at a time: a Function must return quickly, and provisioning and bake times last minutes to hours.
The event starts a rollout and runs its first step at once; the reconciler timer then advances every unfinished
rollout by one step per tick. Every action is idempotent (deployment names derive from model and version,
traffic is written as a whole and skipped when already in place), so a crash between acting and recording
repeats a step harmlessly. A rollback is written ahead (`rolling_back`) before traffic moves, so a crash in
the middle of it resumes the rollback, never the rollout.

After every step the endpoint as this tick knows it (observed, or as the traffic write left it) is checked with
`shared.core.platform.traffic_problems`; a violation during a rollout is logged as an error and rolls the rollout
back. A tick reads the endpoint once (#17.3): the traffic write reuses that read, and the check its result
(after a rollback it is read again). Traffic found on a deployment that is Updating or Scaling is not a
violation (it keeps serving; `serving_states`), and a rollback holds off while the endpoint or the previous
deployment is transitional (`rollout_machine.rollback_hold`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.core import champion as champions
from shared.core import trace as tracing
from shared.core.errors import PermanentError
from shared.core.platform import (
    APPROVAL_TAG,
    CHAMPION_TAG,
    REFLEX_TAG,
    SUCCEEDED,
    Endpoint,
    serving_states,
    traffic_problems,
)
from shared.core.scoring_request import expected_rows
from shared.core.state import Record, key_part
from shared.rollout.machine import (
    ACTIVE,
    Action,
    Begin,
    CreateDeployment,
    CreateEndpoint,
    DeleteDeployment,
    Demote,
    Finish,
    Observation,
    Promote,
    RollBack,
    Rollout,
    SetTraffic,
    SmokeTest,
    Wait,
    admit,
    advance,
    decide,
    defer_rollback,
    metrics_window,
    rollback_hold,
    rolling_back,
)
from shared.rollout.plan import Plan, deployment_name, restore_traffic
from shared.rollout.smoke import check_response, find_smoke_request

if TYPE_CHECKING:
    from shared.core.deps import Deps

__all__ = ["PREFIX", "Step", "drive", "execute", "observe", "operator_rollback", "register", "roll_back", "rollout_id",
           "rollout_key", "step", "summary"]

log = logging.getLogger("reflex.rollout")

PREFIX = "rollouts/"
MAX_ROLLBACK_ATTEMPTS = 3


@dataclass(frozen=True)
class Step:
    """What one step did: the action decided, the record after it, and whether anything was executed."""

    action: Action
    rollout: Rollout
    executed: bool = True


def rollout_key(endpoint: str) -> str:
    return f"{PREFIX}{key_part(endpoint)}"


def _subject(r: Rollout) -> str:
    return f"endpoints/{r.endpoint}/rollouts/{r.model}:{r.version}"


def _publish(deps: Deps, kind: str, r: Rollout, **data: Any) -> None:
    deps.publisher.publish(kind, _subject(r), {
        "endpoint": r.endpoint, "model": r.model, "version": r.version, "deployment": r.deployment,
        "status": r.status, "previous": r.previous, **data})


# ------------------------------------------------------------------------------------------------ observe
def _seen(ep: Endpoint | None) -> dict[str, Any]:
    """The endpoint part of an observation (states, traffic, mirror)."""
    states = {d.name: d.state for d in ep.deployments} if ep else {}
    return {"endpoint_state": ep.state if ep else None, "deployments": states,
            "traffic": dict(ep.traffic) if ep else {}, "mirror": dict(ep.mirror) if ep else {}}


def observe(deps: Deps, r: Rollout, now: float) -> Observation:
    """The snapshot `decide` needs; costly reads (model, quota, metrics) only in the states that use them."""
    return _observe(deps, r, now)[0]


def _observe(deps: Deps, r: Rollout, now: float) -> tuple[Observation, Endpoint | None]:
    """`observe`, and the endpoint it read (the tick's one endpoint read)."""
    p = deps.platform
    ep = p.get_endpoint(r.endpoint)
    obs = _seen(ep)
    states = obs["deployments"]
    if r.status == "pending" and not r.queued:
        model = p.get_model(r.model, r.version)
        obs["model_found"] = model is not None
        obs["approval"] = str(model.tags.get(APPROVAL_TAG, "")) if model else ""
        if model is not None and obs["approval"] not in ("pending", "rejected"):  # decided before the smoke check
            smoke = find_smoke_request(deps, r.model, r.version)  # may read the training data: only when it counts
            obs["smoke_configured"], obs["smoke_problem"] = smoke.body is not None, smoke.problem
    needs_quota = r.status in ("pending", "creating") and ep is not None and ep.state == SUCCEEDED
    if needs_quota and r.deployment not in states and not r.queued:
        obs["quota"] = p.check_quota(r.plan.instance_type, r.plan.instance_count)
    if r.status in ("mirroring", "baking") and states.get(r.deployment) == SUCCEEDED:
        window = metrics_window(r, now)
        obs["new_metrics"] = p.get_deployment_metrics(r.endpoint, r.deployment, window_seconds=window)
        if r.previous and states.get(r.previous) == SUCCEEDED:
            obs["live_metrics"] = p.get_deployment_metrics(r.endpoint, r.previous, window_seconds=window)
    return Observation(**obs), ep


# ------------------------------------------------------------------------------------------------ execute
def _tags(r: Rollout) -> dict[str, str]:
    return {REFLEX_TAG: "true", "reflex.trigger": "ModelRegistered", "reflex.event_id": r.event_id,
            "reflex.parent": r.ref}


def _promote(deps: Deps, r: Rollout) -> dict[str, Any]:
    """Tag the new champion and move the champion pointer to it (shared/core/champion.py); the versions it took
    the title from are untagged by the next tick (`Demote`), and the pointer lists them meanwhile.

    In this order a reader never finds the pointer on an untagged version, and no step lists the model's versions
    (the pointer knows the old champion). Run again after a crash, each step finds its work done. Why the untag
    waits a tick: a tag change is a GET and a PUT of the whole version (Azure ML has no partial update), so
    the promote tick (the endpoint read, 2, and the new champion's tag, 2) would cost 6 with one former champion;
    split, each tick stays within the naive 4 (#17.3). Every reader of the champion goes through the pointer, which
    names the new one from this step on; only the registry's tag lags, by one reconcile tick.
    """
    deps.platform.update_model_tags(r.model, r.version, set_tags={CHAMPION_TAG: "true"})
    return {"demoted": champions.crown(deps, r.model, r.version, by=f"rollout {r.ref} on {r.endpoint}")}


def _demote(deps: Deps, r: Rollout, versions: tuple[str, ...]) -> dict[str, Any]:
    """Untag the former champions the pointer still lists as to be untagged, and record it there.

    A version the pointer no longer lists (untagged already, or champion again through a later promotion) is left
    as it is: the pointer, moved with compare-and-swap, says which versions are to lose the tag."""
    stored = champions.pointer(deps, r.model)
    due = [v for v in versions if stored is not None and v in stored.demote and v != stored.version]
    for version in due:
        try:
            deps.platform.update_model_tags(r.model, version, remove=(CHAMPION_TAG,))
        except PermanentError as exc:  # a version deleted meanwhile carries no tag either
            log.warning("could not untag the former champion %s:%s: %s", r.model, version, exc)
    if due:
        champions.demoted(deps, r.model, due)
    return {"untagged": due}


def _smoke(deps: Deps, r: Rollout) -> dict[str, Any]:
    found = find_smoke_request(deps, r.model, r.version)
    body = found.body
    if body is None:
        return {"ok": False, "detail": f"no smoke request: {found.problem}", "status": 0, "latency_ms": 0.0}
    try:
        result = deps.platform.invoke(r.endpoint, r.deployment, body)
    except PermanentError as exc:
        return {"ok": False, "detail": f"invoke failed: {exc}", "status": 0, "latency_ms": 0.0,
                "source": found.source}
    return {**check_response(result, expected_rows(body)), "source": found.source}


_UNREAD: Any = object()   # execute's endpoint not given: read it


def execute(deps: Deps, r: Rollout, action: Action, *, seen: Any = _UNREAD,
            written: list[Endpoint] | None = None) -> dict[str, Any] | None:
    """Perform `action` on the platform (idempotent); the smoke verdict or promotion details, else None.

    `seen`: the endpoint this tick already read (else it is read here); `written` receives the endpoint as a
    traffic write left it."""
    p = deps.platform
    if isinstance(action, CreateEndpoint):
        p.begin_create_endpoint(r.endpoint, tags=_tags(r))
    elif isinstance(action, CreateDeployment):
        p.begin_create_deployment(r.endpoint, r.deployment, model=r.ref, instance_type=r.plan.instance_type,
                                  instance_count=r.plan.instance_count, tags=_tags(r))
    elif isinstance(action, SmokeTest):
        return _smoke(deps, r)
    elif isinstance(action, SetTraffic):
        ep = p.get_endpoint(r.endpoint) if seen is _UNREAD else seen
        live = {n: v for n, v in (ep.traffic if ep else {}).items() if v}
        mirror = {n: v for n, v in (ep.mirror if ep else {}).items() if v}
        want = {n: v for n, v in action.traffic.items() if v}
        if live != want or mirror != {n: v for n, v in action.mirror.items() if v}:
            after = p.set_traffic(r.endpoint, action.traffic, action.mirror)
            if written is not None:
                written.append(after)
    elif isinstance(action, Promote):
        return _promote(deps, r)
    elif isinstance(action, Demote):
        return _demote(deps, r, action.versions)
    elif isinstance(action, DeleteDeployment):
        ep = p.get_endpoint(r.endpoint) if seen is _UNREAD else seen
        for name in action.names:
            if ep is not None and (ep.traffic.get(name, 0) or ep.mirror.get(name, 0)):
                raise PermanentError(f"deployment {name}: refusing to delete it while it receives traffic")
            p.begin_delete_deployment(r.endpoint, name)
    return None


# ------------------------------------------------------------------------------------------------ rollback
def roll_back(deps: Deps, rec: Record, r: Rollout, action: RollBack, now: float) -> Rollout:
    """Traffic back to the previous split in one update, mirroring removed, new deployment deleted or kept."""
    if r.attempts >= MAX_ROLLBACK_ATTEMPTS:
        failed = advance(r, Finish("failed", f"rollback did not complete after {r.attempts} attempts: "
                                             f"{r.reason}"), now)
        deps.state.replace(rec, failed.to_dict())
        log.error("rollout %s on %s: rollback gave up; traffic needs an operator", r.ref, r.endpoint)
        _publish(deps, "RolloutFailed", failed, reason=failed.reason)
        return failed
    p = deps.platform
    ep = p.get_endpoint(r.endpoint)
    hold = rollback_hold(r, Observation(**_seen(ep)), now)
    if isinstance(hold, Finish):
        failed = advance(r, hold, now)
        deps.state.replace(rec, failed.to_dict())
        log.error("rollout %s on %s: %s", r.ref, r.endpoint, hold.reason)
        _publish(deps, "RolloutFailed", failed, reason=failed.reason)
        return failed
    if isinstance(hold, Wait):
        deferred = defer_rollback(r, action, hold, now)
        if deferred != r:
            deps.state.replace(rec, deferred.to_dict())
        log.warning("rollout %s on %s: %s (%s)", r.ref, r.endpoint, hold.reason, action.reason)
        return deferred
    ahead = rolling_back(r, action, now)
    rec = deps.state.replace(rec, ahead.to_dict())
    restored: dict[str, int] | None = None
    if ep is not None:
        states = {d.name: d.state for d in ep.deployments}
        if ep.traffic.get(r.deployment, 0) or any(ep.mirror.values()):
            restored = restore_traffic(r.previous_traffic, states, r.deployment)
            p.set_traffic(r.endpoint, restored, {})
        if r.plan.delete_on_rollback and r.deployment in states:
            p.begin_delete_deployment(r.endpoint, r.deployment)
    done = advance(ahead, action, now)
    deps.state.replace(rec, done.to_dict())
    log.warning("rollout %s on %s rolled back (%s): %s", r.ref, r.endpoint, done.status, action.reason)
    _publish(deps, "RolloutRolledBack", done, reason=action.reason, evidence=dict(action.evidence),
             traffic=restored, deleted=bool(r.plan.delete_on_rollback), superseded_by=dict(r.queued or {}))
    return done


# ------------------------------------------------------------------------------------------------ step
def _announce(deps: Deps, before: Rollout, after: Rollout, action: Action, result: Mapping[str, Any] | None) -> None:
    if isinstance(action, (Wait, Demote)):   # Demote finishes the promotion, whose event named the versions
        return
    if before.status == "pending" and not isinstance(action, Finish):
        _publish(deps, "RolloutStarted", after, plan=after.plan.to_dict(), traffic=dict(after.previous_traffic))
    if isinstance(action, Finish):
        kind = {"done": "RolloutCompleted", "superseded": "RolloutSuperseded"}.get(action.status, "RolloutFailed")
        _publish(deps, kind, after, reason=action.reason)
    elif isinstance(action, Promote):
        _publish(deps, "RolloutPromoted", after, champion=after.ref, **dict(result or {}))
    elif not isinstance(action, Begin):
        detail: dict[str, Any] = {"step": action.name}
        if isinstance(action, SetTraffic):
            detail.update(traffic=dict(action.traffic), mirror=dict(action.mirror), phase=action.phase)
        if isinstance(action, SmokeTest):
            detail.update(smoke=dict(result or {}))
        if isinstance(action, DeleteDeployment):
            detail.update(deleted=list(action.names))
        _publish(deps, "RolloutStepCompleted", after, **detail)


def _check(deps: Deps, r: Rollout, rec: Record, now: float, ep: Any = _UNREAD) -> Rollout:
    """Check the endpoint after a step (`ep`: as this tick knows it, else read); roll back an active rollout
    whose endpoint breaks an invariant."""
    if ep is _UNREAD:
        ep = deps.platform.get_endpoint(r.endpoint)
    if ep is None:
        return r
    problems = traffic_problems(ep.traffic, ep.mirror, serving_states({d.name: d.state for d in ep.deployments}))
    if not problems:
        return r
    log.error("INVARIANT VIOLATED on endpoint %s after rollout step (%s): %s", r.endpoint, r.status,
              "; ".join(problems))
    if r.status in ACTIVE or r.status == "rolling_back":
        return roll_back(deps, rec, r, RollBack(f"invariant violated: {'; '.join(problems)}",
                                                 {"traffic": dict(ep.traffic), "mirror": dict(ep.mirror)}), now)
    return r


def step(deps: Deps, key: str, *, dry_run: bool = False) -> Step | None:
    """Advance the rollout at `key` by one action. None when there is no such record.

    A `PermanentError` while observing or acting rolls the rollout back with that reason (or fails it when
    nothing was created yet). A lost compare-and-swap raises `Conflict` (another worker advanced it).
    """
    rec = deps.state.get(key)
    if rec is None:
        return None
    r = Rollout.from_dict(rec.value)
    if r.terminal:
        return Step(Finish(r.status, r.reason), r, executed=False)
    now = deps.clock()
    seen: Any = _UNREAD
    try:
        observation, seen = _observe(deps, r, now)
        action = decide(r, observation, now)
    except PermanentError as exc:
        log.error("rollout %s on %s: observing failed: %s", r.ref, r.endpoint, exc)
        action = _on_error(r, f"observing the platform failed: {exc}")
    if dry_run:
        return Step(action, r, executed=False)
    if isinstance(action, RollBack):
        after = roll_back(deps, rec, r, action, now)
        seen = _UNREAD   # the rollback moved traffic: the check reads what it left
    else:
        written: list[Endpoint] = []
        try:
            result = execute(deps, r, action, seen=seen, written=written)
        except PermanentError as exc:
            log.error("rollout %s on %s: %s failed: %s", r.ref, r.endpoint, action.name, exc)
            failure = _on_error(r, f"{action.name} failed: {exc}")
            after = (roll_back(deps, rec, r, failure, now) if isinstance(failure, RollBack)
                     else _record(deps, rec, r, failure, now, None))
            return Step(failure, _check(deps, after, deps.state.get(key) or rec, now))
        after = _record(deps, rec, r, action, now, result)
        if written:
            seen = written[-1]
    current = deps.state.get(key)
    return Step(action, _check(deps, after, current, now, seen) if current is not None else after)


def _on_error(r: Rollout, reason: str) -> Action:
    if r.status == "pending":
        return Finish("failed", reason)
    return RollBack(reason, {"error": reason})


def _record(deps: Deps, rec: Record, r: Rollout, action: Action, now: float,
            result: Mapping[str, Any] | None) -> Rollout:
    after = advance(r, action, now, result)
    if after != r:
        deps.state.replace(rec, after.to_dict())
        log.info("rollout %s on %s: %s -> %s", r.ref, r.endpoint, action.name, after.status)
    _announce(deps, r, after, action, result)
    return after


# ------------------------------------------------------------------------------------------------ start
def _archive(deps: Deps, value: Mapping[str, Any]) -> None:
    r = Rollout.from_dict(value)
    key = (f"rollout-history/{key_part(r.endpoint)}/{key_part(r.model)}/{key_part(r.version)}-"
           f"{int(r.created_at)}")
    deps.state.create(key, dict(value))  # None when already archived by an earlier attempt


def _new(deps: Deps, endpoint: str, model: str, version: str, event_id: str, trace: str) -> Rollout:
    """A fresh rollout record; `trace`: the chain's traceparent its steps continue (shared/core/trace.py)."""
    now = deps.clock()
    plan = Plan.from_settings(deps.settings)
    return Rollout(endpoint, model, version, deployment_name(model, version), plan, created_at=now,
                   event_id=event_id, deadline=now + plan.deadline_seconds, trace=trace)


def register(deps: Deps, endpoint: str, model: str, version: str, event_id: str, *, retry_of: str = "") -> str:
    """Admit a registration for `endpoint` (CAS): start, duplicate, older or supersede (see `admit`;
    `retry_of`: the finished attempt an operator's new attempt follows)."""
    seen: dict[str, Any] = {}
    chain = tracing.traceparent()  # the span recording the rollout: its steps are spans of this trace
    fresh = _new(deps, endpoint, model, version, event_id, chain)

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        verdict = admit(Rollout.from_dict(current) if current else None, model, version, retry_of=retry_of)
        seen.update(verdict=verdict, old=current)
        if verdict == "start":
            return fresh.to_dict()
        if verdict == "supersede":
            return {**(current or {}), "queued": {"model": model, "version": version, "event_id": event_id,
                                                  "trace": chain}}
        return None

    deps.state.update(rollout_key(endpoint), change)
    if seen["verdict"] == "start" and seen["old"]:
        _archive(deps, seen["old"])
    return str(seen["verdict"])


def _start_queued(deps: Deps, rec: Record) -> bool:
    """Replace a finished rollout that a newer model superseded with that model's rollout (CAS)."""
    old = Rollout.from_dict(rec.value)
    q = old.queued or {}
    _archive(deps, rec.value)
    fresh = _new(deps, old.endpoint, str(q["model"]), str(q["version"]), str(q.get("event_id", "")),
                 str(q.get("trace") or ""))
    deps.state.replace(rec, fresh.to_dict())
    log.info("rollout %s on %s starts after %s ended %s", fresh.ref, old.endpoint, old.ref, old.status)
    return True


def drive(deps: Deps, key: str, *, dry_run: bool = False) -> list[Step]:
    """One step of the rollout at `key`; when that ends a superseded rollout, the next one's first step too."""
    steps: list[Step] = []
    for _ in range(2):
        rec = deps.state.get(key)
        if rec is None:
            break
        r = Rollout.from_dict(rec.value)
        if r.terminal and r.queued and not dry_run:
            _start_queued(deps, rec)
        elif r.terminal or steps:
            break
        done = step(deps, key, dry_run=dry_run)
        if done is None:
            break
        steps.append(done)
        if not (done.rollout.terminal and done.rollout.queued):
            break
    return steps


def rollout_id(r: Rollout) -> str:
    """The rollout's id in the lineage ledger: `<endpoint>/<model>:<version>` (the record key is per endpoint)."""
    return f"{r.endpoint}/{r.ref}"


def summary(r: Rollout) -> dict[str, Any]:
    """Where a rollout is; its keys are the ledger's ref keys (endpoint, model, deployment, rollout)."""
    return {"endpoint": r.endpoint, "model": r.ref, "deployment": r.deployment, "rollout": rollout_id(r),
            "status": r.status, "phase": r.phase, "reason": r.reason}


def operator_rollback(deps: Deps, endpoint: str, *, by: str, why: str) -> tuple[str, str]:
    """Roll back the rollout in progress on `endpoint` now, through `roll_back` (what the reconciler does on a
    failed check), for a person (`python -m reflex rollback`) or the health timer's remediation.

    Returns (status, reason): "acted" / "held" / "failed" once the machine took the rollback, "duplicate" when
    it is already rolling back, "missing" (no rollout record) or "finished" (nothing in progress to undo).
    """
    record = deps.state.get(rollout_key(endpoint))
    if record is None:
        return "missing", f"no rollout record for endpoint {endpoint!r}: nothing to roll back"
    rollout = Rollout.from_dict(record.value)
    if rollout.terminal:
        return "finished", (f"the rollout of {rollout.ref} on {endpoint} is {rollout.status}: nothing in progress "
                            "to roll back")
    if rollout.status == "rolling_back":
        return "duplicate", f"already rolling back: {rollout.reason}"
    action = RollBack(reason=f"operator rollback by {by}: {why}", evidence={"operator": by, "why": why})
    # a step of the rollout's chain: a span in its record's trace (linked from the health tick that asked for it)
    with tracing.chain_step("rollout.rollback", rollout.trace, record=record.key, by=by) as span:
        done = roll_back(deps, record, rollout, action, deps.clock())
        status = {"rolled_back": "acted", "rolling_back": "held"}.get(done.status, done.status)
        tracing.annotate(span, status, action.reason, {k: [str(v)] for k, v in summary(done).items()
                                                        if k in ("endpoint", "model", "deployment", "rollout")})
    return status, f"{rollout.ref} {done.status}; traffic back to {rollout.previous or 'the previous split'}"
