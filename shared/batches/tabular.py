"""Streaming row readers for the data a drift check reads: CSV, Parquet and JSON request logs, without pandas.

Why not pandas: the drift timer runs inside the Functions host, where pandas/numpy would cost every cold start
(see DESIGN.md, cold start) and `read_csv` holds the whole blob plus its frame in memory. These readers turn
a source into an iterator of `dict[str, value]` rows while holding one chunk (and one row) at a time:

* a *source* is `bytes`, a binary file-like object (anything with `.read(n)`, such as azure-storage-blob's
  `StorageStreamDownloader`) or an iterable of byte chunks (`download_blob().chunks()`);
* CSV is decoded incrementally (`codecs` incremental decoder, so a multi-byte UTF-8 character split across
  two chunks is fine) and parsed with the `csv` module (quoted fields may span lines); values stay `str`;
* JSON lines are parsed one line at a time; request-log envelopes are unwrapped (see `iter_json_records`);
* Parquet needs random access to its footer, so chunks are spooled to a temporary file (in memory up to
  `SPOOL_MEMORY_BYTES`, then on disk) and read batch by batch; pyarrow is imported only when a Parquet file is
  read, and is a dev/test dependency today (requirements-dev.txt): without it `UnreadableData` says so;
* a name ending in `.gz` is decompressed on the fly (CSV and JSON only).

Anything unreadable (unknown extension, bad encoding, malformed CSV/JSON/Parquet) raises `UnreadableData`, a
`PermanentError` naming the file: retrying cannot fix the bytes, so the caller records the reason and moves on.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from functools import partial
from typing import IO, Any, cast

from shared.core.errors import PermanentError

__all__ = [
    "MISSING_TOKENS", "Source", "UnreadableData", "is_missing", "iter_csv_rows", "iter_json_records",
    "iter_parquet_rows", "read_rows", "reader_for", "to_number",
]

Source = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
Row = dict[str, Any]

CHUNK_BYTES = 1 << 20  # how much a bytes/file source is sliced into; blob chunks come as they are
DECODE_BYTES = 256 << 10  # decoded and split into lines at a time
MAX_LINE_CHARS = 64 << 20  # one physical line longer than this is not tabular data
SPOOL_MEMORY_BYTES = 64 << 20  # Parquet sources larger than this are spooled to a temporary file on disk
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a", "<na>"})  # as pandas' defaults, lowered


class UnreadableData(PermanentError):
    """The named data cannot be read as rows (unknown format, bad encoding, malformed content)."""


# ---------------------------------------------------------------- values


def is_missing(value: object) -> bool:
    """True for `None`, NaN and the usual missing-value spellings (`""`, `NA`, `null`, ... case-insensitive)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TOKENS
    return False


def to_number(value: object) -> float | None:
    """Read a value as a finite float; `None` when it is missing (empty, `NA`, NaN, also +-inf).

    Raises ValueError when the value is present but not a number (booleans included: `True` in Parquet and
    `"True"` in CSV must profile alike, as categories).

    >>> to_number(" 2.5 "), to_number("NA"), to_number(3)
    (2.5, None, 3.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, (str, int, float, Decimal)):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            if isinstance(value, str) and value.strip().lower() in MISSING_TOKENS:
                return None
            raise ValueError(f"not a number: {value!r}") from None
        return number if math.isfinite(number) else None
    if value is None:
        return None
    raise ValueError(f"not a number: {value!r}")


# ---------------------------------------------------------------- sources


def _chunks(source: Source, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the bytes of `source` in pieces of bounded size (an iterable of chunks passes through)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for start in range(0, len(view), size):
            yield bytes(view[start:start + size])
        return
    read = getattr(source, "read", None)
    if callable(read):
        while True:
            chunk = read(size)
            if not chunk:
                return
            yield bytes(chunk)
    else:
        for chunk in source:
            if chunk:
                yield bytes(chunk)


def _gunzip(chunks: Iterable[bytes], name: str, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Decompress gzip (or zlib) chunks with bounded output per step, so a small bomb cannot fill memory."""
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: detect gzip or zlib header
    try:
        for chunk in chunks:
            data = chunk
            while data:
                out = inflater.decompress(data, size)
                if out:
                    yield out
                data = inflater.unconsumed_tail
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise UnreadableData(f"{name}: not valid gzip data: {exc}") from exc


