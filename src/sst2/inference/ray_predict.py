"""Bulk scoring on Ray Data: ``sst2 predict --engine ray --input PATH_OR_GLOB --output DIR``.

    from sst2.inference.ray_predict import predict_files
    report = predict_files("runs/efficient/model", "reviews/*.parquet", "scored/")  # onnx-int8, local Ray
    report.failed        # rows that could not be scored, listed in scored/errors/

The input files (TSV, CSV, JSON lines, Parquet, or plain text one text a line) are checked and counted on
the driver, so every row has a ``row_id``: its index over all the files in input order. Ray tasks read them
(``sst2.inference.ray_io``), ``map_batches`` runs them through a pool of actors that each load the model
once (:class:`Scorer`), and write tasks split the rows into ``DIR/predictions/`` (every input column, plus
the label, one probability per class, ``truncated`` and ``windows``) and ``DIR/errors/`` (``row_id``,
``file``, ``line``, ``reason``: an empty text, a line that is not UTF-8, a JSON line that is not an
object). Parquet by default. The output files are named by their first ``row_id``; sort on ``row_id`` to
restore the input order.

Every row comes out exactly once: afterwards the ``row_id`` of every row on disk is read back and checked
against the input. An actor that dies is restarted and its batch retried, up to ``retries`` times (Ray
Data's own default is without limit, so a batch that kills its actor every time would never end); when Ray
gives up, or a row is missing for any reason, the command fails naming the missing rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from sst2.cluster import ACTOR_RETRIES, gave_up
from sst2.config import window_options
from sst2.data.text import text_problem
from sst2.errors import PartialFailure, UserError, one_line
from sst2.inference.ray_io import (ERROR, ERRORS, OUTPUT_FORMATS, PREDICTIONS, InputFile, files_source,
                                   finish_output, id_ranges, prepare_output, resolve_inputs, split_sink, where,
                                   written_ids)

DEFAULT_RUNTIME = "onnx-int8"


class ScoringError(UserError, RuntimeError):
    """Rows are missing from the output (Ray gave up on a task, or a row was lost): exit status 2."""


@dataclass
class RayPredictReport:
    output: str
    rows: int  # input rows
    predicted: int  # rows in predictions/
    failed: int  # rows in errors/
    files: list[InputFile]
    actors: int
    threads: int
    runtime: str
    startup_seconds: float  # until Ray was up
    seconds: float  # the whole call
    first_error: str | None = None  # "file:line: reason" of the first failed row
    settings: dict = field(default_factory=dict)

    @property
    def texts_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"output": self.output, "rows": self.rows, "predicted": self.predicted, "failed": self.failed,
                "actors": self.actors, "threads": self.threads, "runtime": self.runtime,
                "startup_seconds": round(self.startup_seconds, 2), "seconds": round(self.seconds, 2),
                "texts_per_s": round(self.texts_per_s, 1), "first_error": self.first_error, **self.settings,
                "files": self.files}


class Scorer:
    """The ``map_batches`` class: loads the classifier once per actor and scores pyarrow batches."""

    def __init__(self, model_dir: str, runtime: str, threads: int, batch_size: int, windows: dict, column: str):
        """``windows``: the long-text options of ``SentimentClassifier.from_pretrained``."""
        from sst2.inference.classifier import SentimentClassifier

        self.clf = SentimentClassifier.from_pretrained(model_dir, runtime=runtime, threads=threads,
                                                       batch_size=batch_size, **windows)
        self.column = column
        names = self.clf.labels
        self.types = {"label": pa.string(), **{f"prob_{n}": pa.float64() for n in names},
                      "truncated": pa.bool_(), "windows": pa.int64()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        from sst2.inference.predict import _prediction_columns, keep_input_columns

        n = batch.num_rows
        errors = batch.column(ERROR).to_pylist()
        texts = batch.column(self.column).to_pylist() if self.column in batch.column_names else [None] * n
        todo = []
        for i, (error, text) in enumerate(zip(errors, texts)):
            if error is None:
                problem = "no text" if not isinstance(text, str) else text_problem(text)
                if problem:
                    errors[i] = f"{problem} in column {self.column!r}"
                else:
                    todo.append(i)
        columns = {name: [None] * n for name in self.types}
        for i, p in zip(todo, self.clf.predict_details([texts[i] for i in todo])):
            values = _prediction_columns(p, self.clf.labels)
            if not all(np.isfinite(v) for k, v in values.items() if k.startswith("prob_")):
                errors[i] = "the model gave a non-finite probability (its weights are not finite numbers)"
                continue
            for k, v in values.items():
                columns[k][i] = v
        out = batch.drop_columns([ERROR])
        renamed = keep_input_columns(out.column_names, self.types)  # e.g. a labelled file's label: input_label
        out = out.rename_columns([renamed.get(c, c) for c in out.column_names])
        for name, values in columns.items():
            out = out.append_column(name, pa.array(values, self.types[name]))
        return out.append_column(ERROR, pa.array(errors, pa.string()))


def _check_model(model_dir: str, runtime: str) -> None:
    """The model directory and the runtime's file, checked on the driver before Ray starts."""
    from sst2.inference.runtimes import ONNX_FILES, RUNTIMES, RuntimeUnavailableError, onnx_path
    from sst2.modeling.modeldir import read_spec

    if runtime not in RUNTIMES:
        raise RuntimeUnavailableError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    read_spec(Path(model_dir))
    if runtime in ONNX_FILES:
        onnx_path(model_dir, runtime)


