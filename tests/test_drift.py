"""Drift arithmetic: PSI by hand, detection on shifted data, no alarm on resampled data, schema findings."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.batches.tabular import iter_csv_rows
from shared.core.errors import PermanentError
from shared.monitoring.drift import (
    CategoricalFeature,
    InvalidProfile,
    NumericFeature,
    Profile,
    ProfileBuilder,
    compare,
    profile_rows,
    psi,
)

# ---------------------------------------------------------------- PSI


def test_psi_matches_hand_arithmetic() -> None:
    # (0.2-0.25)*ln(0.2/0.25) + (0.3-0.25)*ln(0.3/0.25) + (0.5-0.5)*ln(1)
    # = (-0.05)(-0.2231435513) + (0.05)(0.1823215568) + 0 = 0.0111571776 + 0.0091160778 = 0.0202732554
    assert psi([0.25, 0.25, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0202732554, abs=1e-10)


def test_psi_smooths_an_empty_bin_with_eps() -> None:
    # bin 3 is empty in expected, so e = eps = 1e-4:
    # 0 + (0.4-0.5)*ln(0.8) + (0.1-0.0001)*ln(0.1/0.0001)
    # = (-0.1)(-0.2231435513) + 0.0999 * 6.9077552790 = 0.0223143551 + 0.6900847524 = 0.7123991075
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) == pytest.approx(0.7123991075, abs=1e-9)
    # a larger eps costs less: (0.1-0.001)*ln(0.1/0.001) = 0.099*4.6051701860 = 0.4559118484; + 0.0223143551
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1], eps=1e-3) == pytest.approx(0.4782262035, abs=1e-9)


def test_psi_normalises_counts() -> None:
    assert psi([10, 10], [30, 20]) == pytest.approx(psi([0.5, 0.5], [0.6, 0.4]))


@pytest.mark.parametrize(("expected", "actual"), [([0.5, 0.5], [1.0]), ([], []), ([0.0, 0.0], [0.5, 0.5]),
                                                  ([-0.1, 1.1], [0.5, 0.5]), ([math.nan, 1.0], [0.5, 0.5])])
def test_psi_rejects_inconsistent_inputs(expected: list[float], actual: list[float]) -> None:
    with pytest.raises(ValueError, match="psi"):
        psi(expected, actual)


shares = st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=1, max_size=30).filter(
    lambda xs: sum(xs) > 0)


@given(shares, st.data())
def test_psi_is_never_negative_and_zero_on_itself(expected: list[float], data: st.DataObject) -> None:
    actual = data.draw(st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
                                min_size=len(expected), max_size=len(expected)).filter(lambda xs: sum(xs) > 0))
    assert psi(expected, actual) >= 0.0
    assert psi(expected, expected) == 0.0


# ---------------------------------------------------------------- detection


def normal_rows(n: int, seed: int, mean: float = 0.0, categories: str = "abc") -> Iterator[dict[str, object]]:
    rng = random.Random(seed)
    for _ in range(n):
        yield {"x": rng.gauss(mean, 1.0), "z": rng.gauss(5.0, 2.0), "c": rng.choice(categories), "y": rng.random()}


@pytest.fixture(scope="module")
def baseline() -> Profile:
    return profile_rows(normal_rows(20_000, seed=1), label="y")


def test_a_one_sd_mean_shift_drifts_and_resampled_data_does_not(baseline: Profile) -> None:
    shifted = compare(baseline, normal_rows(20_000, seed=2, mean=1.0), threshold=0.25)
    assert shifted.rows == 20_000
    assert shifted.psi_of("x") > 0.5  # well above 0.25: a 1-sd shift moves ~1/3 of the mass across deciles
    assert shifted.drifted == ("x",)
    assert shifted.psi_of("z") < 0.1 and shifted.psi_of("c") < 0.1

    same = compare(baseline, normal_rows(20_000, seed=3), threshold=0.25)
    assert not same.drift_detected
    assert max(f.psi for f in same.features) < 0.1


def test_categorical_drift(baseline: Profile) -> None:
    feature = baseline.feature("c")
    assert isinstance(feature, CategoricalFeature) and set(feature.categories) == {"a", "b", "c"}
    # mostly "c" plus a category never seen in training ("d" lands in __other__)
    report = compare(baseline, normal_rows(5_000, seed=4, categories="cccccd"), threshold=0.25)
    assert report.psi_of("c") > 0.25 and "c" in report.drifted
    assert report.psi_of("x") < 0.1


def test_schema_findings_name_missing_and_new_columns(baseline: Profile) -> None:
    rows = ({"x": r["x"], "c": r["c"], "y": 1, "region": "eu", "age": 3} for r in normal_rows(1_000, seed=5))
    report = compare(baseline, rows, threshold=0.25)
    assert report.missing_columns == ("z",)
    assert report.new_columns == ("age", "region")  # the label "y" is not new
    assert report.schema_changed
    assert [f.name for f in report.features] == ["x", "c"]  # no PSI for a column that is not there
    json.dumps(report.to_dict())


def test_compare_streams_numeric_strings_from_csv_like_native_numbers(baseline: Profile) -> None:
    rows = list(normal_rows(3_000, seed=6, mean=0.5))
    text = "x,z,c\n" + "".join(f"{r['x']!r},{r['z']!r},{r['c']}\n" for r in rows)
    data = text.encode()
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    from_csv = compare(baseline, iter_csv_rows(chunks), threshold=0.25)
    native = compare(baseline, rows, threshold=0.25)
    assert from_csv.to_dict()["features"] == native.to_dict()["features"]
    assert from_csv.new_columns == () == native.new_columns  # the label "y" is known, not new


# ---------------------------------------------------------------- degenerate data


def test_empty_recent_data_reports_zero_rows_and_a_reason(baseline: Profile) -> None:
    report = compare(baseline, [], threshold=0.25)
    assert report.rows == 0 and report.features == () and report.max_psi is None
    assert report.reason == "no rows in the recent data"
    assert report.to_dict()["reason"] == "no rows in the recent data"


def test_too_few_rows_give_no_psi_but_still_schema(baseline: Profile) -> None:
    report = compare(baseline, [{"x": 1.0, "new": 1}], threshold=0.25, min_rows=100)
    assert report.rows == 1 and report.features == ()
    assert "fewer than the 100" in (report.reason or "")
    assert report.new_columns == ("new",) and set(report.missing_columns) == {"z", "c"}


def test_an_empty_baseline_gives_a_reason() -> None:
    empty = profile_rows([])
    assert empty.rows == 0 and empty.features == ()
    report = compare(profile_rows([{"a": ""}]), [{"a": "1"}], threshold=0.25)
    assert report.features[0].drifted  # all-missing in training, present now
    nothing = compare(Profile(rows=0, features=()), [{"a": 1}], threshold=0.25)
    assert nothing.reason == "the baseline profile has no rows" and nothing.new_columns == ("a",)


def test_all_missing_column() -> None:
    profile = profile_rows({"m": v, "x": str(i)} for i, v in enumerate(["", "NA", None, "null"] * 25))
    feature = profile.feature("m")
    assert isinstance(feature, CategoricalFeature)
    assert feature.missing_rate == 1.0 and feature.categories == ()
    still = compare(profile, ({"m": "", "x": str(i)} for i in range(100)), threshold=0.25)
    assert still.psi_of("m") == 0.0
    # and a numeric column that goes all-missing drifts: the missing bucket moves from 0 to 1
    gone = compare(profile, ({"m": "", "x": ""} for _ in range(100)), threshold=0.25)
    assert gone.psi_of("x") > 1.0 and gone.features[1].missing_rate == 1.0


def test_constant_column_keeps_below_equal_above_bins() -> None:
    profile = profile_rows({"k": "3"} for _ in range(500))
    feature = profile.feature("k")
    assert isinstance(feature, NumericFeature)
    assert feature.edges == (3.0, math.nextafter(3.0, math.inf))
    assert feature.proportions == (0.0, 1.0, 0.0)
    assert compare(profile, ({"k": 3} for _ in range(200)), threshold=0.25).psi_of("k") == 0.0
    assert compare(profile, ({"k": 4} for _ in range(200)), threshold=0.25).drifted == ("k",)
    assert compare(profile, ({"k": 2} for _ in range(200)), threshold=0.25).drifted == ("k",)


def test_a_numeric_feature_that_turns_to_text_is_invalid_and_drifts(baseline: Profile) -> None:
    rows = ({**r, "x": "high" if i % 2 else r["x"]} for i, r in enumerate(normal_rows(1_000, seed=7)))
    report = compare(baseline, rows, threshold=0.25)
    x = next(f for f in report.features if f.name == "x")
    assert x.invalid == 500 and x.missing_rate == 0.0 and x.drifted


# ---------------------------------------------------------------- profile


def test_profile_bins_deciles_and_counts_missing() -> None:
    rows = [{"v": str(i) if i % 5 else "", "lab": 1} for i in range(1_000)]
    profile = profile_rows(rows, label="lab")
    assert profile.rows == 1_000 and profile.columns == ("v",) and profile.excluded == ("lab",)
    v = profile.feature("v")
    assert isinstance(v, NumericFeature)
    assert v.missing_rate == 0.2 and v.count == 800 == v.sampled
    assert len(v.edges) == 11  # min, 9 inner deciles, just above max
    assert v.proportions[0] == 0.0 and v.proportions[-1] == 0.0  # outside the training range
    assert all(p == pytest.approx(0.1, abs=0.002) for p in v.proportions[1:-1])
    assert sum(v.expected()) == pytest.approx(1.0)


def test_top_k_categories_and_other_bucket_are_exact() -> None:
    # category i appears i+1 times: 30 categories, 465 values; top 20 are cat29..cat10 = 30+...+11 = 410
    rows = [{"c": f"cat{i}"} for i in range(30) for _ in range(i + 1)]
    feature = profile_rows(rows, top_k=20).feature("c")
    assert isinstance(feature, CategoricalFeature)
    assert feature.categories[:3] == ("cat29", "cat28", "cat27") and len(feature.categories) == 20
    assert feature.proportions[0] == 30 / 465
    assert feature.proportions[-1] == pytest.approx(55 / 465)  # __other__ = 1+2+...+10
    assert not feature.approximate


def test_high_cardinality_falls_back_to_the_sample_and_says_so() -> None:
    rows = ({"id": f"u{i}", "c": "a" if i % 4 else "b"} for i in range(5_000))
    profile = profile_rows(rows, max_distinct=100, reservoir_size=1_000)
    ids, c = profile.feature("id"), profile.feature("c")
    assert isinstance(ids, CategoricalFeature) and ids.approximate and ids.count == 5_000
    assert ids.proportions[-1] == pytest.approx(1.0 - 20 / 1_000)
    assert isinstance(c, CategoricalFeature) and not c.approximate and c.proportions[:2] == (0.75, 0.25)


def test_reservoir_profile_is_deterministic_and_close_beyond_its_size() -> None:
    def build(seed: int) -> Profile:
        return profile_rows(normal_rows(30_000, seed=8), reservoir_size=5_000, seed=seed, label="y")

    first, again = build(0), build(0)
    assert first == again
    x = first.feature("x")
    assert isinstance(x, NumericFeature) and x.count == 30_000 and x.sampled == 5_000
    # edges from a 5,000 sample land near the true N(0,1) deciles (-1.2816 ... 1.2816)
    assert x.edges[1] == pytest.approx(-1.2816, abs=0.08) and x.edges[9] == pytest.approx(1.2816, abs=0.08)
    full = profile_rows(normal_rows(30_000, seed=8), reservoir_size=50_000, label="y")
    assert compare(first, normal_rows(30_000, seed=8), 0.25).max_psi < 0.01  # the sample vs all its data
    assert compare(full, normal_rows(30_000, seed=8), 0.25).max_psi < 1e-9  # exact when all values fit


def test_mixed_column_becomes_categorical() -> None:
    rows = [{"age": str(20 + i % 3)} for i in range(99)] + [{"age": "unknown"}]
    feature = profile_rows(rows).feature("age")
    assert isinstance(feature, CategoricalFeature)
    assert dict(zip(feature.categories, feature.proportions, strict=False)) == {
        "20": 0.33, "21": 0.33, "22": 0.33, "unknown": 0.01}


def test_forced_categorical_and_native_values_use_the_same_tokens() -> None:
    profile = profile_rows([{"code": 1}, {"code": 2.0}, {"code": True}], categorical=["code"])
    feature = profile.feature("code")
    assert isinstance(feature, CategoricalFeature) and feature.categories == ("1", "2", "True")
    report = compare(profile, [{"code": "1"}, {"code": "2"}, {"code": "True"}], threshold=0.1)
    assert report.psi_of("code") == pytest.approx(0.0, abs=1e-12)


def test_profile_json_round_trip(baseline: Profile) -> None:
    text = baseline.to_json()
    assert Profile.from_json(text) == baseline
    assert Profile.from_dict(json.loads(text)).to_dict() == baseline.to_dict()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(version=2), "unsupported profile version 2"),
    (lambda d: d["features"]["x"].update(edges=[2.0, 1.0]), "'x': edges must be finite and increasing"),
    (lambda d: d["features"]["c"]["proportions"].pop(), "'c': proportions must be 4 shares"),
    (lambda d: d["features"]["x"].update(kind="text"), "'x' has unknown kind 'text'"),
    (lambda d: d["features"]["x"].pop("missing_rate"), "KeyError"),
])
def test_invalid_profiles_are_permanent_errors(baseline: Profile, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(baseline.to_json())
    mutate(data)
    with pytest.raises(InvalidProfile, match=message):
        Profile.from_dict(data)
    with pytest.raises(PermanentError, match="not JSON"):
        Profile.from_json("{")


def test_builder_validates_its_options() -> None:
    with pytest.raises(ValueError, match="bins >= 2"):
        ProfileBuilder(bins=1)


def test_request_log_values_of_any_json_type_profile_and_compare() -> None:
    rows = [{"n": 1, "flag": True, "tags": ["a", "b"], "meta": {"k": 1}, "s": None}] * 10
    profile = profile_rows(rows)
    assert [f.kind for f in profile.features] == ["numeric", "categorical", "categorical", "categorical",
                                                  "categorical"]
    report = compare(profile, rows, threshold=0.1)
    assert report.max_psi == 0.0 and not report.drift_detected
    changed = compare(profile, [{"n": [1], "flag": False, "tags": [], "meta": {}, "s": "x"}] * 10, threshold=0.1)
    assert set(changed.drifted) == {"n", "flag", "tags", "meta", "s"}
    assert changed.features[0].invalid == 10


def test_docstring_examples_hold() -> None:
    import doctest

    import shared.batches.tabular
    import shared.monitoring.drift

    for module in (shared.monitoring.drift, shared.batches.tabular):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
