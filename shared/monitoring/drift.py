"""Data drift as plain arithmetic: a baseline profile of the training data, and PSI of recent rows against it.

Why this shape: training stores a small `Profile` next to its data asset; later a timer streams recent
inference inputs through `compare` and publishes what drifted. Both sides read rows one at a time (see
shared/batches/tabular.py), keep bounded state and import only the standard library, so a drift check runs on the
Functions host without pandas/numpy and in memory independent of the data size.

Profile (persisted as JSON, `Profile.to_dict`, version 1)::

    {"version": 1, "rows": 1000, "label": "y", "excluded": ["y"], "bins": 10, "top_k": 20,
     "features": {
       "age":  {"kind": "numeric", "edges": [18.0, 23.5, ..., 90.00000000000001], "proportions": [0.0, ...],
                "missing_rate": 0.01, "count": 990, "sampled": 990},
       "city": {"kind": "categorical", "categories": ["Paris", ...], "proportions": [0.4, ..., 0.05],
                "missing_rate": 0.0, "count": 1000, "approximate": false}}}

* Numeric column (every present value parses as a number): bin edges are the observed minimum, the
  `bins - 1` inner quantiles of a uniform reservoir sample (Algorithm L, `reservoir_size` values, seeded per
  column, so the profile is deterministic) and the value just above the observed maximum. Values are binned
  with `bisect_right`, so there are two open bins outside the training range, where the baseline has 0; a
  constant column keeps the bins "below", "equal" and "above" instead of collapsing. `proportions` (one per
  bin, over present values) come from the same reservoir, because a single pass cannot bin values before the
  edges exist. That is exact up to `reservoir_size` values; beyond, each bin proportion p has a standard error
  sqrt(p(1-p)/n), 0.0013 for p = 0.1 and n = 50,000, which moves a PSI by about 1e-4: far below any threshold.
  Missing counts and min/max are exact over the full stream.
* Categorical column (any present value is not a number, or named in `categorical=`): the `top_k` most
  frequent values with their proportions, and a last proportion for everything else (`__other__`). Counts are
  exact over the full stream while the column has at most `max_distinct` distinct values; past that the
  counts are dropped and the top values are estimated from the reservoir (`"approximate": true`).
* Missing values (empty, NA, null, NaN, ... see `tabular.is_missing`) and absent keys count toward
  `missing_rate`; a column with no present value at all profiles as categorical with no categories.

PSI compares the per-bin shares of present values *scaled by (1 - missing rate)*, plus a missing bucket and,
for numeric features, an "invalid" bucket for present values that no longer parse as numbers: a feature that
goes all-missing or changes type shows as drift rather than vanishing from the comparison.
"""

from __future__ import annotations

import json
import math
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.batches.tabular import MISSING_TOKENS, to_number
from shared.core.errors import PermanentError

__all__ = [
    "CategoricalFeature", "DriftReport", "FeatureDrift", "InvalidProfile", "NumericFeature", "OTHER",
    "PROFILE_VERSION", "Profile", "ProfileBuilder", "compare", "profile_rows", "psi",
]

PROFILE_VERSION = 1
OTHER = "__other__"


class InvalidProfile(PermanentError):
    """A stored baseline profile is not a valid version-1 profile (the message names the problem)."""


# ---------------------------------------------------------------- PSI


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = 1e-4) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e).

    `expected` and `actual` are per-bin proportions (or counts: each is normalised to sum 1). A share below
    `eps` is raised to `eps` (no renormalisation), so an empty bin costs a large but finite amount. Every
    term is >= 0, and `psi(x, x) == 0`.

    Raises ValueError for different lengths, no bins, negative or non-finite entries, or an all-zero side.

    >>> round(psi([0.5, 0.5], [0.6, 0.4]), 6)  # 0.1*ln(1.2) + (-0.1)*ln(0.8)
    0.040547
    """
    if len(expected) != len(actual):
        raise ValueError(f"psi: {len(expected)} expected bins but {len(actual)} actual bins")
    if not expected:
        raise ValueError("psi: no bins")
    for side, values in (("expected", expected), ("actual", actual)):
        if any(not (v >= 0.0 and math.isfinite(v)) for v in values):
            raise ValueError(f"psi: {side} has a negative or non-finite entry")
    total_e, total_a = math.fsum(expected), math.fsum(actual)
    if total_e <= 0.0 or total_a <= 0.0:
        raise ValueError("psi: a side sums to 0")
    result = 0.0
    for e, a in zip(expected, actual, strict=True):
        e = max(e / total_e, eps)
        a = max(a / total_a, eps)
        result += (a - e) * math.log(a / e)
    return result


# ---------------------------------------------------------------- profile


def _token(value: object) -> str:
    """How a present value is named as a category (same rule when profiling and when comparing)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TOKENS
    return isinstance(value, float) and value != value


