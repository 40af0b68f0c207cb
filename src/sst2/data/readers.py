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
import pyarrow.json as pajson

from sst2.data.formats import (BREAKS, bad_row, check_utf8, detect_format, json_row, open_csv,
                                 open_parquet, parquet_error, raise_problems, row_spans, unread, where)
from sst2.data.splits import DataError, quote
from sst2.data.text import text_problem
from sst2.errors import one_line

TEXT_COLUMNS = ("sentence", "text", "review")
LABEL_COLUMNS = ("label", "labels", "sentiment")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")


def pick_columns(columns, path, text_column: str | None = None, label_column: str | None = None,
                 require_labels: bool = True) -> tuple[str, str | None]:
    """The text and label columns among ``columns``: the explicit names, else the first usual name present
    (exact match first, then ignoring case). No label column is ``None`` unless labels are required."""
    columns = list(columns)
    found = ", ".join(columns) or "none"
    if text_column is not None and text_column == label_column:
        raise DataError(f"{path}: the text column and the label column are both {quote(text_column)}")
    text = _pick(columns, text_column, TEXT_COLUMNS)
    if text is None:
        raise DataError(_not_found(path, "text", text_column, TEXT_COLUMNS, found))
    label = _pick([c for c in columns if c != text], label_column, LABEL_COLUMNS)
    if label is None and (require_labels or label_column is not None):
        raise DataError(_not_found(path, "label", label_column, LABEL_COLUMNS, found))
    return text, label


def _pick(columns: list[str], explicit: str | None, usual: tuple[str, ...]) -> str | None:
    if explicit is not None:  # "" too: a header can name a column so, and it is no default
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
    if explicit is not None:
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
        elif problem := text_problem(t):  # empty, or a lone surrogate (a JSON escape such as \ud800)
            problems.append(f"{where(path, line, unit)}: {problem} in column '{column}'")
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


# ---- TSV and CSV ----------------------------------------------------------------------------------------

def _read_delimited(path: Path, fmt: str) -> _Loaded:
    raw = path.read_bytes()
    check_utf8(path, raw)
    bad: dict = {}
    try:
        names, reader = open_csv(path, lambda: io.BytesIO(raw), fmt, bad)
        table = reader.read_all()
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot read as {fmt.upper()} ({one_line(exc)})") from None
    spans, lines, problems, line = iter(row_spans(table, fmt)), [], [], 2
    for ordinal in range(2, 2 + table.num_rows + len(bad)):  # pyarrow numbers the rows from the header = 1
        if ordinal in bad:
            problems.append(bad_row(f"{path}:{line}", bad[ordinal], fmt))
            line += 1 + len(re.findall(BREAKS.decode(), bad[ordinal].text))
        else:
            lines.append(line)
            line += next(spans, 1)
    breaks = raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")
    problems += unread(path, line - 1, breaks + (not raw.endswith((b"\n", b"\r"))), lines[-1] if lines else 2)
    return _Loaded(names, lambda name: table.column(name).to_pylist(), lines, hashlib.sha256(raw).hexdigest(), problems)


# ---- JSON lines -----------------------------------------------------------------------------------------

def _read_jsonl(path: Path) -> _Loaded:
    raw = path.read_bytes()
    check_utf8(path, raw)  # pyarrow.json would replace bad bytes without a word
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
    parsed = [json_row(path, lineno, line) for lineno, line in numbered]
    raise_problems([problem for _, problem in parsed if problem])
    rows = [row for row, _ in parsed]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return _Loaded(columns, lambda name: [row.get(name) for row in rows], lines, digest)


# ---- Parquet --------------------------------------------------------------------------------------------

def _read_parquet(path: Path) -> _Loaded:
    pf = open_parquet(path)

    def fetch(name: str) -> list:
        try:
            return pf.read(columns=[name]).column(0).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise parquet_error(path, exc) from None

    return _Loaded(pf.schema_arrow.names, fetch, list(range(pf.metadata.num_rows)), sha256_file(path))
