"""MLflow and HTTP failures mapped onto Reflex's retry intent, as shared/core/errors.py does for azure-core.

`RESOURCE_DOES_NOT_EXIST` becomes `NotFound` (callers turn it into `None`, the protocol's "not there");
throttling, unavailability, gateway errors and connection loss become `TransientError`; everything else (invalid
parameters, permission, a request the server cannot handle) is a `PermanentError` naming the resource.

Which `INTERNAL_ERROR`s are transient, from MLflow's own source (mlflow 3.17.2 as installed; requirements-dev.txt
allows 3.3 to 4):

* the server's stores wrap every request in `make_managed_session` (mlflow/store/db/utils.py): a database that
  is unreachable or locked (`sqlalchemy.exc.OperationalError`) is raised as `TEMPORARILY_UNAVAILABLE`, another
  SQLAlchemy error as `BAD_REQUEST`, and any other exception as `INTERNAL_ERROR`. That last one is the server
  failing on *this request* (a model version of 10^20 overflows SQLite's INTEGER: `OverflowError`), so the same
  request fails again: permanent. The REST client receives it as a JSON error body (`RestException`,
  mlflow/exceptions.py).
* when the answer is not MLflow's JSON (a proxy, a gateway, a server that crashed mid-request),
  `verify_rest_response` (mlflow/utils/rest_utils.py) raises "API request to endpoint … failed with error code
  <status> != 200" with the code `get_error_code(status)`, which is `INTERNAL_ERROR` for 500, 502 and 504
  (`HTTP_STATUS_TO_ERROR_CODE`, mlflow/exceptions.py): infrastructure, transient.
* the client already retries 408/429/500/502/503/504 itself (`_TRANSIENT_FAILURE_RESPONSE_CODES`,
  mlflow/utils/request_utils.py) and then says "Max retries exceeded": transient.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from shared.core.errors import PermanentError, ReflexError, TransientError, safe_text

__all__ = ["NotFound", "mlflow_errors", "TRANSIENT_CODES", "is_transient"]

# codes that mean "try again later" whatever the request (mlflow/protos/databricks.proto ErrorCode)
TRANSIENT_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED"})
# verify_rest_response's message for a non-JSON answer: the HTTP status, not the server's verdict on the request
_HTTP_FAILURE = re.compile(r"failed with error code (\d{3}) != \d{3}")
_UNREACHABLE = ("Max retries exceeded", "Connection refused", "ConnectionError", "Connection aborted",
                "Connection reset", "Read timed out", "RemoteDisconnected")


class NotFound(PermanentError):
    """The MLflow entity does not exist."""


def _short(text: object, limit: int = 300) -> str:
    return safe_text(text, limit, one_line=True)


def is_transient(code: str, message: str) -> bool:
    """Whether an MlflowException with `code` and `message` may succeed when the same request is made later."""
    if code in TRANSIENT_CODES or any(marker in message for marker in _UNREACHABLE):
        return True
    status = _HTTP_FAILURE.search(message)
    return status is not None and (int(status.group(1)) in (408, 429) or int(status.group(1)) >= 500)


@contextmanager
def mlflow_errors(resource: str) -> Iterator[None]:
    """Translate exceptions raised inside the block; Reflex errors pass through unchanged."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except ReflexError:
        raise
    except MlflowException as exc:
        code = str(getattr(exc, "error_code", ""))
        message = str(getattr(exc, "message", exc))
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFound(f"{resource}: not found") from exc
        if is_transient(code, message):
            raise TransientError(f"{resource}: MLflow failed ({code}): {_short(message)}", 5.0) from exc
        raise PermanentError(f"{resource}: MLflow rejected the request ({code}): {_short(message)}") from exc
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise TransientError(f"{resource}: MLflow unreachable: {_short(exc)}", 5.0) from exc
    except Exception as exc:
        name = type(exc).__module__ + "." + type(exc).__name__
        if name.startswith("requests.") or name.startswith("urllib3."):
            raise TransientError(f"{resource}: MLflow unreachable: {_short(exc)}", 5.0) from exc
        raise
