"""``sst2 predict``: classify texts given as arguments, one per line in a file, or on standard input.

Writes one JSON object per input line, in input order: ``{"text": ..., "label": ..., "positive_prob":
..., "probabilities": {label: p, ...}, "truncated": ...}`` (``positive_prob`` for two classes only). Input is read, scored and written in chunks (``--chunk`` lines), so memory
stays bounded and output starts after the first chunk, however long the input. Lines are split at
``\\n`` (a ``\\r`` before it is dropped) and nowhere else, so every input line gives one output line;
a line that is empty or not UTF-8 is an error naming the file and the line.
"""

from __future__ import annotations

import json
import math
import sys
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Iterator

from sst2.config import PredictConfig, window_options
from sst2.data.text import text_problem
from sst2.errors import UserError

# Below this many bytes of input a progress bar is noise: a batch or two finishes at once.
PROGRESS_MIN_BYTES = 16384
LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


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
    # characters that str.splitlines() breaks at but JSON leaves as they are: escaped, so a reader that
    # splits the output that way still sees one line per text
    return json.dumps(row, ensure_ascii=False, allow_nan=False).translate(LINE_BREAKS)


def _open(cfg: PredictConfig) -> tuple[BinaryIO, str, int | None]:
    if cfg.input is None or cfg.input == "-":
        return sys.stdin.buffer, "<stdin>", None
    path = Path(cfg.input)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return open(path, "rb"), str(path), path.stat().st_size


TABLE_EXTENSIONS = (".tsv", ".csv", ".jsonl", ".json", ".ndjson", ".parquet", ".pq")


def _prediction_columns(p, names: list[str]) -> dict:
    """The columns a prediction adds to an input row: the label and one probability per class."""
    return {"label": p.label, **{f"prob_{n}": p.probabilities[n] for n in names}, "truncated": p.truncated,
            "windows": p.windows}


def predict_table(cfg: PredictConfig, clf) -> int:
    """An input table (every column kept) to an output table in its format, or JSON lines on stdout;
    streamed in chunks, with a progress bar over rows."""
    from tqdm.auto import tqdm

    from sst2.data.formats import detect_format
    from sst2.data.readers import pick_columns
    from sst2.data.rows import RowWriter, iter_rows
    from sst2.system import progress_enabled

    path = Path(cfg.input)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    fmt = detect_format(path, cfg.format)
    writer = RowWriter(cfg.output, fmt, overwrite=cfg.overwrite) if cfg.output else None
    written, column = 0, None
    try:
        with tqdm(disable=not progress_enabled(cfg.quiet), unit="row", desc="predict", leave=False,
                  dynamic_ncols=True) as bar:
            for rows in iter_rows(path, fmt, cfg.chunk):
                if column is None:
                    column, _ = pick_columns(list(rows[0]), path, cfg.text_column, require_labels=False)
                texts = [_row_text(r, column, path, written + i) for i, r in enumerate(rows)]
                out = [{**r, **_prediction_columns(p, clf.labels)} for r, p in zip(rows, clf.predict_details(texts))]
                _emit(out, writer, f"{path}: row {written + 1}")
                written += len(rows)
                bar.update(len(rows))
    except BaseException:
        if writer is not None:
            writer.abort()  # no half-written output file
        raise
    if writer is not None:
        writer.close()
    if not written:
        raise InputError(f"{path}: no rows to classify")
    return written


def _row_text(row: dict, column: str, path: Path, i: int) -> str:
    text = row.get(column)
    problem = "no text" if not isinstance(text, str) else text_problem(text)
    if problem:
        raise InputError(f"{path}: row {i + 1}: {problem} in column {column!r}")
    return text


def _emit(rows: list[dict], writer, where: str) -> None:
    for r in rows:
        if any(isinstance(v, float) and not math.isfinite(v) for k, v in r.items() if k.startswith("prob_")):
            raise InputError(f"{where}: the model gave a non-finite probability (its weights are not finite "
                             f"numbers); retrain or re-export it")
    if writer is not None:
        writer.write(rows)
    else:
        sys.stdout.write("".join(json.dumps(r, ensure_ascii=False, default=str).translate(LINE_BREAKS) + "\n"
                                 for r in rows))
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