@dataclass(frozen=True)
class NumericFeature:
    """Bin edges of a numeric column and the share of present values in each of the `len(edges) + 1` bins."""

    name: str
    edges: tuple[float, ...]
    proportions: tuple[float, ...]
    missing_rate: float
    count: int
    sampled: int
    kind = "numeric"

    def expected(self) -> list[float]:
        """Bins, then missing, then invalid (never in a baseline): the vector `compare` puts into PSI."""
        present = 1.0 - self.missing_rate
        return [p * present for p in self.proportions] + [self.missing_rate, 0.0]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "edges": list(self.edges), "proportions": list(self.proportions),
                "missing_rate": self.missing_rate, "count": self.count, "sampled": self.sampled}


@dataclass(frozen=True)
class CategoricalFeature:
    """Top categories of a column with their shares of present values; the last share is `__other__`."""

    name: str
    categories: tuple[str, ...]
    proportions: tuple[float, ...]
    missing_rate: float
    count: int
    approximate: bool = False
    kind = "categorical"

    def expected(self) -> list[float]:
        """Categories, `__other__`, then missing: the vector `compare` puts into PSI."""
        present = 1.0 - self.missing_rate
        return [p * present for p in self.proportions] + [self.missing_rate]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "categories": list(self.categories), "proportions": list(self.proportions),
                "missing_rate": self.missing_rate, "count": self.count, "approximate": self.approximate}


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class Profile:
    """The baseline of one training batch: row count and one `Feature` per profiled column."""

    rows: int
    features: tuple[Feature, ...]
    label: str | None = None
    excluded: tuple[str, ...] = ()
    bins: int = 10
    top_k: int = 20
    version: int = PROFILE_VERSION

    def feature(self, name: str) -> Feature:
        for candidate in self.features:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "rows": self.rows, "label": self.label, "excluded": list(self.excluded),
                "bins": self.bins, "top_k": self.top_k, "features": {f.name: f.to_dict() for f in self.features}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Profile:
        """Raises InvalidProfile for text that is not JSON or not a valid profile."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidProfile(f"drift baseline is not JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Raises InvalidProfile naming the first field that is missing or inconsistent."""
        try:
            return _profile_from_dict(data)
        except InvalidProfile:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidProfile(f"drift baseline is not a valid profile: {type(exc).__name__}: {exc}") from exc


def _shares(name: str, values: Any, length: int) -> tuple[float, ...]:
    shares = tuple(float(v) for v in values)
    if len(shares) != length or any(not (0.0 <= v <= 1.0 + 1e-9) for v in shares):
        raise InvalidProfile(f"drift baseline: feature {name!r}: proportions must be {length} shares in [0, 1]")
    return shares


def _rate(name: str, value: Any) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise InvalidProfile(f"drift baseline: feature {name!r}: missing_rate {rate} is not in [0, 1]")
    return rate


def _profile_from_dict(data: Mapping[str, Any]) -> Profile:
    if not isinstance(data, Mapping) or data.get("version") != PROFILE_VERSION:
        found = data.get("version") if isinstance(data, Mapping) else type(data).__name__
        raise InvalidProfile(f"drift baseline: unsupported profile version {found!r} (expected {PROFILE_VERSION})")
    features: list[Feature] = []
    for name, spec in data["features"].items():
        kind = spec["kind"]
        if kind == "numeric":
            edges = tuple(float(e) for e in spec["edges"])
            if any(not math.isfinite(e) for e in edges) or list(edges) != sorted(set(edges)):
                raise InvalidProfile(f"drift baseline: feature {name!r}: edges must be finite and increasing")
            features.append(NumericFeature(name, edges, _shares(name, spec["proportions"], len(edges) + 1),
                                           _rate(name, spec["missing_rate"]), int(spec["count"]),
                                           int(spec["sampled"])))
        elif kind == "categorical":
            categories = tuple(str(c) for c in spec["categories"])
            features.append(CategoricalFeature(name, categories,
                                               _shares(name, spec["proportions"], len(categories) + 1),
                                               _rate(name, spec["missing_rate"]), int(spec["count"]),
                                               bool(spec.get("approximate", False))))
        else:
            raise InvalidProfile(f"drift baseline: feature {name!r} has unknown kind {kind!r}")
    label = data.get("label")
    return Profile(rows=int(data["rows"]), features=tuple(features), label=None if label is None else str(label),
                   excluded=tuple(str(c) for c in data.get("excluded", ())), bins=int(data.get("bins", 10)),
                   top_k=int(data.get("top_k", 20)))


