"""The files of bulk scoring on Ray (``sst2.inference.ray_predict``): the inputs, the output folder, and
the Ray Data source and sink that read and write them.

* :func:`resolve_inputs` expands a path or glob, checks every file and counts its rows, so every row gets
  its ``row_id`` (its index over all the files, in input order) before anything runs;
* :class:`FilesSource` reads the files in Ray tasks with sst2's own readers (``sst2.data.rows``), each row
  with its ``row_id`` and line, and a row that cannot be read with its problem rather than an exception;
* :class:`SplitSink` writes scored rows to ``DIR/predictions/`` and failed rows to ``DIR/errors/``, one file
  per write task named by its first ``row_id`` (a retried task rewrites the same file);
* :func:`prepare_output` creates ``DIR`` with a marker, and never writes into a folder it did not create;
  :func:`written_ids` reads back which rows the output holds.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from sst2.data.formats import EXTENSIONS, detect_format
from sst2.data.readers import pick_columns
from sst2.data.rows import LINES, RowWriter, count_rows, iter_numbered
from sst2.data.splits import DataError
from sst2.errors import UserError, one_line

ROW_ID = "row_id"
ERROR, LINE, FILE = "_sst2_error", "_sst2_line", "_sst2_file"  # internal columns, never written as such
ERROR_COLUMNS = (ROW_ID, "file", "line", "reason")
PREDICTIONS, ERRORS, SUMMARY, MARKER = "predictions", "errors", "summary.json", ".sst2-output"
MARKER_FORMAT = "sst2-predict/1"
OUTPUT_FORMATS = ("parquet", "jsonl", "csv")
EXTENSION = {"parquet": ".parquet", "jsonl": ".jsonl", "csv": ".csv"}
ROWS_PER_FILE = 100_000  # the sink gathers blocks up to this many rows per output file


class InputError(UserError, ValueError):
    pass


class OutputError(UserError, OSError):
    pass


@dataclass
class InputFile:
    path: str
    format: str  # tsv, csv, jsonl, parquet, or lines (plain text, one text a line)
    rows: int
    first_id: int  # row_id of its first row
    text_column: str
    columns: list[str]


def _format(path: Path, fmt: str | None) -> str:
    if fmt:
        return detect_format(path, fmt)
    return detect_format(path) if path.suffix.lower() in EXTENSIONS else LINES


def _columns(path: Path, fmt: str) -> list[str]:
    if fmt == LINES:
        return ["text"]
    for numbered in iter_numbered(path, fmt, 1024, keep_bad=True):  # JSON lines: the keys of any row of the first chunk
        keys = list(dict.fromkeys(k for r in numbered if r.row is not None for k in r.row))
        if keys:
            return keys
    return []


def resolve_inputs(pattern: str, fmt: str | None = None, text_column: str | None = None) -> list[InputFile]:
    """The files ``pattern`` names (a path, or a glob with ``*``, ``?``, ``[...]`` or ``**``), sorted, each
    checked and counted; problems name the file and, for a broken TSV or CSV file, the line."""
    if glob.has_magic(pattern):
        paths = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()]
        if not paths:
            raise InputError(f"{pattern}: no file matches")
    else:
        paths = [Path(pattern)]
        if not paths[0].is_file():
            raise InputError(f"{pattern}: file not found")
    files, first = [], 0
    for path in paths:
        f = _format(path, fmt)
        rows = count_rows(path, f)
        columns = _columns(path, f) if rows else []
        column = pick_columns(columns, path, text_column, require_labels=False)[0] if rows else (text_column or "text")
        if ROW_ID in columns:
            raise InputError(f"{path}: has a column {ROW_ID!r}, the name of the column the output adds (each row's "
                             f"index in the input); rename it")
        files.append(InputFile(str(path), f, rows, first, column, columns))
        first += rows
    formats = {f.format for f in files}
    if len(formats) > 1:  # their columns would not unify (CSV reads strings, JSON and Parquet typed values)
        shown = ", ".join(f"{Path(f.path).name}: {f.format}" for f in files[:5])
        raise InputError(f"{pattern}: the files are not all of one format ({shown}); score each format on its own")
    names = {f.text_column for f in files if f.rows}
    if len(names) > 1:
        shown = ", ".join(f"{Path(f.path).name}: {f.text_column!r}" for f in files if f.rows)
        raise InputError(f"{pattern}: the files have different text columns ({shown}); pass --text-column")
    if not first:
        raise InputError(f"{pattern}: no rows to classify")
    return files


def where(files: list[InputFile], row_id: int) -> str:
    """``path`` and the row's number in it (1-based data row) for a ``row_id``."""
    starts = [f.first_id for f in files]
    f = files[int(np.searchsorted(starts, row_id, side="right")) - 1]
    return f"{f.path} row {row_id - f.first_id + 1}"