def predict_files(model_dir: str, inputs: str, output: str, *, runtime: str = DEFAULT_RUNTIME,
                  ray_address: str | None = None, actors: int | None = None, threads: int = 1,
                  batch_size: int = 64, chunk: int = 1024, format: str | None = None, text_column: str | None = None,
                  output_format: str = "parquet", long_texts: str = "truncate", window_overlap: int | None = None,
                  window_length: int | None = None, retries: int = ACTOR_RETRIES, overwrite: bool = False,
                  quiet: bool = False) -> RayPredictReport:
    """Score every row of ``inputs`` (a path or glob) into the folder ``output`` on Ray (module docstring).

    ``ray_address``: a running cluster (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``); default: the Ray already
    initialised in this process, else a local Ray with this machine's CPUs. ``actors``: scoring actors
    (default: the cluster's CPUs divided by ``threads``), each with ``threads`` intra-op threads and as many
    CPUs. ``chunk``: rows per actor call; ``batch_size``: texts per model call within it (length-sorted).
    ``retries``: restarts of a dead actor, and retries of its call, before Ray gives up.
    Raises :class:`ScoringError` if any row is missing from the output; failed rows are not an exception
    (``report.failed``)."""
    from sst2.cluster import require_ray

    t0 = time.perf_counter()
    require_ray()  # without it, say so before anything is read or written
    if output_format not in OUTPUT_FORMATS:
        raise UserError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if not isinstance(retries, int) or retries < 0:
        raise UserError(f"retries must be a whole number >= 0, got {retries!r}")
    _check_model(model_dir, runtime)
    files = resolve_inputs(inputs, format, text_column)
    if ray_address:
        from sst2.cluster import check_reachable

        check_reachable(ray_address)  # before anything is written
    out = Path(output)
    prepare_output(out, overwrite)
    total = sum(f.rows for f in files)
    settings = {"model_dir": str(model_dir), "inputs": inputs, "batch_size": batch_size, "chunk": chunk,
                "output_format": output_format, "ray_address": ray_address or "local", "retries": retries}
    report = RayPredictReport(str(out), total, 0, 0, files, actors or 0, threads, runtime, 0.0, 0.0, None, settings)
    failure = None
    try:
        failure = _run_on_ray(report, files, out, ray_address, quiet, dict(
            model_dir=str(Path(model_dir).resolve()), runtime=runtime, threads=threads, batch_size=batch_size,
            windows=dict(long_texts=long_texts, window_overlap=window_overlap, window_length=window_length),
            column=files[0].text_column), chunk, t0)
    except BaseException:
        finish_output(out, report.to_dict(), "failed")
        raise
    report.seconds = time.perf_counter() - t0
    _check_coverage(report, out, output_format, failure)
    finish_output(out, report.to_dict(), "complete")
    return report


