"""Test wiring for the Azure ML adapter: the real SDK, HTTP answered by `testing.aml_service.AmlService`.

A fake TokenCredential (not a mock of our code) stands in for DefaultAzureCredential; the MLClient is built with
`retry_total=0` (one attempt per request, so counts are exact) and a long `polling_interval`: the adapter never
waits on a poller, and a poller thread left by a long-running operation sleeps instead of polling.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import responses
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared.adapters.azureml import AzureMLPlatform
from testing.aml_service import AmlService


class FakeCredential:
    """A TokenCredential: hands out a fixed token and records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("t", int(time.time()) + 86_400)


class FailingCredential:
    """What DefaultAzureCredential does when the identity cannot get a token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ClientAuthenticationError("ManagedIdentityCredential: no managed identity endpoint found")


@contextmanager
def azure_platform(service: AmlService, credential: Any = None, *, polling_interval: float = 3600,
                   **options: Any) -> Iterator[AzureMLPlatform]:
    from azure.ai.ml.constants._common import LROConfigurations

    saved = LROConfigurations.POLL_INTERVAL
    LROConfigurations.POLL_INTERVAL = 3600      # deployment pollers use this class constant, not the client's
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            service.install(rsps)
            from azure.monitor.query import MetricsQueryClient

            cred = credential or FakeCredential()
            yield AzureMLPlatform.connect(cred, subscription_id=service.subscription,
                                          resource_group=service.resource_group, workspace=service.workspace,
                                          retry_total=0, polling_interval=polling_interval,
                                          metrics_client=MetricsQueryClient(cred, retry_total=0), **options)
    finally:
        LROConfigurations.POLL_INTERVAL = saved