# ---- reading ------------------------------------------------------------------------------------------

def _read_file(f: InputFile, chunk: int):
    """The blocks of one file: its rows with ``row_id``, line and problem (a Ray read task runs this)."""
    next_id = f.first_id
    for numbered in iter_numbered(f.path, f.format, chunk, keep_bad=True):
        rows = [r.row or {} for r in numbered]
        try:
            table = pa.Table.from_pylist(rows) if any(rows) else pa.table({})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"{f.path}: rows from line {numbered[0].line} on have values of different kinds in "
                            f"one column ({one_line(exc)})") from None
        n = len(numbered)
        if table.num_rows != n:  # every row unreadable: no columns
            table = pa.table({f.text_column: pa.nulls(n, pa.string())})
        table = table.append_column(ROW_ID, pa.array(range(next_id, next_id + n), pa.int64()))
        table = table.append_column(LINE, pa.array([r.line for r in numbered], pa.int64()))
        table = table.append_column(FILE, pa.array([f.path] * n, pa.string()))
        yield table.append_column(ERROR, pa.array([r.problem for r in numbered], pa.string()))
        next_id += n
    if next_id != f.first_id + f.rows:
        raise DataError(f"{f.path}: changed while it was read ({f.rows} rows counted, {next_id - f.first_id} read)")


