"""`make demo`: the whole chain of reactions, offline, shown step by step with what Reflex published.

The demo acts only as a user would: it uploads blobs to Azurite and watches. Everything in between is Reflex
itself, through the local host that delivers blob, Event Grid and timer triggers to the very functions that
run in Azure, and the MLflow-backed platform. Progress is read from the `Reflex.*` events Reflex publishes
(the local topic `REFLEX_EVENTGRID_TOPIC_ENDPOINT`, served by the local host) and from the platform (jobs,
models, endpoint traffic).

Steps: a sample batch lands -> data asset + training job -> run completed -> model registered -> rollout to
100% -> a prediction for one patient -> a second batch -> the challenger is registered (or skipped with its
numbers) -> canary, bake, promote (or rollback) -> a scoring batch lands -> batch scoring output written.
It ends with a summary table and exit code 0, or a non-zero exit naming the step that failed.

Honest verdicts: a step passes only when its goal is met. A rollout expected to promote that is rolled back,
fails or is superseded, a job that ends other than Completed, a wait that times out: the step is FAILED, the
demo stops there and exits 1. A step with nothing to do (the challenger did not beat the champion, so there is
no rollout) is reported as skipped, with the gate's numbers.

Settings: the demo runs with settings of its own (`DEMO_SETTINGS`: its sample data, model, endpoints and a
plan short enough to watch), passed to the stack as explicit overrides on top of `local.settings.json` and the
environment; it never writes the user's file. A stack already running with other values is left alone: the
demo says which differ and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local.env import local_env

__all__ = ["DEMO_SETTINGS", "StepMissed", "StepSkipped", "Steps", "main", "rollout_outcome"]

# The demo's own settings. Its data: heart-failure records (label DEATH_EVENT, classification, gate on auc); its
# model and endpoints; a plan short enough to watch (schedules, bake, quiet and retain times, canary judged on
# 10 requests, which its client sends); guards off, offline (Azurite, the local platform).
_FROM_EXAMPLE = ("AzureWebJobsStorage", "REFLEX_PLATFORM", "REFLEX_LABEL_COLUMN", "REFLEX_TASK", "REFLEX_TRAINING_MODE",
                 "REFLEX_MODEL_NAME", "REFLEX_ENDPOINTS", "REFLEX_EXPERIMENT", "REFLEX_GATE_METRIC",
                 "REFLEX_GATE_DIRECTION", "REFLEX_SMOKE_REQUEST", "REFLEX_BATCH_ENDPOINT", "REFLEX_COMPLETION_MARKER",
                 "REFLEX_QUIET_SECONDS", "REFLEX_ROLLOUT_STEPS", "REFLEX_BAKE_SECONDS", "REFLEX_RETAIN_SECONDS",
                 "REFLEX_MIN_REQUESTS", "REFLEX_ROLLOUT_DEADLINE_SECONDS", "REFLEX_SWEEP_SCHEDULE",
                 "REFLEX_RECONCILE_SCHEDULE")
DEMO_SETTINGS: dict[str, str] = {
    **{key: local_env()[key] for key in _FROM_EXAMPLE},
    "REFLEX_PAUSED": "false", "REFLEX_DRY_RUN": "false", "REFLEX_REQUIRE_APPROVAL": "false",
    "REFLEX_GATE_MIN_MARGIN": "0", "REFLEX_MIRROR_PERCENT": "0", "REFLEX_MAX_ERROR_RATE": "0.02",
    "REFLEX_MAX_LATENCY_MS": "5000", "REFLEX_MAX_LATENCY_RATIO": "1.5",
}
DEMO_LABEL = "the demo's settings"


class StepMissed(Exception):
    """The step ran to its end and the goal was not met (a rollback where a promotion was expected)."""


class StepSkipped(Exception):
    """The step had nothing to do, for a reason that is not a failure (no challenger to roll out)."""


@dataclass
class Step:
    name: str
    status: str = "pending"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Steps:
    """Runs the demo's steps in order and keeps their verdicts: ok, skipped, or FAILED (which stops the run)."""

    steps: list[Step] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic

    def run(self, name: str, action: Callable[[], str]) -> Step:
        step = Step(name)
        self.steps.append(step)
        print(f"\n▶ {name}", flush=True)
        start = self.clock()
        try:
            step.status, step.detail = "ok", action()
        except StepSkipped as exc:
            step.status, step.detail = "skipped", str(exc)
        except StepMissed as exc:
            step.status, step.detail = "FAILED", str(exc)
        except Exception as exc:
            step.status, step.detail = "FAILED", f"{type(exc).__name__}: {exc}"
        step.seconds = self.clock() - start
        print(f"  {step.status} ({step.seconds:.0f}s) {step.detail}", flush=True)
        return step

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps if s.status == "FAILED"), None)

    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        lines = ["=" * 100, f"{'step':46} {'status':7} {'secs':>5}  detail"]
        lines += [f"{s.name:46} {s.status:7} {s.seconds:5.0f}  {s.detail[:120]}" for s in self.steps]
        return "\n".join(lines)


