"""`python -m reflex`: upload data; see, explain, replay, pause and retry what Reflex does, locally or in Azure.

    python -m reflex [--json] status
    python -m reflex [--json] explain <endpoint | model:version | job | blob URL | event id> [--kind K] [--days N]
                                      [--timeline [--calls] [--trace-file PATH]]
    python -m reflex [--json] dead-letters
    python -m reflex [--json] replay <id> | --all
    python -m reflex [--json] pause --why TEXT [--by NAME]      resume [--why TEXT] [--by NAME]
    python -m reflex [--json] dry-run on|off [--why TEXT]
    python -m reflex [--json] rollback <endpoint> --why TEXT [--by NAME]
    python -m reflex [--json] upload PATH... --dataset NAME [--batch ID] [--scoring]
    python -m reflex [--json] rollout MODEL:VERSION [--why TEXT] [--by NAME]
    python -m reflex [--json] train BATCH [--why TEXT] [--by NAME]

It works through the same functions the triggers use (`shared.core.reaction.run`, the state store, the ledger,
the platform protocol), so a replay is exactly a redelivery (idempotency still applies) and a rollback goes
through the rollout machinery. Exit codes: 0 done, 1 the operation did not (fully) succeed, 2 bad input or
unknown id, 3 a part of the stack is not running (the message names it and how to start it).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from reflex.explain import PRIORITY, detect_kinds, reason_for, trained_blobs, walk
from reflex.records import chain_records
from reflex.stack import StackDown, load_local_settings, probe_platform, probe_storage
from shared.core import reaction
from shared.core.control import read_control, write_control
from shared.core.errors import ReflexError, TransientError
from shared.core.ledger import MemoryLedger

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.ledger import Ledger

__all__ = ["main"]

OK, FAILED, BAD_INPUT, STACK_DOWN = 0, 1, 2, 3
NEEDS_PLATFORM = {"status", "replay", "resume", "rollback", "rollout", "train"}


class UsageError(Exception):
    """Bad input or an unknown id (exit 2)."""


class Output:
    """Collects the result for `--json` or prints human text as it goes."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream, self.as_json = stream, as_json

    def text(self, line: str = "") -> None:
        if not self.as_json:
            print(line, file=self.stream)

    def table(self, rows: Sequence[Sequence[Any]], headers: Sequence[str], *, indent: str = "  ") -> None:
        if self.as_json:
            return
        if not rows:
            print(f"{indent}(none)", file=self.stream)
            return
        cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for row in cells:
            print(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=self.stream)

    def result(self, value: Mapping[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(value, indent=2, default=str), file=self.stream)


def _ledger(deps: Deps) -> Ledger:
    if deps.ledger is None:  # deps without a ledger (unit tests): keep notes in memory rather than lose them
        deps.ledger = MemoryLedger(deps.clock)
    return deps.ledger


def _operator(args: argparse.Namespace) -> str:
    if getattr(args, "by", None):
        return str(args.by)
    try:
        return os.environ.get("REFLEX_OPERATOR") or getpass.getuser()
    except Exception:
        return "unknown"


def _load_handlers() -> None:
    """Register every reaction's named handler (replay needs them): shared/handlers.py, not the trigger modules."""
    import shared.handlers  # noqa: F401


def _short(text: Any, limit: int = 80) -> str:
    value = " ".join(str(text or "").split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------ status
def cmd_status(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    from reflex import status

    result = status.gather(deps, everything=args.all)
    status.render(result, out)
    out.result(result)
    return OK


# ----------------------------------------------------------------------------------------------- explain
def _serving_model(deps: Deps, endpoint: str, entries: Sequence[Mapping[str, Any]]) -> tuple[str | None, dict]:
    """The model the endpoint serves now (platform), else the last one the ledger saw rolled out there."""
    try:
        found = deps.platform.get_endpoint(endpoint)
    except (ReflexError, ImportError):
        found = None
    if found is not None and found.live:
        dep = found.deployment(found.live)
        if dep is not None:
            return dep.model, {"deployment": dep.name, "model": dep.model, "traffic": dict(found.traffic)}
    for e in entries:
        refs = e.get("refs") or {}
        if endpoint in refs.get("endpoint", ()) and refs.get("model"):
            return refs["model"][0], {}
    return None, {}


def _tags_fallback(deps: Deps, chain_refs: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """Lineage tags Reflex put on the Azure ML assets (fills gaps older than the ledger window)."""
    tags: dict[str, dict[str, str]] = {}
    try:
        for ref in chain_refs.get("model", [])[:3]:
            name, _, version = ref.rpartition(":")
            model = deps.platform.get_model(name, version) if name else None
            if model is not None:
                tags[f"model {ref}"] = {k: v for k, v in model.tags.items() if k.startswith("reflex.")}
                if model.job_name and model.job_name not in chain_refs.get("job", []):
                    chain_refs.setdefault("job", []).append(model.job_name)
        for job_name in chain_refs.get("job", [])[:3]:
            job = deps.platform.get_job(job_name)
            if job is not None:
                tags[f"job {job_name}"] = {k: v for k, v in job.tags.items() if k.startswith("reflex.")}
    except (ReflexError, ImportError):
        pass
    return tags


def _history_rows(entries: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """The history table: each entry with its whole reason for this chain; a run of identical lines (a wait seen
    by every tick) is one row saying how many and until when."""
    rows: list[list[Any]] = []
    for e in entries:
        row = [e.get("at"), e.get("reaction"), e.get("status"), _short(e.get("event_id"), 24), e["chain_reason"]]
        last = rows[-1] if rows else None
        if last is not None and last[1:3] == row[1:3] and last[4] == row[4] and not row[3] and not last[3]:
            last[5] += 1
            last[6] = row[0]
            continue
        rows.append([*row, 1, row[0]])
    return [(at, reaction, status, event, reason + (f" (x{n}, the last at {until})" if n > 1 else ""))
            for at, reaction, status, event, reason, n, until in rows]


def cmd_explain(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    from shared.core.ledger_index import source_for

    value = args.id
    # the ledger's index (shared/core/ledger_index.py): what the chain needs is read, not the whole window
    source = source_for(_ledger(deps), days=args.days)
    mentions = [e for _, e in source.find([value])[value]]  # newest first
    kinds = [args.kind] if args.kind else detect_kinds(mentions, value,
                                                       endpoints=list(deps.settings.endpoints.values()))
    if source.empty() and not kinds:
        raise UsageError(f"the ledger is empty for the last {args.days} day(s): no reaction has run (or try --days)")
    if not kinds:
        raise UsageError(f"{value!r}: no ledger entry in the last {args.days} day(s) mentions it as an endpoint, "
                         "model (name:version), job, deployment, batch, blob URL, scoring batch, scoring job or "
                         "event id (try --days)")
    kind = kinds[0]
    serving: dict[str, Any] = {}
    if kind == "endpoint":
        model, serving = _serving_model(deps, value, mentions)
        if model is None:
            raise UsageError(f"endpoint {value!r} serves no model and the ledger has no rollout to it")
        chain = walk(source, "model", model)
        chain.add_ref("endpoint", value)
    else:
        chain = walk(source, kind, value)
    if not chain.entries:
        raise UsageError(f"{value!r}: no ledger entry in the last {args.days} day(s) mentions this {kind} "
                         "(try --days)")
    refs = chain.ordered_refs()
    tags = _tags_fallback(deps, refs)
    for entry in chain.entries:
        entry["chain_reason"] = reason_for(entry, refs)
    now = chain_records(deps.state, refs, deps.settings, deps.clock())
    trained = trained_blobs(deps, refs)
    result = {"id": value, "kind": kind, "serving": serving, "lineage": refs, "tags": tags, "now": now,
              "failures": [r for r in now if r["failed"]], "trained": trained, "entries": chain.entries}
    out.text(f"{kind} {value}" + (f": serving {serving['model']} on deployment {serving['deployment']} "
                                  f"(traffic {serving['traffic']})" if serving else ""))
    out.text("\nlineage (triggering data first):")
    out.table([(k if i == 0 else "", v) for k, vs in refs.items() for i, v in enumerate(vs)], ("KIND", "ID"))
    if tags:
        out.text("\nAzure ML lineage tags:")
        out.table([(asset, ", ".join(f"{k}={v}" for k, v in sorted(t.items()))) for asset, t in tags.items()],
                  ("ASSET", "TAGS"))
    if trained:
        out.text("\nread by the jobs (each batch's frozen copy of the versions it recorded, shared/batches/freeze.py):")
        out.table([(t["batch"], t["file"], t["source_etag"], t["frozen"] or "(live folder: frozen copies came later)")
                   for t in trained], ("BATCH", "FILE", "SOURCE ETAG", "FROZEN COPY"))
    if now:
        out.text("\nnow (batches, scoring batches and rollouts of this chain; whole reasons):")
        out.table([(r["kind"], r["id"], r["status"] + (" (FAILED)" if r["failed"] else ""), r["detail"])
                   for r in now], ("KIND", "ID", "STATUS", "DETAIL"))
    out.text("\nhistory (oldest first):")
    out.table(_history_rows(chain.entries), ("AT", "REACTION", "STATUS", "EVENT", "REASON"))
    code = _timeline(args, deps, chain.entries, refs, tags, now, result, out) if args.timeline else OK
    out.result(result)
    return code


def _trace_file(args: argparse.Namespace, deps: Deps) -> str:
    """--trace-file, else REFLEX_TRACE_FILE (the stack sets it), else the current run folder's span file."""
    from local.env import ROOT, TRACE_FILE_NAME

    if args.trace_file:
        return str(args.trace_file)
    if configured := os.environ.get("REFLEX_TRACE_FILE") or deps.settings.trace_file:
        return configured
    return os.path.join(os.environ.get("REFLEX_LOCAL_RUN_DIR") or ROOT / "run" / "current", TRACE_FILE_NAME)


def _timeline(args: argparse.Namespace, deps: Deps, entries: Sequence[Mapping[str, Any]],
              refs: Mapping[str, Sequence[str]], tags: Mapping[str, Any], now: Sequence[Mapping[str, Any]],
              result: dict[str, Any], out: Output) -> int:
    """`explain ID --timeline`: the chain's spans laid out in time (reflex/timeline.py); 1 when none is found."""
    from reflex.timeline import chain_timeline

    path = _trace_file(args, deps)
    stored = [found.value for row in now if row.get("record") and (found := deps.state.get(row["record"]))]
    timeline = chain_timeline(path, refs=refs, entries=entries, records=[tags, *stored], calls=args.calls)
    result["timeline"] = timeline
    if not timeline["spans"]:
        out.text(f"\ntimeline: no span of this chain in {path} (read {timeline['read']['lines']} line(s)); spans "
                 "are recorded where REFLEX_TRACE_FILE points (the local stack: <run folder>/traces.jsonl); "
                 "another file: --trace-file")
        return FAILED
    traces = ", ".join(timeline["trace_ids"])
    out.text(f"\ntimeline (trace {traces}; {timeline['spans']} span(s) from {path}):")
    for line in timeline["lines"]:
        out.text(line)
    out.text("\nwhere the time went:")
    out.table([(name, f"{seconds:.1f} s") for name, seconds in timeline["time_spent"].items()], ("WHAT", "TIME"))
    read = timeline["read"]
    if read["damaged"] or read["torn_tail"]:
        out.text(f"(skipped {read['damaged']} damaged line(s)" + (" and a torn last line" if read["torn_tail"]
                                                                    else "") + f" of {path})")
    return OK


# ---------------------------------------------------------------------------------- dead letters, replay
def cmd_dead_letters(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    letters = [{"id": r.key, **{k: r.value.get(k) for k in ("reaction", "event_id", "at", "error_type", "error",
                                                            "payload", "context")}}
               for r in deps.state.dead_letters()]
    out.text(f"{len(letters)} dead-lettered event(s)")
    out.table([(str(d["id"]).removeprefix("deadletters/"), d["reaction"], _short(d["event_id"], 24), d["error_type"],
                _short(d["error"], 70)) for d in letters], ("ID", "REACTION", "EVENT", "ERROR TYPE", "ERROR"))
    out.result({"dead_letters": letters})
    return OK


def _find_letters(deps: Deps, wanted: str) -> list[Any]:
    letters = deps.state.dead_letters()
    exact = [r for r in letters if wanted in (r.key, r.key.removeprefix("deadletters/"))]
    return exact or [r for r in letters if r.value.get("event_id") == wanted or r.key.endswith(wanted)]


def _run_again(deps: Deps, name: str, payload: Any, event_id: str) -> tuple[str, str, dict[str, Any]]:
    """Feed an event back through its reaction; (status, reason, details), status "transient" when retryable."""
    if name not in reaction.HANDLERS:
        return "error", f"no handler is registered for reaction {name!r} in this version", {}
    try:
        outcome = reaction.run(name, payload, event_id=event_id, deps=deps, replay=True)
    except TransientError as exc:
        return "transient", f"{exc} (kept; try again later)", {}
    return outcome.status, outcome.reason, dict(outcome.details)


_SAYS = {"duplicate": "already done (duplicate): ", "acted": "done: ", "skipped": "skipped: ",
         "dead-lettered": "failed again (new dead letter replaces it): ", "held": "held (automation is paused): ",
         "dry-run": "dry-run, nothing done (dead letter kept): ", "transient": "transient failure: ",
         "error": "cannot replay: "}


def cmd_replay(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    if not args.all and not args.id:
        raise UsageError("say which dead letter to replay (an id from `dead-letters`), or --all")
    if read_control(deps).paused:
        out.text("automation is paused: a replay would only be held again; `resume` first")
        out.result({"replayed": [], "error": "paused"})
        return FAILED
    _load_handlers()
    letters = deps.state.dead_letters() if args.all else _find_letters(deps, args.id)
    if not letters:
        if args.all:
            out.text("no dead-lettered events")
            out.result({"replayed": []})
            return OK
        raise UsageError(f"no dead letter {args.id!r} (see `python -m reflex dead-letters`)")
    if len(letters) > 1 and not args.all:
        raise UsageError(f"{args.id!r} matches {len(letters)} dead letters; give the full id")
    results, failed = [], False
    for record in letters:
        value = record.value
        status, reason, details = _run_again(deps, str(value.get("reaction")), value.get("payload"),
                                             str(value.get("event_id") or ""))
        keep = status in ("transient", "error", "dry-run")
        if not keep:
            deps.state.delete(record.key, record.etag)
        failed |= status in ("transient", "error", "dead-lettered")
        item = {"id": record.key, "reaction": value.get("reaction"), "event_id": value.get("event_id"),
                "status": status, "reason": reason, "kept": keep, "new_dead_letter": details.get("dead_letter")}
        results.append(item)
        _ledger(deps).note("operator.replay", status, reason, refs={"dead_letter": record.key},
                           decision={"by": _operator(args), "reaction": value.get("reaction"), "kept": keep},
                           event_id=str(value.get("event_id") or ""))
        out.text(f"{record.key}: {_SAYS.get(status, status + ': ')}{reason}")
    out.result({"replayed": results})
    return FAILED if failed else OK


# ------------------------------------------------------------------------------------- pause, dry-run
def cmd_pause(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    by = _operator(args)
    control = write_control(deps, by=by, why=args.why, paused=True)
    _ledger(deps).note("operator.pause", "acted", args.why, decision={"by": by, "why": args.why})
    out.text(f"automation paused by {by}: {args.why}. Events arriving now are held and replayed by `resume`.")
    out.result({"paused": control.paused, "by": by, "why": args.why})
    return OK


def _replay_held(deps: Deps) -> tuple[list[dict[str, Any]], bool]:
    results: list[dict[str, Any]] = []
    failed, done = False, set()
    for _ in range(3):  # events held while we were resuming show up on the next pass
        batch = [r for r in deps.state.records("held/") if r.key not in done]
        if not batch:
            break
        for record in batch:
            done.add(record.key)
            value = record.value
            status, reason, _details = _run_again(deps, str(value.get("reaction")), value.get("payload"),
                                                  str(value.get("event_id") or ""))
            if status not in ("held", "transient", "error"):
                deps.state.delete(record.key, record.etag)
            failed |= status in ("transient", "error", "held")
            results.append({"held": record.key, "reaction": value.get("reaction"), "event_id": value.get("event_id"),
                            "status": status, "reason": reason})
    return results, failed


def cmd_resume(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    by = _operator(args)
    why = args.why or "resumed"
    control = write_control(deps, by=by, why=why, paused=False)
    _ledger(deps).note("operator.resume", "acted", why, decision={"by": by, "why": why})
    if control.paused:
        out.text("the stored switch is off, but the app setting REFLEX_PAUSED=true still pauses automation: "
                 "change that setting to resume")
        out.result({"paused": True, "source": "settings", "replayed": []})
        return FAILED
    _load_handlers()
    results, failed = _replay_held(deps)
    out.text(f"automation resumed by {by}; {len(results)} held event(s) replayed")
    out.table([(r["reaction"], _short(r["event_id"], 30), r["status"], _short(r["reason"], 60)) for r in results],
              ("REACTION", "EVENT", "STATUS", "REASON"))
    out.result({"paused": False, "by": by, "why": why, "replayed": results})
    return FAILED if failed else OK


def cmd_dry_run(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    by = _operator(args)
    on = args.state == "on"
    why = args.why or f"dry-run {args.state}"
    control = write_control(deps, by=by, why=why, dry_run=on)
    _ledger(deps).note("operator.dry_run", "acted", why, decision={"by": by, "why": why, "dry_run": on})
    out.text(f"dry-run {'on' if control.dry_run else 'off'} (set by {by})"
             + (" — still on: REFLEX_DRY_RUN=true in the app settings" if control.dry_run and not on else ""))
    out.result({"dry_run": control.dry_run, "by": by, "why": why})
    return FAILED if control.dry_run != on else OK


# ------------------------------------------------------------------------------------------- rollback
def cmd_rollback(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    from shared.rollout.flow import operator_rollback

    by = _operator(args)
    endpoint = args.endpoint
    status, reason = operator_rollback(deps, endpoint, by=by, why=args.why)
    if status in ("missing", "finished"):
        raise UsageError(reason + (" (see `python -m reflex status`)" if status == "missing" else ""))
    _ledger(deps).note("operator.rollback", status, reason, refs={"endpoint": endpoint},
                       decision={"by": by, "why": args.why})
    out.text(f"{endpoint}: {status}: {reason}")
    out.result({"endpoint": endpoint, "status": status, "reason": reason, "by": by, "why": args.why})
    return OK if status in ("acted", "duplicate", "held") else FAILED


# ------------------------------------------------------------------------------------------------ upload
def _progress(out: Output) -> Callable[[str, int, int], None]:
    """Progress lines for a large file, one per tenth uploaded (the SDK calls back after each block)."""
    shown: dict[str, int] = {}

    def report(name: str, current: int, total: int) -> None:
        tenth = current * 10 // max(total, 1)
        if tenth > shown.get(name, 0):
            shown[name] = tenth
            out.text(f"  {name}: {current / 2**20:.1f} of {total / 2**20:.1f} MiB ({tenth * 10}%)")

    return report


def cmd_upload(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    from reflex.upload import BadUpload, UploadFailed, default_batch_id, plan_files, upload_batch

    settings = deps.settings
    batch = args.batch or default_batch_id(deps.clock())
    try:
        files, ignored = plan_files(args.paths, settings.completion_marker)
        container = settings.scoring_container if args.scoring else settings.data_container
        out.text(f"batch {container}/{args.dataset}/{batch}/: {len(files)} file(s)"
                 + (f", {len(ignored)} skipped" if ignored else ""))
        for why in ignored:
            out.text(f"  skipped {why}")
        report = upload_batch(settings, files, dataset=args.dataset, batch=batch, scoring=args.scoring,
                              say=out.text, progress=_progress(out))
    except BadUpload as exc:
        raise UsageError(str(exc)) from exc
    except UploadFailed as exc:
        out.text(f"error: {exc}")
        out.result({**exc.report.to_dict(), "ignored": ignored, "error": "upload-failed", "message": str(exc)})
        return FAILED
    report.ignored = ignored
    if report.unchanged:
        out.text(f"  {len(report.unchanged)} file(s) already stored with the same content, not uploaded again: "
                 + ", ".join(report.unchanged))
    out.text(report.completes)
    out.result(report.to_dict())
    return OK


# ------------------------------------------------------------------------------------------- rollout
def _model_version(text: str) -> tuple[str, str]:
    name, _, version = text.rpartition(":")
    if not name or not version:
        raise UsageError(f"{text!r}: expected MODEL:VERSION, e.g. heart-failure:3")
    return name, version


_ATTEMPT_SAYS = {"acted": "started: ", "duplicate": "already started (duplicate request): ", "skipped": "not started: ",
                 "held": "held while automation is paused (`resume` starts it): ", "dry-run": "dry-run, nothing done: ",
                 "dead-lettered": "failed (dead-lettered; `replay` it once fixed): ", "transient": "not started yet: ",
                 "error": "cannot start: "}


def cmd_rollout(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    from shared.rollout.retry import plan_attempt

    model, version = _model_version(args.model)
    by = _operator(args)
    why = args.why or "new rollout attempt requested by an operator"
    request = plan_attempt(deps, model, version, by=by, why=why)
    if request.refusal:
        raise UsageError(request.refusal)
    _load_handlers()
    event = request.event
    if request.previous:
        out.text(f"the last attempt of {model}:{version} on {request.endpoint} ended {request.previous['status']}"
                 + (f": {request.previous['reason']}" if request.previous.get("reason") else ""))
    status, reason, details = _run_again(deps, "rollout.model_registered", event, event["id"])
    _ledger(deps).note("operator.rollout", status, reason,
                       refs={"model": f"{model}:{version}", "endpoint": request.endpoint},
                       decision={"by": by, "why": why, "retry_of": request.retry_of}, event_id=event["id"])
    out.text(f"{model}:{version} on {request.endpoint}: {_ATTEMPT_SAYS.get(status, status + ': ')}{reason}")
    out.result({"model": f"{model}:{version}", "endpoint": request.endpoint, "event_id": event["id"],
                "retry_of": request.retry_of, "previous": request.previous, "status": status, "reason": reason,
                "details": details})
    return OK if status in ("acted", "duplicate", "held") else FAILED


# --------------------------------------------------------------------------------------------- train
def _automation_refusal(deps: Deps, what: str) -> str:
    control = read_control(deps)
    if control.paused:
        return f"automation is paused ({control.why or 'no reason given'}): `resume` first, then {what}"
    if control.dry_run:
        return f"dry-run is on: nothing would be submitted; `python -m reflex dry-run off` first, then {what}"
    return ""


def cmd_train(args: argparse.Namespace, deps: Deps, out: Output) -> int:
    from shared.arrival.retry import batch_key, train_again

    try:
        key = batch_key(deps, args.batch)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    refusal = _automation_refusal(deps, f"`python -m reflex train {args.batch}`")
    if refusal:
        raise UsageError(refusal)
    by = _operator(args)
    why = args.why or "trained again by an operator"
    outcome = train_again(deps, key, by=by, why=why)
    if outcome.status == "refused":
        raise UsageError(outcome.reason)
    details = dict(outcome.details)
    _ledger(deps).note("operator.train", outcome.status, outcome.reason,
                       refs={k: details[k] for k in ("batch", "job", "data") if details.get(k)},
                       decision={"by": by, "why": why, "attempt": details.get("attempt"),
                                 "previous": details.get("previous")})
    out.text(outcome.reason)
    out.result({"batch": details.get("batch", key.removeprefix("arrivals/")), "status": outcome.status,
                "reason": outcome.reason, **details})
    return OK if outcome.status in ("acted", "duplicate") else FAILED


# ------------------------------------------------------------------------------------------------ main
COMMANDS: dict[str, Callable[[argparse.Namespace, Deps, Output], int]] = {
    "status": cmd_status, "explain": cmd_explain, "dead-letters": cmd_dead_letters, "replay": cmd_replay,
    "pause": cmd_pause, "resume": cmd_resume, "dry-run": cmd_dry_run, "rollback": cmd_rollback,
    "upload": cmd_upload, "rollout": cmd_rollout, "train": cmd_train,
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser = argparse.ArgumentParser(prog="python -m reflex", description=__doc__.split("\n\n")[0],
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("status", parents=[common], help="endpoints, rollouts, pending batches, failures, pause state")
    p.add_argument("--all", action="store_true",
                   help="failures of all the history still kept (REFLEX_RETENTION_DAYS), not only the recent days'")
    p = sub.add_parser("explain", parents=[common], help="the chain behind and after an id")
    p.add_argument("id", help="endpoint, model:version, job name, blob URL, batch, deployment, scoring batch, "
                              "scoring job or event id")
    p.add_argument("--kind", choices=PRIORITY, help="how to read the id when it is ambiguous")
    p.add_argument("--days", type=int, default=30, help="how many days of ledger to read (default 30)")
    p.add_argument("--timeline", action="store_true",
                   help="also the chain's spans in time, with the waits named (queueing, training, provisioning, bake)")
    p.add_argument("--calls", action="store_true", help="with --timeline: each HTTP call on a line of its own")
    p.add_argument("--trace-file", help="the OTLP/JSON span file (default: REFLEX_TRACE_FILE, else "
                                        "run/current/traces.jsonl)")
    sub.add_parser("dead-letters", parents=[common], help="dead-lettered events with their errors")
    p = sub.add_parser("replay", parents=[common], help="feed dead-lettered events back through their reaction")
    p.add_argument("id", nargs="?", help="dead letter id (from dead-letters) or event id")
    p.add_argument("--all", action="store_true", help="replay every dead letter, oldest first")
    p.add_argument("--by", help="operator name (default: $REFLEX_OPERATOR or the login name)")
    p = sub.add_parser("pause", parents=[common], help="kill switch: hold every event until resume")
    p.add_argument("--why", required=True)
    p.add_argument("--by")
    p = sub.add_parser("resume", parents=[common], help="end the pause and replay what was held")
    p.add_argument("--why", default="")
    p.add_argument("--by")
    p = sub.add_parser("dry-run", parents=[common], help="decide and record, act on nothing")
    p.add_argument("state", choices=("on", "off"))
    p.add_argument("--why", default="")
    p.add_argument("--by")
    p = sub.add_parser("rollback", parents=[common], help="roll an endpoint back through the rollout machinery")
    p.add_argument("endpoint")
    p.add_argument("--why", required=True)
    p.add_argument("--by")
    _action_parsers(sub, common)
    return parser


def _action_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """upload, rollout, train: getting data in, and new attempts of what failed."""
    p = sub.add_parser("upload", parents=[common], help="upload the files of one batch, then its completion marker")
    p.add_argument("paths", nargs="+", metavar="PATH", help="data files, or directories whose files are uploaded")
    p.add_argument("--dataset", required=True, help="dataset folder: <container>/<dataset>/<batch>/")
    p.add_argument("--batch", help="batch id (default: the UTC time, e.g. 20260314T101502417Z); the same id again "
                                   "finishes or repeats an upload without uploading identical files twice")
    p.add_argument("--scoring", action="store_true",
                   help="into the scoring container (REFLEX_SCORING_CONTAINER) instead of the data container")
    p = sub.add_parser("rollout", parents=[common],
                       help="a new rollout attempt of a registered version (its earlier attempt failed)")
    p.add_argument("model", metavar="MODEL:VERSION")
    p.add_argument("--why", default="")
    p.add_argument("--by")
    p = sub.add_parser("train", parents=[common],
                       help="a new training attempt of a batch that arrived in dry-run or whose training failed")
    p.add_argument("batch", metavar="BATCH", help="<dataset>/<batch> (data container) or <container>/<dataset>/<batch>")
    p.add_argument("--why", default="")
    p.add_argument("--by")


def _real_deps(command: str) -> Deps:
    from shared.core.deps import get_deps
    from shared.core.settings import get_settings

    load_local_settings()
    settings = get_settings()
    probe_storage(settings)
    if command in NEEDS_PLATFORM:
        probe_platform(settings)
    return get_deps()


def main(argv: Sequence[str] | None = None, *, deps: Deps | None = None, stdout: TextIO | None = None) -> int:
    """Run one command; `deps` lets tests run it in-process on their store and fake platform."""
    args = _parser().parse_args(argv)
    out = Output(stdout or sys.stdout, bool(getattr(args, "json", False)))
    err = sys.stderr if stdout is None else out.stream

    def fail(code: int, kind: str, message: str, **extra: Any) -> int:
        if out.as_json:
            out.result({"error": kind, "message": message, **extra})
        else:
            print(f"error: {message}", file=err)
        return code

    try:
        if deps is None:
            deps = _real_deps(args.command)
        return COMMANDS[args.command](args, deps, out)
    except StackDown as exc:
        return fail(STACK_DOWN, "stack-down", str(exc), part=exc.part, where=exc.where, hint=exc.hint)
    except UsageError as exc:
        return fail(BAD_INPUT, "bad-input", str(exc))
    except TransientError as exc:
        if "connection failed" in str(exc):
            return fail(STACK_DOWN, "stack-down", f"{exc}: start the local stack with `make stack` (or check the "
                                                  "Azure settings)")
        return fail(FAILED, "transient", str(exc))
    except ReflexError as exc:
        return fail(FAILED, type(exc).__name__, str(exc))
    except ValueError as exc:  # SettingsError names each setting
        return fail(BAD_INPUT, "settings", str(exc))
