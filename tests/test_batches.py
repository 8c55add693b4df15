"""Pure batch rules: path parsing, file usability, deterministic AML-safe names, admission decisions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.batches import admission
from shared.batches.manifest import freeze
from shared.batches.paths import (
    PathProblem,
    asset_path,
    data_asset_name,
    data_asset_version,
    file_problem,
    job_name,
    manifest_digest,
    parse_blob_path,
)
from shared.batches.record import (
    LATE_KEPT,
    ArrivalRecord,
    BlobVersion,
    ManifestRef,
    arrived,
    complete,
    last_seen_slack,
)

AML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
AML_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,29}$")


def test_parse_nested_file() -> None:
    p = parse_blob_path("reflex-data", "sales/2024-06-01/part/0.csv")
    assert (p.dataset, p.batch, p.file, p.batch_id) == ("sales", "2024-06-01", "part/0.csv",
                                                        "reflex-data/sales/2024-06-01")


@pytest.mark.parametrize(("name", "why"), [
    ("file.csv", "container root"),
    ("sales/file.csv", "not in a batch"),
    ("sales//x.csv", "unsafe"),
    ("sales/b 1/x.csv", "unsafe"),
    ("sa%les/b1/x.csv", "unsafe"),
    ("sales/b1/a//x.csv", "empty path segment"),
    ("sales/b1/", "empty path segment"),
])
def test_parse_rejects_with_reason(name: str, why: str) -> None:
    with pytest.raises(PathProblem, match=why):
        parse_blob_path("reflex-data", name)


@pytest.mark.parametrize(("file", "size", "problem"), [
    ("part-0.csv", 10, ""), ("x/part.PARQUET", 1, ""), ("p.csv.gz", 5, ""), ("p.tsv", 5, ""),
    ("a.json", 5, "unreadable format for training"), ("a.jsonl", 5, "expected .csv, .csv.gz, .tsv"),
    ("part-0.csv", 0, "zero bytes"), ("notes.txt", 10, "unreadable format"), ("image.png", 10, "unreadable"),
    (".hidden.csv", 10, "hidden"), ("_SUCCESS", 0, "hidden or underscore"), ("part-0.csv", None, ""),
    ("_temporary/0/part-0.csv", 10, "hidden or underscore"), ("x" * 252 + ".csv", 10, "256 bytes"),
])
def test_file_problem(file: str, size: int | None, problem: str) -> None:
    found = file_problem(file, size)
    assert (problem in found and bool(found)) if problem else found == ""


def test_names_kept_when_safe_and_mapped_deterministically_when_not() -> None:
    assert data_asset_name("sales") == "sales"
    assert data_asset_version("2024-06-01") == "2024-06-01"
    mapped = data_asset_name("sales.eu=1")
    assert AML_NAME.fullmatch(mapped) and mapped.startswith("sales-eu-1-") and mapped == data_asset_name("sales.eu=1")
    assert data_asset_name("sales.eu") != data_asset_name("sales=eu")  # same safe form, different hash
    assert data_asset_version("date=2024-06-01").startswith("b-")
    assert data_asset_version("x" * 40).startswith("b-")
    assert asset_path("reflexdata", "sales", "b1") == "azureml://datastores/reflexdata/paths/sales/b1/"


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}", fullmatch=True))
def test_every_accepted_segment_maps_to_valid_aml_names(segment: str) -> None:
    p = parse_blob_path("c", f"{segment}/{segment}/f.csv")
    assert AML_NAME.fullmatch(data_asset_name(p.dataset))
    assert AML_VERSION.fullmatch(data_asset_version(p.batch))


@given(st.text(max_size=300))
def test_parse_never_raises_anything_but_path_problem(name: str) -> None:
    try:
        parse_blob_path("c", name)
    except PathProblem:
        pass


def test_job_name_depends_on_batch_and_manifest_not_order() -> None:
    a = {"x.csv": {"etag": "1"}, "y.csv": {"etag": "2"}}
    b = {"y.csv": {"etag": "2"}, "x.csv": {"etag": "1"}}
    assert manifest_digest(a) == manifest_digest(b)
    name = job_name("c/d/b", manifest_digest(a))
    assert name == name.lower() and re.fullmatch(r"reflex-train-[0-9a-f]{24}", name)
    assert job_name("c/d/b2", manifest_digest(a)) != name
    assert job_name("c/d/b", manifest_digest({"x.csv": {"etag": "9"}})) != name


def _v(file: str, etag: str = "e1", size: int | None = 5) -> BlobVersion:
    return BlobVersion(file, f"http://h/c/d/b/{file}", etag, size)


def test_record_transitions() -> None:
    path = parse_blob_path("c", "d/b/x.csv")
    rec = ArrivalRecord.new(path, 1.0)
    assert rec.status == "collecting" and rec.first_seen == rec.last_seen == 1.0

    def what(batch: ArrivalRecord, blob: BlobVersion, *, new: bool, in_manifest: bool = False) -> tuple[str, bool]:
        return arrived(batch, blob, new=new, in_manifest=in_manifest, purpose="training")

    assert what(rec, _v("x.csv"), new=True) == ("added", True)
    assert what(rec, _v("x.csv"), new=False) == ("duplicate", True)  # its entry existed: a redelivery
    assert what(rec, _v("x.csv", "e2"), new=True) == ("added", True)  # overwritten: a new version
    assert what(rec, _v("empty.csv", size=0), new=True) == ("rejected", False)
    assert what(rec, _v("empty.csv", size=0), new=False) == ("duplicate", False)
    # last_seen is refreshed only once it lags by more than the slack; the quiet window waits that much longer
    slack = last_seen_slack(300)
    assert rec.seen(1.0 + slack, 300) is None
    fresh = rec.seen(3.0 + slack, 300)
    assert fresh is not None and fresh.last_seen == 3.0 + slack
    assert not fresh.quiet(3.0 + slack + 300, 300) and fresh.quiet(3.0 + 2 * slack + 300, 300)
    # completion freezes the manifest from the listing (the overwritten version, the unusable file rejected)
    frozen = freeze([_v("x.csv", "e2"), _v("z.csv"), _v("n.txt")], purpose="training", folder=rec.folder)
    assert sorted(frozen.files) == ["x.csv", "z.csv"] and frozen.files["x.csv"]["etag"] == "e2"
    assert "unreadable format" in frozen.rejected["n.txt"]["reason"]
    ref = ManifestRef("manifests/arrivals/c/d/b/0", len(frozen.files), len(frozen.rejected), frozen.digest)
    done, won = complete(fresh.to_dict(), path, ref, frozen.rejected, 5.0, event_id="ev")
    assert won and done and done["status"] == "complete" and done["manifest"] == ref.to_dict()
    assert "n.txt" in done["rejected"] and done["completing_event"] == "ev" and "files" not in done
    assert complete(done, path, ref, {}, 6.0, event_id="other") == (None, False)
    batch = ArrivalRecord.from_dict(done)
    assert (batch.file_count, batch.rejected_count, batch.digest) == (2, 1, manifest_digest(frozen.files))
    assert batch.seen(100.0, 300) is None  # complete: last_seen is history
    assert what(batch, _v("z.csv"), new=True, in_manifest=True) == ("duplicate", True)
    assert what(batch, _v("new.csv"), new=True) == ("late", False)
    assert what(batch, _v("new.csv"), new=False) == ("duplicate", False)
    late = batch.with_late(_v("new.csv"), 8.0)
    assert late is not None and "new.csv" in late.late_files and late.with_late(_v("new.csv"), 9.0) is None


def test_the_summary_stays_small_and_a_record_written_before_17_completes_into_it() -> None:
    path = parse_blob_path("c", "d/b/x.csv")
    legacy = {"container": "c", "dataset": "d", "batch": "b", "status": "collecting", "first_seen": 1.0,
              "last_seen": 1.0, "files": {"x.csv": {"url": "u", "etag": "e1", "size": 5}}, "rejected": {},
              "late_files": {}, "history": [[1.0, "collecting", "first blob"]]}
    old = ArrivalRecord.from_dict(legacy)
    assert old.file_count == 1 and old.digest == manifest_digest(legacy["files"])  # read as it is
    frozen = freeze([_v(f"p{i}.csv", size=0) for i in range(500)], purpose="training", folder=old.folder)
    ref = ManifestRef("manifests/k/0", 0, 500, frozen.digest)
    done, won = complete(legacy, path, ref, frozen.rejected, 2.0, event_id="ev")
    assert won and done and "files" not in done and len(done["rejected"]) == 20  # the manifest holds all 500
    batch = ArrivalRecord.from_dict(done)
    assert (batch.file_count, batch.rejected_count) == (0, 500)
    for i in range(LATE_KEPT):
        batch = batch.with_late(_v(f"late{i}.csv"), 3.0) or batch
    assert len(batch.late_files) == LATE_KEPT and batch.with_late(_v("one-more.csv"), 4.0) is None


def test_admission_concurrency_daily_cap_and_idempotence() -> None:
    day = 1_700_000_000.0
    rec, d = admission.reserve(None, "j1", "k1", day, max_concurrent=2, daily_cap=3)
    assert d.admitted and rec
    assert admission.reserve(rec, "j1", "k1", day, max_concurrent=2, daily_cap=3)[0] is None  # same job again
    rec, d = admission.reserve(rec, "j2", "k2", day, max_concurrent=2, daily_cap=3)
    assert d.admitted and rec
    new, d = admission.reserve(rec, "j3", "k3", day, max_concurrent=2, daily_cap=3)
    assert new is None and not d.admitted and "2 Reflex training jobs running (maximum 2)" in d.reason
    rec = admission.release(rec, {"j1"}, day)
    assert rec and list(rec["running"]) == ["j2"]
    rec, d = admission.reserve(rec, "j3", "k3", day, max_concurrent=2, daily_cap=3)
    assert d.admitted and rec
    rec = admission.release(rec, {"j2", "j3"}, day)
    new, d = admission.reserve(rec, "j4", "k4", day, max_concurrent=2, daily_cap=3)
    assert new is None and "daily training cap reached (3/3" in d.reason
    new, d = admission.reserve(rec, "j4", "k4", day + 86_400, max_concurrent=2, daily_cap=3)  # next UTC day
    assert d.admitted and new and new["started_today"] == 1
    assert admission.release(rec, {"unknown"}, day) is None