class _Column:
    """Bounded running state of one column while profiling (see the module docstring for the rules)."""

    __slots__ = ("counts", "hi", "k", "lo", "max_distinct", "next_n", "numeric", "present", "reservoir", "rng",
                 "w")

    def __init__(self, name: str, *, numeric: bool, k: int, max_distinct: int, seed: int) -> None:
        self.numeric = numeric
        self.present = 0
        self.reservoir: list[Any] = []
        self.counts: Counter[str] | None = Counter()
        self.k, self.max_distinct = k, max_distinct
        self.rng = random.Random(f"{seed}:{name}")
        self.w = 0.0
        self.next_n = 0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, value: object) -> None:
        if self.numeric:
            try:
                number = to_number(value)
            except ValueError:
                self._become_categorical()
            else:
                if number is None:
                    return
                self.lo = min(self.lo, number)
                self.hi = max(self.hi, number)
                self._keep(number, value)
                return
        if _missing(value):
            return
        self._keep(_token(value), value)

    def _keep(self, item: Any, raw: object) -> None:
        self.present += 1
        counts = self.counts
        if counts is not None:
            counts[_token(raw)] += 1
            if len(counts) > self.max_distinct:
                self.counts = None
        n, k = self.present, self.k
        if n <= k:
            self.reservoir.append(item)
            if n == k:
                self.w = math.exp(math.log(self._uniform()) / k)
                self._skip()
        elif n == self.next_n:  # Algorithm L (Li 1994): jump straight to the next item that enters the sample
            self.reservoir[self.rng.randrange(k)] = item
            self.w *= math.exp(math.log(self._uniform()) / k)
            self._skip()

    def _uniform(self) -> float:
        u = 0.0
        while u == 0.0:
            u = self.rng.random()
        return u

    def _skip(self) -> None:
        w = min(self.w, 1.0 - 2.0 ** -53)
        self.next_n = self.present + int(math.log(self._uniform()) / math.log1p(-w)) + 1

    def _become_categorical(self) -> None:
        self.numeric = False
        self.reservoir = [_token(x) for x in self.reservoir]


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default, "type 7")."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class ProfileBuilder:
    """Builds a `Profile` from rows fed one at a time (`add`/`update`), in memory bounded per column.

    `label` and `exclude` name columns left out (the target, ids); `categorical` forces columns to be
    categorical even when their values look numeric (codes, zip codes).
    """

    def __init__(self, *, label: str | None = None, exclude: Iterable[str] = (), categorical: Iterable[str] = (),
                 bins: int = 10, top_k: int = 20, reservoir_size: int = 50_000, max_distinct: int = 10_000,
                 seed: int = 0) -> None:
        if bins < 2 or top_k < 1 or reservoir_size < bins or max_distinct < top_k:
            raise ValueError("ProfileBuilder: need bins >= 2, top_k >= 1, reservoir_size >= bins, "
                             "max_distinct >= top_k")
        self.label = label
        self.excluded = tuple(dict.fromkeys([*([label] if label else []), *exclude]))
        self._skip = frozenset(self.excluded)
        self._categorical = frozenset(categorical)
        self.bins, self.top_k = bins, top_k
        self._k, self._max_distinct, self._seed = reservoir_size, max_distinct, seed
        self._columns: dict[str, _Column] = {}
        self.rows = 0

    def add(self, row: Mapping[str, object]) -> None:
        self.rows += 1
        columns = self._columns
        for name, value in row.items():
            column = columns.get(name)
            if column is None:
                if name in self._skip:
                    continue
                column = columns[name] = _Column(name, numeric=name not in self._categorical, k=self._k,
                                                 max_distinct=self._max_distinct, seed=self._seed)
            column.add(value)

    def update(self, rows: Iterable[Mapping[str, object]]) -> ProfileBuilder:
        for row in rows:
            self.add(row)
        return self

    def finish(self) -> Profile:
        features = [self._feature(name, column) for name, column in self._columns.items()]
        return Profile(rows=self.rows, features=tuple(features), label=self.label, excluded=self.excluded,
                       bins=self.bins, top_k=self.top_k)

    def _feature(self, name: str, column: _Column) -> Feature:
        missing_rate = (self.rows - column.present) / self.rows if self.rows else 0.0
        if column.present == 0:
            return CategoricalFeature(name, (), (0.0,), missing_rate, 0)
        if column.numeric:
            ordered = sorted(column.reservoir)
            inner = (_quantile(ordered, i / self.bins) for i in range(1, self.bins))
            edges = tuple(sorted({column.lo, *inner, math.nextafter(column.hi, math.inf)}))
            tally = [0] * (len(edges) + 1)
            for value in ordered:
                tally[bisect_right(edges, value)] += 1
            return NumericFeature(name, edges, tuple(c / len(ordered) for c in tally), missing_rate,
                                  column.present, len(ordered))
        approximate = column.counts is None
        counts = Counter(column.reservoir) if approximate else column.counts
        assert counts is not None
        total = sum(counts.values())
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.top_k]
        other = total - sum(c for _, c in top)
        return CategoricalFeature(name, tuple(c for c, _ in top), (*(c / total for _, c in top), other / total),
                                  missing_rate, column.present, approximate)


