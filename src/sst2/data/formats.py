"""The file formats sst2 reads, and the pieces every reader of them shares.

TSV, CSV, JSON lines and Parquet: :func:`detect_format` tells a file's format from its extension (or
``--format``); the rest are what both the whole-file reader (:mod:`sst2.data.readers`) and the streaming
one (:mod:`sst2.data.rows`) build on: pyarrow's CSV options (every column a string, rows of the wrong width
caught rather than dropped), the physical lines each row spans, the messages naming the file and line of
a bad row or an unbalanced quote, one JSON line, opening a Parquet file, the UTF-8 check.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sst2.data.splits import MAX_REPORTED, DataError, quote
from sst2.errors import one_line

FORMATS = ("tsv", "csv", "jsonl", "parquet")
EXTENSIONS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
              ".parquet": "parquet", ".pq": "parquet"}
ALIASES = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}
BREAKS = rb"\r\n|\r|\n"  # what pyarrow's CSV reader takes for a line end


def detect_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` if given (``json``, ``ndjson`` and ``pq`` are accepted too), else from the extension."""
    if fmt:
        name = ALIASES.get(fmt.lower().lstrip("."), fmt.lower().lstrip("."))
        if name not in FORMATS:
            raise DataError(f"{path}: unknown format {quote(fmt)} (formats: {', '.join(FORMATS)})")
        return name
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise DataError(f"{path}: cannot tell the format from the extension {quote(suffix or '(none)')} "
                        f"(extensions: {', '.join(EXTENSIONS)}); pass --format ({', '.join(FORMATS)})")
    return EXTENSIONS[suffix]


def where(path, n: int, unit: str = "line") -> str:
    """``path:LINE``, ``path: row N`` for Parquet (``unit="row"``) or ``name[N]`` for an in-memory list
    (``unit="index"``), to start a message."""
    if unit == "index":
        return f"{path}[{n}]"
    return f"{path}: row {n}" if unit == "row" else f"{path}:{n}"


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`DataError` listing up to ``MAX_REPORTED`` problems (none: return)."""
    if problems:
        more = len(problems) - MAX_REPORTED
        raise DataError("\n".join(problems[:MAX_REPORTED]) + (f"\n... and {more} more problem(s)" if more > 0 else ""))


def utf8_problems(path, lines) -> list[str]:
    """A problem for each of ``lines`` (bytes, numbered from 1) that is not valid UTF-8."""
    problems = []
    for lineno, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{path}:{lineno}: invalid UTF-8 at byte {exc.start + 1} of the line ({exc.reason})")
    return problems


def check_utf8(path: Path, raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise_problems(utf8_problems(path, raw.split(b"\n")))


def json_kind(value) -> str:
    """What a parsed JSON value is, in JSON's words: ``null``, ``a number``, ``an array``, ``an object``..."""
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array", dict: "an object"}
    return kinds.get(type(value), "a " + type(value).__name__)


class DuplicateKey(Exception):
    """A key twice in one JSON object (``args[0]``)."""

    def __str__(self) -> str:
        return f"the key {quote(self.args[0])} appears twice in one object"


def duplicates(names: list[str]) -> str | None:
    """The names that appear more than once, quoted and comma-separated, or None."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    return ", ".join(map(quote, dupes)) if dupes else None


def unique_keys(pairs: list) -> dict:
    """A ``json.loads`` ``object_pairs_hook`` raising ``DuplicateKey`` where Python would keep the last value."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def json_row(path, lineno: int, line: bytes) -> tuple[dict | None, str | None]:
    """One JSON line as ``(row, None)``, or ``(None, problem)``; a key twice in an object is a problem
    (Python's json would keep the last value and drop the first without a word)."""
    try:
        row = json.loads(line, object_pairs_hook=unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            return None, utf8_problems(path, [b""] * (lineno - 1) + [line])[0]
        return None, f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
    except DuplicateKey as exc:
        return None, f"{path}:{lineno}: {exc}"
    if not isinstance(row, dict):
        return None, f"{path}:{lineno}: expected a JSON object, got {json_kind(row)} (JSON lines: one object a line)"
    return row, None


def csv_options(fmt: str, bad: dict | None):
    """pyarrow read and parse options; rows with a wrong number of columns go into ``bad`` (or are an error)."""

    def handler(row) -> str:
        if bad is not None and row.number not in bad:
            bad[row.number] = row
        return "skip"

    read = pacsv.ReadOptions(use_threads=False)
    if fmt == "tsv":  # SST-style: no quoting, one row per line
        parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, ignore_empty_lines=False,
                                   invalid_row_handler=handler)
    else:
        parse = pacsv.ParseOptions(delimiter=",", quote_char='"', double_quote=True, newlines_in_values=True,
                                   ignore_empty_lines=False, invalid_row_handler=handler)
    return read, parse