# what ends a rollout, and whether that end is the goal (a promotion)
ROLLOUT_ENDS = {"Reflex.RolloutPromoted": True, "Reflex.RolloutRolledBack": False, "Reflex.RolloutFailed": False,
                "Reflex.RolloutSuperseded": False}


def ends_rollout(event: dict[str, Any], model: str, version: str) -> bool:
    """Whether `event` is the end of the rollout of model:version (its data names both, shared/rollout/flow.py)."""
    data = event.get("data") or {}
    return (event.get("eventType") in ROLLOUT_ENDS and str(data.get("model")) == model
            and str(data.get("version")) == version)


def rollout_outcome(events: list[dict[str, Any]], model: str, version: str) -> tuple[bool, str] | None:
    """(promoted, what happened) from the first event that ends this rollout, or None while it runs."""
    for event in events:
        if ends_rollout(event, model, version):
            kind = str(event["eventType"]).removeprefix("Reflex.")
            reason = (event.get("data") or {}).get("reason")
            return ROLLOUT_ENDS[event["eventType"]], kind + (f" ({reason})" if reason else "")
    return None


@dataclass
class EventFeed:
    """Reads the local topic's `Reflex.*` events, newest last; remembers what was already shown."""

    topic_url: str  # the local topic's /api/events: GET lists what was published
    seen: set[str] = field(default_factory=set)

    def all(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.topic_url, timeout=10) as resp:
            body = json.loads(resp.read())
        return body if isinstance(body, list) else body.get("events", [])

    def wait(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float, what: str,
             show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.all():
                if event.get("id") not in self.seen:
                    self.seen.add(event.get("id", ""))
                    show(event)
                if predicate(event):
                    return event
            time.sleep(1.0)
        raise TimeoutError(f"no {what} within {timeout:.0f}s")


def _mentions(event: dict[str, Any], *needles: str) -> bool:
    text = json.dumps(event, default=str)
    return all(n in text for n in needles)


def _show(event: dict[str, Any]) -> None:
    data = event.get("data", {})
    kind = str(event.get("eventType", "?"))
    if kind.startswith("Reflex.Rollout"):  # the subject names the rollout; show its step and the traffic
        brief: dict[str, Any] = {k: data[k] for k in ("version", "step", "reason") if data.get(k)}
        if data.get("traffic"):
            brief["traffic"] = {name.rsplit("-", 1)[0]: pct for name, pct in data["traffic"].items()}
    else:
        brief = {k: v for k, v in data.items() if isinstance(v, str | int | float) and len(str(v)) < 60}
    print(f"    · {kind:34} {event.get('subject', '')[:48]:48} {json.dumps(brief)[:130]}", flush=True)


def _patient(seed: int) -> dict[str, Any]:
    from local.sampledata import patient_record

    return patient_record(seed)


def upload_batch(container: Any, dataset: str, batch: str, rows: list[dict[str, Any]], files: int = 3) -> int:
    from local.sampledata import to_csv_bytes

    size = (len(rows) + files - 1) // files
    for i in range(files):
        part = rows[i * size:(i + 1) * size]
        container.upload_blob(f"{dataset}/{batch}/part-{i:03d}.csv", to_csv_bytes(part), overwrite=True)
    container.upload_blob(f"{dataset}/{batch}/_SUCCESS", b"", overwrite=True)
    return files


class ClientTraffic:
    """A client calling the endpoint's scoring URL ten times a second, as users would while a rollout runs.

    It counts which deployment answered (the `azureml-model-deployment` response header), so the demo shows
    the canary's share of real requests, and the rollout's health check has requests to judge.
    """

    def __init__(self, scoring_url: str, body: dict[str, Any]) -> None:
        self.url, self.body = scoring_url, json.dumps(body).encode()
        self.served: dict[str, int] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-client", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            request = urllib.request.Request(self.url, data=self.body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    name = resp.headers.get("azureml-model-deployment", "?")
                    self.served[name] = self.served.get(name, 0) + 1
            except OSError:
                self.errors += 1

    def __enter__(self) -> ClientTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class Demo:
    def __init__(self, timeout: float, deps: Any = None) -> None:
        from shared.core.deps import get_deps

        self.deps = deps or get_deps()
        self.settings = self.deps.settings
        self.feed = EventFeed(self.settings.topic_endpoint)
        self.timeout = timeout
        self.steps = Steps()
        self.facts: dict[str, str] = {}
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.batch1, self.batch2, self.score = f"batch-{stamp}-a", f"batch-{stamp}-b", f"score-{stamp}"
        service = self._blob_service()
        self.data = service.get_container_client(self.settings.data_container)
        self.scoring = service.get_container_client(self.settings.scoring_container)
        self.outputs = service.get_container_client(self.settings.output_container)
        for c in (self.data, self.scoring, self.outputs):
            if not c.exists():
                c.create_container()

    def _blob_service(self) -> Any:
        from shared.adapters.storage import blob_service

        return blob_service(self.settings)

    # ---- the chain
    def land(self, batch: str, rows: int, seed: int) -> str:
        from local.sampledata import generate

        files = upload_batch(self.data, "heart", batch, generate(rows, seed=seed))
        return f"{rows} rows in {files} files + _SUCCESS -> {self.settings.data_container}/heart/{batch}/"

    def training(self, batch: str) -> str:
        event = self.feed.wait(lambda e: e.get("eventType") in ("Reflex.TrainingSubmitted", "Reflex.TrainingFailed")
                               and _mentions(e, batch), timeout=self.timeout, what=f"TrainingSubmitted for {batch}",
                               show=_show)
        if event["eventType"] == "Reflex.TrainingFailed":
            raise StepMissed(f"training of {batch} failed: {event['data'].get('error', event['data'])}")
        job = str(event["data"].get("job") or event["data"].get("job_name"))
        self.facts[f"job:{batch}"] = job
        return f"data asset {event['data'].get('data', '?')} -> job {job}"

    def run_completed(self, batch: str) -> str:
        """Wait for the job, showing every 10 s how long it has run, its status and its log's last line."""
        job = self.facts[f"job:{batch}"]
        start = time.monotonic()
        shown = 0.0
        while (elapsed := time.monotonic() - start) < self.timeout:
            found = self.deps.platform.get_job(job)
            if found is not None and found.terminal:
                if found.status != "Completed":
                    raise StepMissed(f"job {job} ended {found.status}: {found.error}")
                metrics = self.deps.platform.get_job_metrics(job)
                return f"{job} Completed in {elapsed:.0f}s: " + ", ".join(
                    f"{k}={v:.3f}" for k, v in sorted(metrics.items()) if k in ("auc", "accuracy", "rmse", "r2"))
            if elapsed - shown >= 10:
                shown = elapsed
                status = found.status if found is not None else "not found yet"
                print(f"    … {elapsed:4.0f}s  {status:10} {last_log_line(job)[:100]}", flush=True)
            time.sleep(2)
        raise TimeoutError(f"job {job} did not finish within {self.timeout:.0f}s")

    def gate(self, batch: str) -> str:
        job = self.facts[f"job:{batch}"]
        event = self.feed.wait(
            lambda e: e.get("eventType") in ("Reflex.ModelRegistered", "Reflex.ModelRegistrationSkipped")
            and _mentions(e, job), timeout=self.timeout, what=f"a registration decision for {job}", show=_show)
        if event["eventType"] == "Reflex.ModelRegistrationSkipped":
            self.facts[f"model:{batch}"] = ""
            decision = event["data"].get("decision") or event["data"]
            numbers = json.dumps({k: v for k, v in decision.items() if k in ("metric", "challenger", "champion",
                                                                            "reason")})
            self.facts[f"skipped:{batch}"] = f"the gate did not register the challenger {numbers}"
            return "challenger not registered (a decision, not a failure): " + numbers
        name, _, version = event["subject"].removeprefix("models/").partition(":")
        self.facts[f"model:{batch}"] = f"{name}:{version}"
        return f"registered {name}:{version}"

    def rollout(self, batch: str) -> str:
        model = self.facts.get(f"model:{batch}", "")
        if not model:
            raise StepSkipped("nothing to roll out: " + self.facts.get(f"skipped:{batch}", "the challenger was "
                                                                                         "not registered"))
        endpoint = self.settings.endpoint_for(model.partition(":")[0]) or ""
        live = self.deps.platform.get_endpoint(endpoint)
        if live is None or not any(live.traffic.values()):  # nothing serves yet: no client to keep happy
            return self._rollout_end(model)
        with ClientTraffic(self._scoring_url(endpoint), {"data": [_patient(3)]}) as client:
            outcome = self._rollout_end(model)
        served = ", ".join(f"{name}: {count}" for name, count in sorted(client.served.items()))
        return f"{outcome}; client requests answered during the rollout: {served or 'none'}" + (
            f" ({client.errors} failed)" if client.errors else "")

    @staticmethod
    def _scoring_url(endpoint: str) -> str:
        serving = os.environ.get("REFLEX_LOCAL_SERVING_URL", "http://127.0.0.1:5001")
        return f"{serving}/endpoints/{endpoint}/score"

    def _rollout_end(self, model: str) -> str:
        """Wait for the rollout's end; a promotion is the goal, anything else (rolled back, failed) misses it."""
        name, _, version = model.partition(":")
        event = self.feed.wait(lambda e: ends_rollout(e, name, version), timeout=self.timeout,
                               what=f"the end of the rollout of {model}", show=_show)
        promoted, what = rollout_outcome([event], name, version) or (False, "?")
        endpoint = self.deps.platform.get_endpoint(self.settings.endpoint_for(name) or "")
        traffic = dict(endpoint.traffic) if endpoint else {}
        if not promoted:
            raise StepMissed(f"{model} was not promoted: {what}; traffic now {traffic}")
        return f"{what}: traffic now {traffic}"

    def predict(self) -> str:
        """One patient record, sent to the endpoint's scoring URL as any client would."""
        endpoint = self.settings.endpoint_for(self.settings.model_name) or ""
        body = json.dumps({"data": [_patient(7)]}).encode()
        request = urllib.request.Request(self._scoring_url(endpoint), data=body,
                                         headers={"Content-Type": "application/json"})
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                answer, deployment = resp.read().decode(), resp.headers.get("azureml-model-deployment", "?")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"endpoint {endpoint} answered {exc.code}: {exc.read()[:200]!r}") from exc
        return (f"POST {self._scoring_url(endpoint)} -> {answer[:80]} from deployment {deployment} "
                f"({(time.monotonic() - start) * 1000:.0f} ms)")

    def batch_scoring(self) -> str:
        from local.sampledata import generate

        rows = [{k: v for k, v in r.items() if k != self.settings.label_column} for r in generate(200, seed=99)]
        upload_batch(self.scoring, "heart", self.score, rows, files=2)
        event = self.feed.wait(
            lambda e: e.get("eventType") in ("Reflex.BatchScoringCompleted", "Reflex.BatchScoringFailed",
                                             "Reflex.BatchScoringSkipped") and _mentions(e, self.score),
            timeout=self.timeout, what=f"batch scoring of {self.score}", show=_show)
        if event["eventType"] != "Reflex.BatchScoringCompleted":
            raise StepMissed(f"{event['eventType']}: {json.dumps(event['data'])[:300]}")
        output = str(event["data"].get("output") or event["data"].get("output_path") or "")
        return f"output {output}"

    def preface(self) -> None:
        """Say so when an earlier run left a champion: the new models must beat it, so the story differs."""
        champion = self.deps.platform.find_champion(self.settings.model_name)
        if champion is not None:
            metric = self.settings.gate_metric
            value = champion.properties.get(f"reflex.metric.{metric}", "?")
            print(f"note: the registry already has a champion from an earlier run, {champion.ref} "
                  f"({metric} {value}); new models must beat it. `make demo-fresh` starts from an empty one.")

    def run(self) -> int:
        self.preface()
        # a small first batch, then one eight times larger: the challenger should earn its canary
        plan: list[tuple[str, Callable[[], str]]] = [
            ("1. a dataset batch lands in Blob Storage", lambda: self.land(self.batch1, 300, 5)),
            ("2. data asset + training job submitted", lambda: self.training(self.batch1)),
            ("3. training run completes", lambda: self.run_completed(self.batch1)),
            ("4. registration gate", lambda: self.gate(self.batch1)),
            ("5. safe rollout to the online endpoint", lambda: self.rollout(self.batch1)),
            ("6. a prediction for one patient", self.predict),
            ("7. a second, larger batch lands", lambda: self.land(self.batch2, 2400, 4)),
            ("8. second training job submitted", lambda: self.training(self.batch2)),
            ("9. second run completes", lambda: self.run_completed(self.batch2)),
            ("10. challenger vs champion", lambda: self.gate(self.batch2)),
            ("11. canary, bake, promote", lambda: self.rollout(self.batch2)),
            ("12. batch scoring on new scoring data", self.batch_scoring),
        ]
        for name, action in plan:
            if self.steps.run(name, action).status == "FAILED":
                break
        print("\n" + self.steps.summary())
        failed = self.steps.failed
        if failed is not None:
            print(f"\nDEMO FAILED at step '{failed.name}': {failed.detail}", file=sys.stderr)
            print("Logs: run/current/ (make stop stops the stack); `.venv/bin/python -m reflex status` shows "
                  "what Reflex recorded", file=sys.stderr)
            return self.steps.exit_code()
        endpoint = self.settings.endpoint_for(self.settings.model_name)
        print(f"\nnext: the MLflow UI at {self.settings.mlflow_tracking_uri}; `.venv/bin/python -m reflex explain "
              f"{endpoint}` walks back to the uploaded blobs; `.venv/bin/python -m reflex status`; `make stop`.")
        return 0


