"""Contract tests of shared/adapters/azureml/: the real azure-ai-ml SDK, HTTP intercepted at the transport.

For every protocol operation: the method, URL path and body fields of each request the SDK sends, and how many.
Then every error class: 400 "already exists", 404, 409, 429 with Retry-After, 503, 401/403 and a token failure.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from aml_harness import FailingCredential, FakeCredential, azure_platform
from azure.ai.ml.constants._common import JOB_URI_FORMAT

from shared.core.errors import PermanentError, TransientError
from shared.core.platform import BatchDeploymentSpec, TrainingRequest, model_output
from testing.aml_service import FIXTURES, AmlService, fixture

FIXTURE_DIR = FIXTURES.parent
MONITOR = FIXTURES.parent.parent / "azure-monitor"

REQ = TrainingRequest(job_name="train-3f9a1c2b7d4e", experiment_name="reflex", data_name="sales",
                      data_version="7", mode="command", task="classification", label_column="churned",
                      compute="cpu-cluster", environment="azureml:reflex-train:3", tags={"reflex.trigger": "blob"})
DATA = "azureml://datastores/reflexdata/paths/sales/2024-01-01/"


@pytest.fixture
def svc() -> AmlService:
    return AmlService()


def _body(svc: AmlService, index: int = -1) -> dict:
    return svc.requests[index].body


# ------------------------------------------------------------------ data and training
def test_register_data_is_one_put_with_explicit_version_and_tags(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        asset = p.register_data(name="sales", version="7", path=DATA, tags={"reflex.data": DATA})
    assert svc.calls() == [("PUT", "/data/sales/versions/7")]
    props = _body(svc)["properties"]
    assert props["dataType"] == "uri_folder" and props["dataUri"] == DATA
    assert props["tags"] == {"reflex.data": DATA, "reflex.managed": "true"}
    assert (asset.name, asset.version, asset.path) == ("sales", "7", DATA)


def test_training_submission_costs_two_requests_with_a_pinned_environment(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        p.register_data(name="sales", version="7", path=DATA, tags={})
        job = p.submit_training(REQ)
    assert svc.calls() == [("PUT", "/data/sales/versions/7"), ("PUT", f"/jobs/{REQ.job_name}")]
    props = _body(svc)["properties"]
    assert props["jobType"] == "Command" and props["experimentName"] == "reflex"
    assert props["environmentId"].endswith("/environments/reflex-train/versions/3")
    assert props["computeId"].endswith("/computes/cpu-cluster")
    assert props["inputs"]["data"] == {"jobInputType": "uri_folder", "uri": svc.ws_path + "/data/sales/versions/7"}
    assert props["outputs"]["model"]["jobOutputType"] == "mlflow_model"
    assert "${{inputs.data}}" in props["command"] and "${{outputs.model}}" in props["command"]
    assert "--label churned" in props["command"] and "codeId" not in props
    assert props["tags"] == {"reflex.trigger": "blob", "reflex.managed": "true"}
    assert job.name == REQ.job_name and job.status == "NotStarted" and job.kind == "command"


def test_the_command_the_job_runs_is_one_train_py_accepts(svc: AmlService) -> None:
    """The command Azure ML runs (inputs and outputs resolved to paths) parses with train.py's own parser: a flag
    train.py does not know would fail every job at its first line, which no local run would show."""
    import shlex
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs" / "train"))
    try:
        import train
    finally:
        sys.path.pop(0)
    with azure_platform(svc) as p:
        p.register_data(name="sales", version="7", path=DATA, tags={})
        p.submit_training(REQ)
    command = _body(svc)["properties"]["command"]
    argv = shlex.split(command.replace("${{inputs.data}}", "/mnt/data").replace("${{outputs.model}}", "/mnt/model")
                       .replace("${{inputs.champion}}", "/mnt/champion"))
    assert argv[:2] == ["python", "train.py"]
    args = train.parse_args(argv[2:])
    assert (args.label, args.task, str(args.data), str(args.model_output)) == (
        REQ.label_column, REQ.task, "/mnt/data", "/mnt/model")


def test_code_asset_is_referenced_not_uploaded(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        p.submit_training(dataclasses.replace(REQ, code="azureml:reflex-train-code:2"))
        with pytest.raises(PermanentError, match="registered code asset"):
            p.submit_training(dataclasses.replace(REQ, job_name="other", code="./jobs/train"))
    assert svc.calls() == [("PUT", f"/jobs/{REQ.job_name}")]
    assert _body(svc)["properties"]["codeId"].endswith("/codes/reflex-train-code/versions/2")


def test_automl_submission_matches_the_published_automl_job_shape(svc: AmlService) -> None:
    published = fixture("Job/AutoMLJob/createOrUpdate.json")["parameters"]["body"]["properties"]
    with azure_platform(svc, data_type="mltable") as p:
        job = p.submit_training(dataclasses.replace(REQ, mode="automl", max_trials=5))
    assert svc.calls() == [("PUT", f"/jobs/{REQ.job_name}")]
    props = _body(svc)["properties"]
    assert props["jobType"] == published["jobType"] == "AutoML"
    details = props["taskDetails"]
    assert set(published["taskDetails"]) & set(details) >= {"targetColumnName", "taskType", "trainingData",
                                                             "limitSettings"}
    assert details["trainingData"]["jobInputType"] == published["taskDetails"]["trainingData"]["jobInputType"]
    assert details["taskType"] == "Classification" and details["targetColumnName"] == "churned"
    assert details["limitSettings"]["maxTrials"] == 5 and details["limitSettings"]["timeout"] == "PT1H"
    assert props["experimentName"] == "reflex" and job.kind == "automl"


def test_reused_job_name_answers_400_and_returns_the_existing_job(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        first = p.submit_training(REQ)
        svc.finish_job(REQ.job_name, "Running")
        again = p.submit_training(dataclasses.replace(REQ, compute="gpu-cluster"))  # body differs: 400 exists
    assert svc.calls() == [("PUT", f"/jobs/{REQ.job_name}"), ("PUT", f"/jobs/{REQ.job_name}"),
                           ("GET", f"/jobs/{REQ.job_name}")]
    assert first.name == again.name and again.status == "Running"


@pytest.mark.parametrize("change, message", [
    ({"job_name": "Train-ABC"}, "lower-case"),
    ({"environment": "azureml:reflex-train@latest"}, "pinned"),
    ({"environment": "reflex-train@latest"}, "pinned"),
    ({"experiment_name": ""}, "experiment_name"),
])
def test_trap_guards_send_nothing(svc: AmlService, change: dict, message: str) -> None:
    with azure_platform(svc) as p, pytest.raises(PermanentError, match=message):
        p.submit_training(dataclasses.replace(REQ, **change))
    assert svc.requests == []


def test_get_job_and_metrics_from_the_workspace_mlflow_server(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        assert p.get_job("nope") is None
        p.submit_training(REQ)
        svc.finish_job(REQ.job_name, "Completed", metrics={"auc": 0.91, "loss": 0.2})
        start = len(svc.requests)
        job = p.get_job(REQ.job_name)
        metrics = p.get_job_metrics(REQ.job_name)
        p.get_job_metrics(REQ.job_name)
        with pytest.raises(PermanentError, match="not found"):
            p.get_job_metrics("unknown-job")
    assert job.status == "Completed" and job.terminal and job.outputs["model"] == f"azureml://jobs/{REQ.job_name}/outputs/model/paths/"
    assert metrics == {"auc": 0.91, "loss": 0.2}
    mlflow = (f"{svc.location}.api.azureml.ms/mlflow/v1.0{svc.ws_path}/api/2.0/mlflow/runs/get")
    assert svc.calls(start) == [("GET", f"/jobs/{REQ.job_name}"), ("GET", ""), ("GET", mlflow), ("GET", mlflow),
                                ("GET", mlflow)]   # the workspace is read once per worker
    assert svc.requests[-2].query["run_id"] == [REQ.job_name]
    assert svc.requests[-2].headers["Authorization"] == "Bearer t"


def test_job_get_parses_the_published_example_verbatim(svc: AmlService) -> None:
    example = fixture("Job/CommandJob/get.json")["responses"]["200"]["body"]
    # the published example fills every id with the placeholder "string", which the SDK resolves as an ARM id
    for key, kind in (("codeId", "codes/c/versions/1"), ("environmentId", "environments/e/versions/1"),
                      ("computeId", "computes/cpu")):
        example["properties"][key] = f"{svc.ws_path}/{kind}"
    svc.resources["/jobs/published"] = example
    with azure_platform(svc) as p:
        job = p.get_job("published")
    assert job.status == "NotStarted" and job.experiment_name == "string" and job.kind == "command"


# ------------------------------------------------------------------ models
def _completed_job(svc: AmlService, p) -> None:
    p.submit_training(REQ)
    svc.finish_job(REQ.job_name)


def test_register_model_with_explicit_version(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        _completed_job(svc, p)
        start = len(svc.requests)
        model = p.register_model(name="churn", version="4", job_name=REQ.job_name, tags={"reflex.parent": "x"},
                                 properties={"auc": "0.91"})
        with pytest.raises(PermanentError, match="explicit"):
            p.register_model(name="churn", version="", job_name=REQ.job_name, tags={})
    # the SDK's own "evaluator" check lists the newest version; no container GET (version is explicit)
    assert svc.calls(start) == [("GET", "/models/churn/versions"), ("PUT", "/models/churn/versions/4")]
    props = svc.requests[start + 1].body["properties"]
    assert props["modelType"] == "mlflow_model"
    # the documented job-output form, which the SDK's own JOB_URI_REGEX_FORMAT and JOB_URI_FORMAT describe
    assert props["modelUri"] == JOB_URI_FORMAT.format(REQ.job_name, "model", "")
    assert props["properties"] == {"auc": "0.91"} and props["tags"]["reflex.managed"] == "true"
    assert model.ref == "churn:4" and model.job_name == REQ.job_name


def test_model_tags_update_puts_the_same_version_back(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        _completed_job(svc, p)
        p.register_model(name="churn", version="1", job_name=REQ.job_name, tags={"reflex.approval": "pending"})
        stored = dict(svc.resources["/models/churn/versions/1"]["properties"])
        start = len(svc.requests)
        updated = p.update_model_tags("churn", "1", set_tags={"reflex.champion": "true"},
                                      remove=("reflex.approval",))
        again = len(svc.requests)
        p.update_model_tags("churn", "1", set_tags={"reflex.champion": "true"})   # already so: nothing to write
        champion = p.find_champion("churn")
        with pytest.raises(PermanentError, match="not found"):
            p.update_model_tags("churn", "9", set_tags={"a": "b"})
    # GET and PUT of that version only: no partial update exists, and the SDK's models.create_or_update would
    # add its evaluator check's `$top=1` look-up of the newest version (azure-ai-ml 1.35.2 _model_operations.py)
    assert svc.calls(start)[:3] == [("GET", "/models/churn/versions/1"), ("PUT", "/models/churn/versions/1"),
                                    ("GET", "/models/churn/versions/1")]
    assert svc.calls(again)[1][1] == "/models/churn/versions"   # the second update was the GET alone
    put = svc.requests[start + 1].body["properties"]
    assert put["tags"] == {"reflex.managed": "true", "reflex.champion": "true"}
    assert put["modelUri"] == f"azureml://jobs/{REQ.job_name}/outputs/model/paths/"
    # the version goes back as the service sent it, the tags aside (REST Workspace/ModelVersion/createOrUpdate.json)
    assert {k: v for k, v in put.items() if k != "tags"} == {k: v for k, v in stored.items() if k != "tags"}
    assert updated.tags["reflex.champion"] == "true" and champion is not None and champion.version == "1"


# ------------------------------------------------------------------ online endpoints
def _serving(svc: AmlService, p, *deployments: str) -> None:
    _completed_job(svc, p)
    p.register_model(name="churn", version="1", job_name=REQ.job_name, tags={})
    p.begin_create_endpoint("churn-ep", tags={"reflex.model": "churn"})
    for d in deployments:
        p.begin_create_deployment("churn-ep", d, model="churn:1", instance_type="Standard_DS3_v2", instance_count=1)


def test_endpoint_create_is_get_then_put_and_never_resent(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        p.begin_create_endpoint("churn-ep", tags={"reflex.model": "churn"})
        created = svc.calls()
        put = _body(svc)
        p.begin_create_deployment("churn-ep", "blue", model="churn:1", instance_type="Standard_DS3_v2",
                                  instance_count=1)
        p.set_traffic("churn-ep", {"blue": 100})
        start = len(svc.requests)
        p.begin_create_endpoint("churn-ep")
        ep = p.get_endpoint("churn-ep")
    assert created == [("GET", "/onlineEndpoints/churn-ep"), ("GET", ""), ("PUT", "/onlineEndpoints/churn-ep")]
    assert put["properties"]["authMode"] == "Key" and put["location"] == svc.location
    assert put["tags"] == {"reflex.model": "churn", "reflex.managed": "true"}
    assert ("PUT", "/onlineEndpoints/churn-ep") not in svc.calls(start)
    assert ep.traffic == {"blue": 100}


def test_deployment_create_sends_model_reference_without_environment(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        _serving(svc, p)
        start = len(svc.requests)
        p.begin_create_deployment("churn-ep", "green", model="churn:1", instance_type="Standard_DS3_v2",
                                  instance_count=2, tags={"reflex.parent": "churn:1"})
        again = len(svc.requests)
        p.begin_create_deployment("churn-ep", "green", model="churn:1", instance_type="Standard_DS3_v2",
                                  instance_count=2)
        dep = p.get_deployment("churn-ep", "green")
        second = svc.calls(again)
        # what the SDK's own online_deployments.begin_create_or_update sends for the same deployment
        from azure.ai.ml.entities import ManagedOnlineDeployment

        p.ml.online_deployments.begin_create_or_update(ManagedOnlineDeployment(
            name="green", endpoint_name="churn-ep", model="azureml:churn:1", instance_type="Standard_DS3_v2",
            instance_count=2, tags={"reflex.parent": "churn:1", "reflex.managed": "true"}))
        sdk = svc.requests[-1]
    # the adapter's existence check and the PUT: not the SDK's endpoint GET before it, nor its workspace GET (the
    # location is read once per worker, here when the endpoint was created), nor its poller (azure-ai-ml 1.35.2
    # _online_deployment_operations.py begin_create_or_update)
    assert svc.calls(start)[:2] == [("GET", "/onlineEndpoints/churn-ep/deployments/green"),
                                    ("PUT", "/onlineEndpoints/churn-ep/deployments/green")]
    body = svc.requests[start + 1].body
    assert (sdk.method, sdk.path) == ("PUT", svc.requests[start + 1].path) and sdk.body == body
    assert body["properties"]["model"] == svc.ws_path + "/models/churn/versions/1"
    assert body["properties"]["instanceType"] == "Standard_DS3_v2" and body["sku"]["capacity"] == 2
    assert "environmentId" not in body["properties"] and "codeConfiguration" not in body["properties"]
    assert second[0] == ("GET", "/onlineEndpoints/churn-ep/deployments/green")
    assert ("PUT", "/onlineEndpoints/churn-ep/deployments/green") not in second
    assert (dep.model, dep.state, dep.instance_count) == ("churn:1", "Succeeded", 2)


def test_set_traffic_reads_modifies_and_writes_the_whole_endpoint(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        _serving(svc, p, "blue", "green")
        p.set_traffic("churn-ep", {"blue": 100})
        start = len(svc.requests)
        ep = p.set_traffic("churn-ep", {"blue": 100}, mirror={"green": 20})
        step = p.set_traffic("churn-ep", {"blue": 90, "green": 10})
    # one read is the endpoint GET and one deployments listing (the SDK's `get` would list them a second time,
    # azure-ai-ml 1.35.2 _online_endpoint_operations.get); the SDK's begin_create_or_update reads the workspace's
    # location before its PUT, which the adapter reads once per worker (the first set_traffic above did)
    assert svc.calls(start)[:3] == [("GET", "/onlineEndpoints/churn-ep"),
                                    ("GET", "/onlineEndpoints/churn-ep/deployments"),
                                    ("PUT", "/onlineEndpoints/churn-ep")]
    assert ("GET", "") not in svc.calls(start)
    mirror_put = svc.requests[start + 2].body
    assert mirror_put["properties"]["traffic"] == {"blue": 100}        # the SDK strips 0% entries
    assert mirror_put["properties"]["mirrorTraffic"] == {"green": 20}
    assert mirror_put["tags"] == {"reflex.model": "churn", "reflex.managed": "true"}   # nothing else lost
    last = _body(svc)["properties"]
    assert last["traffic"] == {"blue": 90, "green": 10} and last["mirrorTraffic"] == {}
    assert ep.traffic == {"blue": 100, "green": 0} and ep.mirror == {"green": 20}
    assert step.traffic == {"blue": 90, "green": 10} and step.mirror == {}


@pytest.mark.parametrize("traffic, mirror, message", [
    ({"blue": 60, "green": 30}, {}, "sums to 90"),
    ({"blue": 100}, {"green": 60}, "exceeds 50%"),
    ({"blue": 100}, {"blue": 10}, "live and mirrored"),
    ({"blue": 90, "red": 10}, {}, "no such deployment"),
])
def test_invalid_traffic_is_refused_before_anything_is_sent(svc: AmlService, traffic: dict, mirror: dict,
                                                            message: str) -> None:
    with azure_platform(svc) as p:
        _serving(svc, p, "blue", "green")
        start = len(svc.requests)
        with pytest.raises(PermanentError, match=message):
            p.set_traffic("churn-ep", traffic, mirror)
    assert [c for c in svc.calls(start) if c[0] != "GET"] == []


def test_traffic_to_a_deployment_still_creating_is_refused(svc: AmlService) -> None:
    svc.provisioning_seconds = 60
    with azure_platform(svc) as p:
        _serving(svc, p, "blue")
        with pytest.raises(PermanentError, match="Creating"):
            p.set_traffic("churn-ep", {"blue": 100})


def test_invoke_sets_the_deployment_header_per_call(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        _serving(svc, p, "blue", "green")
        p.set_traffic("churn-ep", {"blue": 100})
        start = len(svc.requests)
        a = p.invoke("churn-ep", "green", {"data": [[1, 2]]})
        b = p.invoke("churn-ep", "blue", {"data": [[1, 2]]})
        c = p.invoke("churn-ep", "green", {"data": [[1, 2]]})
    scoring = [r for r in svc.requests[start:] if r.host.endswith("inference.ml.azure.com")]
    assert [r.headers["azureml-model-deployment"] for r in scoring] == ["green", "blue", "green"]
    assert all(r.headers["Authorization"] == "Bearer pk-churn-ep" for r in scoring)
    assert scoring[0].body == {"data": [[1, 2]]}
    assert [json.loads(x.body)["deployment"] for x in (a, b, c)] == ["green", "blue", "green"]
    assert ("POST", "/onlineEndpoints/churn-ep/listKeys") in svc.calls(start)
    assert len(svc.requests) - start == 2 + 3     # endpoint GET + listKeys once, then one POST per call


def test_delete_refused_under_traffic_and_allowed_at_zero(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        _serving(svc, p, "blue", "green")
        p.set_traffic("churn-ep", {"blue": 100}, mirror={"green": 10})
        for name in ("blue", "green"):
            with pytest.raises(PermanentError, match="receives traffic"):
                p.begin_delete_deployment("churn-ep", name)
        assert not any(m == "DELETE" for m, _ in svc.calls())
        p.set_traffic("churn-ep", {"blue": 100})
        start = len(svc.requests)
        p.begin_delete_deployment("churn-ep", "green")
        deleted = svc.calls(start)
        p.begin_delete_deployment("churn-ep", "green")       # already gone: nothing to do
        assert p.get_deployment("churn-ep", "green") is None
    assert deleted == [("GET", "/onlineEndpoints/churn-ep"), ("GET", "/onlineEndpoints/churn-ep/deployments"),
                       ("DELETE", "/onlineEndpoints/churn-ep/deployments/green")]


def test_logs_metrics_and_quota(svc: AmlService) -> None:
    svc.monitor[("churn-ep", "green")] = {"requests_by_class": {"2xx": 95, "4xx": 3, "5xx": 2}, "latency_ms": 40.0,
                                          "latency_p50_ms": 31.0}
    svc.usages["standardDSv2Family"] = (52, 64)
    with azure_platform(svc) as p:
        _serving(svc, p, "green")
        start = len(svc.requests)
        logs = p.get_deployment_logs("churn-ep", "green", lines=50)
        metrics = p.get_deployment_metrics("churn-ep", "green", window_seconds=600)
        quota = p.check_quota("Standard_DS3_v2", 2)
        with pytest.raises(PermanentError, match="unknown instance type"):
            p.check_quota("Standard_Nope", 1)
        with pytest.raises(PermanentError, match="does not exist"):
            p.get_deployment_logs("churn-ep", "nope")
    calls = svc.calls(start)
    assert calls[0] == ("POST", "/onlineEndpoints/churn-ep/deployments/green/getLogs")
    assert svc.requests[start].body["tail"] == 50 and "green" in logs
    metric_requests = [r for r in svc.requests[start:] if "Microsoft.Insights/metrics" in r.path]
    assert len(metric_requests) == 2
    assert metric_requests[0].path == svc.ws_path + "/onlineEndpoints/churn-ep/providers/Microsoft.Insights/metrics"
    assert metric_requests[0].query["metricnames"] == ["RequestsPerMinute"]
    assert metric_requests[0].query["aggregation"] == ["Average"]     # what the page lists: no Total
    assert metric_requests[0].query["$filter"] == ["deployment eq 'green' and statusCodeClass eq '*'"]
    assert metric_requests[1].query["metricnames"] == ["RequestLatency,RequestLatency_P50"]   # one query for both
    assert (metrics.requests, metrics.errors, metrics.latency_ms, metrics.latency_p50_ms) == (100, 2, 40.0, 31.0)
    # 2 x 4 cores plus the 20% upgrade reserve, in whole instances: 3 x 4 = 12 cores
    assert (quota.family, quota.needed, quota.used, quota.limit, quota.ok) == ("standardDSv2Family", 12, 52, 64, True)
    loc = f"/subscriptions/{svc.subscription}/providers/Microsoft.MachineLearningServices/locations/{svc.location}"
    assert ("GET", f"{loc}/vmSizes") in calls and ("GET", f"{loc}/usages") in calls


# ------------------------------------------------------------------ batch
def test_batch_deployment_and_invoke(svc: AmlService) -> None:
    spec = BatchDeploymentSpec(endpoint="churn-batch", deployment="v1", model="churn:1", compute="batch-cluster",
                               mini_batch_size=5, instance_count=2)
    with azure_platform(svc) as p:
        _completed_job(svc, p)
        p.register_model(name="churn", version="1", job_name=REQ.job_name, tags={})
        start = len(svc.requests)
        p.begin_ensure_batch_deployment(spec)
        first = svc.calls(start)
        dep_body = svc.requests[start + len(first) - 1].body
        p.begin_ensure_batch_deployment(spec)       # deployment succeeded: make it the default
        default_body = _body(svc)
        p.begin_ensure_batch_deployment(spec)       # nothing left to do: reads only
        dep = p.get_batch_deployment("churn-batch", "v1")
        start = len(svc.requests)
        job = p.invoke_batch("churn-batch", "v1", input_path="azureml://datastores/reflexscoring/paths/b1/",
                             output_path="azureml://datastores/reflexoutputs/paths/score-1/predictions.csv",
                             job_name="score-1")
        invoked = svc.calls(start)
        post = svc.requests[-1]
        again = p.invoke_batch("churn-batch", "v1", input_path="x", output_path="y", job_name="score-1")
    assert first == [("GET", "/batchEndpoints/churn-batch"), ("GET", ""), ("PUT", "/batchEndpoints/churn-batch"),
                     ("GET", "/batchEndpoints/churn-batch"), ("GET", "/batchEndpoints/churn-batch/deployments/v1"),
                     ("GET", "/batchEndpoints/churn-batch"), ("GET", ""),
                     ("PUT", "/batchEndpoints/churn-batch/deployments/v1")]
    props = dep_body["properties"]
    assert props["model"] == {"referenceType": "Id", "assetId": svc.ws_path + "/models/churn/versions/1"}
    assert props["compute"].endswith("/computes/batch-cluster") and props["miniBatchSize"] == 5
    assert props["resources"]["instanceCount"] == 2
    assert default_body["properties"]["defaults"] == {"deploymentName": "v1"}
    assert dep is not None and (dep.model, dep.state) == ("churn:1", "Succeeded")
    assert invoked == [("GET", "/jobs/score-1"), ("GET", "/batchEndpoints/churn-batch/deployments"),
                       ("GET", "/batchEndpoints/churn-batch"),
                       ("POST", "churn-batch.eastus.inference.ml.azure.com/jobs")]
    assert post.headers["azureml-model-deployment"] == "v1" and post.body["properties"]["name"] == "score-1"
    assert post.body["properties"]["outputData"]["score"] == {
        "jobOutputType": "UriFile", "uri": "azureml://datastores/reflexoutputs/paths/score-1/predictions.csv"}
    assert post.body["properties"]["inputData"]["UriFolder"]["uri"] == "azureml://datastores/reflexscoring/paths/b1/"
    assert job.name == again.name == "score-1" and job.kind == again.kind == "batch"
    from azure.ai.ml.constants._endpoint import EndpointInvokeFields
    assert EndpointInvokeFields.DEFAULT_HEADER == {"Content-Type": "application/json"}   # no leak


# ------------------------------------------------------------------ errors
def test_traffic_update_refused_with_409_during_another_update_is_transient(svc: AmlService) -> None:
    """A 409 on the endpoint PUT cannot mean "already exists" there: it is an update in flight, retried later
    (mapped as a permanent error it would roll a healthy canary back)."""
    with azure_platform(svc) as p:
        _serving(svc, p, "blue", "green")
        p.set_traffic("churn-ep", {"blue": 100})
        svc.fail("PUT", r"/onlineEndpoints/churn-ep$", 409, message="Conflicting operation in progress")
        with pytest.raises(TransientError, match="409") as caught:
            p.set_traffic("churn-ep", {"blue": 90, "green": 10})
        assert caught.value.retry_after == 30.0
        assert p.set_traffic("churn-ep", {"blue": 90, "green": 10}).traffic == {"blue": 90, "green": 10}


def test_404_is_absent(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        assert p.get_data("sales", "1") is None
        assert p.get_model("churn", "1") is None
        assert p.get_endpoint("churn-ep") is None
        assert p.get_deployment("churn-ep", "blue") is None
        assert p.get_batch_deployment("b", "v1") is None
        assert p.list_models("churn") == [] and p.find_champion("churn") is None
        p.begin_delete_deployment("churn-ep", "blue")
    assert all(m == "GET" for m, _ in svc.calls())


def test_409_already_exists_is_idempotent_success_when_reflex_created_it_meanwhile(svc: AmlService) -> None:
    """Another Reflex call created the endpoint between our GET and PUT: the re-read finds it, tagged, here."""
    with azure_platform(svc) as p:
        p.begin_create_endpoint("churn-ep")
        svc.fail("GET", r"/onlineEndpoints/churn-ep$", 404)       # our first read raced the other creation
        svc.fail("PUT", r"/onlineEndpoints/churn-ep$", 409, message="Endpoint churn-ep already exists.")
        start = len(svc.requests)
        p.begin_create_endpoint("churn-ep")
        again = svc.calls(start)
        # read (404), PUT (409 "already exists"), read again: found here, tagged Reflex's: success
        assert again.count(("GET", "/onlineEndpoints/churn-ep")) == 2 and ("PUT", "/onlineEndpoints/churn-ep") in again
        _completed_job(svc, p)
        p.register_model(name="churn", version="1", job_name=REQ.job_name, tags={})
        svc.fail("PUT", r"/models/churn/versions/1$", 409, message="Model version already exists")
        model = p.register_model(name="churn", version="1", job_name=REQ.job_name, tags={})
    assert model.ref == "churn:1" and svc.calls()[-1] == ("GET", "/models/churn/versions/1")


def _name_taken() -> dict:
    return json.loads((FIXTURE_DIR / "errors" / "endpoint-name-taken.json").read_text())


@pytest.mark.parametrize("taken", ["region", "conflict"])
def test_online_endpoint_name_taken_in_the_region_is_permanent_and_names_the_setting(svc: AmlService,
                                                                                      taken: str) -> None:
    """Names are unique per region: the service's 400 (fixture), or a 409 "already exists" with nothing of that
    name in this workspace, is never success."""
    if taken == "region":
        answer = _name_taken()
        svc.fail("PUT", r"/onlineEndpoints/shared-ep$", answer["status"], body=answer["body"])
    else:
        svc.fail("PUT", r"/onlineEndpoints/shared-ep$", 409, message="Endpoint shared-ep already exists.")
    with azure_platform(svc) as p, pytest.raises(PermanentError, match="REFLEX_ENDPOINTS") as caught:
        p.begin_create_endpoint("shared-ep")
    assert "unique per region" in str(caught.value)
    assert svc.calls() == [("GET", "/onlineEndpoints/shared-ep"), ("GET", ""), ("PUT", "/onlineEndpoints/shared-ep"),
                           ("GET", "/onlineEndpoints/shared-ep")]


def test_batch_endpoint_name_taken_in_the_region_is_permanent_and_names_the_setting(svc: AmlService) -> None:
    answer = _name_taken()
    svc.fail("PUT", r"/batchEndpoints/shared-batch$", answer["status"], body=answer["body"])
    spec = BatchDeploymentSpec(endpoint="shared-batch", deployment="v1", model="churn:1", compute="batch-cluster")
    with azure_platform(svc) as p, pytest.raises(PermanentError, match="REFLEX_BATCH_ENDPOINT"):
        p.begin_ensure_batch_deployment(spec)
    assert not any(path.startswith("/batchEndpoints/shared-batch/deployments") for _, path in svc.calls())


def test_endpoints_reflex_did_not_create_are_never_redefined(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        p.begin_create_endpoint("theirs")
        p.begin_ensure_batch_deployment(BatchDeploymentSpec("their-batch", "v1", "churn:1", "batch-cluster"))
        for key in ("/onlineendpoints/theirs", "/batchendpoints/their-batch"):
            svc.resources[key]["tags"] = {"owner": "someone else"}
        start = len(svc.requests)
        with pytest.raises(PermanentError, match="REFLEX_ENDPOINTS"):
            p.begin_create_endpoint("theirs")
        with pytest.raises(PermanentError, match="REFLEX_BATCH_ENDPOINT"):
            p.begin_ensure_batch_deployment(BatchDeploymentSpec("their-batch", "v1", "churn:1", "batch-cluster"))
    assert {m for m, _ in svc.calls(start)} == {"GET"}         # read, refused: nothing written


def test_no_operation_writes_a_compute(svc: AmlService) -> None:
    """Computes are named, never created or redefined: a compute Reflex did not create stays as it is."""
    spec = BatchDeploymentSpec("churn-batch", "v1", "churn:1", "batch-cluster")
    with azure_platform(svc) as p:
        _serving(svc, p, "blue")
        p.submit_training(dataclasses.replace(REQ, job_name="automl-1", mode="automl"))
        for _ in range(3):
            p.begin_ensure_batch_deployment(spec)
    assert not [c for c in svc.calls() if "/computes" in c[1].lower() and c[0] != "GET"]


def test_429_with_retry_after_is_transient_with_the_server_hint(svc: AmlService) -> None:
    svc.fail("PUT", r"/jobs/", 429, headers={"Retry-After": "17"})
    with azure_platform(svc) as p, pytest.raises(TransientError) as caught:
        p.submit_training(REQ)
    assert caught.value.retry_after == 17.0 and REQ.job_name in str(caught.value)
    assert len(svc.requests) == 1


@pytest.mark.parametrize("op", ["get_job", "get_endpoint", "metrics"])
def test_503_is_transient(svc: AmlService, op: str) -> None:
    svc.fail("*", r".", 503)
    with azure_platform(svc) as p, pytest.raises(TransientError, match="503"):
        {"get_job": lambda: p.get_job("j"), "get_endpoint": lambda: p.get_endpoint("e"),
         "metrics": lambda: p.get_deployment_metrics("e", "d", window_seconds=60)}[op]()


def test_connection_failure_is_transient(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        p._scoring["e"] = ("https://e.nowhere.example/score", "Bearer k")
        with pytest.raises(TransientError, match="connection failed"):
            p.invoke("e", "blue", {"data": []})


@pytest.mark.parametrize("status, message", [(401, "authentication failed"), (403, "forbidden"),
                                             (400, "rejected with 400")])
def test_auth_and_validation_failures_are_permanent_and_name_the_resource(svc: AmlService, status: int,
                                                                          message: str) -> None:
    svc.fail("PUT", r"/data/", status)
    with azure_platform(svc) as p, pytest.raises(PermanentError, match=message) as caught:
        p.register_data(name="sales", version="7", path=DATA, tags={})
    assert "data asset sales:7" in str(caught.value)


def test_token_failure_is_permanent_and_sends_nothing(svc: AmlService) -> None:
    with azure_platform(svc, credential=FailingCredential()) as p:
        with pytest.raises(PermanentError, match="job train-3f9a1c2b7d4e: authentication failed"):
            p.submit_training(REQ)
        with pytest.raises(PermanentError, match="authentication failed"):
            p.get_deployment_metrics("e", "d", window_seconds=60)
    assert svc.requests == []


def test_tokens_are_asked_for_the_right_audiences(svc: AmlService) -> None:
    cred = FakeCredential()
    with azure_platform(svc, credential=cred) as p:
        p.get_job("j")
        p.submit_training(REQ)
        p.get_job_metrics(REQ.job_name)
    assert set(cred.scopes) == {"https://management.azure.com/.default"}


# ------------------------------------------------------------------ AutoML output
def test_automl_job_declares_best_model_and_is_registered_from_it(svc: AmlService) -> None:
    """AutoML's model is `outputs.best_model` (type mlflow_model, AutoML job YAML reference), not `model`."""
    request = dataclasses.replace(REQ, mode="automl")
    with azure_platform(svc, data_type="mltable") as p:
        p.submit_training(request)
        outputs = _body(svc)["properties"]["outputs"]
        svc.finish_job(REQ.job_name)
        job = p.get_job(REQ.job_name)
        model = p.register_model(name="churn", version="1", job_name=job.name, output_name=model_output(job.kind),
                                 tags={})
    assert outputs == {"best_model": {"jobOutputType": "mlflow_model"}}
    assert job.kind == "automl" and set(job.outputs) == {"best_model"}
    assert _body(svc)["properties"]["modelUri"] == f"azureml://jobs/{REQ.job_name}/outputs/best_model/paths/"
    assert model.job_name == REQ.job_name


