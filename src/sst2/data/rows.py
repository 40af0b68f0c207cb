"""Streaming rows of any supported file, and writing rows back in the same format, memory bounded:
``iter_rows`` for ``sst2 predict`` (every input column kept), ``RowWriter`` for its output.

``iter_numbered`` also gives each row its line (its 0-based row for Parquet) and, for a row that cannot
be read (a JSON line that is not an object, a text line that is not UTF-8), the problem instead of raising,
so a bulk scorer can write it to its error output and go on; ``count_rows`` counts a file's rows, and
``text_lines`` reads plain text one line a row. Format ``lines`` is such a text file."""

from __future__ import annotations

import codecs
import csv
import json
import math
import os
import re
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple, Self

import pyarrow as pa
import pyarrow.parquet as pq

from sst2.data.formats import (bad_row, detect_format, json_row, open_csv, open_parquet, parquet_error,
                               raise_problems, row_spans, unread, utf8_problems)
from sst2.data.splits import DataError, quote
from sst2.data.text import text_problem
from sst2.errors import one_line
from sst2.system import process_tag, remove_orphans

LINES = "lines"  # plain text, one text a line (column "text"): what ``sst2 predict --input FILE.txt`` reads

# ---- streaming ------------------------------------------------------------------------------------------

def iter_rows(path: str | os.PathLike, fmt: str | None = None, chunk: int = 1024):
    """Yield lists of ``chunk`` dict rows (all columns; the last list may be shorter), in file order, holding
    about one chunk in memory. TSV and CSV values are strings, as in the file."""
    path = Path(path)
    fmt = detect_format(path, fmt)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    for numbered in iter_numbered(path, fmt, chunk):
        yield [r.row for r in numbered]


class NumberedRow(NamedTuple):
    line: int  # the row's line (the header is line 1), or for Parquet its 0-based row
    row: dict | None  # None when the row could not be read
    problem: str | None  # why it could not be read (only with ``keep_bad``)


def iter_numbered(path: str | os.PathLike, fmt: str | None = None, chunk: int = 1024,
                  keep_bad: bool = False) -> Iterator[list[NumberedRow]]:
    """Like :func:`iter_rows`, each row with its line; with ``keep_bad``, a row that cannot be read comes out
    with its problem (``row=None``) instead of raising. The structure of a TSV or CSV file (a row of the
    wrong width, an unbalanced quote) is still an error: its rows cannot be told apart."""
    path = Path(path)
    fmt = LINES if fmt == LINES else detect_format(path, fmt)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    if fmt == "parquet":
        batches = _iter_parquet(path, chunk)
    elif fmt == "jsonl":
        batches = _iter_jsonl(path, chunk, keep_bad)
    elif fmt == LINES:
        batches = _iter_lines(path, chunk, keep_bad)
    else:
        batches = _iter_delimited(path, fmt)
    buffer: list[NumberedRow] = []
    for rows in batches:
        buffer.extend(rows)
        while len(buffer) >= chunk:
            yield buffer[:chunk]
            del buffer[:chunk]
    if buffer:
        yield buffer


def _iter_parquet(path: Path, chunk: int):
    pf = open_parquet(path)
    start = 0
    try:
        for batch in pf.iter_batches(batch_size=chunk):
            yield [NumberedRow(start + i, row, None) for i, row in enumerate(batch.to_pylist())]
            start += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise parquet_error(path, exc) from None


def _iter_jsonl(path: Path, chunk: int, keep_bad: bool = False):
    rows = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row, problem = json_row(path, lineno, line)
            if problem and not keep_bad:
                raise_problems([problem])
            # the problem without its "path:line: ", which the row's own columns say
            rows.append(NumberedRow(lineno, row, problem and problem.split(": ", 1)[1]))
            if len(rows) == chunk:
                yield rows
                rows = []
    yield rows


def text_lines(stream: BinaryIO) -> Iterator[tuple[int, str | None, str | None, int]]:
    """``(line number, text, problem, bytes read)`` for every line of ``stream``, split at b"\\n" only (a
    ``\\r`` before it is dropped, and so is a UTF-8 byte-order mark opening the first line, as the other
    formats' readers drop it): ``text`` is None and ``problem`` says why for a line that is not UTF-8, and
    ``problem`` is set for an empty line too."""
    for lineno, raw in enumerate(stream, start=1):
        size = len(raw)
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        raw = raw[3:] if lineno == 1 and raw.startswith(codecs.BOM_UTF8) else raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield lineno, None, f"not UTF-8 ({exc.reason} at byte {exc.start + 1} of the line)", size
            continue
        yield lineno, text, text_problem(text), size


