"""``sst2 predict``: classify texts given as arguments, one per line in a file, or on standard input.

Writes one JSON object per input line, in input order: ``{"text": ..., "label": ..., "positive_prob":
..., "probabilities": {label: p, ...}, "truncated": ...}`` (``positive_prob`` for SST-2's labels only). Input is read, scored and written in chunks (``--chunk`` lines), so memory
stays bounded and output starts after the first chunk, however long the input. Lines are split at
``\\n`` (a ``\\r`` before it is dropped) and nowhere else, so every input line gives one output line;
a line that is empty or not UTF-8 is an error naming the file and the line.
"""

from __future__ import annotations

import math
import sys
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Iterator

from sst2.config import TABLE_EXTENSIONS, PredictConfig, window_options
from sst2.data.rows import json_text
from sst2.data.splits import quote
from sst2.data.text import text_problem
from sst2.errors import UserError

# Below this many bytes of input a progress bar is noise: a batch or two finishes at once.
PROGRESS_MIN_BYTES = 16384


class InputError(UserError, ValueError):
    pass


def _lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str, int]]:
    """``(line number, text, bytes read)`` for every line of ``stream``, split at b"\\n" only; a line that
    is empty or not UTF-8 is an error naming it."""
    from sst2.data.rows import text_lines

    for lineno, text, problem, size in text_lines(stream):
        if problem:
            raise InputError(f"{name}:{lineno}: {problem}")
        yield lineno, text, size


def _argument_texts(texts: list[str]) -> list[str]:
    for i, t in enumerate(texts):
        problem = text_problem(t)
        if problem:
            raise InputError(f"texts[{i}]: {problem}")
    return list(texts)


def _dumps(row: dict, where: str) -> str:
    bad = [p for p in row["probabilities"].values() if not math.isfinite(p)]
    if bad:
        raise InputError(f"{where}: the model gave a probability of {bad[0]} (its weights are not "
                         f"finite numbers); retrain or re-export it")
    return json_text(row)


def _open(cfg: PredictConfig) -> tuple[BinaryIO, str, int | None]:
    if cfg.input is None or cfg.input == "-":
        return sys.stdin.buffer, "<stdin>", None
    path = Path(cfg.input)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return open(path, "rb"), str(path), path.stat().st_size


def _prediction_names(names: list[str]) -> list[str]:
    """The columns a prediction adds to an input row: the label, one probability per class, and more."""
    return ["label", *(f"prob_{n}" for n in names), "truncated", "windows"]


def _prediction_columns(p, names: list[str]) -> dict:
    return dict(zip(_prediction_names(names), [p.label, *(p.probabilities[n] for n in names), p.truncated,
                                               p.windows]))


def keep_input_columns(columns, added) -> dict[str, str]:
    """Input columns named like a column the prediction adds (``label``, ``prob_*``, ...), each with the name
    it is written under instead, ``input_<name>``, so a labelled file keeps its labels beside the predictions."""
    taken, renamed = set(columns) | set(added), {}
    for c in columns:
        if c in added:
            new = f"input_{c}"
            while new in taken:
                new = f"input_{new}"
            taken.add(new)
            renamed[c] = new
    return renamed


def _output_format(output: str, fmt: str) -> str:
    """The output's format from its extension; no extension: the input's format. Another extension is an
    error (``x.tsv.gz`` or ``x.xlsx`` would be plain text under a name that says otherwise)."""
    from sst2.data.formats import EXTENSIONS
    from sst2.data.rows import LINES

    suffix = Path(output).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if fmt == LINES or suffix:
        raise InputError(f"{output}: cannot tell the output format from the extension {suffix or '(none)'!r}; "
                         "name a .tsv, .csv, .jsonl or .parquet file (sst2 writes no compressed files)")
    return fmt


def predict_table(cfg: PredictConfig, clf, fmt: str | None = None) -> int:
    """An input table (every column kept; a text file: its ``text``) to an output table in the output's
    format, or JSON lines on stdout; streamed in chunks, with a progress bar over rows."""
    from tqdm.auto import tqdm

    from sst2.data.formats import detect_format, where
    from sst2.data.readers import pick_columns
    from sst2.data.rows import RowWriter, iter_numbered
    from sst2.system import progress_enabled

    path = Path(cfg.input)
    if not path.is_file():
        raise InputError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'file not found'}")
    fmt = fmt or detect_format(path, cfg.format)
    unit = "row" if fmt == "parquet" else "line"
    out_format = _output_format(cfg.output, fmt) if cfg.output else None
    # JSON lines into a table of fixed columns: every key of the file and its type, read first (a key first
    # seen after the first chunk failed the job after that chunk was scored)
    fixed = out_format not in (None, "jsonl") and fmt == "jsonl"
    seen, types = _json_columns(path, cfg.chunk) if fixed else ({}, _parquet_types(path, fmt))
    if types:  # an input column named like one the prediction adds is written as input_<name>, with its type
        renamed = keep_input_columns(list(types), _prediction_names(clf.labels))
        types = {renamed.get(k, k): t for k, t in types.items()}
    writer = RowWriter(cfg.output, out_format, overwrite=cfg.overwrite, types=types) if cfg.output else None
    written, column = 0, None
    try:
        with tqdm(disable=not progress_enabled(cfg.quiet), unit="row", desc="predict", leave=False,
                  dynamic_ncols=True) as bar:
            for rows in iter_numbered(path, fmt, cfg.chunk):
                if column is None:
                    keys = dict.fromkeys(k for r in rows for k in r.row)  # JSON lines: any row's keys count
                    column, _ = pick_columns(list(keys), path, cfg.text_column, require_labels=False)
                texts = [_row_text(r.row, column, where(path, r.line, unit)) for r in rows]
                preds = [_prediction_columns(p, clf.labels) for p in clf.predict_details(texts)]
                seen.update((k, None) for r in rows for k in r.row)  # JSON lines may add columns as they go
                renamed = keep_input_columns(list(seen), preds[0])
                out = [{**{renamed.get(k, k): r.row.get(k) for k in (seen if fixed else r.row)}, **added}
                       for r, added in zip(rows, preds)]
                _emit(out, writer, where(path, rows[0].line, unit))
                written += len(rows)
                bar.update(len(rows))
        if not written:
            raise InputError(f"{path}: no rows to classify")
    except BaseException:
        if writer is not None:
            writer.abort()  # no half-written output file, and an existing one left as it was
        raise
    if writer is not None:
        writer.close()
    return written