def profile_rows(rows: Iterable[Mapping[str, object]], **options: Any) -> Profile:
    """Profile an iterable of rows in one pass (`options` as for `ProfileBuilder`)."""
    return ProfileBuilder(**options).update(rows).finish()


# ---------------------------------------------------------------- comparison


@dataclass(frozen=True)
class FeatureDrift:
    """PSI of one feature between the baseline and the recent rows."""

    name: str
    kind: str
    psi: float
    drifted: bool
    baseline_missing_rate: float
    missing_rate: float
    invalid: int = 0  # present values of a numeric feature that are not numbers any more

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "psi": self.psi, "drifted": self.drifted,
                "baseline_missing_rate": self.baseline_missing_rate, "missing_rate": self.missing_rate,
                "invalid": self.invalid}


@dataclass(frozen=True)
class DriftReport:
    """What `compare` found: per-feature PSI, and schema differences named by column.

    `reason` is set when no PSI could be computed (no rows, too few rows, empty baseline).
    """

    rows: int
    threshold: float
    features: tuple[FeatureDrift, ...] = ()
    missing_columns: tuple[str, ...] = ()
    new_columns: tuple[str, ...] = ()
    reason: str | None = None
    baseline_rows: int = 0

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    @property
    def drift_detected(self) -> bool:
        return any(f.drifted for f in self.features)

    @property
    def schema_changed(self) -> bool:
        return bool(self.missing_columns or self.new_columns)

    @property
    def max_psi(self) -> float | None:
        return max((f.psi for f in self.features), default=None)

    def psi_of(self, name: str) -> float:
        for feature in self.features:
            if feature.name == name:
                return feature.psi
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "baseline_rows": self.baseline_rows, "threshold": self.threshold,
                "drift_detected": self.drift_detected, "drifted": list(self.drifted), "max_psi": self.max_psi,
                "missing_columns": list(self.missing_columns), "new_columns": list(self.new_columns),
                "schema_changed": self.schema_changed, "reason": self.reason,
                "features": [f.to_dict() for f in self.features]}


