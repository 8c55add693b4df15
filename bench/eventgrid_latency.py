"""Worst case of each Event Grid-triggered reaction on a cold worker, against Event Grid's 30 s delivery timeout.

Event Grid waits at most 30 s for the Functions host to acknowledge a delivery, and the host answers only after
the function returns; past that, Event Grid redelivers. Reflex keeps every reaction under 10 s or hands the slow
part to the reconciler. This measures it: each case runs in a fresh Python process (a cold worker) that

1. imports the app (`function_app`, as the host does when it indexes the functions),
2. imports azure.ai.ml and builds the Azure ML client (what the first AML-touching reaction pays),
3. gets a token (a fake TokenCredential: no network, the same pipeline call),
4. runs the reaction with every HTTP request to Azure ML / Azure Monitor answered by the contract tests' stand-in
   (`testing/aml_service.py`, the real SDK on the wire) after an injected delay per request.

Reactions (the code the Event Grid triggers run, with the Azure ML adapter):
* `arrival`: BlobCreated of a batch's last file -> data asset + training job (`register_data` + `submit_training`,
  the AML part of `shared.batches.training.submit`; listing the batch in Storage is not an AML round trip and not
  counted);
* `registration`: RunCompleted -> gate + registration (`shared.registration.flow.handle_run_event`, the real handler);
* `rollout`: ModelRegistered -> `shared.rollout.reactions.handle_model_registered` (the real handler) on an
  endpoint whose live deployment serves the previous model: it reads the model and records the rollout (CAS);
  the first step (endpoint, quota, new deployment) is the reconciler's, on its next tick;
* `scoring`: the completion marker of a scoring batch -> the Azure ML part of `shared.scoring.flow.advance` when the
  batch deployment is ready (the worst case: find the champion, check the batch endpoint and deployment, start
  the batch job); listing the batch in Storage is not an AML round trip and not counted.

Baseline, in the same run: the same reaction in the same process once warm (imports, client and token done), so
the cold-start share is visible; and `aml_requests`, the HTTP requests the reaction sends (the latency multiplier).

Run: `.venv/bin/python bench/eventgrid_latency.py [--latencies 0.3,1.0]`. Ends with one `RESULT eventgrid_latency`
line; `worst_cold_s` is the bound to compare with 10 s (and Event Grid's 30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REACTIONS = ("arrival", "registration", "rollout", "scoring")
BUDGET_S = 10.0


def _child(reaction: str, latency: float) -> dict[str, Any]:
    """One cold worker: app import, azure.ai.ml client + token, the reaction twice (cold, then warm), timed.

    The bench's own scaffolding (the HTTP stand-in, `responses`) is imported between the timed parts and is not
    counted; nothing of it loads azure.ai.ml, which the client step imports as the app does, on first use.
    """
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    os.environ.setdefault("REFLEX_PLATFORM", "azureml")
    started = time.perf_counter()
    import function_app  # noqa: F401  - what the host imports when the worker starts

    app_s = time.perf_counter() - started
    import responses
    from aml_harness import FakeCredential

    from local import amlevents
    from shared.adapters.azureml import AzureMLPlatform
    from shared.core.deps import Deps
    from shared.core.platform import CHAMPION_TAG, REFLEX_TAG, BatchDeploymentSpec, TrainingRequest
    from shared.core.publish import Publisher
    from shared.core.settings import load
    from shared.core.state import MemoryStateStore
    from shared.registration import flow as registration
    from shared.registration import outside_models
    from shared.rollout import reactions as rollout_reactions
    from testing.aml_service import AmlService

    svc = AmlService()
    delay = {"s": 0.0}
    handle = svc._handle

    def slow(request: Any) -> Any:
        time.sleep(delay["s"])
        return handle(request)

    svc._handle = slow  # type: ignore[method-assign]
    rsps = responses.RequestsMock(assert_all_requests_are_fired=False)
    rsps.start()
    svc.install(rsps)
    cred = FakeCredential()
    t1 = time.perf_counter()
    platform = AzureMLPlatform.connect(cred, subscription_id=svc.subscription, resource_group=svc.resource_group,
                                       workspace=svc.workspace, retry_total=0, polling_interval=3600)
    cred.get_token("https://management.azure.com/.default")
    client_s = time.perf_counter() - t1
    from azure.ai.ml.constants._common import LROConfigurations

    LROConfigurations.POLL_INTERVAL = 3600       # Reflex never waits on a poller; a left-over poller thread sleeps
    settings = load({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "REFLEX_PLATFORM": "azureml",
                     "AZUREML_SUBSCRIPTION_ID": svc.subscription, "AZUREML_RESOURCE_GROUP": svc.resource_group,
                     "AZUREML_WORKSPACE": svc.workspace,
                     "REFLEX_SMOKE_REQUEST": '{"input_data": {"columns": ["x"], "data": [[1]]}}'})
    deps = Deps(settings=settings, state=MemoryStateStore(), publisher=Publisher(),
                platform_factory=lambda: platform, clock=time.time)
    data = "azureml://datastores/reflexdata/paths/sales/b1/"

    def request(job: str) -> TrainingRequest:
        return TrainingRequest(job_name=job, experiment_name="reflex", data_name="sales", data_version=job,
                               mode="command", task="classification", label_column="y", compute="cpu-cluster",
                               environment="azureml:reflex-train:1", tags={REFLEX_TAG: "true"})

    def scoring(job: str) -> Any:
        """A champion served by a ready batch deployment (built at zero latency); the AML calls to time."""
        platform.register_data(name="sales", version=job, path=data, tags={})
        platform.submit_training(request(job))
        svc.finish_job(job)
        model = platform.register_model(name=settings.model_name, version=job.rsplit("-", 1)[-1], job_name=job,
                                        tags={CHAMPION_TAG: "true"})
        spec = BatchDeploymentSpec(settings.batch_endpoint, "score-" + model.version, model.ref, "cpu-cluster")
        for _ in range(3):   # endpoint, deployment, default: one step per call
            platform.begin_ensure_batch_deployment(spec)

        def react() -> Any:
            champion = platform.find_champion(settings.model_name)
            platform.begin_ensure_batch_deployment(spec)
            platform.get_batch_deployment(spec.endpoint, spec.deployment)
            return platform.invoke_batch(spec.endpoint, spec.deployment, input_path=data,
                                         output_path=f"azureml://datastores/o/paths/{job}/", job_name=f"score-{job}",
                                         tags={"reflex.model": champion.ref if champion else ""})
        return react

    def prepare(n: int) -> Any:
        """State before the event, built at zero latency; returns the reaction to time."""
        job = f"reflex-train-{reaction}-{n}"
        if reaction == "arrival":
            return lambda: (platform.register_data(name="sales", version=job, path=data, tags={}),
                            platform.submit_training(request(job)))
        if reaction == "scoring":
            return scoring(job)
        platform.register_data(name="sales", version=job, path=data, tags={})
        platform.submit_training(request(job))
        svc.finish_job(job, metrics={"auc": 0.8 + n / 100})
        event = amlevents.run_event(job_name=job, experiment_name="reflex", status="Completed",
                                    tags={REFLEX_TAG: "true"})
        if reaction == "registration":
            return lambda: registration.handle_run_event(event, deps)
        outcome = registration.handle_run_event(event, deps)
        version = outcome.details["model_version"]
        endpoint = settings.endpoint_for(settings.model_name)
        if platform.get_endpoint(endpoint) is None:   # the usual case: a live deployment serves the champion
            platform.begin_create_endpoint(endpoint)
            platform.begin_create_deployment(endpoint, "live", model=f"{settings.model_name}:{version}",
                                             instance_type="Standard_DS3_v2", instance_count=1)
            platform.set_traffic(endpoint, {"live": 100})
            return prepare(n + 10)                        # a newer model to roll out beside it
        registered = amlevents.model_registered(name=settings.model_name, version=version, tags={})
        return lambda: rollout_reactions.handle_model_registered(registered, deps, outside_models)

    runs = []
    for n in (1, 2):          # 1: cold (first AML reaction of this worker), 2: warm
        react = prepare(n)
        delay["s"] = latency
        before, t0 = len(svc.requests), time.perf_counter()
        outcome = react()
        took = time.perf_counter() - t0
        delay["s"] = 0.0
        status = f"{getattr(outcome, 'status', 'acted')}: {getattr(outcome, 'reason', '')}"[:160]
        if reaction == "rollout":
            status += " | " + str((getattr(outcome, "details", {}) or {}).get("reason", ""))[:200]
        runs.append({"reaction_s": took, "requests": len(svc.requests) - before, "status": status,
                     "calls": [f"{m} {path[-60:]}" for m, path in svc.calls(before)]})
    rsps.stop()
    cold = runs[0]
    return {"reaction": reaction, "latency_s": latency, "app_import_s": app_s, "client_s": client_s,
            "cold_s": app_s + client_s + cold["reaction_s"], "cold_reaction_s": cold["reaction_s"],
            "warm_s": runs[1]["reaction_s"], "requests": cold["requests"], "warm_requests": runs[1]["requests"],
            "status": cold["status"], "calls": cold["calls"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latencies", default="0.3,1.0", help="seconds injected per HTTP request")
    parser.add_argument("--child", nargs=2, metavar=("REACTION", "LATENCY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], float(args.child[1]))))
        return
    results = []
    for latency in (float(x) for x in args.latencies.split(",")):
        for reaction in REACTIONS:
            out = subprocess.run([sys.executable, __file__, "--child", reaction, str(latency)], cwd=ROOT,
                                 capture_output=True, text=True, check=False,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode != 0 or not lines:
                raise SystemExit(f"{reaction} @ {latency}s failed:\n{out.stderr[-3000:]}")
            r = json.loads(lines[-1])
            results.append(r)
            print(f"{reaction:13s} {latency:4.1f} s/request: {r['requests']:2d} requests, cold {r['cold_s']:5.2f} s "
                  f"(app import {r['app_import_s']:.2f} s, azure.ai.ml + client + token {r['client_s']:.2f} s, "
                  f"reaction {r['cold_reaction_s']:.2f} s), warm {r['warm_s']:.2f} s [{r['status']}]", flush=True)
    worst = max(results, key=lambda r: r["cold_s"])
    by = {f"{r['reaction']}_{int(r['latency_s'] * 1000)}ms": round(r["cold_s"], 2) for r in results}
    warm = {f"{r['reaction']}_{int(r['latency_s'] * 1000)}ms_warm": round(r["warm_s"], 2) for r in results}
    requests = {f"{r['reaction']}_requests": r["requests"] for r in results}
    fields = " ".join(f"{k}={v}" for k, v in {**by, **warm, **requests}.items())
    print(f"RESULT eventgrid_latency worst_cold_s={worst['cold_s']:.2f} worst={worst['reaction']}@"
          f"{worst['latency_s']}s budget_s={BUDGET_S} within_budget={str(worst['cold_s'] < BUDGET_S).lower()} "
          f"{fields}")


if __name__ == "__main__":
    main()