# ------------------------------------------------------------------ Azure Monitor
def test_published_metrics_example_reads_through_the_real_client(svc: AmlService) -> None:
    """The REST example (tests/fixtures/azure-monitor/GetMetric.json), parsed by azure-monitor-query: a minute
    of `count: 0` without `average` adds nothing, a point adds average x count."""
    published = json.loads((MONITOR / "GetMetric.json").read_text())["responses"]["200"]["body"]
    svc.monitor_answers["RequestsPerMinute"] = published
    with azure_platform(svc) as p:
        metrics = p.get_deployment_metrics("churn-ep", "green", window_seconds=600)
    assert (metrics.requests, metrics.errors, metrics.has_data) == (245, 0, True)


def test_a_missing_series_is_no_data_yet_not_zero_requests(svc: AmlService) -> None:
    published = json.loads((MONITOR / "GetMetric.json").read_text())["responses"]["200"]["body"]
    for series in published["value"][0]["timeseries"]:           # every minute without samples
        series["data"] = [{"timeStamp": d["timeStamp"], "count": 0.0} for d in series["data"]]
    with azure_platform(svc) as p:
        nothing = p.get_deployment_metrics("churn-ep", "green", window_seconds=600)   # no series at all
        svc.monitor_answers["RequestsPerMinute"] = published
        empty = p.get_deployment_metrics("churn-ep", "green", window_seconds=600)     # series, no values
        svc.monitor_answers.clear()
        svc.monitor[("churn-ep", "green")] = {"requests_by_class": {"2xx": 7}, "latency_ms": 12.0}
        some = p.get_deployment_metrics("churn-ep", "green", window_seconds=600)
    assert (nothing.requests, nothing.has_data, nothing.latency_ms) == (0, False, None)
    assert (empty.requests, empty.has_data) == (0, False)
    assert (some.requests, some.errors, some.has_data, some.latency_ms) == (7, 0, True, 12.0)


