"""MLflow and HTTP failures mapped onto Reflex's retry intent, as shared/core/errors.py does for azure-core.

`RESOURCE_DOES_NOT_EXIST` becomes `NotFound` (callers turn it into `None`, the protocol's "not there");
throttling, server errors and connection loss become `TransientError`; everything else (invalid parameters,
permission) is a `PermanentError` naming the resource.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.core.errors import PermanentError, ReflexError, TransientError

__all__ = ["NotFound", "mlflow_errors", "TRANSIENT_CODES"]

TRANSIENT_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED",
                             "DEADLINE_EXCEEDED", "ABORTED"})


class NotFound(PermanentError):
    """The MLflow entity does not exist."""


def _short(text: object, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        message = _short(getattr(exc, "message", exc))
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFound(f"{resource}: not found") from exc
        if code in TRANSIENT_CODES or "Max retries exceeded" in message or "Connection" in message:
            raise TransientError(f"{resource}: MLflow failed ({code}): {message}", 5.0) from exc
        raise PermanentError(f"{resource}: MLflow rejected the request ({code}): {message}") from exc
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise TransientError(f"{resource}: MLflow unreachable: {_short(exc)}", 5.0) from exc
    except Exception as exc:
        name = type(exc).__module__ + "." + type(exc).__name__
        if name.startswith("requests.") or name.startswith("urllib3."):
            raise TransientError(f"{resource}: MLflow unreachable: {_short(exc)}", 5.0) from exc
        raise