def _json_columns(path: Path, chunk: int) -> tuple[dict, dict]:
    """Every key of a JSON lines file, in order of appearance, and its Parquet type: that of its values, or
    text when they are of more than one type."""
    import pyarrow as pa

    from sst2.data.rows import iter_numbered

    keys, types = {}, {}
    for rows in iter_numbered(path, "jsonl", chunk):
        for r in rows:
            for k, v in r.row.items():
                keys.setdefault(k, None)
                if v is None or types.get(k) == pa.string():
                    continue
                try:
                    t = pa.array([v]).type
                except (pa.ArrowException, OverflowError):
                    t = pa.string()
                first = types.get(k, t)
                if first == t:
                    types[k] = t
                elif {first, t} == {pa.int64(), pa.float64()}:
                    types[k] = pa.float64()  # 1 and 2.5: numbers
                else:  # values of two types (5, then [1] or "x"): text, rather than an error after scoring
                    types[k] = pa.string()
    return keys, types


def _parquet_types(path: Path, fmt: str) -> dict | None:
    """A Parquet input's column types, so a column empty in the first chunk keeps its type in the output."""
    if fmt != "parquet":
        return None
    from sst2.data.formats import open_parquet

    return {f.name: f.type for f in open_parquet(path).schema_arrow}


def _row_text(row: dict, column: str, at: str) -> str:
    text = row.get(column)
    if text is not None and not isinstance(text, str):
        raise InputError(f"{at}: text in column {column!r} is not a string: {quote(repr(text))}")
    problem = "no text" if text is None else text_problem(text)
    if problem:
        raise InputError(f"{at}: {problem} in column {column!r}")
    return text


def _emit(rows: list[dict], writer, where: str) -> None:
    for r in rows:
        if any(isinstance(v, float) and not math.isfinite(v) for k, v in r.items() if k.startswith("prob_")):
            raise InputError(f"{where}: the model gave a non-finite probability (its weights are not finite "
                             f"numbers); retrain or re-export it")
    if writer is not None:
        writer.write(rows)
    else:
        sys.stdout.write("".join(json_text(r) + "\n" for r in rows))
        sys.stdout.flush()


def predict(cfg: PredictConfig) -> int:
    """Classify and write; returns the number of texts written."""
    from tqdm.auto import tqdm

    from sst2.inference.classifier import SentimentClassifier
    from sst2.system import progress_enabled

    if cfg.engine == "ray":
        from sst2.inference.ray_predict import predict_ray

        return predict_ray(cfg).rows
    out = sys.stdout
    texts = _argument_texts(cfg.texts) if cfg.texts else None
    clf = SentimentClassifier.from_pretrained(cfg.model_dir, runtime=cfg.runtime or "torch", threads=cfg.threads,
                                              batch_size=cfg.batch_size, workers=cfg.workers,
                                              **window_options(cfg))
    if texts:
        for i, (t, p) in enumerate(zip(texts, clf.predict_details(texts))):
            out.write(_dumps({"text": t, **p.to_dict()}, f"texts[{i}]") + "\n")
        out.flush()
        return len(texts)
    if cfg.input not in (None, "-") and Path(cfg.input).suffix.lower() in TABLE_EXTENSIONS or cfg.format:
        return predict_table(cfg, clf)
    if cfg.output:  # a text file, written as a table: its texts and the prediction columns
        from sst2.data.rows import LINES

        return predict_table(cfg, clf, LINES)
    stream, name, size = _open(cfg)
    written = 0
    try:
        lines = _lines(stream, name)
        show = progress_enabled(cfg.quiet) and (size is None or size >= PROGRESS_MIN_BYTES)
        with tqdm(total=size, disable=not show, unit="B", unit_scale=True, desc="predict", leave=False,
                  dynamic_ncols=True) as bar:
            while chunk := list(islice(lines, cfg.chunk)):
                preds = clf.predict_details([t for _, t, _ in chunk])
                out.write("".join(_dumps({"text": t, **p.to_dict()}, f"{name}:{n}") + "\n"
                                  for (n, t, _), p in zip(chunk, preds)))
                out.flush()
                written += len(chunk)
                bar.update(sum(b for _, _, b in chunk))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if not written:
        raise InputError(f"{name}: no texts to classify (give them as arguments, with --input FILE, or on "
                         f"standard input)")
    return written
