"""Which version of a model is champion, in one request: a pointer record, moved at promotion, repaired from tags.

Why: Azure ML has no model aliases, so the registry says which version is champion only by its tag
(`reflex.champion=true`, `shared/core/platform.py`), and finding the tagged version means listing every version of
the model: 752 KiB and 1.75 s at 1,000 versions, twice per registration (#17). The gate, outside models, the
training job's holdout scoring, drift and batch scoring all ask, so Reflex keeps its own answer:

    champions/<model>   {"model", "version", "at", "by", "demote": [versions still tagged, to untag]}

* `find` reads the pointer and confirms it with ONE `get_model` of that version (fresh tags, and the version still
  exists): one platform request however many versions the model has;
* the pointer moves only at promotion (`crown`, compare-and-swap, by the rollout that made the version serve all
  traffic). A version registered or tagged outside Reflex does not move it: it reaches the champion only through
  a rollout, after evaluation or because the trust policy (`REFLEX_TRUST_OUTSIDE_MODELS`, tag `reflex.trusted`)
  lets it roll out (shared/registration/outside_models.py);
* `repair` is the only listing: when the pointer is missing (a store that predates it, a champion crowned by hand)
  or names a version that is gone or no longer tagged (someone untagged it in the studio), the highest version
  tagged `reflex.champion=true` is the champion, as before the pointer, and the pointer is written from it. With
  no tagged version there is no champion and nothing is written, so a first tag set by hand is found next time.

The registry's tag stays the contract people see and the source a repair trusts: promotion tags the new version
before the pointer moves and untags the old one after, so a reader never sees a pointer whose version is untagged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.core.platform import CHAMPION_TAG
from shared.core.state import key_part, utcnow_iso
from shared.core.typed_record import TypedRecord

if TYPE_CHECKING:
    from shared.core.deps import Deps
    from shared.core.platform import ModelVersion

__all__ = ["PREFIX", "ChampionPointer", "crown", "demoted", "find", "pointer", "pointer_key", "repair"]

log = logging.getLogger("reflex.champion")

PREFIX = "champions/"


@dataclass(frozen=True)
class ChampionPointer(TypedRecord):
    """`champions/<model>`: `version` is the champion of `model` since `at`, set `by` (a rollout's promotion, or
    "repair from tags"); `demote` the versions that still carry the champion tag and are to lose it."""

    model: str = ""
    version: str = ""
    at: str = ""
    by: str = ""
    demote: list[str] = field(default_factory=list)


def pointer_key(model: str) -> str:
    return PREFIX + key_part(model)


def pointer(deps: Deps, model: str) -> ChampionPointer | None:
    """The stored pointer of `model` as it is (no platform request), None when there is none."""
    found = deps.state.get(pointer_key(model))
    return None if found is None else ChampionPointer.from_dict(found.value)


def _is_champion(version: ModelVersion | None) -> bool:
    return version is not None and version.tags.get(CHAMPION_TAG) == "true"


def find(deps: Deps, model: str) -> ModelVersion | None:
    """The champion of `model`: the pointer's version confirmed by one `get_model`, else `repair`."""
    stored = pointer(deps, model)
    if stored is not None and stored.version:
        current = deps.platform.get_model(model, stored.version)
        if _is_champion(current):
            return current
        log.warning("champion pointer of %s names version %s, which is %s: repaired from the registry's tags",
                    model, stored.version, "gone" if current is None else f"no longer tagged {CHAMPION_TAG}")
    return repair(deps, model)


def _moved(value: dict[str, Any] | None, model: str, version: str, by: str,
           also: list[str]) -> dict[str, Any] | None:
    """The pointer moved to `version` (None: it is there already); the old version and `also` are to be untagged."""
    current = ChampionPointer.from_dict(value or {})
    if current.version == version:
        return None
    pending = {*current.demote, *([current.version] if current.version else []), *also} - {version}
    return current.but(model=model, version=version, at=utcnow_iso(), by=by, demote=sorted(pending)).to_dict()


def repair(deps: Deps, model: str) -> ModelVersion | None:
    """The highest version tagged champion (the one full listing), and the pointer written from it."""
    tagged = [m for m in deps.platform.list_models(model) if m.tags.get(CHAMPION_TAG) == "true"]
    if not tagged:
        key = pointer_key(model)
        stale = deps.state.get(key)
        if stale is not None:
            deps.state.delete(key, stale.etag)  # only the pointer just read; a promotion meanwhile wins
        return None
    champion = tagged[-1]  # list_models is in version order
    others = [m.version for m in tagged[:-1]]
    # the version it named is no champion any more (gone or untagged): not one to untag again
    deps.state.update(pointer_key(model), lambda v: _moved(
        {**(v or {}), "version": ""} if v else None, model, champion.version, "repair from tags", others))
    log.info("champion pointer of %s repaired from the registry's tags: version %s", model, champion.version)
    return champion


def crown(deps: Deps, model: str, version: str, *, by: str) -> list[str]:
    """Move the pointer to `version` (compare-and-swap); the versions that are to lose the champion tag.

    Idempotent: crowning the pointer's own version again changes nothing and returns the versions not yet untagged
    (a promotion that crashed before `demoted` finishes its work when it runs again).
    """
    # the first promotion without a pointer (a store from before it): the registry's tags say what to untag
    tagged = [] if pointer(deps, model) is not None else [
        m.version for m in deps.platform.list_models(model) if m.tags.get(CHAMPION_TAG) == "true"]
    stored = deps.state.update(pointer_key(model), lambda v: _moved(v, model, version, by, tagged))
    return list(ChampionPointer.from_dict(stored.value).demote) if stored else []


def demoted(deps: Deps, model: str, versions: list[str]) -> None:
    """Record that `versions` no longer carry the champion tag (so a later promotion does not untag them again)."""
    done = set(versions)

    def clear(value: dict[str, Any] | None) -> dict[str, Any] | None:
        current = ChampionPointer.from_dict(value or {})
        if value is None or not done & set(current.demote):
            return None
        return current.but(demote=sorted(set(current.demote) - done)).to_dict()

    deps.state.update(pointer_key(model), clear)
