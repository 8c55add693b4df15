"""HTTP requests per operation: Reflex's Azure ML adapter beside naive azure-ai-ml usage, measured in one run.

Both sides run the real SDK against the same HTTP stand-in (testing/aml_service.py, answered from the published
REST examples), so every request either side would send to Azure is counted. The naive baseline is the
documented, obvious SDK usage: `<env>@latest`, auto-incremented model versions, `.result()` on every poller,
get-endpoint-then-PUT for traffic, and `batch_endpoints.invoke` without a name check. Rollout ticks (#17.3): the
baseline reads the endpoint and its deployments the obvious way (`online_endpoints.get`, which lists the
deployments itself, then `online_deployments.list`) when it observes and again to check after acting. Polling
requests made by `.result()` are counted too (the stand-in answers with a finished state, so the baseline's
polling is its minimum). Run: `.venv/bin/python bench/aml_calls.py`. Ends with one `RESULT aml_calls ...` line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aml_harness import azure_platform  # noqa: E402

from shared.core.platform import BatchDeploymentSpec, TrainingRequest  # noqa: E402
from testing.aml_service import AmlService  # noqa: E402

DATA = "azureml://datastores/reflexdata/paths/sales/b1/"
REQ = TrainingRequest(job_name="train-0001", experiment_name="reflex", data_name="sales", data_version="1",
                      mode="command", task="classification", label_column="y", compute="cpu-cluster",
                      environment="azureml:reflex-train:1")


def _count(svc: AmlService, fn: Any) -> int:
    start = len(svc.requests)
    fn()
    return len(svc.requests) - start


def _prepare(svc: AmlService, p: Any) -> None:
    """What exists before the measured operations: an environment, a model, a serving endpoint."""
    env = {"id": f"{svc.ws_path}/environments/reflex-train/versions/1", "name": "1",
           "type": "Microsoft.MachineLearningServices/workspaces/environments/versions",
           "properties": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "osType": "Linux"}}
    svc.resources["/environments/reflex-train/versions/1"] = env
    p.register_data(name="seed", version="1", path=DATA, tags={})
    p.submit_training(TrainingRequest(**{**REQ.__dict__, "job_name": "seed-job", "data_name": "seed"}))
    svc.finish_job("seed-job")
    p.register_model(name="churn", version="1", job_name="seed-job", tags={})
    p.begin_create_endpoint("churn-ep")
    for d in ("blue", "green"):
        p.begin_create_deployment("churn-ep", d, model="churn:1", instance_type="Standard_DS3_v2", instance_count=1)
    p.set_traffic("churn-ep", {"blue": 100})
    p.begin_ensure_batch_deployment(BatchDeploymentSpec("churn-batch", "v1", "churn:1", "cpu-cluster"))
    p.begin_ensure_batch_deployment(BatchDeploymentSpec("churn-batch", "v1", "churn:1", "cpu-cluster"))


def reflex(svc: AmlService, p: Any) -> dict[str, int]:
    return {
        "data_asset": _count(svc, lambda: p.register_data(name="sales", version="1", path=DATA, tags={})),
        "training": _count(svc, lambda: p.submit_training(REQ)),
        "registration": _count(svc, lambda: (svc.finish_job(REQ.job_name), p.register_model(
            name="churn", version="2", job_name=REQ.job_name, tags={}))),
        "traffic_step": _count(svc, lambda: p.set_traffic("churn-ep", {"blue": 90, "green": 10})),
        "batch_invoke": _count(svc, lambda: p.invoke_batch(
            "churn-batch", "v1", input_path="azureml://datastores/s/paths/b1/",
            output_path="azureml://datastores/o/paths/r1/p.csv", job_name="score-1")),
        # a rollout tick as shared/rollout_flow.step makes it (tests/test_azureml_ticks.py runs the real flow):
        # observe reads the endpoint once; a traffic write and the invariant check reuse that read
        "wait_tick": _count(svc, lambda: p.get_endpoint("churn-ep")),
        "traffic_tick": _count(svc, lambda: (p.get_endpoint("churn-ep"),
                                             p.set_traffic("churn-ep", {"blue": 50, "green": 50}))),
        # promote tags the new champion; the former one is untagged by the next tick (shared/rollout/flow.py)
        "promote_tick": _count(svc, lambda: (p.get_endpoint("churn-ep"),
                                             p.update_model_tags("churn", "2", set_tags={"reflex.champion": "true"}))),
    }


def naive(svc: AmlService, p: Any) -> dict[str, int]:
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.entities import Data, Model

    ml = p.ml

    def training() -> None:
        ml.jobs.create_or_update(command(
            name="train-0002", experiment_name="reflex", command="python train.py --data ${{inputs.data}}",
            inputs={"data": Input(type="uri_folder", path="azureml:sales2:1")},
            outputs={"model": Output(type="mlflow_model")}, environment="reflex-train@latest",
            compute="cpu-cluster"))

    def registration() -> None:
        svc.finish_job("train-0002")
        ml.models.create_or_update(Model(name="churn", path="azureml://jobs/train-0002/outputs/model",
                                         type="mlflow_model"))

    def traffic_step() -> None:
        ep = ml.online_endpoints.get("churn-ep")
        ep.traffic = {"blue": 80, "green": 20}
        ml.online_endpoints.begin_create_or_update(ep).result()

    def batch_invoke() -> None:
        ml.batch_endpoints.invoke(endpoint_name="churn-batch", deployment_name="v1",
                                  input=Input(type="uri_folder", path="azureml://datastores/s/paths/b2/"),
                                  outputs={"score": Output(type="uri_file", path="azureml://datastores/o/paths/r2/p.csv")},
                                  job_name="score-2")

    def read() -> Any:   # the obvious read of an endpoint and its deployments
        ep = ml.online_endpoints.get("churn-ep")
        return ep, list(ml.online_deployments.list("churn-ep"))

    def traffic_tick() -> None:   # read, decide, write, read again to check
        ep, _ = read()
        ep.traffic = {"blue": 40, "green": 60}
        ml.online_endpoints.begin_create_or_update(ep).result()
        read()

    def promote_tick() -> None:
        read()
        model = ml.models.get("churn", version="2")
        model.tags = {**(model.tags or {}), "reflex.champion": "true"}
        ml.models.create_or_update(model)
        list(ml.models.list(name="churn"))
        read()

    return {
        "data_asset": _count(svc, lambda: ml.data.create_or_update(Data(name="sales2", path=DATA,
                                                                        type="uri_folder"))),
        "training": _count(svc, training),
        "registration": _count(svc, registration),
        "traffic_step": _count(svc, traffic_step),
        "batch_invoke": _count(svc, batch_invoke),
        "wait_tick": _count(svc, lambda: (read(), read())),
        "traffic_tick": _count(svc, traffic_tick),
        "promote_tick": _count(svc, promote_tick),
    }


def _data_list_route(svc: AmlService) -> None:
    """Auto-versioned data create lists versions first; the stand-in answers that list like the model list."""
    import re

    original = svc._routes

    def routes() -> list[Any]:
        def data_list(rec: Any, rel: str, name: str) -> Any:
            prefix = f"/data/{name}/versions/".lower()
            return svc._json(200, {"value": [v for k, v in svc.resources.items() if k.startswith(prefix)]})

        def data_container(rec: Any, rel: str, name: str) -> Any:
            return svc._not_found(f"data {name}")

        return [(r"/data/([^/]+)/versions", data_list), (r"/data/([^/]+)", data_container),
                (r"/environments/([^/]+)/versions", lambda rec, rel, n: svc._json(200, {"value": [
                    v for k, v in svc.resources.items() if k.startswith(f"/environments/{n}/versions/")]})),
                *original()]

    svc._routes = routes  # type: ignore[method-assign]
    assert re


def main() -> None:
    svc = AmlService()
    _data_list_route(svc)
    started = time.perf_counter()
    with azure_platform(svc, polling_interval=0.0) as p:
        _prepare(svc, p)
        ours = reflex(svc, p)
        base = naive(svc, p)
    print(f"{'operation':<14}{'reflex':>8}{'naive':>8}   (HTTP requests, same SDK, same stand-in)")
    for op in ours:
        print(f"{op:<14}{ours[op]:>8}{base[op]:>8}")
    print(f"total         {sum(ours.values()):>8}{sum(base.values()):>8}   ({time.perf_counter() - started:.1f} s)")
    fields = " ".join([f"{k}={v}" for k, v in ours.items()] + [f"naive_{k}={v}" for k, v in base.items()])
    print(f"RESULT aml_calls {fields} total={sum(ours.values())} naive_total={sum(base.values())}")


if __name__ == "__main__":
    main()