def _iter_lines(path: Path, chunk: int, keep_bad: bool = False):
    rows = []
    with open(path, "rb") as f:
        for lineno, text, problem, _ in text_lines(f):
            if problem and not keep_bad:
                raise DataError(f"{path}:{lineno}: {problem}")
            rows.append(NumberedRow(lineno, None if text is None else {"text": text}, problem if text is None else None))
            if len(rows) == chunk:
                yield rows
                rows = []
    yield rows


def count_rows(path: str | os.PathLike, fmt: str | None = None) -> int:
    """The rows :func:`iter_numbered` gives for ``path``: Parquet's from its metadata, the others by reading
    the file once (a TSV or CSV file whose structure is broken is an error naming the line)."""
    path = Path(path)
    fmt = LINES if fmt == LINES else detect_format(path, fmt)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if fmt == "parquet":
        return open_parquet(path).metadata.num_rows
    if fmt in (LINES, "jsonl"):
        total = 0
        with open(path, "rb") as f:
            for line in f:
                total += fmt == LINES or bool(line.strip())
        return total
    return sum(len(rows) for rows in iter_numbered(path, fmt, 65536))


def _iter_delimited(path: Path, fmt: str):
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (expected a header line)")
    bad: dict = {}
    consumed, last = 1, 2  # lines read so far (the header included); the line of the last row
    try:
        _, reader = open_csv(path, lambda: str(path), fmt, bad)
        for batch in reader:
            if bad:
                break
            spans = row_spans(batch, fmt)
            starts, line = [], consumed + 1  # the line each row starts on
            for span in spans:
                starts.append(line)
                line += span
            consumed += sum(spans)
            last = consumed + 1 - spans[-1] if spans else last
            yield [NumberedRow(line, row, None) for line, row in zip(starts, batch.to_pylist())]
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            with open(path, "rb") as f:
                raise_problems(utf8_problems(path, f)[:1])
        raise DataError(f"{path}: cannot read as {fmt.upper()} ({one_line(exc)})") from None
    if bad:
        row = bad[min(bad)]  # a TSV row is a line; a CSV record may span lines
        raise DataError(bad_row(f"{path}:{row.number}" if fmt == "tsv" else f"{path}: record {row.number} "
                                 "(the header is record 1)", row, fmt))
    raise_problems(unread(path, consumed, _count_lines(path), last))


def _count_lines(path: Path) -> int:
    """Lines in the file as pyarrow counts them (CRLF, CR or LF ends one), reading 1 MiB at a time."""
    total, end = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            straddle = end == b"\r" and block.startswith(b"\n")  # a CRLF cut in two
            total += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n") - straddle
            end = block[-1:]
    return total + (end not in (b"\n", b"\r"))


# ---- writing --------------------------------------------------------------------------------------------

