"""Online endpoints: reads, creation, deployments, traffic, scoring calls and deletion.

What the SDK would do wrong here, and what this module does instead:

* `online_endpoints.get` sends GET endpoint and then lists the deployments only to fill 0% traffic entries,
  throwing the deployments away (azure-ai-ml 1.35.2 `_online_endpoint_operations.py` `get`); Reflex needs the
  deployments too, so a read is the endpoint GET of the SDK's own generated operation plus one listing: two
  requests, not three (#17.3);
* a PUT replaces the whole endpoint and the SDK strips 0% traffic entries: traffic and mirror are read from the
  endpoint, modified as a whole, validated with `traffic_problems` and written back in the same entity. The entity
  read by `get_endpoint` is reused by the `set_traffic` or delete that follows it on this worker within
  `READ_REUSE_S` (one rollout tick observes, then acts), so a traffic step is one read and one write;
* `begin_create_endpoint` never re-sends an existing endpoint (that would reset its traffic); a deployment is
  deleted only at 0% live and 0% mirrored traffic;
* the endpoint and deployment PUTs and the deployment DELETE are long-running operations whose SDK pollers
  poll on their own, in a daemon thread, until the operation ends (azure-core `LROPoller` starts `ARMPolling`,
  or the SDK's `AzureMLPolling` every 5 s for a deployment, unless `polling=False`; every poll is a request: a
  DELETE answers 202 with a `Location` to poll, REST `Workspace/OnlineDeployment/delete.json`). Reflex never
  waits on them (the next rollout tick observes the endpoint), so each is sent through the SDK's generated
  operations with `polling=False`, built as the SDK builds them: the request itself, and no poll after it;
* `online_endpoints.invoke` mutates a class-level header dict, so a deployment name leaks into later calls:
  `invoke` calls the scoring URI itself (`http.DataPlane`) with the deployment header set per call;
* endpoint names are unique per Azure region: an "already exists" answer is success only when the endpoint is
  then found here, tagged `reflex.managed` (`PlatformBase._claim_name`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.adapters.azureml.base import ML_SCOPE, PlatformBase, model_ref, not_found, status
from shared.core.errors import PermanentError, TransientError, map_azure_error, retry_after_seconds
from shared.core.platform import REFLEX_TAG, Deployment, Endpoint, InvokeResult, require_reflex_owned, traffic_problems

__all__ = ["READ_REUSE_S", "OnlineEndpointsMixin"]

READ_REUSE_S = 30.0   # how long a read may stand for the write that follows it (one Function invocation)


class OnlineEndpointsMixin(PlatformBase):
    """Managed online endpoints and their deployments."""

    @staticmethod
    def _deployment(d: Any, endpoint: str) -> Deployment:
        sku = getattr(d, "instance_count", None)
        return Deployment(d.name, endpoint, model_ref(d.model), status(d.provisioning_state),
                          getattr(d, "instance_type", "") or "", int(sku or 1), dict(d.tags or {}))

    def _endpoint_entity(self, name: str) -> Any:
        """GET the endpoint alone, through the SDK's generated operation (no deployments listing); None if absent."""
        from azure.ai.ml.entities import OnlineEndpoint

        ops: Any = self.ml.online_endpoints
        rest = self._call(f"endpoint {name}", lambda: ops._online_operation.get(
            resource_group_name=ops._resource_group_name, workspace_name=ops._workspace_name, endpoint_name=name,
            **ops._init_kwargs), absent=True)
        return None if rest is None else OnlineEndpoint._from_rest_object(rest)

    def _read_endpoint(self, name: str, *, reuse: bool = False) -> tuple[Any, list[Any]] | None:
        """The SDK endpoint entity and the deployment entities: GET endpoint + one deployments listing.

        `reuse`: take the read `get_endpoint` made within READ_REUSE_S instead (once: a write consumes it)."""
        seen = self._seen.pop(name, None)
        if reuse and seen is not None and 0 <= self.clock() - seen[0] <= READ_REUSE_S:
            return seen[1], seen[2]
        ep = self._endpoint_entity(name)
        if ep is None:
            return None
        deps = self._call(f"endpoint {name}", lambda: list(self.ml.online_deployments.list(name))) or []
        return ep, deps

    def _endpoint(self, ep: Any, deps: list[Any]) -> Endpoint:
        deployments = tuple(self._deployment(d, ep.name) for d in deps)
        traffic = {d.name: 0 for d in deployments} | {k: int(v) for k, v in (ep.traffic or {}).items()}
        mirror = {k: int(v) for k, v in (ep.mirror_traffic or {}).items() if v}
        for k in mirror:
            if traffic.get(k) == 0 and k not in {d.name for d in deployments}:
                traffic.pop(k)
        return Endpoint(ep.name, status(ep.provisioning_state), traffic, mirror, deployments,
                        ep.scoring_uri or "", dict(ep.tags or {}))

    def get_endpoint(self, name: str) -> Endpoint | None:
        read = self._read_endpoint(name)
        if read is None:
            return None
        self._seen[name] = (self.clock(), *read)
        return self._endpoint(*read)

    def begin_create_endpoint(self, name: str, *, tags: Mapping[str, str] | None = None) -> None:
        """Create only when absent: re-sending an existing endpoint would reset its traffic.

        An endpoint Reflex did not create (no `reflex.managed` tag) is never taken over, and a name the region
        already gives to another workspace is a `PermanentError` naming `REFLEX_ENDPOINTS` (`_claim_name`).
        """
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        what = f"endpoint {name}"
        get: Callable[[], Any] = lambda: self._endpoint_entity(name)  # noqa: E731
        existing = get()
        if existing is not None:
            require_reflex_owned(existing.tags, what, "REFLEX_ENDPOINTS")
            return
        ep = ManagedOnlineEndpoint(name=name, auth_mode="key", tags={**(tags or {}), REFLEX_TAG: "true"})
        try:
            self._put_endpoint(ep)
        except Exception as exc:
            self._claim_name(exc, what, get, "REFLEX_ENDPOINTS")

    def begin_create_deployment(self, endpoint: str, deployment: str, *, model: str, instance_type: str,
                                instance_count: int, tags: Mapping[str, str] | None = None) -> None:
        from azure.ai.ml.entities import ManagedOnlineDeployment

        what = f"deployment {endpoint}/{deployment}"
        existing = self.get_deployment(endpoint, deployment)
        if existing is not None and existing.model == model:
            return
        dep = ManagedOnlineDeployment(name=deployment, endpoint_name=endpoint, model=f"azureml:{model}",
                                      instance_type=instance_type, instance_count=instance_count,
                                      tags={**(tags or {}), REFLEX_TAG: "true"})
        self._call(what, lambda: self._put_deployment(dep))

    def _put_deployment(self, dep: Any) -> None:
        """PUT the deployment as `online_deployments.begin_create_or_update` builds it, without its poller.

        azure-ai-ml 1.35.2 `_online_deployment_operations.py` `begin_create_or_update`: a GET of the endpoint "to
        ensure the endpoint exists" (the rollout creates a deployment only on an endpoint it has just observed
        Succeeded; a PUT to a missing one is refused anyway), `upload_dependencies` (resolves the model's ARM id;
        a Reflex deployment has no code or environment to upload), the workspace GET for the location (here once
        per worker, `_workspace_info`), `_to_rest_object(location=…)`, then the generated operation with
        `AzureMLPolling` every `LROConfigurations.POLL_INTERVAL` (5 s) for as long as provisioning lasts (minutes:
        a poll every 5 s in a daemon thread). Here with `polling=False`: the PUT alone; the rollout's next ticks
        observe the deployment Creating, then Succeeded or Failed."""
        from azure.ai.ml._utils._endpoint_utils import upload_dependencies
        from azure.ai.ml.operations._operation_orchestrator import OperationOrchestrator

        ops: Any = self.ml.online_deployments
        upload_dependencies(dep, OperationOrchestrator(operation_container=ops._all_operations,
                                                       operation_scope=ops._operation_scope,
                                                       operation_config=ops._operation_config), ops._credentials)
        location, _ = self._workspace_info()
        ops._online_deployment.begin_create_or_update(
            resource_group_name=ops._resource_group_name, workspace_name=ops._workspace_name,
            endpoint_name=dep.endpoint_name, deployment_name=dep.name, body=dep._to_rest_object(location=location),
            polling=False, **ops._init_kwargs)

    def get_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        found = self._call(f"deployment {endpoint}/{deployment}",
                           lambda: self.ml.online_deployments.get(deployment, endpoint), absent=True)
        return None if found is None else self._deployment(found, endpoint)

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int],
                    mirror: Mapping[str, int] | None = None) -> Endpoint:
        """Read the endpoint (or reuse the read just made), set live and mirror traffic for every deployment,
        validate, write it back; the endpoint as written (deployment states as read)."""
        what = f"endpoint {endpoint}"
        read = self._read_endpoint(endpoint, reuse=True)
        if read is None:
            raise PermanentError(f"traffic update: {what} does not exist")
        ep, deps = read
        states = {d.name: status(d.provisioning_state) for d in deps}
        new_traffic = {n: 0 for n in states} | {n: int(p) for n, p in traffic.items()}
        new_mirror = {n: int(p) for n, p in (mirror or {}).items() if p}
        problems = traffic_problems(new_traffic, new_mirror, states)
        if problems:
            raise PermanentError(f"{what}: traffic rejected: {'; '.join(problems)}")
        ep.traffic = dict(new_traffic)
        ep.mirror_traffic = dict(new_mirror)
        try:
            self._put_endpoint(ep)
        except Exception as exc:
            if getattr(exc, "status_code", None) == 409:  # the endpoint exists: 409 is an update already in flight
                raise TransientError(f"{what}: traffic update refused while another update is in progress (409): "
                                     f"{str(getattr(exc, 'message', '') or exc)[:200]}",
                                     retry_after_seconds(exc, 30.0)) from exc
            raise map_azure_error(exc, what) from exc
        view = self._endpoint(ep, deps)
        return Endpoint(view.name, view.state, new_traffic, new_mirror, view.deployments, view.scoring_uri,
                        view.tags)

    def _put_endpoint(self, ep: Any) -> None:
        """PUT the endpoint as `online_endpoints.begin_create_or_update` builds it, without its poller.

        azure-ai-ml 1.35.2 `_online_endpoint_operations.py` `begin_create_or_update`: the workspace GET for the
        location (`_get_workspace_location`), 0% live and mirror entries stripped (`_strip_zeroes_from_traffic`),
        `_to_rest_online_endpoint(location=…)`, then the generated `begin_create_or_update`; its compute lookup
        concerns Kubernetes endpoints only (a managed endpoint has none). Here with `polling=False` (see the module
        docstring), and the location from the worker's one workspace GET (`_workspace_info`, the same
        `workspaces.get`): one request, the PUT (two on a worker's first Azure ML call that needs the location)."""
        from azure.ai.ml.operations._online_endpoint_operations import _strip_zeroes_from_traffic

        ops: Any = self.ml.online_endpoints
        location, _ = self._workspace_info()
        if ep.traffic:
            ep.traffic = _strip_zeroes_from_traffic(ep.traffic)
        if ep.mirror_traffic:
            ep.mirror_traffic = _strip_zeroes_from_traffic(ep.mirror_traffic)
        ops._online_operation.begin_create_or_update(
            resource_group_name=ops._resource_group_name, workspace_name=ops._workspace_name, endpoint_name=ep.name,
            body=ep._to_rest_online_endpoint(location=location), polling=False, **ops._init_kwargs)

    def _scoring_target(self, endpoint: str, *, refresh: bool = False) -> tuple[str, str]:
        """(scoring URI, key header; "" for Entra ID tokens, which the pipeline's token policy adds), cached."""
        if refresh or endpoint not in self._scoring:
            what = f"endpoint {endpoint}"
            seen = self._seen.get(endpoint)   # the tick's read, when there is one (not consumed: nothing is written)
            fresh = seen is not None and not refresh and 0 <= self.clock() - seen[0] <= READ_REUSE_S
            ep = seen[1] if fresh and seen is not None else self._endpoint_entity(endpoint)
            if ep is None:
                raise PermanentError(f"invoke: {what} does not exist")
            auth = ""
            mode = str(ep.auth_mode or "key").lower()
            if mode != "aad_token":
                # the SDK's get_keys GETs the endpoint again only to learn its auth mode, which is known here
                ops: Any = self.ml.online_endpoints
                keys = self._call(what, lambda: ops._get_online_credentials(endpoint, mode))
                auth = f"Bearer {getattr(keys, 'primary_key', None) or getattr(keys, 'access_token', '')}"
            self._scoring[endpoint] = (ep.scoring_uri, auth)
        return self._scoring[endpoint]

    def invoke(self, endpoint: str, deployment: str, body: Mapping[str, Any]) -> InvokeResult:
        """POST to the scoring URI with `azureml-model-deployment` set for this call only.

        Header and auth as how-to-authenticate-online-endpoint documents them (`Authorization: Bearer <key or
        token>`; `azureml-model-deployment` routes to one deployment). Any answer comes back as the result (the
        smoke test judges it); a 401 re-reads the key once (it may have been rotated)."""
        for attempt in (0, 1):
            uri, auth = self._scoring_target(endpoint, refresh=attempt == 1)
            headers = {"Content-Type": "application/json", "azureml-model-deployment": deployment}
            if auth:
                headers["Authorization"] = auth
            start = time.perf_counter()
            resp = self.http.send(f"invoke {endpoint}/{deployment}", "POST", uri, scope=None if auth else ML_SCOPE,
                                  json=dict(body), headers=headers, timeout=90, raise_for_status=False)
            latency = (time.perf_counter() - start) * 1000.0
            if resp.status_code == 401 and attempt == 0:
                continue
            return InvokeResult(resp.status_code, resp.text(), latency)
        raise AssertionError("unreachable")  # pragma: no cover

    def begin_delete_deployment(self, endpoint: str, deployment: str) -> None:
        """Delete only at 0% live and mirrored traffic (read first, or the read just made); absent is done.

        One request, the DELETE (azure-ai-ml 1.35.2 `online_deployments.begin_delete` calls the generated operation
        with nothing else); the deletion runs on in Azure ML, and the rollout's next tick sees the deployment
        Deleting or gone."""
        what = f"deployment {endpoint}/{deployment}"
        read = self._read_endpoint(endpoint, reuse=True)
        if read is None:
            return
        ep, deps = read
        if (ep.traffic or {}).get(deployment, 0) > 0 or (ep.mirror_traffic or {}).get(deployment, 0) > 0:
            raise PermanentError(f"{what}: cannot delete while it receives traffic "
                                 f"(live {ep.traffic}, mirror {ep.mirror_traffic})")
        if deployment not in {d.name for d in deps}:
            return
        ops: Any = self.ml.online_deployments   # its begin_delete, with `polling=False`: the DELETE, no polls
        try:
            ops._online_deployment.begin_delete(
                resource_group_name=ops._resource_group_name, workspace_name=ops._workspace_name,
                endpoint_name=endpoint, deployment_name=deployment, polling=False, **ops._init_kwargs)
        except Exception as exc:
            if not not_found(exc):
                raise map_azure_error(exc, what) from exc

    def get_deployment_logs(self, endpoint: str, deployment: str, *, lines: int = 100) -> str:
        what = f"deployment {endpoint}/{deployment}"
        logs = self._call(what, lambda: self.ml.online_deployments.get_logs(deployment, endpoint, lines),
                          absent=True)
        if logs is None:
            raise PermanentError(f"logs: {what} does not exist")
        return str(logs)
