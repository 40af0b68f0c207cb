"""Reading users' own data files: TSV, CSV, JSON lines and Parquet, through pyarrow.

:func:`read_table` reads the text column and the label column of a file (the usual names are found by
themselves) and checks every row like :func:`sst2.data.splits.read_split` does: every problem is reported
with the file and the line (for Parquet, the 0-based row), nothing is dropped. TSV is read with quoting
off (SST-style files have no quoting), so an SST folder reads exactly as ``read_split`` reads it.
:func:`iter_rows` streams every column of a file in chunks of dict rows, and :class:`RowWriter` writes
such rows (plus new columns) back in the same format, for a predict command.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from sst2.data.splits import MAX_REPORTED, DataError, quote
from sst2.errors import one_line

FORMATS = ("tsv", "csv", "jsonl", "parquet")
EXTENSIONS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
              ".parquet": "parquet", ".pq": "parquet"}
_ALIASES = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}
TEXT_COLUMNS = ("sentence", "text", "review")
LABEL_COLUMNS = ("label", "labels", "sentiment")
_BREAKS = rb"\r\n|\r|\n"  # what pyarrow's CSV reader takes for a line end
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")


def detect_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` if given (``json``, ``ndjson`` and ``pq`` are accepted too), else from the extension."""
    if fmt:
        name = _ALIASES.get(fmt.lower().lstrip("."), fmt.lower().lstrip("."))
        if name not in FORMATS:
            raise DataError(f"{path}: unknown format {quote(fmt)} (formats: {', '.join(FORMATS)})")
        return name
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise DataError(f"{path}: cannot tell the format from the extension {quote(suffix or '(none)')} "
                        f"(extensions: {', '.join(EXTENSIONS)}); pass --format ({', '.join(FORMATS)})")
    return EXTENSIONS[suffix]