def _run_on_ray(report: RayPredictReport, files, out: Path, address, quiet: bool, scorer_args: dict, chunk: int,
                t0: float) -> Exception | None:
    """Read, score and write on Ray; returns the exception of a run that Ray gave up on (None: it finished)."""
    from sst2.cluster import cluster_cpus, map_on_actors, ray_session
    from sst2.system import progress_enabled

    with ray_session(address, quiet) as ray:
        report.startup_seconds = time.perf_counter() - t0
        threads = report.threads
        report.actors = report.actors or max(1, cluster_cpus(ray) // threads)
        ray.data.DataContext.get_current().enable_progress_bars = progress_enabled(quiet)
        # reading and writing are light next to the model: no CPU reserved, so every CPU can hold an actor
        ds = ray.data.read_datasource(files_source(files, chunk), num_cpus=0)
        scored = map_on_actors(ds, Scorer, retries=report.settings["retries"], fn_constructor_kwargs=scorer_args,
                               batch_size=chunk, batch_format="pyarrow",
                               compute=ray.data.ActorPoolStrategy(size=report.actors), num_cpus=threads)
        try:
            scored.write_datasink(split_sink(out.resolve(), report.settings["output_format"]),
                                  ray_remote_args={"num_cpus": 0})
        except UserError:
            raise
        except Exception as exc:  # a task or an actor that Ray gave up on; what was written is checked next
            user = _user_error(exc)
            if user is not None:
                raise user from None
            return exc
    return None


def _user_error(exc: BaseException) -> UserError | None:
    """The sst2 error (a bad file, a model that does not load) that a Ray task raised, if that is what it was."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)
        if isinstance(exc, UserError):
            return exc
        if isinstance(cause, UserError):
            return cause
        exc = exc.__cause__ or exc.__context__ or (cause if isinstance(cause, BaseException) else None)
    return None


def _check_coverage(report: RayPredictReport, out: Path, fmt: str, failure: Exception | None) -> None:
    """Every input row in the output exactly once; otherwise a :class:`ScoringError` naming what is missing."""
    ids = written_ids(out, fmt)
    report.predicted, report.failed = len(ids[PREDICTIONS]), len(ids[ERRORS])
    every = np.concatenate([ids[PREDICTIONS], ids[ERRORS]])
    counts = np.bincount(every, minlength=report.rows) if len(every) else np.zeros(report.rows, dtype=np.int64)
    missing, twice = np.flatnonzero(counts[: report.rows] == 0), np.flatnonzero(counts > 1)
    if report.failed:
        report.first_error = _first_error(out, fmt)
    if failure is None and not len(missing) and not len(twice):
        return
    parts = []
    if len(missing):
        parts.append(f"{len(missing)} of {report.rows} rows are missing from the output (row_id "
                     f"{id_ranges(missing)}; the first is {where(report.files, int(missing[0]))})")
    if len(twice):
        parts.append(f"{len(twice)} rows were written more than once (row_id {id_ranges(twice)})")
    cause = "" if failure is None else f"; {gave_up(report.settings['retries'], failure)}"
    finish_output(out, report.to_dict(), "failed")
    raise ScoringError(f"{out}: " + "; ".join(parts or ["the run did not finish"]) + cause +
                       f". The rows written are kept in {out}; run again with --overwrite to score everything")


def _first_error(out: Path, fmt: str) -> str | None:
    """``file:line: reason`` of the failed row with the lowest ``row_id``."""
    from sst2.data.rows import iter_rows

    first = None
    for path in (out / ERRORS).glob("part-*"):
        for rows in iter_rows(path, fmt, 4096):
            row = min(rows, key=lambda r: int(r["row_id"]))
            if first is None or int(row["row_id"]) < int(first["row_id"]):
                first = row
    return None if first is None else f"{first['file']}:{first['line']}: {first['reason']}"


def predict_ray(cfg) -> RayPredictReport:
    """``sst2 predict --engine ray`` (a :class:`sst2.config.PredictConfig`): exit status 1 if rows failed."""
    import sys

    report = predict_files(cfg.model_dir, cfg.input, cfg.output, runtime=cfg.runtime or DEFAULT_RUNTIME,
                           ray_address=cfg.ray_address, actors=cfg.actors, threads=cfg.threads or 1,
                           batch_size=cfg.batch_size, chunk=cfg.chunk, format=cfg.format,
                           text_column=cfg.text_column, output_format=cfg.output_format or "parquet",
                           retries=ACTOR_RETRIES if cfg.retries is None else cfg.retries,
                           overwrite=cfg.overwrite, quiet=cfg.quiet, **window_options(cfg))
    if not cfg.quiet:
        print(f"sst2 predict: {report.rows:,} rows from {len(report.files)} file(s) -> {report.output}/"
              f"{PREDICTIONS} ({report.predicted:,}) and {ERRORS} ({report.failed:,}) in {report.seconds:.1f} s "
              f"({report.texts_per_s:,.0f} rows/s, {report.actors} actors x {report.threads} threads, "
              f"{report.runtime})", file=sys.stderr)
    if report.failed:
        raise PartialFailure(f"{report.failed:,} of {report.rows:,} rows could not be scored; each is listed with its "
                             f"file, line and reason in {report.output}/{ERRORS}/ (first: {report.first_error})")
    return report