class _NumericTally:
    __slots__ = ("counts", "edges", "invalid", "missing")

    def __init__(self, feature: NumericFeature) -> None:
        self.edges = feature.edges
        self.counts = [0] * (len(feature.edges) + 1)
        self.missing = 0
        self.invalid = 0

    def add_many(self, values: Iterable[object]) -> None:
        counts, edges, find = self.counts, self.edges, bisect_right
        for value in values:
            if value.__class__ is str:  # fast path for CSV text
                try:
                    number = float(value)
                except ValueError:
                    self._add_other(value)
                    continue
                if number - number == 0.0:  # finite
                    counts[find(edges, number)] += 1
                else:
                    self.missing += 1
            else:
                self._add_other(value)

    def _add_other(self, value: object) -> None:
        try:
            number = to_number(value)
        except ValueError:
            self.invalid += 1
            return
        if number is None:
            self.missing += 1
        else:
            self.counts[bisect_right(self.edges, number)] += 1

    def actual(self) -> list[float]:
        return [*self.counts, self.missing, self.invalid]


class _CategoricalTally:
    __slots__ = ("counts", "index", "missing")

    def __init__(self, feature: CategoricalFeature) -> None:
        self.index = {c: i for i, c in enumerate(feature.categories)}
        self.counts = [0] * (len(feature.categories) + 1)
        self.missing = 0

    def add_many(self, values: Iterable[object]) -> None:
        counts, index = self.counts, self.index
        for value in values:
            if value.__class__ is str:
                token = value.strip()
                position = index.get(token)
                if position is not None:  # a known category (missing tokens never become categories)
                    counts[position] += 1
                elif token.lower() in MISSING_TOKENS:
                    self.missing += 1
                else:
                    counts[-1] += 1
            elif _missing(value):
                self.missing += 1
            else:
                counts[index.get(_token(value), -1)] += 1

    def actual(self) -> list[float]:
        return [*self.counts, self.missing]


_BATCH_ROWS = 1024  # rows gathered before each feature's tally walks its column: fewer calls per value


def _tally(batch: list[Mapping[str, object]], tallies: list[tuple[Feature, _NumericTally | _CategoricalTally]],
           seen: set[str]) -> int:
    if batch:
        seen.update(*batch)
        for feature, tally in tallies:
            name = feature.name
            tally.add_many([row.get(name) for row in batch])
    return len(batch)


def compare(baseline: Profile, rows: Iterable[Mapping[str, object]], threshold: float, *, min_rows: int = 1,
            eps: float = 1e-4) -> DriftReport:
    """Stream `rows` once, bin them with `baseline`'s edges and categories, and report PSI per feature.

    A feature drifts when its PSI is above `threshold`. Columns of the baseline that no row carries are
    `missing_columns` (no PSI for them); columns the rows carry that the baseline neither profiled nor
    excluded are `new_columns`. With fewer than `min_rows` rows (0 included) or an empty baseline no PSI is
    computed and `reason` says why; schema findings are still reported when there were rows.
    """
    tallies: list[tuple[Feature, _NumericTally | _CategoricalTally]] = [
        (f, _NumericTally(f) if isinstance(f, NumericFeature) else _CategoricalTally(f)) for f in baseline.features
    ]
    names = [f.name for f, _ in tallies]
    seen: set[str] = set()
    count = 0
    batch: list[Mapping[str, object]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _BATCH_ROWS:
            count += _tally(batch, tallies, seen)
            batch = []
    count += _tally(batch, tallies, seen)
    common = dict(threshold=threshold, baseline_rows=baseline.rows)
    if count == 0:
        return DriftReport(rows=0, reason="no rows in the recent data", **common)  # type: ignore[arg-type]
    missing_columns = tuple(n for n in names if n not in seen)
    known = set(names) | set(baseline.excluded) | ({baseline.label} if baseline.label else set())
    new_columns = tuple(sorted(seen - known))
    schema = dict(missing_columns=missing_columns, new_columns=new_columns, **common)
    if count < min_rows:
        return DriftReport(rows=count, reason=f"only {count} recent rows, fewer than the {min_rows} a drift check "
                                              f"needs", **schema)  # type: ignore[arg-type]
    if baseline.rows == 0:
        return DriftReport(rows=count, reason="the baseline profile has no rows", **schema)  # type: ignore[arg-type]
    results = []
    for feature, tally in tallies:
        if feature.name in missing_columns:
            continue
        value = psi(feature.expected(), tally.actual(), eps)
        invalid = tally.invalid if isinstance(tally, _NumericTally) else 0
        results.append(FeatureDrift(feature.name, feature.kind, value, value > threshold, feature.missing_rate,
                                    tally.missing / count, invalid))
    return DriftReport(rows=count, features=tuple(results), **schema)  # type: ignore[arg-type]
