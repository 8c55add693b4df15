"""Streaming readers: CSV across awkward chunk boundaries, Parquet batches, JSON request logs, clear errors."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.batches.tabular import (
    UnreadableData,
    is_missing,
    iter_csv_rows,
    iter_json_records,
    iter_parquet_rows,
    read_rows,
    reader_for,
    to_number,
)
from shared.core.errors import PermanentError

REPO = Path(__file__).resolve().parents[1]


def split_at(data: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# ---------------------------------------------------------------- CSV

CSV_TEXT = 'name,city,note\nJosé,Zürich,"two\nlines, with comma"\nZoë,København,"say ""hi"""\n'
CSV_ROWS = [
    {"name": "José", "city": "Zürich", "note": "two\nlines, with comma"},
    {"name": "Zoë", "city": "København", "note": 'say "hi"'},
]


def test_csv_rows_are_the_same_wherever_the_chunks_split() -> None:
    data = CSV_TEXT.encode("utf-8")
    # "é" is 2 bytes: one cut falls between them; every other single cut (inside the quoted newline too) as well.
    e_acute = data.index("é".encode())
    assert list(iter_csv_rows(split_at(data, e_acute + 1))) == CSV_ROWS
    for cut in range(1, len(data)):
        assert list(iter_csv_rows(split_at(data, cut))) == CSV_ROWS, cut
    assert list(iter_csv_rows([data[i:i + 1] for i in range(len(data))])) == CSV_ROWS


def test_csv_accepts_bytes_file_objects_crlf_and_a_byte_order_mark() -> None:
    crlf = CSV_TEXT.replace("\n", "\r\n").replace("two\r\nlines", "two\nlines").encode("utf-8")
    assert list(iter_csv_rows(crlf)) == CSV_ROWS
    assert list(iter_csv_rows(io.BytesIO(b"\xef\xbb\xbf" + CSV_TEXT.encode()))) == CSV_ROWS


def test_csv_pads_short_rows_skips_blank_lines_and_names_unnamed_columns() -> None:
    data = b",a,b\n0,1,2\n\n1,3\n2,4,5,extra\n"
    assert list(iter_csv_rows(data)) == [
        {"Unnamed: 0": "0", "a": "1", "b": "2"},
        {"Unnamed: 0": "1", "a": "3", "b": ""},
        {"Unnamed: 0": "2", "a": "4", "b": "5"},
    ]


def test_csv_reads_lazily_from_an_endless_stream() -> None:
    def endless() -> Iterator[bytes]:
        yield b"x,y\n"
        for i in itertools.count():
            yield f"{i},{i * 2}\n".encode()

    rows = iter_csv_rows(endless())
    assert next(rows) == {"x": "0", "y": "0"}
    assert list(itertools.islice(rows, 2)) == [{"x": "1", "y": "2"}, {"x": "2", "y": "4"}]


def test_csv_empty_input_and_header_only_yield_no_rows() -> None:
    assert list(iter_csv_rows(b"")) == []
    assert list(iter_csv_rows([b"a,b", b"\n"])) == []


def test_csv_errors_name_the_file() -> None:
    with pytest.raises(UnreadableData, match=r"in/bad\.csv: not utf-8-sig text"):
        list(iter_csv_rows([b"a,b\n1,", b"\xff\xfe\n"], name="in/bad.csv"))
    with pytest.raises(UnreadableData, match=r"dup\.csv: duplicate column names.*'a'"):
        list(iter_csv_rows(b"a,b,a\n1,2,3\n", name="dup.csv"))
    assert issubclass(UnreadableData, PermanentError)


# ---------------------------------------------------------------- Parquet


def parquet_bytes(rows: int = 1000, row_group_size: int = 300) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "x": [float(i) if i % 10 else None for i in range(rows)],
        "n": list(range(rows)),
        "c": [f"cat{i % 3}" for i in range(rows)],
    })
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


def test_parquet_rows_come_batch_by_batch_with_native_values() -> None:
    data = parquet_bytes()
    rows = list(iter_parquet_rows(data, batch_rows=128))
    assert len(rows) == 1000
    assert rows[0] == {"x": None, "n": 0, "c": "cat0"}
    assert rows[11] == {"x": 11.0, "n": 11, "c": "cat2"}
    # chunks (as a blob download yields them) are spooled; a seekable file is read in place
    assert list(iter_parquet_rows(split_at(data, 7, 100, 2000))) == rows
    assert list(read_rows("scores/part-0.PARQUET", io.BytesIO(data))) == rows


