"""Local online endpoints: deployments, traffic and mirror weights, routing, per-deployment counters.

Why records in the state container: endpoints must survive restarts of every local process and be shared by
the host (which runs the rollout), the scoring server (which serves) and the CLI, exactly as Azure ML's
endpoints are one shared resource. Each endpoint is one JSON record, updated with ETag compare-and-swap::

    platform/endpoints/<name>   {"name", "tags", "traffic": {dep: pct}, "mirror": {dep: pct},
                                 "deployments": {dep: {"model": "n:v", "instance_type", "instance_count",
                                                       "tags", "state", "error", "generation", "pid"}}}
    platform/metrics/<endpoint>/<deployment>/<epoch minute>   {"requests", "errors", "latency_ms_sum",
                                                               "latencies_ms": [each request's, in order]}

"Provisioning" a deployment means loading its MLflow model (`models:/<name>/<version>`) in a detached process
(`python -m local.jobrunner provision …`): Succeeded once it loads, Failed with the error otherwise. Serving
loads models in the serving process, cached per process. Counters are per minute, the metrics source of
`get_deployment_metrics` as Azure Monitor is on Azure. Old counter records are not pruned (a demo makes few).
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from local import procs
from shared.core.errors import PermanentError
from shared.core.platform import (
    REFLEX_TAG,
    SUCCEEDED,
    Deployment,
    DeploymentMetrics,
    Endpoint,
    InvokeResult,
    require_reflex_owned,
    traffic_problems,
)
from shared.core.state import StateStore, key_part

__all__ = ["Endpoints", "load_model", "provision_from_env", "predict"]

log = logging.getLogger("reflex.local.endpoints")
# Latencies kept per deployment and minute for the median (a demo client sends 600 a minute): a bounded record
# under any load; a minute past the bound still counts every request in the mean.
_LATENCIES_PER_MINUTE = 5000


def _ep_key(name: str) -> str:
    return f"platform/endpoints/{key_part(name)}"


def _metrics_prefix(endpoint: str, deployment: str) -> str:
    return f"platform/metrics/{key_part(endpoint)}/{key_part(deployment)}/"


@lru_cache(maxsize=16)
def load_model(model: str) -> Any:
    """The pyfunc model of "name:version", loaded once per process."""
    import mlflow.pyfunc

    name, _, version = model.partition(":")
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def predict(model: str, body: Any) -> list[Any]:
    """Predictions for a request body in one of `shared.scoring.model_input.ACCEPTED_SHAPES`.

    Raises ValueError (a 400 for the caller) for another shape, naming it and listing the accepted ones
    (`RequestShapeError`), or for rows that lack columns the model needs, naming the missing and unexpected ones.
    """
    import pandas as pd

    from shared.scoring.model_input import column_problem, parse_request

    request = parse_request(body)
    frame = pd.DataFrame(request.rows, columns=request.columns)
    loaded = load_model(model)
    schema = loaded.metadata.get_input_schema()
    if schema is not None:
        problem = column_problem(schema.input_names(), [str(c) for c in frame.columns], where="the request")
        if problem:
            raise ValueError(problem)
        frame = frame[schema.input_names()]
    result = loaded.predict(frame, params=request.params) if request.params else loaded.predict(frame)
    values = result.to_numpy().tolist() if hasattr(result, "to_numpy") else list(result)
    return [v.item() if hasattr(v, "item") else v for v in values]


class Endpoints:
    """Online endpoints on the state store. `model_exists("n:v")` checks the registry; `spawn_env` is the child
    environment of provisioning processes."""

    def __init__(self, state: StateStore, *, run_dir: Path, model_exists: Callable[[str], bool],
                 spawn_env: Mapping[str, str], serving_url: str, quota_cores: int,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.state = state
        self.run_dir = run_dir
        self.model_exists = model_exists
        self.spawn_env = dict(spawn_env)
        self.serving_url = serving_url.rstrip("/")
        self.quota_cores = quota_cores
        self.clock = clock
        self.rng = rng or random.Random()

    # ------------------------------------------------------------------ reading
    def _record(self, name: str) -> dict[str, Any] | None:
        found = self.state.get(_ep_key(name))
        return None if found is None else found.value

    def _state_of(self, endpoint: str, name: str, dep: Mapping[str, Any]) -> tuple[str, str]:
        """(state, error) with a dead provisioner detected: Creating with no live process is Failed."""
        if dep["state"] != "Creating" or procs.alive(dep.get("pid"), "local.jobrunner"):
            return dep["state"], dep.get("error", "")
        if not dep.get("pid") and self.clock() - dep.get("started", 0) < 60:
            return "Creating", ""
        again = (self._record(endpoint) or {}).get("deployments", {}).get(name)  # finished just now?
        if again and again["state"] != "Creating":
            return again["state"], again.get("error", "")
        return "Failed", "provisioning process exited without a result"

    def _deployment(self, endpoint: str, name: str, dep: Mapping[str, Any]) -> Deployment:
        state, _ = self._state_of(endpoint, name, dep)
        return Deployment(name, endpoint, dep["model"], state, dep.get("instance_type", ""),
                          int(dep.get("instance_count", 1)), dict(dep.get("tags", {})))

    def get_endpoint(self, name: str) -> Endpoint | None:
        rec = self._record(name)
        if rec is None:
            return None
        deployments = tuple(self._deployment(name, n, d) for n, d in sorted(rec["deployments"].items()))
        traffic = {d.name: int(rec["traffic"].get(d.name, 0)) for d in deployments}
        mirror = {n: int(p) for n, p in rec["mirror"].items() if p > 0}
        return Endpoint(name, SUCCEEDED, traffic, mirror, deployments,
                        f"{self.serving_url}/endpoints/{name}/score", dict(rec.get("tags", {})))

    def get_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        rec = self._record(endpoint)
        if rec is None or deployment not in rec["deployments"]:
            return None
        return self._deployment(endpoint, deployment, rec["deployments"][deployment])

    # ------------------------------------------------------------------ writing
    def create_endpoint(self, name: str, tags: Mapping[str, str] | None) -> None:
        """Create when absent (tagged `reflex.managed`, as on Azure ML); an existing one must be Reflex's."""
        found = self.state.create(_ep_key(name), {"name": name, "tags": {**(tags or {}), REFLEX_TAG: "true"},
                                                  "traffic": {}, "mirror": {}, "deployments": {},
                                                  "created": self.clock()})
        existing = self._record(name) if found is None else None
        if existing is not None:
            require_reflex_owned(existing.get("tags"), f"endpoint {name}", "REFLEX_ENDPOINTS")

    def create_deployment(self, endpoint: str, deployment: str, *, model: str, instance_type: str,
                          instance_count: int, tags: Mapping[str, str] | None) -> None:
        if self._record(endpoint) is None:
            raise PermanentError(f"deployment {deployment}: endpoint {endpoint} does not exist")
        if not self.model_exists(model):
            raise PermanentError(f"deployment {deployment}: model {model} does not exist")
        generation = uuid.uuid4().hex
        started = {"flag": False}

        def add(rec: dict[str, Any] | None) -> dict[str, Any] | None:
            if rec is None:
                raise PermanentError(f"deployment {deployment}: endpoint {endpoint} does not exist")
            current = rec["deployments"].get(deployment)
            if current is not None and current["model"] == model and current["state"] != "Failed":
                started["flag"] = False
                return None  # same model: nothing to do (idempotent), as create_or_update with no change
            started["flag"] = True
            rec["deployments"][deployment] = {
                "model": model, "instance_type": instance_type, "instance_count": int(instance_count),
                "tags": dict(tags or {}), "state": "Creating", "error": "", "generation": generation,
                "pid": None, "started": self.clock()}
            return rec

        self.state.update(_ep_key(endpoint), add)
        if not started["flag"]:
            return
        pid = procs.spawn(["local.jobrunner", "provision", endpoint, deployment],
                          log_path=self._log(endpoint, deployment), env=self.spawn_env)

        def note_pid(rec: dict[str, Any] | None) -> dict[str, Any] | None:
            dep = (rec or {}).get("deployments", {}).get(deployment)
            if not dep or dep["generation"] != generation or dep["state"] != "Creating":
                return None
            dep["pid"] = pid
            return rec

        self.state.update(_ep_key(endpoint), note_pid)

    def _log(self, endpoint: str, deployment: str) -> Path:
        return self.run_dir / "deployments" / key_part(endpoint) / f"{key_part(deployment)}.log"

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int], mirror: Mapping[str, int] | None) -> Endpoint:
        view = self.get_endpoint(endpoint)
        if view is None:
            raise PermanentError(f"traffic update: endpoint {endpoint} does not exist")
        states = {d.name: d.state for d in view.deployments}

        def change(rec: dict[str, Any] | None) -> dict[str, Any]:
            if rec is None:
                raise PermanentError(f"traffic update: endpoint {endpoint} does not exist")
            names = set(rec["deployments"])
            new_traffic = {n: 0 for n in names} | {n: int(p) for n, p in traffic.items()}
            new_mirror = {n: int(p) for n, p in (mirror or {}).items() if p}
            problems = traffic_problems(new_traffic, new_mirror, {n: states.get(n, "Creating") for n in names})
            if problems:
                raise PermanentError(f"endpoint {endpoint}: traffic rejected: {'; '.join(problems)}")
            rec["traffic"], rec["mirror"] = new_traffic, new_mirror
            return rec

        self.state.update(_ep_key(endpoint), change)
        return self.get_endpoint(endpoint)  # type: ignore[return-value]

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        def remove(rec: dict[str, Any] | None) -> dict[str, Any] | None:
            if rec is None or deployment not in rec["deployments"]:
                return None
            if rec["traffic"].get(deployment, 0) > 0 or rec["mirror"].get(deployment, 0) > 0:
                raise PermanentError(f"deployment {deployment}: cannot delete while it receives traffic")
            del rec["deployments"][deployment]
            rec["traffic"].pop(deployment, None)
            rec["mirror"].pop(deployment, None)
            return rec

        self.state.update(_ep_key(endpoint), remove)

    # ------------------------------------------------------------------ serving
    def route(self, endpoint: str, deployment: str) -> tuple[Endpoint, Deployment]:
        view = self.get_endpoint(endpoint)
        if view is None:
            raise PermanentError(f"invoke: endpoint {endpoint} does not exist")
        if not deployment:
            weighted = [(n, p) for n, p in view.traffic.items() if p > 0]
            if not weighted:
                raise PermanentError(f"invoke: endpoint {endpoint} routes no traffic to any deployment")
            deployment = self.rng.choices([n for n, _ in weighted], [p for _, p in weighted])[0]
        chosen = view.deployment(deployment)
        if chosen is None:
            raise PermanentError(f"invoke: deployment {deployment} does not exist on {endpoint}")
        if not chosen.succeeded:
            raise PermanentError(f"invoke: deployment {deployment} is {chosen.state}")
        return view, chosen

    def invoke(self, endpoint: str, deployment: str, body: Any) -> tuple[str, InvokeResult]:
        """Score on the named deployment, or on one picked by traffic weight; (deployment, result).

        When routed by weight, a mirror deployment receives a copy of `mirror%` of the requests in the
        background; its answer is discarded and only its counters see it, as Azure ML's mirror traffic.
        """
        view, chosen = self.route(endpoint, deployment)
        result = self._score(endpoint, chosen, body)
        if not deployment:
            for name, pct in view.mirror.items():
                target = view.deployment(name)
                if target is not None and target.succeeded and self.rng.random() * 100 < pct:
                    threading.Thread(target=self._score, args=(endpoint, target, body), daemon=True).start()
        return chosen.name, result

    def _score(self, endpoint: str, dep: Deployment, body: Any) -> InvokeResult:
        # An Azure ML deployment loads its model before it reports Succeeded; here each process loads it on
        # first use. That one-off load is kept out of the latency, or a canary's first request (often the
        # smoke test) would read as a latency regression against the warm live deployment.
        try:
            load_model(dep.model)
        except Exception:  # scored below as the 500 the counters must see
            log.warning("model %s of %s/%s does not load", dep.model, endpoint, dep.name)
        started = time.perf_counter()
        from shared.scoring.model_input import ACCEPTED_SHAPES, RequestShapeError

        try:
            result = InvokeResult(200, json.dumps(predict(dep.model, body)), 0.0)
        except RequestShapeError as exc:
            result = InvokeResult(400, json.dumps({"error": str(exc), "accepted_shapes": list(ACCEPTED_SHAPES)}), 0.0)
        except ValueError as exc:
            result = InvokeResult(400, json.dumps({"error": str(exc)}), 0.0)
        except Exception as exc:  # a model that fails to score is a 500 the counters must see
            log.exception("scoring failed on %s/%s", endpoint, dep.name)
            result = InvokeResult(500, json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 0.0)
        latency = (time.perf_counter() - started) * 1000.0
        self.count(endpoint, dep.name, error=result.status >= 400, latency_ms=latency)
        return InvokeResult(result.status, result.body, latency)

    def count(self, endpoint: str, deployment: str, *, error: bool, latency_ms: float) -> None:
        """Count one request in its minute's record, with its latency kept (up to `_LATENCIES_PER_MINUTE` per
        minute) for the window's median."""
        minute = int(self.clock() // 60)

        def add(rec: dict[str, Any] | None) -> dict[str, Any]:
            rec = rec or {"requests": 0, "errors": 0, "latency_ms_sum": 0.0}
            kept = list(rec.get("latencies_ms") or [])
            if len(kept) < _LATENCIES_PER_MINUTE:
                kept.append(round(latency_ms, 3))
            return {"requests": rec["requests"] + 1, "errors": rec["errors"] + int(error),
                    "latency_ms_sum": rec["latency_ms_sum"] + latency_ms, "latencies_ms": kept}

        self.state.update(f"{_metrics_prefix(endpoint, deployment)}{minute:010d}", add, attempts=20)

    def metrics(self, endpoint: str, deployment: str, window_seconds: int) -> DeploymentMetrics:
        """The deployment's requests, errors, mean and median latency over the minutes the window touches."""
        since = int((self.clock() - window_seconds) // 60)
        requests = errors = 0
        latency = 0.0
        latencies: list[float] = []
        prefix = _metrics_prefix(endpoint, deployment)
        for rec in self.state.records(prefix):
            if int(rec.key[len(prefix):]) >= since:
                requests += rec.value["requests"]
                errors += rec.value["errors"]
                latency += rec.value["latency_ms_sum"]
                latencies.extend(float(ms) for ms in rec.value.get("latencies_ms") or ())
        # as Azure Monitor serves it: a window without requests has no series ("no data yet"), not zero requests
        return DeploymentMetrics(requests, errors, latency / requests if requests else None, window_seconds,
                                 has_data=requests > 0,
                                 latency_p50_ms=statistics.median(latencies) if latencies else None)

    def used_cores(self, cores_of: Callable[[str], int]) -> int:
        return sum(cores_of(d.get("instance_type", "")) * int(d.get("instance_count", 1))
                   for rec in self.state.records("platform/endpoints/")
                   for d in rec.value.get("deployments", {}).values())


def _warm_serving(model: str) -> None:
    """Have the scoring server load `model` before the deployment reports Succeeded, so a client's first request
    is not the one that pays for loading it. A server that is down (started later) loads it on first use."""
    import urllib.error
    import urllib.request

    url = os.environ.get("REFLEX_LOCAL_SERVING_URL")
    if not url:
        return
    request = urllib.request.Request(f"{url.rstrip('/')}/models/warm", data=json.dumps({"model": model}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300):
            pass
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"the scoring server could not load it: {exc.read()[:300]!r}") from exc
    except OSError as exc:
        print(f"scoring server not reachable at {url} ({exc}): it loads {model} on the first request", flush=True)


def provision_from_env(endpoint: str, deployment: str) -> int:
    """Child process: load the deployment's model, then record Succeeded or Failed (same generation only)."""
    from azure.storage.blob import BlobServiceClient

    from shared.core.state import BlobStateStore

    service = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])  # noqa: SIM112 - the host's name
    store = BlobStateStore(service.get_container_client(os.environ["REFLEX_STATE_CONTAINER"]))
    rec = store.get(_ep_key(endpoint))
    dep = (rec.value if rec else {}).get("deployments", {}).get(deployment)
    if dep is None:
        print(f"provision {endpoint}/{deployment}: no such deployment", flush=True)
        return 1
    print(f"provision {endpoint}/{deployment}: loading models:/{dep['model'].replace(':', '/')}", flush=True)
    state, error = SUCCEEDED, ""
    try:
        load_model(dep["model"])
        _warm_serving(dep["model"])
    except Exception as exc:
        state, error = "Failed", f"model {dep['model']} could not be loaded: {type(exc).__name__}: {exc}"
    print(f"provision {endpoint}/{deployment}: {state} {error}".rstrip(), flush=True)

    def finish(value: dict[str, Any] | None) -> dict[str, Any] | None:
        current = (value or {}).get("deployments", {}).get(deployment)
        if not current or current["generation"] != dep["generation"]:
            return None
        current["state"], current["error"] = state, error[:2000]
        return value

    store.update(_ep_key(endpoint), finish)
    return 0 if state == SUCCEEDED else 1
