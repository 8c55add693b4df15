"""A stored record's owner type: explicit fields, `from_dict` / `to_dict`, and one place for unknown keys.

Why: records are JSON objects in the state store (shared/core/state.py), written by one reaction and often read by
another or by the CLI. Each record type is a frozen dataclass over this base; its fields are what is stored. A
stored key the type does not declare (written by a newer version, or by hand) is kept in `extra` and written back
unchanged, so a read-modify-write never drops it; fields that are unset (None, "", {}) are left out of `to_dict`,
so the stored JSON stays what the dict-building code wrote before the types. Versions and other `str` fields are
strings whatever was stored (an integer version reads as "3").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Self

__all__ = ["TypedRecord"]


def _typed(kind: str, value: Any) -> Any:
    """A stored value as its field declares it (versions are always strings, whatever was stored)."""
    if kind == "str":
        return str(value)
    if kind == "int":
        return int(value)
    if kind in ("float", "float | None"):
        return float(value)
    if kind.startswith("Mapping") and not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TypedRecord:
    """`from_dict` / `to_dict` over the dataclass fields; unknown keys in `extra`, unset fields left out."""

    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Self:
        """Raises TypeError or ValueError for a field of the wrong type (not such a record)."""
        types = {f.name: f.type for f in fields(cls) if f.name != "extra"}
        known = {k: _typed(str(types[k]), v) for k, v in value.items() if k in types and v is not None}
        return cls(**known, extra={k: v for k, v in value.items() if k not in types})

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value not in (None, "", {}):
                out[f.name] = dict(value) if isinstance(value, Mapping) else value
        return out

    def but(self, **changes: Any) -> Self:
        return replace(self, **changes)