def _text_lines(chunks: Iterable[bytes], name: str, encoding: str) -> Iterator[str]:
    """Decode chunks incrementally and yield physical lines ending in "\\n" (the last one may not)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    carry = ""
    position = offset = 0
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), DECODE_BYTES):  # a 4 MiB blob chunk is not copied into 4M of lines
                offset = position + start
                text = carry + decoder.decode(view[start:start + DECODE_BYTES])
                lines = text.split("\n")
                carry = lines.pop()
                if len(carry) > MAX_LINE_CHARS:
                    raise UnreadableData(f"{name}: a line is longer than {MAX_LINE_CHARS} characters; "
                                         "not tabular text")
                for line in lines:
                    yield line + "\n"
            position += len(chunk)
        offset = position
        carry += decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise UnreadableData(f"{name}: not {encoding} text (bad byte near offset {offset + exc.start}): "
                             f"{exc.reason}") from exc
    if carry:
        yield carry


# ---------------------------------------------------------------- CSV


def iter_csv_rows(source: Source, *, name: str = "<csv>", delimiter: str = ",",
                  encoding: str = "utf-8-sig") -> Iterator[dict[str, str]]:
    """Yield each data row of a CSV (first row = header) as `{column: text}`, reading `source` chunk by chunk.

    Short rows are padded with "" (missing), extra fields are dropped, blank lines skipped. An empty header
    cell is named `Unnamed: <i>` as pandas names it (a frame written with its index), so columns match the
    names a pandas-based training job saw.

    Raises UnreadableData on undecodable bytes, malformed CSV or duplicate column names.
    """
    reader = csv.reader(_text_lines(_chunks(source), name, encoding), delimiter=delimiter, strict=False)
    try:
        header: list[str] | None = None
        for fields in reader:
            if not fields:
                continue
            if header is None:
                header = [cell.strip() or f"Unnamed: {i}" for i, cell in enumerate(fields)]
                duplicates = sorted({c for c in header if header.count(c) > 1})
                if duplicates:
                    raise UnreadableData(f"{name}: duplicate column names in the header: {duplicates}")
                width = len(header)
                continue
            if len(fields) < width:
                fields = fields + [""] * (width - len(fields))
            yield dict(zip(header, fields, strict=False))
    except csv.Error as exc:
        raise UnreadableData(f"{name}: malformed CSV near line {reader.line_num}: {exc}") from exc


# ---------------------------------------------------------------- JSON

_ENVELOPES = ("data", "input_data", "dataframe_records", "dataframe_split", "instances", "inputs")


def _records(obj: Any, name: str, where: str, enveloped: bool = False) -> Iterator[Row]:
    """Unwrap one JSON value into records (see `iter_json_records` for the shapes)."""
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                yield item
            else:
                raise UnreadableData(f"{name}: {where}: expected records (objects), found {type(item).__name__}")
        return
    if not isinstance(obj, dict):
        raise UnreadableData(f"{name}: {where}: expected an object or a list, found {type(obj).__name__}")
    columns, data = obj.get("columns"), obj.get("data")
    if isinstance(columns, list) and isinstance(data, list):  # pandas "split" orientation
        for values in data:
            if not isinstance(values, list) or len(values) != len(columns):
                raise UnreadableData(f"{name}: {where}: a row of a split-oriented table does not match its columns")
            yield dict(zip(columns, values, strict=True))
        return
    for key in _ENVELOPES:
        if isinstance(obj.get(key), (list, dict)):
            yield from _records(obj[key], name, where, enveloped=True)
            return
    lists = list(obj.values())
    if enveloped and lists and all(isinstance(v, list) for v in lists) and len({len(v) for v in lists}) == 1:
        keys = list(obj)  # column-oriented: {"a": [...], "b": [...]}
        for values in zip(*lists, strict=True):
            yield dict(zip(keys, values, strict=True))
        return
    yield obj


def iter_json_records(source: Source, *, name: str = "<json>", encoding: str = "utf-8-sig") -> Iterator[Row]:
    """Yield records from JSON lines or one JSON document, unwrapping request-log envelopes.

    Each line (or the document) may be a record `{...}`, a list of records, or an envelope holding them under
    `data` (online request logs, Azure ML data collector lines), `input_data`, `dataframe_records`,
    `dataframe_split`, `instances` or `inputs`; tables in pandas "split" (`{"columns", "data"}`) or column
    orientation (`{"a": [..], "b": [..]}` inside an envelope) become records too.

    JSON lines stream one line at a time. If the first line is not a JSON value by itself, the source is read
    as one (pretty-printed) document, which is then held in memory whole.

    Raises UnreadableData naming the file and line of the first value that does not parse or has no records.
    """
    lines = _text_lines(_chunks(source), name, encoding)
    number = 0
    first = True
    for line in lines:
        number += 1
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if first:
                yield from _json_document(line, lines, name, first_line=number)
                return
            raise UnreadableData(f"{name}: line {number} is not valid JSON: {exc.msg}") from exc
        first = False
        yield from _records(value, name, f"line {number}")


def _json_document(first: str, rest: Iterator[str], name: str, first_line: int) -> Iterator[Row]:
    text = first + "".join(rest)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableData(f"{name}: not valid JSON or JSON lines (line {exc.lineno + first_line - 1}: "
                             f"{exc.msg})") from exc
    yield from _records(value, name, "document")


# ---------------------------------------------------------------- Parquet


def iter_parquet_rows(source: Source, *, name: str = "<parquet>", batch_rows: int = 8192) -> Iterator[Row]:
    """Yield the rows of a Parquet file batch by batch (`batch_rows` at a time) with native Python values.

    Raises UnreadableData when the content is not Parquet, or when pyarrow is not installed.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is installed wherever tests run
        raise UnreadableData(f"{name}: reading Parquet needs pyarrow, which is not installed") from exc
    with _seekable(source) as handle:
        try:
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=batch_rows):
                yield from batch.to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableData(f"{name}: not a readable Parquet file: {exc}") from exc


