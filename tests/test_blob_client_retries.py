"""The tests' shared Azurite client (conftest's `blob_service`) retries a dropped connection and no answer.

Why it matters: Azurite drops a connection idle for 5 s, and a request sent on it just then ended a CI run's test
setup in ConnectionResetError; yet tests/test_freeze_contract.py needs every 503 to surface at once. The client's
real pipeline runs here; `responses` stands in for the server at the HTTP boundary.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
import responses
from azure.core.exceptions import HttpResponseError

pytestmark = pytest.mark.azurite


def _container(blob_service: Any) -> tuple[Any, str]:
    container = blob_service.get_container_client(f"t-{uuid.uuid4().hex[:20]}")
    return container, container.url.split("?")[0]


def test_a_connection_dropped_by_the_server_is_tried_again(blob_service: Any) -> None:
    container, url = _container(blob_service)
    with responses.RequestsMock() as mock:
        mock.add(responses.PUT, url, body=requests.exceptions.ConnectionError(
            ConnectionResetError(104, "Connection reset by peer")))
        mock.add(responses.PUT, url, status=201)
        container.create_container()
        assert len(mock.calls) == 2


def test_an_answer_of_the_service_is_not_tried_again(blob_service: Any) -> None:
    container, url = _container(blob_service)
    with responses.RequestsMock() as mock:
        mock.add(responses.PUT, url, status=503)
        with pytest.raises(HttpResponseError) as raised:
            container.create_container()
        assert raised.value.status_code == 503 and len(mock.calls) == 1
