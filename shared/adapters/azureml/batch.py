"""Batch endpoints: their deployment advanced one step per call, and scoring jobs started by name.

`batch_endpoints.invoke` mutates a class-level header dict of the SDK (as `online_endpoints.invoke` does), so
the invoke runs under a lock and puts the dict back afterwards; the job is named, so an existing one is returned.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from shared.adapters.azureml.base import PlatformBase, model_ref, status
from shared.adapters.azureml.jobs import job_view
from shared.core.platform import REFLEX_TAG, BatchDeploymentSpec, Deployment, Job, require_reflex_owned

__all__ = ["BatchMixin"]

_invoke_lock = threading.Lock()   # the SDK's batch invoke mutates a class-level header dict


class BatchMixin(PlatformBase):
    """Batch endpoints, their model deployments and scoring jobs."""

    def begin_ensure_batch_deployment(self, spec: BatchDeploymentSpec) -> None:
        """Advance the batch endpoint and deployment one step; call again until `get_batch_deployment` succeeds.

        Endpoint absent -> begin it (and go on only if it is already Succeeded); deployment absent or on another
        model -> begin it; deployment Succeeded and not the endpoint's default -> make it the default.
        """
        from azure.ai.ml.entities import BatchEndpoint, ModelBatchDeployment, ModelBatchDeploymentSettings

        what = f"batch endpoint {spec.endpoint}"
        get = lambda: self.ml.batch_endpoints.get(spec.endpoint)  # noqa: E731
        ep = self._call(what, get, absent=True)
        if ep is not None:
            require_reflex_owned(ep.tags, what, "REFLEX_BATCH_ENDPOINT")
        else:
            try:
                poller = self.ml.batch_endpoints.begin_create_or_update(
                    BatchEndpoint(name=spec.endpoint, tags={REFLEX_TAG: "true"}))
            except Exception as exc:
                self._claim_name(exc, what, get, "REFLEX_BATCH_ENDPOINT")
                return
            ep = self._call(what, get, absent=True) if poller is not None and poller.done() else None
        if ep is None or status(ep.provisioning_state) != "Succeeded":
            return
        current = self.get_batch_deployment(spec.endpoint, spec.deployment)
        if current is None or current.model != spec.model:
            dep = ModelBatchDeployment(
                name=spec.deployment, endpoint_name=spec.endpoint, model=f"azureml:{spec.model}",
                compute=spec.compute, tags={REFLEX_TAG: "true"},
                settings=ModelBatchDeploymentSettings(mini_batch_size=spec.mini_batch_size,
                                                      instance_count=spec.instance_count,
                                                      max_concurrency_per_instance=spec.max_concurrency))
            self._call(f"batch deployment {spec.endpoint}/{spec.deployment}",
                       lambda: self.ml.batch_deployments.begin_create_or_update(dep))
            return
        default = ep.defaults.get("deployment_name") if isinstance(ep.defaults, dict) \
            else getattr(ep.defaults, "deployment_name", None)
        if current.succeeded and default != spec.deployment:
            ep.defaults = {"deployment_name": spec.deployment}
            self._call(what, lambda: self.ml.batch_endpoints.begin_create_or_update(ep))

    def get_batch_deployment(self, endpoint: str, deployment: str) -> Deployment | None:
        found = self._call(f"batch deployment {endpoint}/{deployment}",
                           lambda: self.ml.batch_deployments.get(deployment, endpoint), absent=True)
        if found is None:
            return None
        resources = getattr(found, "resources", None)
        count = getattr(found, "instance_count", None) or getattr(resources, "instance_count", None) or 1
        return Deployment(found.name, endpoint, model_ref(found.model), status(found.provisioning_state),
                          str(found.compute or "").rsplit("/", 1)[-1], int(count), dict(found.tags or {}))

    def invoke_batch(self, endpoint: str, deployment: str, *, input_path: str, output_path: str,
                     job_name: str, tags: Mapping[str, str] | None = None) -> Job:
        """Start a batch scoring job named `job_name` (idempotent: an existing job is returned).

        The SDK's batch invoke takes no tags; `tags` are not sent (the job is traceable by its name).
        """
        from azure.ai.ml import Input, Output
        from azure.ai.ml.constants._endpoint import EndpointInvokeFields

        what = f"batch job {job_name}"
        existing = self._call(what, lambda: self.ml.jobs.get(job_name), absent=True)
        if existing is not None:
            job = job_view(existing)
            return Job(job.name, job.status, "batch", job.experiment_name or endpoint, job.tags,
                       job.outputs or {"score": output_path}, job.error, job.url)
        out_type = "uri_folder" if output_path.endswith("/") else "uri_file"
        with _invoke_lock, _restore(EndpointInvokeFields.DEFAULT_HEADER):
            started = self._call(what, lambda: self.ml.batch_endpoints.invoke(
                endpoint_name=endpoint, deployment_name=deployment, job_name=job_name,
                input=Input(type="uri_folder", path=input_path),
                outputs={"score": Output(type=out_type, path=output_path)}))
        return Job(started.name or job_name, status(started.status), kind="batch", experiment_name=endpoint,
                   tags=dict(tags or {}), outputs={"score": output_path})


@contextmanager
def _restore(headers: dict[str, str]) -> Iterator[None]:
    """Put the SDK's class-level invoke headers back as they were (the SDK mutates them in place)."""
    saved = dict(headers)
    try:
        yield
    finally:
        headers.clear()
        headers.update(saved)
