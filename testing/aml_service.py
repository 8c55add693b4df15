"""An HTTP-level stand-in for the Azure ML service, for contract tests and the request-count benchmark.

Why HTTP and not a fake client: the point of `shared/adapters/azureml/` is what the real `azure-ai-ml` SDK puts on the
wire and how our code handles what comes back. So the SDK runs unchanged and `responses` intercepts its
`requests` transport; this module answers like the service does, from the service's published REST examples
(tests/fixtures/aml-rest, api-version 2025-12-01, provenance in its README): the example body is the template
(`systemData`, the envelope fields, read-only shapes such as `listKeys` and `getLogs`), the request's own fields
are echoed back, and the service-filled fields (provisioningState, status, scoringUri, flavors) are set as the
service documents them. It keeps state, so a protocol test can register, read back, shift traffic and delete.

Service rules it enforces (each one documented, see ../shared/reference/azure-ai-ml.md): a job PUT that
changes an existing job's immutable fields answers 400 UserError "already exists"; unknown resources answer 404
with the ARM error body; a deployment with live traffic cannot be deleted (400); an endpoint's traffic must sum to
0 or 100 (400). Faults (429 with Retry-After, 503, 409, a token failure) are injected per request pattern.

Every request is recorded (`requests`), with the JSON body parsed, so tests assert method, path and body fields,
and count requests per operation. Nothing here imports azure.ai.ml.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

__all__ = ["AmlService", "Recorded", "FIXTURES", "fixture"]

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "aml-rest" / "2025-12-01"
ARM = "https://management.azure.com"
MUTABLE_JOB_FIELDS = {"description", "tags", "displayName", "properties", "isArchived"}


def fixture(relpath: str) -> dict[str, Any]:
    """One published example (request parameters and responses by status code)."""
    return json.loads((FIXTURES / relpath).read_text())


def _template(relpath: str, status: str = "200") -> dict[str, Any]:
    return copy.deepcopy(fixture(relpath)["responses"][status]["body"])


@dataclass
class Recorded:
    method: str
    url: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]

    @property
    def host(self) -> str:
        return urlparse(self.url).netloc


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    times: int


@dataclass
class AmlService:
    """Stateful Azure ML REST stand-in. `install(rsps)` routes every https request of a `responses` mock here."""

    subscription: str = "00000000-1111-2222-3333-444444444444"
    resource_group: str = "rg-reflex"
    workspace: str = "ws-reflex"
    location: str = "eastus"
    clock: Callable[[], float] = time.time
    provisioning_seconds: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready_at: dict[str, tuple[float, str]] = field(default_factory=dict)
    failing_deployments: set[str] = field(default_factory=set)
    mlflow_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    run_details: dict[str, dict[str, Any]] = field(default_factory=dict)
    monitor: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    monitor_answers: dict[str, dict[str, Any]] = field(default_factory=dict)   # metric name -> verbatim body
    usages: dict[str, tuple[int, int]] = field(default_factory=lambda: {
        "standardDSv2Family": (0, 64), "standardFSv2Family": (0, 64)})
    vm_sizes: dict[str, tuple[int, str]] = field(default_factory=lambda: {
        "Standard_DS2_v2": (2, "standardDSv2Family"), "Standard_DS3_v2": (4, "standardDSv2Family"),
        "Standard_DS4_v2": (8, "standardDSv2Family"), "Standard_F4s_v2": (4, "standardFSv2Family")})
    responder: Callable[[str, str, Any], tuple[int, str]] = field(
        default=lambda ep, dep, body: (200, json.dumps({"deployment": dep, "n": len((body or {}).get("data", []))})))
    _faults: list[_Fault] = field(default_factory=list)

    # ------------------------------------------------------------------ wiring
    @property
    def ws_path(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
                "Microsoft.MachineLearningServices/workspaces/" + self.workspace)

    def install(self, rsps: Any) -> None:
        for method in ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"):
            rsps.add_callback(method, re.compile(r"https?://.*"), callback=self._handle)

    def fail(self, method: str, path_regex: str, status: int, *, times: int = 1, code: str = "",
             message: str = "", headers: Mapping[str, str] | None = None,
             body: Mapping[str, Any] | None = None) -> None:
        """Answer the next `times` matching requests with `status` and an ARM error body (or `body` verbatim)."""
        if body is None:
            body = {"error": {"code": code or {429: "TooManyRequests", 503: "ServiceUnavailable", 409: "Conflict",
                                              401: "InvalidAuthenticationToken", 403: "AuthorizationFailed",
                                              400: "UserError", 404: "ResourceNotFound"}.get(status, "Error"),
                              "message": message or f"injected {status}"}}
        self._faults.append(_Fault(method, re.compile(path_regex), status, dict(headers or {}), dict(body), times))

    def calls(self, since: int = 0) -> list[tuple[str, str]]:
        """(method, path without the workspace prefix) of the requests recorded after index `since`."""
        out = []
        for r in self.requests[since:]:
            path = r.path[len(self.ws_path):] if r.path.startswith(self.ws_path) else r.path
            out.append((r.method, path if r.host == "management.azure.com" else f"{r.host}{path}"))
        return out

    # ------------------------------------------------------------------ helpers
    def _arm_id(self, rel: str) -> str:
        return self.ws_path + rel

    def _state(self, key: str) -> str:
        ready, outcome = self.ready_at.get(key, (0.0, "Succeeded"))
        return outcome if self.clock() >= ready else "Creating"

    def _begin(self, key: str, outcome: str = "Succeeded") -> None:
        self.ready_at[key] = (self.clock() + self.provisioning_seconds, outcome)

    def _envelope(self, rel: str, name: str, kind: str, template: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in template.items() if k in ("systemData",)}
        body.update(id=self._arm_id(rel), name=name, type=f"Microsoft.MachineLearningServices/workspaces/{kind}")
        return body

    @staticmethod
    def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        return status, {"content-type": "application/json", **(headers or {})}, json.dumps(body)

    def _not_found(self, what: str) -> tuple[int, dict[str, str], str]:
        return self._json(404, {"error": {"code": "UserError", "message": f"{what} could not be found.",
                                          "details": [], "innerError": {"code": "NotFoundError"}}})

    def _user_error(self, message: str, status: int = 400) -> tuple[int, dict[str, str], str]:
        return self._json(status, {"error": {"code": "UserError", "message": message}})

    # ------------------------------------------------------------------ dispatch
    def _handle(self, request: Any) -> tuple[int, dict[str, str], str]:
        url = urlparse(request.url)
        raw = request.body
        if isinstance(raw, bytes):
            raw = raw.decode()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        rec = Recorded(request.method, request.url, unquote(url.path), parse_qs(url.query), body,
                       dict(request.headers))
        self.requests.append(rec)
        for fault in self._faults:
            if fault.times > 0 and fault.method in (rec.method, "*") and fault.pattern.search(rec.path):
                fault.times -= 1
                return self._json(fault.status, fault.body, fault.headers)
        host = url.netloc
        if host == "management.azure.com":
            return self._arm(rec)
        if host.endswith(".inference.ml.azure.com"):
            return self._scoring(rec, host.split(".")[0])
        if host.endswith(".api.azureml.ms") and "/mlflow/" in rec.path:
            return self._mlflow(rec)
        if host.endswith(".api.azureml.ms") and rec.path.startswith("/history/v1.0/"):
            return self._run_details(rec)
        import requests

        raise requests.exceptions.ConnectionError(f"cannot connect to {host} (no such host in the stand-in)")

    def _arm(self, rec: Recorded) -> tuple[int, dict[str, str], str]:
        path = rec.path
        if "/providers/Microsoft.Insights/metrics" in path:
            return self._metrics(rec)
        loc = re.fullmatch(rf"/subscriptions/{self.subscription}/providers/Microsoft\.MachineLearningServices/"
                           r"locations/([^/]+)/(usages|vmSizes)", path)
        if loc:
            return self._usages() if loc.group(2) == "usages" else self._sizes()
        if not path.lower().startswith(self.ws_path.lower()):
            return self._not_found(path)
        rel = path[len(self.ws_path):]
        if rel == "":
            return self._workspace()
        for pattern, handler in self._routes():
            m = re.fullmatch(pattern, rel)
            if m:
                return handler(rec, rel, *m.groups())
        return self._json(599, {"error": {"code": "NoRoute", "message": f"no route for {rec.method} {rel}"}})

    def _routes(self) -> list[tuple[str, Callable[..., tuple[int, dict[str, str], str]]]]:
        return [
            (r"/data/([^/]+)/versions/([^/]+)", self._data_version),
            (r"/jobs/([^/]+)", self._job),
            (r"/models/([^/]+)/versions/([^/]+)", self._model_version),
            (r"/models/([^/]+)/versions", self._model_list),
            (r"/models/([^/]+)", self._model_container),
            (r"/onlineEndpoints/([^/]+)", self._online_endpoint),
            (r"/onlineEndpoints/([^/]+)/listKeys", self._list_keys),
            (r"/onlineEndpoints/([^/]+)/deployments", self._online_deployment_list),
            (r"/onlineEndpoints/([^/]+)/deployments/([^/]+)", self._online_deployment),
            (r"/onlineEndpoints/([^/]+)/deployments/([^/]+)/getLogs", self._get_logs),
            (r"/batchEndpoints/([^/]+)", self._batch_endpoint),
            (r"/batchEndpoints/([^/]+)/deployments", self._batch_deployment_list),
            (r"/batchEndpoints/([^/]+)/deployments/([^/]+)", self._batch_deployment),
        ]

    # ------------------------------------------------------------------ workspace, quota
    def _workspace(self) -> tuple[int, dict[str, str], str]:
        body = _template("Workspace/get.json")
        body.update(id=self.ws_path, name=self.workspace, location=self.location)
        body["properties"]["discoveryUrl"] = f"https://{self.location}.api.azureml.ms/discovery"
        body["properties"]["mlFlowTrackingUri"] = f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0{self.ws_path}"
        return self._json(200, body)

    def _usages(self) -> tuple[int, dict[str, str], str]:
        value = [{"id": f"/subscriptions/{self.subscription}/providers/Microsoft.MachineLearningServices/"
                        f"locations/{self.location}/usages/{fam}",
                  "amlWorkspaceLocation": self.location, "type": "Microsoft.MachineLearningServices/vmFamily",
                  "unit": "Count", "currentValue": used, "limit": limit,
                  "name": {"value": fam, "localizedValue": fam}} for fam, (used, limit) in self.usages.items()]
        value.append({"id": "total", "amlWorkspaceLocation": self.location, "unit": "Count",
                      "type": "Microsoft.MachineLearningServices/totalCores", "currentValue": 0, "limit": 100,
                      "name": {"value": "Total Cluster Dedicated Regional vCPUs",
                               "localizedValue": "Total Cluster Dedicated Regional vCPUs"}})
        return self._json(200, {"value": value})

    def _sizes(self) -> tuple[int, dict[str, str], str]:
        value = [{"name": n, "family": fam, "vCPUs": cores, "gpus": 0, "osVhdSizeMB": 1047552,
                  "maxResourceVolumeMB": 28672, "memoryGB": cores * 3.5, "lowPriorityCapable": True,
                  "premiumIO": True, "supportedComputeTypes": ["AmlCompute", "ComputeInstance"]}
                 for n, (cores, fam) in self.vm_sizes.items()]
        return self._json(200, {"value": value})

    # ------------------------------------------------------------------ data
    def _data_version(self, rec: Recorded, rel: str, name: str, version: str) -> tuple[int, dict[str, str], str]:
        key = rel.lower()
        if rec.method == "GET":
            found = self.resources.get(key)
            return self._json(200, found) if found else self._not_found(f"data {name}:{version}")
        if rec.method != "PUT":
            return self._json(405, {})
        existing = self.resources.get(key)
        props = rec.body["properties"]
        if existing and existing["properties"]["dataUri"] != props.get("dataUri"):
            return self._user_error(f"Data version {name}:{version} already exists with a different dataUri.")
        body = self._envelope(rel, version, "data/versions", _template("Workspace/DataVersionBase/createOrUpdate.json"))
        body["properties"] = {"description": None, "tags": {}, "properties": {}, "isAnonymous": False,
                              "isArchived": False, **props}
        self.resources[key] = body
        return self._json(200 if existing else 201, body)

    # ------------------------------------------------------------------ jobs
    def _job(self, rec: Recorded, rel: str, name: str) -> tuple[int, dict[str, str], str]:
        key = rel.lower()
        existing = self.resources.get(key)
        if rec.method == "GET":
            return self._json(200, existing) if existing else self._not_found(f"job {name}")
        if rec.method != "PUT":
            return self._json(405, {})
        props = rec.body["properties"]
        if existing:
            old = {k: v for k, v in existing["properties"].items() if k in props and k not in MUTABLE_JOB_FIELDS}
            new = {k: v for k, v in props.items() if k in old}
            if old != new or set(props) - MUTABLE_JOB_FIELDS - set(existing["properties"]):
                return self._user_error(
                    "A job with this name already exists. If you are trying to create a new job, use a different "
                    "name. If you are trying to update an existing job, the existing job's Settings, Inputs, "
                    "Outputs, Jobs, InputBindings, OutputBindings cannot be changed. Only description, tags, "
                    "displayName, properties, and isArchived can be updated.")
            existing["properties"].update({k: v for k, v in props.items() if k in MUTABLE_JOB_FIELDS})
            return self._json(200, existing)
        fixture_name = "Job/AutoMLJob/createOrUpdate.json" if props.get("jobType") == "AutoML" \
            else "Job/CommandJob/createOrUpdate.json"
        body = self._envelope(rel, name, "jobs", _template(fixture_name, "201"))
        body["properties"] = {**copy.deepcopy(props), "status": "NotStarted",
                              "services": {"Studio": {"jobServiceType": "Studio",
                                                      "endpoint": f"https://ml.azure.com/runs/{name}"}}}
        self.resources[key] = body
        return self._json(201, body)

    def finish_job(self, name: str, status: str = "Completed", *, metrics: Mapping[str, float] | None = None,
                   run_details: Mapping[str, Any] | None = None) -> None:
        """End a job as the service would (tests drive time, as with the fake); `run_details` is what run history
        answers for it (tests/fixtures/aml-runhistory: a failed job's `RunDetails`, with its error)."""
        self.resources[f"/jobs/{name}".lower()]["properties"]["status"] = status
        if metrics is not None:
            self.mlflow_metrics[name] = dict(metrics)
        if run_details is not None:
            self.run_details[name] = {**copy.deepcopy(dict(run_details)), "runId": name, "status": status}

    def _run_details(self, rec: Recorded) -> tuple[int, dict[str, str], str]:
        """Run history's `GET /history/v1.0<workspace>/runs/<run>/details` (azure-ai-ml _restclient/runhistory
        operations `get_details`)."""
        m = re.fullmatch(rf"/history/v1\.0{re.escape(self.ws_path)}/runs/([^/]+)/details", rec.path, re.IGNORECASE)
        if not m or f"/jobs/{m.group(1)}".lower() not in self.resources:
            return self._json(404, {"error": {"code": "UserError", "message": f"no run at {rec.path}"}})
        name = m.group(1)
        status = self.resources[f"/jobs/{name}".lower()]["properties"]["status"]
        return self._json(200, self.run_details.get(name) or {"runId": name, "status": status})

    # ------------------------------------------------------------------ models
    def _model_version(self, rec: Recorded, rel: str, name: str, version: str) -> tuple[int, dict[str, str], str]:
        key = rel.lower()
        existing = self.resources.get(key)
        if rec.method == "GET":
            return self._json(200, existing) if existing else self._not_found(f"model {name}:{version}")
        if rec.method != "PUT":
            return self._json(405, {})
        props = rec.body["properties"]
        if existing and existing["properties"]["modelUri"] != props.get("modelUri"):
            return self._user_error("The specified asset path does not match the existing asset path.", 400)
        body = self._envelope(rel, version, "models/versions", _template("Workspace/ModelVersion/createOrUpdate.json"))
        flavors = {"python_function": {"data": {"loader_module": "mlflow.sklearn"}}} \
            if props.get("modelType") == "mlflow_model" else {}
        body["properties"] = {"description": None, "tags": {}, "properties": {}, "isAnonymous": False,
                              "isArchived": False, "flavors": flavors, **props}
        self.resources[key] = body
        return self._json(200 if existing else 201, body)

    def seed_model_version(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        """A model version as the service stores it (the shape `_model_version` answers a PUT with), registered
        long ago: for tests and benches that need many versions without a job each."""
        rel = f"/models/{name}/versions/{version}"
        body = self._envelope(rel, version, "models/versions", _template("Workspace/ModelVersion/createOrUpdate.json"))
        body["properties"] = {"description": None, "tags": dict(tags), "properties": {}, "isAnonymous": False,
                              "isArchived": False, "flavors": {}, "modelType": "mlflow_model",
                              "modelUri": f"azureml://jobs/job-{version}/outputs/model/paths/"}
        self.resources[rel.lower()] = body

    def _model_list(self, rec: Recorded, rel: str, name: str) -> tuple[int, dict[str, str], str]:
        prefix = f"/models/{name}/versions/".lower()
        found = [v for k, v in self.resources.items() if k.startswith(prefix)]
        found.sort(key=lambda v: -int(v["name"]) if v["name"].isdigit() else 0)
        top = rec.query.get("$top")
        if top:
            found = found[: int(top[0])]
        return self._json(200, {"value": found})

    def _model_container(self, rec: Recorded, rel: str, name: str) -> tuple[int, dict[str, str], str]:
        prefix = f"/models/{name}/versions/".lower()
        versions = [int(v["name"]) for k, v in self.resources.items() if k.startswith(prefix) and v["name"].isdigit()]
        if not versions:
            return self._not_found(f"model {name}")
        body = self._envelope(rel, name, "models", _template("Workspace/ModelContainer/get.json"))
        body["properties"] = {"description": None, "tags": {}, "properties": {}, "isArchived": False,
                              "latestVersion": str(max(versions)), "nextVersion": str(max(versions) + 1)}
        return self._json(200, body)

    # ------------------------------------------------------------------ online endpoints
    def scoring_uri(self, endpoint: str, kind: str = "score") -> str:
        return f"https://{endpoint}.{self.location}.inference.ml.azure.com/{kind}"

    def _online_endpoint(self, rec: Recorded, rel: str, name: str) -> tuple[int, dict[str, str], str]:
        key = rel.lower()
        existing = self.resources.get(key)
        if rec.method == "GET":
            if not existing:
                return self._not_found(f"online endpoint {name}")
            existing["properties"]["provisioningState"] = self._state(key)
            return self._json(200, existing)
        if rec.method == "DELETE":
            self.resources.pop(key, None)
            return self._json(200 if existing else 204, {})
        if rec.method != "PUT":
            return self._json(405, {})
        props = rec.body["properties"]
        traffic = props.get("traffic") or {}
        if sum(traffic.values()) not in (0, 100):
            return self._user_error(f"Traffic must sum to 0 or 100, got {sum(traffic.values())}.")
        deployments = self._children(f"/onlineEndpoints/{name}/deployments/")
        for dep, pct in {**traffic, **(props.get("mirrorTraffic") or {})}.items():
            if pct and dep.lower() not in deployments:
                return self._user_error(f"Deployment {dep} does not exist on endpoint {name}.")
        body = self._envelope(rel, name, "onlineEndpoints", _template("Workspace/OnlineEndpoint/createOrUpdate.json"))
        body.update(location=rec.body.get("location"), tags=rec.body.get("tags") or {},
                    identity=rec.body.get("identity") or {"type": "SystemAssigned"}, kind="Managed")
        body["properties"] = {**props, "scoringUri": self.scoring_uri(name),
                              "swaggerUri": self.scoring_uri(name, "swagger.json")}
        if not existing:
            self._begin(key)
        body["properties"]["provisioningState"] = self._state(key)
        self.resources[key] = body
        return self._json(200 if existing else 201, body)

    def _children(self, prefix: str) -> dict[str, dict[str, Any]]:
        prefix = prefix.lower()
        return {k[len(prefix):]: v for k, v in self.resources.items()
                if k.startswith(prefix) and "/" not in k[len(prefix):]}

    def _list_keys(self, rec: Recorded, rel: str, name: str) -> tuple[int, dict[str, str], str]:
        if f"/onlineEndpoints/{name}".lower() not in self.resources:
            return self._not_found(f"online endpoint {name}")
        return self._json(200, {"primaryKey": f"pk-{name}", "secondaryKey": f"sk-{name}"})

    def _online_deployment_list(self, rec: Recorded, rel: str, ep: str) -> tuple[int, dict[str, str], str]:
        items = []
        for key, body in self._children(f"/onlineEndpoints/{ep}/deployments/").items():
            body["properties"]["provisioningState"] = self._state(f"/onlineEndpoints/{ep}/deployments/{key}".lower())
            items.append(body)
        return self._json(200, {"value": items})

    def _online_deployment(self, rec: Recorded, rel: str, ep: str, name: str) -> tuple[int, dict[str, str], str]:
        key = rel.lower()
        existing = self.resources.get(key)
        ep_body = self.resources.get(f"/onlineEndpoints/{ep}".lower())
        if rec.method == "GET":
            if not existing:
                return self._not_found(f"online deployment {ep}/{name}")
            existing["properties"]["provisioningState"] = self._state(key)
            return self._json(200, existing)
        if rec.method == "DELETE":
            if ep_body and ((ep_body["properties"].get("traffic") or {}).get(name, 0) > 0
                            or (ep_body["properties"].get("mirrorTraffic") or {}).get(name, 0) > 0):
                return self._user_error(f"Deployment {name} has traffic and cannot be deleted.")
            self.resources.pop(key, None)
            return self._json(200 if existing else 204, {})
        if rec.method != "PUT":
            return self._json(405, {})
        if not ep_body:
            return self._not_found(f"online endpoint {ep}")
        template = _template("OnlineDeployment/ManagedOnlineDeployment/createOrUpdate.json")
        body = self._envelope(rel, name, "onlineEndpoints/deployments", template)
        body.update(location=rec.body.get("location"), tags=rec.body.get("tags") or {}, kind="Managed",
                    sku=rec.body.get("sku") or {"name": "Default", "capacity": 1})
        body["properties"] = {"scaleSettings": {"scaleType": "Default"}, **rec.body["properties"]}
        self._begin(key, "Failed" if name in self.failing_deployments else "Succeeded")
        body["properties"]["provisioningState"] = self._state(key)
        self.resources[key] = body
        return self._json(200 if existing else 201, body)

    def _get_logs(self, rec: Recorded, rel: str, ep: str, name: str) -> tuple[int, dict[str, str], str]:
        if f"/onlineEndpoints/{ep}/deployments/{name}".lower() not in self.resources:
            return self._not_found(f"online deployment {ep}/{name}")
        body = _template("OnlineDeployment/getLogs.json")
        body["content"] = f"{name}: tail {rec.body.get('tail')}\n"
        return self._json(200, body)

    # ------------------------------------------------------------------ batch endpoints
    def _batch_endpoint(self, rec: Recorded, rel: str, name: str) -> tuple[int, dict[str, str], str]:
        key = rel.lower()
        existing = self.resources.get(key)
        if rec.method == "GET":
            if not existing:
                return self._not_found(f"batch endpoint {name}")
            existing["properties"]["provisioningState"] = self._state(key)
            return self._json(200, existing)
        if rec.method != "PUT":
            return self._json(405, {})
        body = self._envelope(rel, name, "batchEndpoints", _template("Workspace/BatchEndpoint/createOrUpdate.json"))
        body.update(location=rec.body.get("location"), tags=rec.body.get("tags") or {}, kind="Managed")
        body["properties"] = {**rec.body["properties"], "scoringUri": self.scoring_uri(name, "jobs")}
        if not existing:
            self._begin(key)
        body["properties"]["provisioningState"] = self._state(key)
        self.resources[key] = body
        return self._json(200 if existing else 201, body)

    def _batch_deployment_list(self, rec: Recorded, rel: str, ep: str) -> tuple[int, dict[str, str], str]:
        return self._json(200, {"value": list(self._children(f"/batchEndpoints/{ep}/deployments/").values())})

    def _batch_deployment(self, rec: Recorded, rel: str, ep: str, name: str) -> tuple[int, dict[str, str], str]:
        key = rel.lower()
        existing = self.resources.get(key)
        if rec.method == "GET":
            if not existing:
                return self._not_found(f"batch deployment {ep}/{name}")
            existing["properties"]["provisioningState"] = self._state(key)
            return self._json(200, existing)
        if rec.method != "PUT":
            return self._json(405, {})
        if f"/batchEndpoints/{ep}".lower() not in self.resources:
            return self._not_found(f"batch endpoint {ep}")
        body = self._envelope(rel, name, "batchEndpoints/deployments",
                              _template("Workspace/BatchDeployment/createOrUpdate.json"))
        body.update(location=rec.body.get("location"), tags=rec.body.get("tags") or {})
        body["properties"] = dict(rec.body["properties"])
        self._begin(key)
        body["properties"]["provisioningState"] = self._state(key)
        self.resources[key] = body
        return self._json(200 if existing else 201, body)

    # ------------------------------------------------------------------ data plane
    def _scoring(self, rec: Recorded, endpoint: str) -> tuple[int, dict[str, str], str]:
        if rec.path == "/jobs":
            return self._batch_invoke(rec, endpoint)
        ep = self.resources.get(f"/onlineEndpoints/{endpoint}".lower())
        if ep is None:
            return self._json(404, {"message": "endpoint not found"})
        if rec.headers.get("Authorization") != f"Bearer pk-{endpoint}":
            return self._json(401, {"message": "invalid key"})
        dep = rec.headers.get("azureml-model-deployment")
        if dep is None:
            traffic = ep["properties"].get("traffic") or {}
            dep = max(traffic, key=lambda d: traffic[d]) if traffic else None
        if dep is None:
            return self._json(424, {"message": "no deployment receives traffic"})
        status, text = self.responder(endpoint, dep, rec.body)
        return status, {"content-type": "application/json"}, text

    def _batch_invoke(self, rec: Recorded, endpoint: str) -> tuple[int, dict[str, str], str]:
        props = rec.body["properties"]
        name = props.get("name") or uuid.uuid4().hex
        body: dict[str, Any] = {"id": self._arm_id(f"/jobs/{name}"), "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/jobs",
                "properties": {**props, "status": "Queued", "jobType": "Pipeline",
                               "experimentName": (props.get("properties") or {}).get("experimentName", endpoint)}}
        self.resources[f"/jobs/{name}".lower()] = {
            **body, "properties": {"jobType": "Pipeline", "status": "Queued",
                                   "experimentName": body["properties"]["experimentName"],
                                   "tags": {}, "properties": {}, "jobs": {}, "inputs": {}, "outputs": {},
                                   "settings": {}}}
        return self._json(200, body)

    def _mlflow(self, rec: Recorded) -> tuple[int, dict[str, str], str]:
        if not rec.path.endswith("/api/2.0/mlflow/runs/get"):
            return self._json(404, {"error_code": "ENDPOINT_NOT_FOUND"})
        run_id = rec.query.get("run_id", [""])[0]
        if f"/jobs/{run_id}".lower() not in self.resources:
            return self._json(404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                                    "message": f"Run with id={run_id} not found"})
        metrics = [{"key": k, "value": v, "timestamp": 1700000000000, "step": 0}
                   for k, v in self.mlflow_metrics.get(run_id, {}).items()]
        return self._json(200, {"run": {"info": {"run_id": run_id, "status": "FINISHED"},
                                        "data": {"metrics": metrics, "params": [], "tags": []}}})

    def _metrics(self, rec: Recorded) -> tuple[int, dict[str, str], str]:
        """Azure Monitor's Metrics - List answer, in the shape of the published example (tests/fixtures/
        azure-monitor/GetMetric.json): dimension names lower-cased in `metadatavalues`, a point per minute with
        `average` and `count`, a minute without samples as `count: 0` and no `average`, and no series at all for a
        dimension value that has no samples (what a canary with no ingested traffic yet gets)."""
        resource = rec.path.split("/providers/Microsoft.Insights/metrics")[0]
        endpoint = resource.rsplit("/", 1)[-1]
        flt = rec.query.get("$filter", [""])[0]
        found = re.search(r"deployment eq '([^']+)'", flt)
        dep = found[1] if found else ""
        names = rec.query.get("metricnames", [""])[0].split(",")
        if names[0] in self.monitor_answers:
            return self._json(200, self.monitor_answers[names[0]])
        data = self.monitor.get((endpoint, dep), {})
        quiet = {"timeStamp": "2024-01-01T00:00:00Z", "count": 0.0}
        value = []
        for metric in names:
            if metric == "RequestsPerMinute":
                series = [{"metadatavalues": [{"name": {"value": "deployment", "localizedValue": "deployment"},
                                               "value": dep},
                                              {"name": {"value": "statuscodeclass",
                                                        "localizedValue": "statusCodeClass"}, "value": cls}],
                           "data": [quiet, {"timeStamp": "2024-01-01T00:01:00Z", "average": float(n), "count": 1.0}]}
                          for cls, n in data.get("requests_by_class", {}).items()]
            else:  # RequestLatency (a minute's mean) or RequestLatency_P50 (its median)
                avg = data.get("latency_p50_ms" if metric == "RequestLatency_P50" else "latency_ms")
                point = {"timeStamp": "2024-01-01T00:01:00Z", "average": float(avg), "count": 1.0} \
                    if avg is not None else quiet
                series = [{"metadatavalues": [{"name": {"value": "deployment", "localizedValue": "deployment"},
                                               "value": dep}], "data": [point]}]
            value.append({"id": f"{resource}/providers/Microsoft.Insights/metrics/{metric}",
                          "type": "Microsoft.Insights/metrics", "name": {"value": metric, "localizedValue": metric},
                          "unit": "Count" if metric == "RequestsPerMinute" else "Milliseconds",
                          "timeseries": series, "errorCode": "Success"})
        return self._json(200, {"cost": 0, "timespan": rec.query.get("timespan", [""])[0], "interval": "PT1M",
                                "namespace": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                                "resourceregion": self.location, "value": value})