def files_source(files: list[InputFile], chunk: int):
    """A Ray Data source with one read task per file."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class FilesSource(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [ReadTask(functools.partial(_read_file, f, chunk),
                             BlockMetadata(num_rows=f.rows, size_bytes=None, exec_stats=None, input_files=(f.path,)))
                    for f in files if f.rows]

    return FilesSource()


# ---- writing ------------------------------------------------------------------------------------------

def split_sink(root: Path, fmt: str):
    """A Ray Data sink writing scored rows to ``root/predictions`` and failed ones to ``root/errors``."""
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    class SplitSink(Datasink):
        @property
        def min_rows_per_write(self):
            return ROWS_PER_FILE

        def write(self, blocks, ctx):
            writers: dict[str, RowWriter] = {}
            try:
                for block in blocks:
                    _write_block(BlockAccessor.for_block(block).to_arrow(), root, fmt, writers)
            except BaseException:
                for w in writers.values():
                    w.abort()
                raise
            for w in writers.values():
                w.close()
            return {kind: w.rows for kind, w in writers.items()}

    return SplitSink()


def _write_block(table: pa.Table, root: Path, fmt: str, writers: dict) -> None:
    import pyarrow.compute as pc

    failed = pc.is_valid(table.column(ERROR))
    parts = {PREDICTIONS: table.filter(pc.invert(failed)).drop_columns([ERROR, LINE, FILE]),
             ERRORS: table.filter(failed).select([ROW_ID, FILE, LINE, ERROR]).rename_columns(list(ERROR_COLUMNS))}
    for kind, part in parts.items():
        if not part.num_rows:
            continue
        if kind not in writers:  # named by its first row: unique, and the same file when a task is retried
            first = int(part.column(ROW_ID)[0].as_py())
            writers[kind] = RowWriter(root / kind / f"part-{first:012d}{EXTENSION[fmt]}", fmt, overwrite=True)
        writers[kind].write(part.to_pylist())


def written_ids(root: Path, fmt: str) -> dict[str, np.ndarray]:
    """The ``row_id`` of every row in ``root/predictions`` and ``root/errors`` (what is on disk)."""
    out = {}
    for kind in (PREDICTIONS, ERRORS):
        ids = [_ids(p, fmt) for p in sorted((root / kind).glob(f"part-*{EXTENSION[fmt]}"))]
        out[kind] = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
    return out


def _ids(path: Path, fmt: str) -> np.ndarray:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=[ROW_ID]).column(0).to_numpy()
    if fmt == "csv":
        import pyarrow.csv as pacsv

        opts = pacsv.ConvertOptions(include_columns=[ROW_ID], column_types={ROW_ID: pa.int64()})
        return pacsv.read_csv(path, convert_options=opts).column(0).to_numpy()
    with open(path, "rb") as f:
        return np.array([json.loads(line)[ROW_ID] for line in f if line.strip()], dtype=np.int64)


def id_ranges(ids: np.ndarray, limit: int = 5) -> str:
    """``a-b, c, ...``: up to ``limit`` runs of consecutive ids."""
    ids = np.unique(ids)
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    runs = [(int(r[0]), int(r[-1])) for r in np.split(ids, breaks)][:limit]
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)
    return text + (" ..." if len(breaks) + 1 > limit else "")


# ---- the output folder --------------------------------------------------------------------------------

def _marker(path: Path) -> dict | None:
    try:
        info = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == MARKER_FORMAT else None


def write_marker(path: Path, state: str, **extra) -> None:
    info = {"format": MARKER_FORMAT, "state": state, "pid": os.getpid(), "host": socket.gethostname(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    (path / MARKER).write_text(json.dumps(info) + "\n")


OURS = {PREDICTIONS, ERRORS, SUMMARY, MARKER}
# what the writers put in predictions/ and errors/: part files, and the temporaries of killed writers
_EXT = "|".join(re.escape(e) for e in EXTENSION.values())
PART = re.compile(rf"part-\d{{12}}({_EXT})|\.part-\d{{12}}({_EXT})\.[0-9a-f]{{8}}-\d+\.tmp")


def _not_ours(out: Path) -> list[str]:
    """The entries of an earlier output folder ``out`` that sst2 predict did not write, sub-folders included."""
    names = sorted(p.name for p in out.iterdir())
    foreign = [n for n in names if n not in OURS]
    for kind in (PREDICTIONS, ERRORS):
        if (out / kind).is_dir() and not (out / kind).is_symlink():
            foreign += [f"{kind}/{p.name}" for p in sorted((out / kind).iterdir())
                        if not (p.is_file() and not p.is_symlink() and PART.fullmatch(p.name))]
        elif (out / kind).exists():
            foreign.append(kind)
    return foreign


def prepare_output(out: Path, overwrite: bool) -> None:
    """Create ``out`` (and ``out/predictions``, ``out/errors``) with the marker that says sst2 wrote it. A
    non-empty folder without the marker is never written into; one with it is replaced with ``overwrite``
    (its own entries only)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, not a folder (--output names the folder to write)")
    if out.is_dir() and any(out.iterdir()):
        names = sorted(p.name for p in out.iterdir())
        if _marker(out) is None:
            raise OutputError(f"refusing to write into {out}: it is not empty and was not written by sst2 predict "
                              f"(no {MARKER} marker); it holds {', '.join(names[:5])}")
        if not overwrite:
            raise OutputError(f"{out} holds the output of an earlier sst2 predict --engine ray (pass --overwrite "
                              f"to replace it)")
        foreign = _not_ours(out)
        if foreign:
            raise OutputError(f"refusing to replace {out}: it also holds {', '.join(foreign[:5])}"
                              f"{f' and {len(foreign) - 5} more' if len(foreign) > 5 else ''}, which sst2 predict "
                              f"did not write; move them elsewhere first")
        for name in names:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "writing")
        for kind in (PREDICTIONS, ERRORS):
            (out / kind).mkdir()
    except OSError as exc:
        raise OutputError(f"cannot write the output folder {out} ({exc.strerror or one_line(exc)})") from None


def finish_output(out: Path, summary: dict, state: str) -> None:
    """Write ``summary.json``, drop the temporaries of killed writers, and mark the folder ``state``."""
    for kind in (PREDICTIONS, ERRORS):
        for tmp in (out / kind).glob(".part-*.tmp"):
            tmp.unlink(missing_ok=True)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    write_marker(out, state)


def _plain(value):
    if isinstance(value, InputFile):
        return asdict(value)
    raise TypeError(type(value).__name__)