def _minutes(metric: str, unit: str, points: list[tuple[str, float]], **dimensions: str) -> dict[str, Any]:
    """One metric of a Metrics - List answer in the published example's shape (GetMetric.json): per-minute points
    with `average` and `count`, dimension names lower-cased in `metadatavalues`."""
    meta = [{"name": {"value": k.lower(), "localizedValue": k}, "value": v} for k, v in dimensions.items()]
    return {"id": f"x/providers/Microsoft.Insights/metrics/{metric}", "type": "Microsoft.Insights/metrics",
            "name": {"value": metric, "localizedValue": metric}, "unit": unit, "errorCode": "Success",
            "timeseries": [{"metadatavalues": meta,
                            "data": [{"timeStamp": at, "average": v, "count": 1.0} for at, v in points]}]}


def test_a_minute_with_only_the_smoke_request_weighs_one_request_not_a_minute_of_traffic(svc: AmlService) -> None:
    """#18.6: the smoke test's request alone in its minute (3 s, cold) and a minute of 99 requests at 100 ms (median
    90 ms): the window's latency is the requests' mean and median, not the mean of two minutes (1.55 s)."""
    def answer(*metrics: dict[str, Any]) -> dict[str, Any]:
        return {"cost": 0, "timespan": "", "interval": "PT1M", "namespace": "x", "resourceregion": "eastus",
                "value": list(metrics)}

    minutes = ("2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z")
    svc.monitor_answers["RequestsPerMinute"] = answer(_minutes(
        "RequestsPerMinute", "Count", [(minutes[0], 1.0), (minutes[1], 99.0)], deployment="green",
        statusCodeClass="2xx"))
    svc.monitor_answers["RequestLatency"] = answer(
        _minutes("RequestLatency", "Milliseconds", [(minutes[0], 3000.0), (minutes[1], 100.0)], deployment="green"),
        _minutes("RequestLatency_P50", "Milliseconds", [(minutes[0], 3000.0), (minutes[1], 90.0)],
                 deployment="green"))
    with azure_platform(svc) as p:
        metrics = p.get_deployment_metrics("churn-ep", "green", window_seconds=120)
    assert metrics.requests == 100
    assert metrics.latency_ms == pytest.approx((3000.0 + 99 * 100.0) / 100)
    assert metrics.latency_p50_ms == pytest.approx((3000.0 + 99 * 90.0) / 100)


# ------------------------------------------------------------------ quota
@pytest.mark.parametrize("used, ok", [(16, True), (17, False), (24, False)])
def test_quota_keeps_the_20_percent_upgrade_reserve(svc: AmlService, used: int, ok: bool) -> None:
    """"if you request 10 instances in a deployment, you must have a quota for 12" (how-to-manage-quotas):
    10 x Standard_DS3_v2 (4 cores) needs 48 cores, so 40 free cores (exactly 10 instances) is not enough."""
    svc.usages["standardDSv2Family"] = (used, 64)
    with azure_platform(svc) as p:
        quota = p.check_quota("Standard_DS3_v2", 10)
    assert (quota.needed, quota.ok) == (48, ok)