def last_log_line(job: str) -> str:
    """The last non-empty line the local job wrote (`<run>/jobs/<job>/user_logs.txt`), or ''."""
    from shared.core.state import key_part

    run_dir = Path(os.environ.get("REFLEX_LOCAL_RUN_DIR") or "run/current")
    path = run_dir / "jobs" / key_part(job) / "user_logs.txt"
    try:
        with open(path, "rb") as log:
            log.seek(max(0, path.stat().st_size - 4096))
            lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    # the message, not the logger's timestamp (`2026-12-01 10:34:33,736 ` or `2026/12/01 10:35:46 `)
    return _STAMP.sub("", lines[-1]) if lines else ""


_STAMP = re.compile(r"^\d{4}[-/]\d\d[-/]\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s+")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each step may take")
    parser.add_argument("--no-stack", action="store_true", help="use a stack that is already running")
    parser.add_argument("--fresh", action="store_true", help="first forget every earlier run: stop the stack, "
                                                              "drop the MLflow registry and Reflex's containers")
    args = parser.parse_args(argv)
    from local import stack
    from shared.core.deps import reset_deps
    from shared.core.settings import reset_cache

    if args.fresh:
        stack.reset(stack.Stack())
    if args.no_stack:
        running = stack.Stack(overrides=DEMO_SETTINGS, overrides_label=DEMO_LABEL)
        differ = stack.mismatches(running.recorded() or {}, DEMO_SETTINGS)
        if differ:
            raise SystemExit(f"the running stack's settings are not {DEMO_LABEL}: {'; '.join(differ)}")
    else:
        running = stack.ensure_running(DEMO_SETTINGS, DEMO_LABEL)
    os.environ.update(running.env())  # exactly what the stack's components run with
    reset_cache()
    reset_deps()
    return Demo(args.timeout).run()


if __name__ == "__main__":
    sys.exit(main())
