"""Load a v2 function app once and index its functions the way the Python worker does.

The worker imports the entry module, finds exactly one top-level `FunctionRegister` (`FunctionApp`, …) and
calls `app.get_functions()` once: that call is not idempotent (a second call raises "does not have a unique
function name"), so the index is built once and cached by the host. `%SETTING%` references in trigger
settings (blob paths, timer schedules) are resolved from the environment, as the host resolves app settings;
a missing setting is an error that names it. Before the import, `local.settings.json` Values are copied into
the environment where a variable is not already set, as `func start` does.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["FunctionEntry", "SettingError", "build_index", "find_app", "functions_of", "load_app",
           "load_local_settings", "resolve_settings"]

_SETTING = re.compile(r"%([^%]+)%")
_RESOLVED_KEYS = ("path", "schedule", "queueName")
_FUNCTIONS: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


class SettingError(LookupError):
    """A `%SETTING%` (or a connection) names an app setting that is not set."""


@dataclass(frozen=True)
class FunctionEntry:
    """One indexed function: its trigger, arg name, resolved trigger settings and the user's callable."""

    name: str
    trigger_type: str
    arg_name: str
    settings: dict[str, Any]
    func: Callable[..., Any]
    retry: dict[str, Any] | None = field(default=None)

    @property
    def function_id(self) -> str:
        """The id the host uses in receipts: `Host.Functions.<name>`."""
        return f"Host.Functions.{self.name}"


def load_local_settings(app_dir: Path, env: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy `Values` of `<app_dir>/local.settings.json` into `env` where unset; return the names copied."""
    target = os.environ if env is None else env
    path = Path(app_dir) / "local.settings.json"
    if not path.is_file():
        return []
    values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    copied = []
    for name, value in values.items():
        if name not in target and value is not None:
            target[name] = str(value)
            copied.append(name)
    return copied


def load_app(module_name: str = "function_app", app_dir: Path | str = ".") -> tuple[ModuleType, Any]:
    """Import the entry module from `app_dir` (added to `sys.path`) and return it with its one app."""
    root = str(Path(app_dir).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(module_name)
    return module, find_app(module)


def find_app(module: ModuleType) -> Any:
    """The single top-level FunctionRegister of `module`; errors as the worker words them."""
    from azure.functions.decorators.function_app import FunctionRegister

    apps = [value for value in vars(module).values() if isinstance(value, FunctionRegister)]
    if len(apps) > 1:
        raise ValueError("More than one FunctionApp or other top level function app instances are defined.")
    if not apps:
        raise ValueError(f"Could not find top level function app instances in {module.__name__}.")
    return apps[0]


def resolve_settings(text: str, env: Mapping[str, str]) -> str:
    """Replace each `%NAME%` with `env[NAME]`; `SettingError` names the first missing setting."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise SettingError(f"app setting {name!r} (referenced as %{name}% in {text!r}) is not set")
        return env[name]

    return _SETTING.sub(value, text)


def functions_of(app: Any) -> list[Any]:
    """`app.get_functions()`, called once per app object and cached (a second call raises)."""
    if app not in _FUNCTIONS:
        _FUNCTIONS[app] = list(app.get_functions())
    return _FUNCTIONS[app]


def build_index(app: Any, env: Mapping[str, str] | None = None) -> dict[str, FunctionEntry]:
    """Name -> FunctionEntry for the app's functions (settings resolved from `env`), skipping disabled ones."""
    source = os.environ if env is None else env
    index: dict[str, FunctionEntry] = {}
    for function in functions_of(app):
        name = function.get_function_name()
        if source.get(f"AzureWebJobs.{name}.Disabled", "").lower() in ("true", "1"):
            continue
        trigger = function.get_trigger()
        raw = {k: v for k, v in trigger.get_dict_repr().items() if k not in ("direction", "type", "name")}
        settings = {k: resolve_settings(v, source) if k in _RESOLVED_KEYS and isinstance(v, str) else v
                    for k, v in raw.items()}
        index[name] = FunctionEntry(name=name, trigger_type=trigger.type, arg_name=trigger.name,
                                    settings=settings, func=function.get_user_function(),
                                    retry=function.get_settings_dict("retry_policy"))
    return index
