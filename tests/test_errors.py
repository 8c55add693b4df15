"""azure-core exceptions map onto retry intent in one place."""

from __future__ import annotations

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.rest import HttpRequest

from shared.core.errors import PermanentError, TransientError, map_azure_error


class _Response:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}
        self.reason = "x"
        self.request = HttpRequest("GET", "https://example/x")

    def text(self) -> str:
        return ""


def _http(status: int, headers: dict[str, str] | None = None) -> HttpResponseError:
    err = HttpResponseError(message=f"status {status}", response=_Response(status, headers))  # type: ignore[arg-type]
    err.status_code = status
    return err


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_transient(status: int) -> None:
    err = map_azure_error(_http(status, {"Retry-After": "7"}), "job j1")
    assert isinstance(err, TransientError) and err.retry_after == 7.0 and "job j1" in str(err)


def test_retry_after_ms_and_default() -> None:
    assert map_azure_error(_http(429, {"x-ms-retry-after-ms": "1500"}), "r").retry_after == 1.5  # type: ignore[union-attr]
    assert map_azure_error(_http(503), "r").retry_after == 10.0  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [400, 403, 404, 409])
def test_client_errors_are_permanent_and_name_the_resource(status: int) -> None:
    err = map_azure_error(_http(status), "endpoint ep1")
    assert isinstance(err, PermanentError) and "endpoint ep1" in str(err) and str(status) in str(err)


def test_auth_connection_and_other() -> None:
    assert isinstance(map_azure_error(ClientAuthenticationError("no token"), "ws"), PermanentError)
    assert isinstance(map_azure_error(ResourceNotFoundError("gone"), "m:1"), PermanentError)
    conn = map_azure_error(ServiceRequestError("refused"), "ws")
    assert isinstance(conn, TransientError) and conn.retry_after == 5.0
    assert isinstance(map_azure_error(ValueError("bad"), "x"), PermanentError)
