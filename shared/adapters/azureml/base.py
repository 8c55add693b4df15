"""What every part of the Azure ML adapter shares: the `MLClient`, the one error translation, the workspace.

`PlatformBase` holds the SDK client and Reflex's own HTTP pipelines (`http.DataPlane`); the concern modules
(jobs, models, endpoints, batch, monitor) add their operations as mixins of it, and `platform.AzureMLPlatform`
puts them together. The helpers below read SDK entities and errors the same way everywhere.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from shared.adapters.azureml.http import DataPlane
from shared.core.errors import PermanentError, map_azure_error
from shared.core.platform import require_reflex_owned

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

__all__ = ["ARM_SCOPE", "ML_SCOPE", "PlatformBase"]

log = logging.getLogger("reflex.azureml")
T = TypeVar("T")

ARM_SCOPE = "https://management.azure.com/.default"
ML_SCOPE = "https://ml.azure.com/.default"


def already_exists(exc: BaseException) -> bool:
    """Azure ML answers a reused job name with 400 UserError "already exists" (and ARM with 409)."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    if isinstance(exc, ResourceExistsError):
        return True
    return (isinstance(exc, HttpResponseError) and exc.status_code == 400
            and "already exists" in str(exc.message or exc).lower())


_NAME_TAKEN = re.compile(r"already an endpoint with this name|unique (with)?in a region", re.IGNORECASE)


def name_taken(exc: BaseException) -> bool:
    """The service's "name is taken in this region" answer (400, the text in the error's details)."""
    return bool(_NAME_TAKEN.search(str(exc)))


def not_found(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404


def status(value: Any) -> str:
    """Job and provisioning states are str-Enums in 1.35 (`str()` gives 'JobStatus.COMPLETED')."""
    value = getattr(value, "value", value)
    return str(value) if value is not None else "Unknown"


def field(obj: Any, *names: str) -> Any:
    """azure-ai-ml 1.35 fills some entities from `as_dict()`, so a field may sit under its wire name."""
    for name in names:
        value = getattr(obj, name, None)
        if value is None and isinstance(getattr(obj, "__dict__", None), dict):
            value = obj.__dict__.get(name)
        if value is not None:
            return value
    return None


def model_ref(value: Any) -> str:
    """'name:version' from an ARM model id, an `azureml:name:version` reference or a Model entity."""
    text = str(getattr(value, "id", None) or value or "")
    m = re.search(r"/models/([^/]+)/versions/([^/]+)$", text)
    if m:
        return f"{m.group(1)}:{m.group(2)}"
    return text.removeprefix("azureml:")


class PlatformBase:
    """The SDK client, the data-plane pipelines, the error translation and the workspace's location."""

    def __init__(self, ml_client: MLClient, *, credential: Any, data_type: str = "uri_folder",
                 metrics_client: Any = None, data_plane: DataPlane | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ml = ml_client
        self.credential = credential
        self.data_type = data_type
        self.clock = clock
        self._metrics_client = metrics_client
        self.http = data_plane or DataPlane(credential)
        self._workspace: tuple[str, str] | None = None          # (location, mlflow tracking https base)
        self._scoring: dict[str, tuple[str, str]] = {}          # endpoint -> (scoring uri, auth header or "")
        self._seen: dict[str, tuple[float, Any, list[Any]]] = {}  # endpoint -> (read at, entity, deployments)

    @property
    def scope(self) -> str:
        return (f"/subscriptions/{self.ml.subscription_id}/resourceGroups/{self.ml.resource_group_name}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{self.ml.workspace_name}")

    # ------------------------------------------------------------------ error mapping
    @overload
    def _call(self, resource: str, fn: Callable[[], T], *, absent: Literal[False] = False) -> T: ...

    @overload
    def _call(self, resource: str, fn: Callable[[], T], *, absent: bool) -> T | None: ...

    def _call(self, resource: str, fn: Callable[[], T], *, absent: bool = False) -> T | None:
        """Run one SDK call; 404 -> None when `absent`, everything else mapped by `map_azure_error`."""
        try:
            return fn()
        except Exception as exc:
            if absent and not_found(exc):
                return None
            raise map_azure_error(exc, resource) from exc

    def _create_or_existing(self, what: str, create: Callable[[], T], get: Callable[[], T]) -> T:
        """Create; an "already exists" answer (a redelivery, a race) returns the existing entity instead."""
        try:
            return create()
        except Exception as exc:
            if not already_exists(exc):
                raise map_azure_error(exc, what) from exc
            log.info("%s already exists: returning it", what)
            found = self._call(what, get)
            assert found is not None
            return found

    def _workspace_info(self) -> tuple[str, str]:
        """(location, MLflow REST base) of the workspace: one GET per worker."""
        if self._workspace is None:
            ws = self._call(f"workspace {self.ml.workspace_name}",
                            lambda: self.ml.workspaces.get(self.ml.workspace_name))
            location = str(ws.location)
            uri = ws.mlflow_tracking_uri or f"azureml://{location}.api.azureml.ms/mlflow/v1.0{self.scope}"
            self._workspace = (location, "https://" + uri.split("://", 1)[1])
        return self._workspace

    def _claim_name(self, exc: Exception, what: str, get: Callable[[], Any], setting: str) -> None:
        """A create answered "already exists": success only if the endpoint is now Reflex's own in this workspace.

        Endpoint names are unique per Azure region (a batch endpoint's name is its invocation host), so the answer
        may mean another workspace holds the name. The service says so with 400 "There is already an endpoint with
        this name, Endpoint name needs to be unique within a region" (Azure/azureml-examples#1931,
        Azure/mlops-project-template#29; fixture tests/fixtures/aml-rest/errors/endpoint-name-taken.json): the GET
        that follows answers 404 here. Either way the name is not ours, and the fix is another name.
        """
        if not (already_exists(exc) or name_taken(exc)):
            raise map_azure_error(exc, what) from exc
        found = self._call(what, get, absent=True)
        if found is None:
            raise PermanentError(
                f"{what}: the name is taken in this Azure region by an endpoint of another workspace (endpoint "
                f"names are unique per region). Set {setting} to a name of your own (infra derives one from the "
                f"deployment's resource token). Service answer: {str(getattr(exc, 'message', '') or exc)[:300]}"
            ) from exc
        require_reflex_owned(found.tags, what, setting)
        log.info("%s was created meanwhile by another Reflex call: taking it as done", what)
