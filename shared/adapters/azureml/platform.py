"""`AzureMLPlatform`: the concern mixins put together, built once per worker and workspace."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from shared.adapters.azureml.batch import BatchMixin
from shared.adapters.azureml.endpoints import OnlineEndpointsMixin
from shared.adapters.azureml.jobs import JobsMixin
from shared.adapters.azureml.models import ModelsMixin
from shared.adapters.azureml.monitor import MonitorMixin

if TYPE_CHECKING:
    from shared.core.settings import Settings

__all__ = ["AzureMLPlatform"]

log = logging.getLogger("reflex.azureml")


class AzureMLPlatform(JobsMixin, ModelsMixin, OnlineEndpointsMixin, BatchMixin, MonitorMixin):
    """`MLPlatform` on Azure ML. Build with `from_settings` in the app; tests inject an `MLClient`."""

    name = "azureml"

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureMLPlatform:
        """One platform (and `MLClient`) per worker and workspace; logs once which identity and workspace."""
        return _cached_platform(settings.subscription_id, settings.resource_group, settings.workspace,
                                settings.client_id, "mltable" if settings.training_mode == "automl" else "uri_folder")

    @classmethod
    def connect(cls, credential: Any, *, subscription_id: str, resource_group: str, workspace: str,
                data_type: str = "uri_folder", metrics_client: Any = None, data_plane: Any = None,
                **client_options: Any) -> AzureMLPlatform:
        """Build the `MLClient` here (the only importer of azure.ai.ml); `client_options` go to azure-core
        (`retry_total`, `polling_interval`, `transport`...); `data_plane`: Reflex's own HTTP (`http.DataPlane`)."""
        from azure.ai.ml import MLClient

        ml = MLClient(credential, subscription_id=subscription_id, resource_group_name=resource_group,
                      workspace_name=workspace, show_progress=False, **client_options)
        return cls(ml, credential=credential, data_type=data_type, metrics_client=metrics_client,
                   data_plane=data_plane)


@lru_cache(maxsize=4)
def _cached_platform(subscription: str, resource_group: str, workspace: str, client_id: str,
                     data_type: str) -> AzureMLPlatform:
    from shared.adapters.storage import credential

    cred = credential(client_id)
    platform = AzureMLPlatform.connect(cred, subscription_id=subscription, resource_group=resource_group,
                                       workspace=workspace, data_type=data_type, retry_total=3)
    log.info("Azure ML: workspace %s (resource group %s, subscription %s) as %s", workspace, resource_group,
             subscription, f"user-assigned identity {client_id}" if client_id else
             "DefaultAzureCredential (system identity or developer login)")
    return platform