def open_csv(path, source, fmt: str, bad: dict | None):
    """The column names, and a streaming pyarrow CSV reader that reads every column as a string (no type
    guessing: '007' stays '007'); ``source()`` opens the file."""
    read, parse = csv_options(fmt, None)
    try:
        names = pacsv.open_csv(source(), read_options=read, parse_options=parse).schema.names
    except OSError as exc:
        if exc.errno is None:  # pyarrow's own I/O errors
            raise
        raise DataError(f"{path}: {os.strerror(exc.errno)}") from None  # e.g. no permission to read it
    except pa.ArrowInvalid as exc:
        if "Empty CSV file or block" not in str(exc):
            raise
        source = _header_only(path, source, fmt)
        names = pacsv.open_csv(source(), read_options=read, parse_options=parse).schema.names
    if dupes := duplicates(names):
        raise DataError(f"{path}:1: duplicate column name(s) in the header: {dupes}")
    read, parse = csv_options(fmt, bad)
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
    return names, pacsv.open_csv(source(), read_options=read, parse_options=parse, convert_options=convert)


def _header_only(path, source, fmt: str):
    """What pyarrow calls an "empty CSV file or block": a header with no line break after it (then the same
    file with one, to be read as a header without rows), or a CSV header whose quote is never closed."""
    f = source()  # a path (streaming) or a BytesIO (whole file)
    with (open(f, "rb") if isinstance(f, str) else f) as stream:
        head = stream.read(1 << 20)
    if fmt == "csv" and head.count(b'"') % 2:
        raise DataError(f"{path}:1: unbalanced quote: a quoted value of the header runs to the end of the file")
    if not head.strip() or re.search(BREAKS, head) or len(head) == 1 << 20:
        raise DataError(f"{path}: cannot read as {fmt.upper()} (no header line)")
    return lambda: io.BytesIO(head + b"\n")


def row_spans(table, fmt: str) -> list[int]:
    """How many physical lines each row takes (quoted CSV values may hold line breaks)."""
    if fmt == "tsv" or table.num_rows == 0:
        return [1] * table.num_rows
    total = None
    for col in table.columns:
        n = pc.fill_null(pc.count_substring_regex(col, BREAKS.decode()), 0)
        total = n if total is None else pc.add(total, n)
    return [1 + k for k in total.to_pylist()]


def bad_row(start: str, row, fmt: str) -> str:
    """``start`` (``path:LINE``) and what is wrong with a row of the wrong width."""
    sep = "tab" if fmt == "tsv" else "comma"
    msg = f"{start}: expected {row.expected_columns} {sep}-separated columns, got {row.actual_columns}"
    span = 1 + len(re.findall(BREAKS.decode(), row.text))
    if fmt == "csv" and row.text.count('"') % 2:
        msg += " (an unbalanced quote?" + (f" the row runs over {span} lines)" if span > 1 else ")")
    return msg


def unread(path, consumed: int, total: int, last: int) -> list[str]:
    """Rows and lines disagree: a quoted value open at the end of the file took the line ends into it (pyarrow
    says nothing), or lines were not read."""
    if consumed > total:
        return [f"{path}:{last}: unbalanced quote: a quoted value of this row runs to the end of the file"]
    if consumed < total:
        return [f"{path}:{consumed + 1}: lines {consumed + 1}-{total} were not read (an unbalanced quote?)"]
    return []


def parquet_error(path, exc: Exception) -> DataError:
    return DataError(f"{path}: not a readable Parquet file ({one_line(exc)})")


def open_parquet(path: Path) -> pq.ParquetFile:
    """The open file; duplicate column names are an error (a row of it as a dict would lose one)."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise parquet_error(path, exc) from None
    if dupes := duplicates(pf.schema_arrow.names):
        raise DataError(f"{path}: duplicate column name(s): {dupes}")
    return pf