def where(path, n: int, unit: str = "line") -> str:
    """``path:LINE``, or ``path: row N`` for Parquet (``unit="row"``), to start a message."""
    return f"{path}: row {n}" if unit == "row" else f"{path}:{n}"


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`DataError` listing up to ``MAX_REPORTED`` problems (none: return)."""
    if problems:
        more = len(problems) - MAX_REPORTED
        raise DataError("\n".join(problems[:MAX_REPORTED]) + (f"\n... and {more} more problem(s)" if more > 0 else ""))


def pick_columns(columns, path, text_column: str | None = None, label_column: str | None = None,
                 require_labels: bool = True) -> tuple[str, str | None]:
    """The text and label columns among ``columns``: the explicit names, else the first usual name present
    (exact match first, then ignoring case). No label column is ``None`` unless labels are required."""
    columns = list(columns)
    found = ", ".join(columns) or "none"
    if text_column and label_column and text_column == label_column:
        raise DataError(f"{path}: the text column and the label column are both {quote(text_column)}")
    text = _pick(columns, text_column, TEXT_COLUMNS)
    if text is None:
        raise DataError(_not_found(path, "text", text_column, TEXT_COLUMNS, found))
    label = _pick([c for c in columns if c != text], label_column, LABEL_COLUMNS)
    if label is None and (require_labels or label_column):
        raise DataError(_not_found(path, "label", label_column, LABEL_COLUMNS, found))
    return text, label


def _pick(columns: list[str], explicit: str | None, usual: tuple[str, ...]) -> str | None:
    if explicit:
        return explicit if explicit in columns else None
    for name in usual:
        if name in columns:
            return name
    for name in usual:
        for c in columns:
            if c.lower() == name:
                return c
    return None


def _not_found(path, kind: str, explicit: str | None, usual: tuple[str, ...], found: str) -> str:
    if explicit:
        return f"{path}: no column {quote(explicit)} (found: {found}); check --{kind}-column"
    return f"{path}: no {kind} column (looked for {', '.join(usual)}; found: {found}); pass --{kind}-column"


@dataclass
class RawTable:
    """The text and raw label columns of a file: ``labels`` as read (int or str; ``None`` entries only when
    labels were not required), ``lines`` the line of each row (header = line 1), or for Parquet its row."""

    path: Path
    texts: list[str]
    labels: list | None
    lines: list[int]
    sha256: str
    text_column: str
    label_column: str | None
    format: str

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def unit(self) -> str:
        return "row" if self.format == "parquet" else "line"

    def where(self, i: int) -> str:
        """Where row ``i`` is, to start a message: ``path:LINE`` or ``path: row N``."""
        return where(self.path, self.lines[i], self.unit)


@dataclass
class _Loaded:
    columns: list[str]
    fetch: object  # column name -> list of Python values
    lines: list[int]
    sha256: str
    problems: list[str] = field(default_factory=list)  # rows that could not be read, reported with the rest


def read_table(path: str | os.PathLike, fmt: str | None = None, text_column: str | None = None,
               label_column: str | None = None, require_labels: bool = True) -> RawTable:
    """Read and check the text and label columns of a TSV, CSV, JSON lines or Parquet file."""
    path = Path(path)
    fmt = detect_format(path, fmt)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty" + (" (expected a header line)" if fmt in ("tsv", "csv") else ""))
    if fmt in ("tsv", "csv"):
        loaded = _read_delimited(path, fmt)
    else:
        loaded = _read_parquet(path) if fmt == "parquet" else _read_jsonl(path)
    text, label = pick_columns(loaded.columns, path, text_column, label_column, require_labels)
    unit = "row" if fmt == "parquet" else "line"
    problems = loaded.problems
    texts = _check_texts(loaded.fetch(text), text, loaded.lines, path, unit, problems)
    labels = None
    if label is not None:
        labels = _check_labels(loaded.fetch(label), label, loaded.lines, path, unit, require_labels, problems)
    raise_problems(problems)
    if not texts:
        raise DataError(f"{path}: no data rows" + (" after the header" if fmt in ("tsv", "csv") else ""))
    return RawTable(path, texts, labels, loaded.lines, loaded.sha256, text, label, fmt)


def _check_texts(values: list, column: str, lines: list[int], path, unit: str, problems: list[str]) -> list[str]:
    texts = []
    for line, t in zip(lines, values):
        if t is None:
            problems.append(f"{where(path, line, unit)}: no text in column '{column}'")
        elif not isinstance(t, str):
            problems.append(f"{where(path, line, unit)}: text in column '{column}' is not a string: {quote(repr(t))}")
        elif not t.strip():
            problems.append(f"{where(path, line, unit)}: empty text in column '{column}'")
        else:
            texts.append(t.strip())  # outer whitespace only, as read_split does (GLUE's trailing spaces)
    return texts


def label_value(value) -> int | str | None:
    """A raw label as int or str (whole floats and integer strings are ints; ``None``, ``""`` and NaN are no
    label); raises ``ValueError`` for other floats, ``TypeError`` for booleans and nested values."""
    if value is None:
        return None
    if isinstance(value, (bool, list, dict)):
        raise TypeError(f"label must be an integer or a string, got {quote(json.dumps(value))}")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        if _INT.fullmatch(value):
            return int(value)
        if not _FLOAT.fullmatch(value):
            return value
        value = float(value)
    if isinstance(value, float):
        if math.isnan(value):  # pandas' missing value
            return None
        if not value.is_integer():
            raise ValueError(f"label {value!r} is not a whole number")
        return int(value)
    if isinstance(value, int):
        return value
    raise TypeError(f"label must be an integer or a string, got {quote(repr(value))}")


def _check_labels(values: list, column: str, lines: list[int], path, unit: str, required: bool,
                  problems: list[str]) -> list:
    labels, first = [], {}
    for line, v in zip(lines, values):
        try:
            y = label_value(v)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where(path, line, unit)}: {exc} in column '{column}'")
            continue
        if y is None and required:
            problems.append(f"{where(path, line, unit)}: no label in column '{column}'")
            continue
        if y is not None:
            first.setdefault(type(y), (line, y))
        labels.append(y)
    if int in first and str in first:
        (li, i), (ls, s) = first[int], first[str]
        problems.insert(0, f"{path}: column '{column}' mixes integer and string labels "
                           f"(integer {i} at {unit} {li}, string {quote(s)} at {unit} {ls}); use one kind")
    return labels


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _utf8_problems(path, lines) -> list[str]:
    """A problem for each of ``lines`` (bytes, numbered from 1) that is not valid UTF-8."""
    problems = []
    for lineno, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{path}:{lineno}: invalid UTF-8 at byte {exc.start + 1} of the line ({exc.reason})")
    return problems


def _check_utf8(path: Path, raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise_problems(_utf8_problems(path, raw.split(b"\n")))


def _json_row(path, lineno: int, line: bytes) -> tuple[dict | None, str | None]:
    """One JSON line as ``(row, None)``, or ``(None, problem)``."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            return None, _utf8_problems(path, [b""] * (lineno - 1) + [line])[0]
        return None, f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        kind = {list: "an array", str: "a string"}.get(type(row), "a " + type(row).__name__)
        return None, f"{path}:{lineno}: expected a JSON object, got {kind} (JSON lines: one object a line)"
    return row, None


# ---- TSV and CSV ----------------------------------------------------------------------------------------

def _csv_options(fmt: str, bad: dict | None):
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


def _open_csv(path, source, fmt: str, bad: dict | None):
    """The column names, and a streaming pyarrow CSV reader that reads every column as a string (no type
    guessing: '007' stays '007'); ``source()`` opens the file."""
    read, parse = _csv_options(fmt, None)
    names = pacsv.open_csv(source(), read_options=read, parse_options=parse).schema.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}:1: duplicate column name(s) in the header: {', '.join(map(quote, dupes))}")
    read, parse = _csv_options(fmt, bad)
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
    return names, pacsv.open_csv(source(), read_options=read, parse_options=parse, convert_options=convert)


