"""Reaching the stack from the CLI: the same settings the Functions host uses, and a clear word when a part is down.

Settings: the ones `make stack` gives every component, layered by the same function (local/env.py
`layered_settings`): `local.settings.json` `Values` (created from `local.settings.example.json` when absent),
with the environment winning where it holds a non-empty value, as `func start` does. Against Azure the same app
settings are exported in the operator's shell and win over the file.

Probes: before a command touches storage or the ML platform, one TCP connect (2 s) tells "not running" apart
from a slow service, so the operator gets "Azurite (storage) at 127.0.0.1:10000 is not reachable: start the
local stack with `make stack`" instead of a retry loop and a stack trace.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from shared.core.settings import Settings

__all__ = ["StackDown", "load_local_settings", "probe_platform", "probe_storage", "reachable"]

ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class StackDown(Exception):
    """A part of the stack the command needs does not answer."""

    def __init__(self, part: str, where: str, detail: str) -> None:
        host = urlparse(where).hostname or where
        if host in LOCAL_HOSTS:
            hint = "start the local stack with `make stack`"
        else:
            hint = "check the app settings that point at it, network access and your Azure login"
        super().__init__(f"{part} at {where} is not reachable ({detail}): {hint}")
        self.part, self.where, self.hint = part, where, hint


def load_local_settings(env: MutableMapping[str, str] | None = None, root: Path = ROOT) -> Path:
    """Layer `<root>/local.settings.json` under `env` (default: the process environment); the file used."""
    from local.env import layered_settings

    target = os.environ if env is None else env
    layered = layered_settings(root, target)
    for key, value in layered.values.items():
        if not target.get(key):
            target[key] = value
    return layered.path


def reachable(url: str, timeout: float = 2.0) -> str | None:
    """None when a TCP connection to the URL's host and port succeeds, else why not."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def probe_storage(settings: Settings) -> None:
    from shared.adapters.storage import blob_service

    url = blob_service(settings).url
    problem = reachable(url)
    if problem:
        name = "Azurite (storage)" if (urlparse(url).hostname or "") in LOCAL_HOSTS else "Blob Storage"
        raise StackDown(name, url, problem)


def probe_platform(settings: Settings) -> None:
    """The local platform's MLflow server (Azure ML itself is always there; its errors are reported as such)."""
    if settings.platform == "local" and settings.mlflow_tracking_uri:
        problem = reachable(settings.mlflow_tracking_uri)
        if problem:
            raise StackDown("MLflow tracking server (local ML platform)", settings.mlflow_tracking_uri, problem)