def test_corrupt_parquet_is_unreadable_and_named() -> None:
    data = parquet_bytes()
    with pytest.raises(UnreadableData, match=r"batch/broken\.parquet: not a readable Parquet file"):
        list(read_rows("batch/broken.parquet", data[: len(data) // 2]))
    with pytest.raises(UnreadableData, match=r"x\.pq: not a readable Parquet file"):
        list(read_rows("x.pq", b"a,b\n1,2\n"))


# ---------------------------------------------------------------- JSON


def test_json_lines_request_logs_unwrap_their_envelopes() -> None:
    lines = [
        {"data": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]},  # online request log
        [{"a": 3, "b": "z"}],  # a list of records
        {"a": 4, "b": "w"},  # one record
        {"input_data": {"columns": ["a", "b"], "index": [0], "data": [[5, "v"]]}},  # MLflow scoring, split
        {"specversion": "1.0", "type": "azureml.inference.model_inputs", "data": {"a": [6, 7], "b": ["u", "t"]}},
        {"dataframe_records": [{"a": 8, "b": "s"}]},
    ]
    data = ("\n".join(json.dumps(line) for line in lines) + "\n\n").encode()
    records = list(iter_json_records(split_at(data, 5, 50)))
    assert [r["a"] for r in records] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r["b"] for r in records] == ["x", "y", "z", "w", "v", "u", "t", "s"]


def test_a_pretty_printed_json_document_is_read_whole() -> None:
    data = json.dumps({"data": [{"a": 1}, {"a": 2}]}, indent=2).encode()
    assert list(read_rows("requests/2024/log.json", data)) == [{"a": 1}, {"a": 2}]


def test_bad_json_is_unreadable_and_names_file_and_line() -> None:
    with pytest.raises(UnreadableData, match=r"logs/r\.jsonl: line 3 is not valid JSON"):
        list(read_rows("logs/r.jsonl", b'{"a": 1}\n\n{"a": \n'))
    with pytest.raises(UnreadableData, match=r"r\.json: not valid JSON or JSON lines"):
        list(read_rows("r.json", b"{not json at all\n}"))
    with pytest.raises(UnreadableData, match=r"r\.json: line 1: expected records \(objects\), found int"):
        list(read_rows("r.json", b"[1, 2]\n"))


# ---------------------------------------------------------------- choosing a reader


def test_reader_for_chooses_by_extension_and_reads_gzip() -> None:
    assert list(reader_for("a/b.tsv")(b"x\ty\n1\t2\n")) == [{"x": "1", "y": "2"}]
    assert list(read_rows("in.csv.gz", gzip.compress(CSV_TEXT.encode()))) == CSV_ROWS
    assert list(read_rows("log.jsonl.GZ", gzip.compress(b'{"data": [{"a": 1}]}\n'))) == [{"a": 1}]
    with pytest.raises(UnreadableData, match=r"bad\.csv\.gz: not valid gzip data"):
        list(read_rows("bad.csv.gz", b"plain text, not gzip"))


@pytest.mark.parametrize("name", ["data/input.xlsx", "README", "model.pkl", "x.parquet.gz", "dir.v2/noext"])
def test_unknown_formats_are_unreadable_and_named(name: str) -> None:
    with pytest.raises(UnreadableData, match="unsupported data format") as info:
        reader_for(name)
    assert name in str(info.value)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(("value", "expected"), [
    ("1.5", 1.5), (" -2 ", -2.0), ("1e3", 1000.0), (7, 7.0), (2.5, 2.5), ("", None), ("NA", None),
    ("n/a", None), ("null", None), ("NaN", None), (float("nan"), None), (None, None), ("inf", None),
])
def test_to_number(value: object, expected: float | None) -> None:
    assert to_number(value) == expected


@pytest.mark.parametrize("value", ["abc", "1,5", True, [1]])
def test_to_number_rejects_values_that_are_not_numbers(value: object) -> None:
    with pytest.raises(ValueError, match="not a number"):
        to_number(value)


def test_is_missing() -> None:
    assert [is_missing(v) for v in (None, "", " NULL ", float("nan"), "0", 0, "x")] == [
        True, True, True, True, False, False, False]


def test_importing_the_readers_and_drift_stays_light() -> None:
    code = ("import sys, shared.batches.tabular, shared.monitoring.drift; "
            "heavy = [m for m in ('pandas', 'numpy', 'pyarrow') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