# characters that str.splitlines() breaks at but JSON leaves as they are: escaped, so a reader that splits
# the output that way still sees one line per row
LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _finite(value):
    """``value`` with every NaN or infinity (an input column's, passed through) as None: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(value) -> str:
    """Strict JSON of a row or a cell (``null`` for NaN; a date, a Decimal, ... as its text), on one line."""
    return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, default=str).translate(LINE_BREAKS)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, list, dict)):
        return json_text(value)
    return str(value)


class RowWriter:
    """Write dict rows (as :func:`iter_rows` yields them, plus new columns) to ``path`` in ``fmt``.

    The rows go to a temporary file beside ``path``, renamed to ``path`` by :meth:`close`; :meth:`abort` (or
    leaving a ``with`` block by an exception) removes it. An existing ``path`` is kept unless ``overwrite``.
    The columns are those of the first rows (keys in order of appearance), or ``columns``. For Parquet,
    ``types`` gives a column's type (a column the first rows leave empty and ``types`` does not name is a
    string column; a string column takes any value, as text)."""

    def __init__(self, path: str | os.PathLike, fmt: str | None = None, *, overwrite: bool = False,
                 columns: list[str] | None = None, types: dict | None = None):
        self.path = Path(path)
        self.format = detect_format(self.path, fmt)
        self.overwrite = overwrite
        if not self.path.parent.is_dir():
            raise DataError(f"{self.path}: the folder {self.path.parent} does not exist")
        self._check_target()
        self._remove_stale()
        self.tmp = self.path.with_name(f".{self.path.name}.{process_tag()}.tmp")
        self.columns = list(columns) if columns is not None else None
        self.types = types or {}
        self.rows = 0
        self._file = self._pq = self._schema = None

    def _check_target(self) -> None:
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a folder; name the output file")
        if self.path.exists() and not self.overwrite:
            raise DataError(f"{self.path}: output file already exists (pass --overwrite to replace it)")

    def _remove_stale(self) -> None:
        """The temporaries of earlier writers of ``path`` that were killed (``kill -9``): their process is gone."""
        remove_orphans(self.path.parent, f".{self.path.name}.", r"\.tmp", dirs=False)

    def write(self, rows: list[dict]) -> None:
        rows = list(rows)
        if self.columns is None:
            if not rows:
                return
            self.columns = list(dict.fromkeys(k for row in rows for k in row))
        if self.format != "jsonl":
            extra = {k for row in rows for k in row} - set(self.columns)
            if extra:
                raise DataError(f"{self.path}: rows have column(s) {', '.join(sorted(map(quote, extra)))} "
                                f"that the first rows had not ({', '.join(self.columns)})")
        if self.format == "parquet":
            self._write_parquet(rows)
        else:
            self._write_text(rows)
        self.rows += len(rows)

    def _write_text(self, rows: list[dict]) -> None:
        if self._file is None:
            try:
                self._file = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by close())
            except OSError as exc:
                raise DataError(f"{self.path}: cannot write the output ({exc.strerror})") from None
            if self.format == "csv":
                self._csv = csv.writer(self._file, lineterminator="\n")
            if self.format in ("csv", "tsv") and self.columns:
                self._write_record(self.columns)
        for row in rows:
            if self.format == "jsonl":
                self._file.write(json_text(row) + "\n")
            else:
                self._write_record([_cell(row.get(c)) for c in self.columns])

    def _write_record(self, cells: list[str]) -> None:
        if self.format == "csv":
            self._csv.writerow(cells)
            return
        for cell in cells:  # TSV has no quoting: a tab or a line break in a value cannot be written
            if re.search(r"[\t\r\n]", cell):
                shown = quote(cell.replace("\t", "\\t").replace("\n", "\\n"))
                raise DataError(f"{self.path}: cannot write {shown} to a TSV file (it holds a tab or a "
                                "line break, and TSV has no quoting); write CSV or JSON lines instead")
        self._file.write("\t".join(cells) + "\n")

    def _write_parquet(self, rows: list[dict]) -> None:
        records = [{c: r.get(c) for c in self.columns} for r in rows]
        try:
            if self._schema is None:
                table = pa.Table.from_pylist(records)
                # a column empty in the first rows: its known type, else string, later values written as text
                # a column empty in the first rows, or declared text: later values are written as text
                self._as_text = {f.name for f in table.schema if pa.types.is_string(self.types.get(
                    f.name, pa.string() if pa.types.is_null(f.type) else f.type))}
                fields = [f.with_type(self.types[f.name]) if f.name in self.types else
                          f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
                self._schema = pa.schema(fields)
                self._pq = pq.ParquetWriter(self.tmp, self._schema)
            for r in records:
                for c in self._as_text:
                    if r[c] is not None and not isinstance(r[c], str):
                        r[c] = _cell(r[c])
            self._pq.write_table(pa.Table.from_pylist(records, schema=self._schema))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.path}: cannot write the rows to Parquet ({self._misfit(records) or one_line(exc)})"
                            ) from None

    def _misfit(self, records: list[dict]) -> str | None:
        """Which column holds a value its Parquet type (set by the first rows) cannot take, if one does."""
        for field in self._schema or []:
            for i, r in enumerate(records):
                try:
                    pa.array([r[field.name]], type=field.type)
                except (pa.ArrowException, TypeError, ValueError):
                    got = type(r[field.name]).__name__
                    return (f"column {quote(field.name)} is {field.type} from the first rows, but output row "
                            f"{self.rows + i + 1} holds a {got}; a Parquet column has one type: write CSV or JSON lines")
        return None

    def close(self) -> Path:
        """Finish the file and move it to ``path`` (an empty file if nothing was written)."""
        if self.format == "parquet":
            if self._pq is None:
                self._schema = pa.schema([(c, pa.string()) for c in self.columns or []])
                self._pq = pq.ParquetWriter(self.tmp, self._schema)
            self._pq.close()
        else:
            if self._file is None:
                self._write_text([])
            self._file.close()
        try:
            self._check_target()  # created by someone else meanwhile
        except DataError:
            self.tmp.unlink(missing_ok=True)
            raise
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.tmp.unlink(missing_ok=True)
            raise DataError(f"{self.path}: cannot write the output ({exc.strerror})") from None
        return self.path

    def abort(self) -> None:
        """Drop what was written; ``path`` is left as it was."""
        for handle in (self._file, self._pq):
            if handle is not None:
                handle.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