def _seekable(source: Source) -> IO[bytes]:
    """A seekable binary handle on `source`: bytes are wrapped, chunks spooled (memory, then disk)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source)
    if hasattr(source, "read") and hasattr(source, "seek") and getattr(source, "seekable", lambda: False)():
        return cast(IO[bytes], _NoClose(cast(IO[bytes], source)))
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - returned, closed by caller
    for chunk in _chunks(source):
        spool.write(chunk)
    spool.seek(0)
    return spool


class _NoClose(io.BufferedIOBase):
    """Lend a caller's seekable file to a `with` block without closing it."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw

    def read(self, size: int | None = -1) -> bytes:
        return self._raw.read(-1 if size is None else size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


# ---------------------------------------------------------------- choosing a reader

Reader = Callable[[Source], Iterator[Row]]
_READERS: dict[str, Callable[..., Iterator[Row]]] = {
    ".csv": iter_csv_rows,
    ".tsv": partial(iter_csv_rows, delimiter="\t"),
    ".parquet": iter_parquet_rows,
    ".pq": iter_parquet_rows,
    ".json": iter_json_records,
    ".jsonl": iter_json_records,
    ".ndjson": iter_json_records,
}


def reader_for(name: str) -> Reader:
    """The row reader for a file `name` (a blob name or path), chosen by its extension, with `name` bound.

    `.csv`, `.tsv`, `.parquet`/`.pq`, `.json`/`.jsonl`/`.ndjson`; CSV and JSON may end in `.gz` too.

    Raises UnreadableData naming the file for any other extension.
    """
    lowered = name.lower()
    gzipped = lowered.endswith(".gz")
    stem = lowered[:-3] if gzipped else lowered
    ext = stem[stem.rfind("."):] if "." in stem.rsplit("/", 1)[-1] else ""
    reader = _READERS.get(ext)
    if reader is None or (gzipped and reader is iter_parquet_rows):
        known = ", ".join(sorted(_READERS))
        raise UnreadableData(f"{name}: unsupported data format {ext or '(no extension)'!r}"
                             f"{' (gzipped)' if gzipped else ''}; readable: {known} (CSV/JSON also .gz)")
    if gzipped:
        return lambda source: reader(_gunzip(_chunks(source), name), name=name)
    return lambda source: reader(source, name=name)


def read_rows(name: str, source: Source) -> Iterator[Row]:
    """Rows of `source`, read with the reader its `name` calls for (see `reader_for`)."""
    return reader_for(name)(source)