def _spans(table, fmt: str) -> list[int]:
    """How many physical lines each row takes (quoted CSV values may hold line breaks)."""
    if fmt == "tsv" or table.num_rows == 0:
        return [1] * table.num_rows
    total = None
    for col in table.columns:
        n = pc.fill_null(pc.count_substring_regex(col, _BREAKS.decode()), 0)
        total = n if total is None else pc.add(total, n)
    return [1 + k for k in total.to_pylist()]


def _bad_row(start: str, row, fmt: str) -> str:
    """``start`` (``path:LINE``) and what is wrong with a row of the wrong width."""
    sep = "tab" if fmt == "tsv" else "comma"
    msg = f"{start}: expected {row.expected_columns} {sep}-separated columns, got {row.actual_columns}"
    span = 1 + len(re.findall(_BREAKS.decode(), row.text))
    if fmt == "csv" and row.text.count('"') % 2:
        msg += " (an unbalanced quote?" + (f" the row runs over {span} lines)" if span > 1 else ")")
    return msg


def _unread(path, consumed: int, total: int, last: int) -> list[str]:
    """Rows and lines disagree: a quoted value open at the end of the file took the line ends into it (pyarrow
    says nothing), or lines were not read."""
    if consumed > total:
        return [f"{path}:{last}: unbalanced quote: a quoted value of this row runs to the end of the file"]
    if consumed < total:
        return [f"{path}:{consumed + 1}: lines {consumed + 1}-{total} were not read (an unbalanced quote?)"]
    return []


def _read_delimited(path: Path, fmt: str) -> _Loaded:
    raw = path.read_bytes()
    _check_utf8(path, raw)
    bad: dict = {}
    try:
        names, reader = _open_csv(path, lambda: io.BytesIO(raw), fmt, bad)
        table = reader.read_all()
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot read as {fmt.upper()} ({one_line(exc)})") from None
    spans, lines, problems, line = iter(_spans(table, fmt)), [], [], 2
    for ordinal in range(2, 2 + table.num_rows + len(bad)):  # pyarrow numbers the rows from the header = 1
        if ordinal in bad:
            problems.append(_bad_row(f"{path}:{line}", bad[ordinal], fmt))
            line += 1 + len(re.findall(_BREAKS.decode(), bad[ordinal].text))
        else:
            lines.append(line)
            line += next(spans, 1)
    breaks = raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")
    problems += _unread(path, line - 1, breaks + (not raw.endswith((b"\n", b"\r"))), lines[-1] if lines else 2)
    return _Loaded(names, lambda name: table.column(name).to_pylist(), lines, hashlib.sha256(raw).hexdigest(), problems)


# ---- JSON lines -----------------------------------------------------------------------------------------

def _read_jsonl(path: Path) -> _Loaded:
    raw = path.read_bytes()
    _check_utf8(path, raw)  # pyarrow.json would replace bad bytes without a word
    digest = hashlib.sha256(raw).hexdigest()
    numbered = [(i, line) for i, line in enumerate(raw.split(b"\n"), start=1) if line.strip()]
    if not numbered:
        raise DataError(f"{path}: no data rows (only blank lines)")
    lines = [i for i, _ in numbered]
    try:
        table = pajson.read_json(io.BytesIO(raw))
        stamps = [f.name for f in table.schema if pa.types.is_temporal(f.type)]
        if stamps:  # pyarrow takes ISO dates for timestamps; keep them the strings they are
            schema = pa.schema([(name, pa.string()) for name in stamps])
            options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
            table = pajson.read_json(io.BytesIO(raw), parse_options=options)
        if table.num_rows == len(lines):
            return _Loaded(table.column_names, lambda name: table.column(name).to_pylist(), lines, digest)
    except pa.ArrowInvalid:
        pass  # a syntax error, or values of different kinds in one field: read it line by line to say where
    parsed = [_json_row(path, lineno, line) for lineno, line in numbered]
    raise_problems([problem for _, problem in parsed if problem])
    rows = [row for row, _ in parsed]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return _Loaded(columns, lambda name: [row.get(name) for row in rows], lines, digest)


# ---- Parquet --------------------------------------------------------------------------------------------

def _parquet_error(path, exc: Exception) -> DataError:
    return DataError(f"{path}: not a readable Parquet file ({one_line(exc)})")


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise _parquet_error(path, exc) from None


def _read_parquet(path: Path) -> _Loaded:
    pf = _open_parquet(path)

    def fetch(name: str) -> list:
        try:
            return pf.read(columns=[name]).column(0).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise _parquet_error(path, exc) from None

    return _Loaded(pf.schema_arrow.names, fetch, list(range(pf.metadata.num_rows)), sha256_file(path))
