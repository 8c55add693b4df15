"""Reflex's own HTTP to Azure (the workspace's MLflow REST, online endpoint scoring) on azure-core's pipeline.

Why azure-core and not a hand-written client: the SDK's own clients get token caching, retries and error types
from it, and Reflex's calls need the same three (#16.5). Each pipeline is azure-core's `PipelineClient` with the
policies checked at the source (Azure/azure-sdk-for-python sdk/core/azure-core/azure/core/pipeline/policies,
azure-core 1.41.0 as installed):

* `BearerTokenCredentialPolicy(credential, scope)` (`_authentication.py`): asks the credential once and reuses the
  token until it is within DEFAULT_REFRESH_WINDOW_SECONDS (300 s, minus a jitter) of expiry; it refuses plain
  http (`_enforce_https`). Key-authenticated scoring sends its key per request instead (no token policy);
* `RetryPolicy` (`_retry.py`): retries 408/429/500/502/503/504 and any answer carrying `Retry-After`; before the
  next attempt it sleeps `Retry-After` (`_sleep_for_retry` -> `transport.sleep`), else an exponential backoff.
  POST is retried only on 500/503/504 or with `Retry-After` (`_is_method_retryable`, `is_retry`). Reflex's
  `BoundedRetry` retries only while the hint is short (`max_retry_after`): an Event Grid reaction must return
  within 30 s, so a longer hint ends the call as `TransientError(retry_after)` and the platform's redelivery (or
  the next timer tick) waits instead;
* the transport's `sleep` is the one the retry policy sleeps with: injected here, so tests never wait.

Answers >= 400 become azure-core's exceptions (`ResourceNotFoundError` for 404, `ClientAuthenticationError` for
401, else `HttpResponseError`, each carrying the response and its headers) and then Reflex's errors through the
one mapping, `shared.core.errors.map_azure_error`, exactly as the SDK's own failures are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.core.errors import map_azure_error

__all__ = ["MAX_RETRY_AFTER_S", "DataPlane"]

MAX_RETRY_AFTER_S = 5.0   # longest server hint waited for in-process (Event Grid gives a delivery 30 s)


def _transport(sleep: Callable[[float], None]) -> Any:
    """azure-core's requests transport whose `sleep` (what `RetryPolicy` waits with) is `sleep`."""
    from azure.core.pipeline.transport import RequestsTransport

    class Transport(RequestsTransport):
        def sleep(self, duration: float) -> None:
            sleep(duration)

    return Transport()


def _retry_policy(max_retry_after: float, **options: Any) -> Any:
    from azure.core.pipeline.policies import RetryPolicy

    class BoundedRetry(RetryPolicy):
        """azure-core's RetryPolicy, except that a `Retry-After` longer than `max_retry_after` is not waited for
        in-process: the answer is returned as is and mapped to `TransientError(retry_after)`."""

        def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
            hint = self.get_retry_after(response)
            if hint is not None and hint > max_retry_after:
                return False
            return bool(super().is_retry(settings, response))

    return BoundedRetry(**options)


class DataPlane:
    """Pipelines per token scope (None: no token, e.g. key-authenticated scoring), built on first use."""

    def __init__(self, credential: Any, *, sleep: Callable[[float], None] = time.sleep, transport: Any = None,
                 retry_total: int = 3, retry_backoff_factor: float = 0.8,
                 max_retry_after: float = MAX_RETRY_AFTER_S) -> None:
        self.credential = credential
        self._sleep = sleep
        self._transport = transport
        self._retry = {"retry_total": retry_total, "retry_backoff_factor": retry_backoff_factor}
        self._max_retry_after = max_retry_after
        self._clients: dict[str | None, Any] = {}

    def _client(self, scope: str | None) -> Any:
        if scope not in self._clients:
            from azure.core import PipelineClient
            from azure.core.pipeline.policies import BearerTokenCredentialPolicy

            policies: list[Any] = [_retry_policy(self._max_retry_after, **self._retry)]
            if scope is not None:
                policies.append(BearerTokenCredentialPolicy(self.credential, scope))
            self._clients[scope] = PipelineClient(base_url="", policies=policies,
                                                  transport=self._transport or _transport(self._sleep))
        return self._clients[scope]

    def send(self, what: str, method: str, url: str, *, scope: str | None, params: Mapping[str, str] | None = None,
             json: Any = None, headers: Mapping[str, str] | None = None, timeout: float = 30.0,
             raise_for_status: bool = True) -> Any:
        """One request through the pipeline; an azure-core `HttpResponse`. Failures (connection, token, status
        >= 400 when `raise_for_status`) raise Reflex's errors naming `what`."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
        from azure.core.rest import HttpRequest

        request = HttpRequest(method, url, params=dict(params or {}), json=json, headers=dict(headers or {}))
        try:
            response = self._client(scope).send_request(request, connection_timeout=10, read_timeout=timeout)
            if raise_for_status and response.status_code >= 400:
                kind = {401: ClientAuthenticationError, 404: ResourceNotFoundError}.get(response.status_code,
                                                                                        HttpResponseError)
                raise kind(message=f"{response.status_code} {response.reason}: {response.text()[:300]}",
                           response=response)
        except Exception as exc:
            raise map_azure_error(exc, what) from exc
        return response
