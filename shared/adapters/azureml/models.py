"""Model versions: explicit-version registration from a job output, tags, the champion, the newest version.

Versions are always explicit (the SDK's auto-versioning is read-then-PUT and races); a model registers from the
job output's documented path form (`shared.core.platform.job_output_uri`, the SDK's JOB_URI_FORMAT). Tags are mutable:
an update GETs the version and PUTs it back whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shared.adapters.azureml.base import PlatformBase, status
from shared.core.errors import PermanentError
from shared.core.platform import CHAMPION_TAG, REFLEX_TAG, ModelVersion, job_output_uri

__all__ = ["ModelsMixin"]


class ModelsMixin(PlatformBase):
    """Register, read, list and tag model versions."""

    def register_model(self, *, name: str, version: str, job_name: str, output_name: str = "model",
                       tags: Mapping[str, str], properties: Mapping[str, str] | None = None,
                       description: str = "") -> ModelVersion:
        from azure.ai.ml.entities import Model

        if not version:
            raise PermanentError(f"model {name}: version must be explicit (auto-increment races)")
        path = job_output_uri(job_name, output_name)   # the output folder is the MLflow model
        model = Model(name=name, version=version, path=path, type="mlflow_model",
                      tags={**tags, REFLEX_TAG: "true"}, properties=dict(properties or {}),
                      description=description or None)
        what = f"model {name}:{version}"
        created = self._create_or_existing(what, lambda: self.ml.models.create_or_update(model),
                                           lambda: self.ml.models.get(name, version=version))
        return self._model(created, job_name)

    @staticmethod
    def _model(m: Any, job_name: str = "") -> ModelVersion:
        path = str(m.path or "")
        if not job_name:
            found = re.search(r"azureml://jobs/([^/]+)/", path)
            job_name = found.group(1) if found else getattr(m, "job_name", "") or ""
        return ModelVersion(m.name, str(m.version), path, status(m.type), dict(m.tags or {}),
                            dict(m.properties or {}), job_name or "")

    def get_model(self, name: str, version: str) -> ModelVersion | None:
        found = self._call(f"model {name}:{version}", lambda: self.ml.models.get(name, version=version),
                           absent=True)
        return None if found is None else self._model(found)

    def list_models(self, name: str) -> list[ModelVersion]:
        found = self._call(f"model {name}", lambda: list(self.ml.models.list(name=name)), absent=True) or []
        models = [self._model(m) for m in found]
        return sorted(models, key=lambda m: int(m.version) if m.version.isdigit() else 0)

    def find_champion(self, name: str) -> ModelVersion | None:
        """Azure ML has no aliases: the champion is the highest version tagged `reflex.champion=true`."""
        champions = [m for m in self.list_models(name) if m.tags.get(CHAMPION_TAG) == "true"]
        return champions[-1] if champions else None

    def update_model_tags(self, name: str, version: str, *, set_tags: Mapping[str, str] | None = None,
                          remove: tuple[str, ...] = ()) -> ModelVersion:
        """Tags are mutable on a model version: GET it, change the tags, PUT the same version back (2 requests;
        1 when the tags are already so, as when a promotion runs again after a crash).

        Azure ML has no partial update of a model version (the generated `ModelVersionsOperations` of azure-ai-ml
        1.35.2 has get, create_or_update, delete, list and begin_publish only; REST `Workspace/ModelVersion/
        createOrUpdate.json` takes the whole entity). The read and the write are the SDK's generated operations
        on the service's own body: `ml.models.create_or_update` would add a third request, its evaluator check
        (`_get_model_properties` -> `_get_latest_version`, `GET …/versions?$top=1`), which guards a new version's
        type and says nothing about a tag change; and the body goes back as the service sent it (modelUri and
        flavors untouched: a changed asset path is refused)."""
        from azure.ai.ml.entities import Model

        what = f"model {name}:{version}"
        ops: Any = self.ml.models
        scope = {"workspace_name": ops._workspace_name, **ops._scope_kwargs}
        rest = self._call(what, lambda: ops._model_versions_operation.get(name=name, version=version, **scope),
                          absent=True)
        if rest is None:
            raise PermanentError(f"{what}: not found")
        tags = dict(rest.properties.tags or {})
        wanted = {k: v for k, v in {**tags, **(set_tags or {})}.items() if k not in remove}
        if wanted != tags:
            rest.properties.tags = wanted
            rest = self._call(what, lambda: ops._model_versions_operation.create_or_update(
                name=name, version=version, body=rest, **scope))
        return self._model(Model._from_rest_object(rest))

    def get_latest_model(self, name: str) -> ModelVersion | None:
        """The most recently created version of `name`: one request.

        azure-ai-ml resolves the `latest` label with `ModelOperations._get_latest_version` ->
        `_utils/_asset_utils._get_latest`: `GET …/models/<name>/versions?$orderBy=createdtime desc&$top=1` in a
        workspace ("Latest is defined as the most recently created"). A model without versions answers an empty
        page, which the SDK raises as a ValidationException of type RESOURCE_NOT_FOUND: that is None here.
        """
        from azure.ai.ml.exceptions import ValidationErrorType, ValidationException

        def latest() -> Any:
            try:
                return self.ml.models.get(name, label="latest")
            except ValidationException as exc:
                if exc.error_type == ValidationErrorType.RESOURCE_NOT_FOUND:
                    return None
                raise

        found = self._call(f"model {name} (latest version)", latest, absent=True)
        return None if found is None else self._model(found)
