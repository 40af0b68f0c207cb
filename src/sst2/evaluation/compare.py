"""``sst2 compare RUN_DIR...``: one table and one plot from finished run directories.

A run directory is either a single run (``RUN/metrics.json``) or a multi-seed run written by
``sst2 train --seeds N`` (``RUN/seed-S/metrics.json``), whose rows show mean ± sample standard
deviation over the seeds. Training figures (parameters, time, memory, accuracy) are read from the
runs' ``metrics.json``; inference latency is measured here, for every model in the same process
and under the same conditions, on the saved ``model/`` directories (the first seed's for a
multi-seed run) through :class:`sst2.SentimentClassifier`, tokenization included:

* batch 1: each of the first ``--calls`` dev sentences alone, one ``predict`` call each, after
  warm-up calls; the median (and p90) milliseconds per call;
* batch 64: every dev sentence, length-sorted into batches of 64; the median over ``--repeats``
  passes of the pass time divided by the number of sentences.

Writes ``compare.md`` (the table and the conditions), ``compare.json`` (one flat row per run, units
in key names) and ``compare.png`` into ``--out``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from sst2.config import CompareConfig
from sst2.errors import UserError
from sst2.evaluation.plots import plot_compare, plot_depth, plot_pareto
from sst2.evaluation.timing import time_models
from sst2.stats import seed_stat

STATS = ("dev_accuracy", "test_accuracy", "train_seconds", "seconds_per_epoch", "total_seconds", "cache_seconds",
         "peak_rss_mb", "best_epoch")


class CompareError(UserError, ValueError):
    pass


@dataclass
class RunSet:
    """One row of the comparison: a run directory and the metrics of its seed(s)."""

    path: Path
    runs: list[dict]
    model_dir: Path

    @property
    def first(self) -> dict:
        return self.runs[0]


RUN_KEYS = ("model", "dev_accuracy", "trainable_params", "total_params", "train_seconds", "total_seconds")


def _read_metrics(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: cannot read run metrics ({exc})") from exc
    missing = [k for k in RUN_KEYS if k not in metrics] if isinstance(metrics, dict) else list(RUN_KEYS)
    if missing:
        raise CompareError(f"{path}: not the metrics of an sst2 train run (no {', '.join(missing)}); an "
                           "'sst2 evaluate --json' output, for one, is not")
    return metrics


def load_run(path: str | os.PathLike) -> RunSet:
    """A single run (``metrics.json``) or a multi-seed run (``seed-*/metrics.json``); errors name the path."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such run directory")
    if not path.is_dir():
        raise CompareError(f"{path}: not a directory (give a run directory written by 'sst2 train')")
    if (path / "metrics.json").is_file():
        return RunSet(path, [_read_metrics(path / "metrics.json")], path / "model")
    seed_dirs = sorted((p for p in path.glob("seed-*") if p.is_dir()),
                       key=lambda p: (len(p.name), p.name))
    if not seed_dirs:
        from sst2.training.rundir import PARTIAL_INFIX

        unfinished = PARTIAL_INFIX in path.name or ".partial" in path.name
        hint = " (an unfinished run: training is still going or was interrupted)" if unfinished else ""
        raise CompareError(f"{path}: not a run directory: no metrics.json and no seed-*/metrics.json{hint}")
    missing = [p.name for p in seed_dirs if not (p / "metrics.json").is_file()]
    if missing:
        raise CompareError(f"{path}: incomplete multi-seed run: no metrics.json in {', '.join(missing)}")
    runs = [_read_metrics(p / "metrics.json") for p in seed_dirs]
    kinds = {(r.get("model"), r.get("preset"), r.get("backbone")) for r in runs}
    if len(kinds) > 1:
        raise CompareError(f"{path}: the seed runs are of different models: {sorted(map(str, kinds))}")
    return RunSet(path, runs, seed_dirs[0] / "model")


def encoder_layers(model_dir: Path) -> int | None:
    """How many encoder layers a saved model runs (its ``encoder/config.json``); None without an encoder."""
    try:
        return int(json.loads((Path(model_dir) / "encoder" / "config.json").read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def default_label(m: dict) -> str:
    model = m.get("model", "?")
    if model == "efficient":
        label = f"efficient ({m.get('preset')})"
    elif model == "partial":
        label = f"partial (top {m.get('unfreeze')} layers)"
    elif model == "lora":
        label = f"LoRA (r={m.get('lora_r')})"
    elif model == "vanilla":
        label = "vanilla (full fine-tune)"
    elif model == "static":
        label = "static (model2vec + CNN)"
    else:
        label = str(model)
    if m.get("depth"):
        label += f", first {m['depth']} layers"
    if m.get("distill"):
        return label + ", distilled"
    if m.get("train_file"):  # trained on another file than the data folder's train.tsv
        train_file = Path(m["train_file"])
        label += f", trained on {train_file.parent.name}/{train_file.name}"
    return label


def summarize(rs: RunSet, label: str) -> dict:
    m = rs.first
    row = {"label": label, "run": str(rs.path), "model": m.get("model"), "preset": m.get("preset"),
           "backbone": m.get("backbone"), "seeds": [r.get("seed") for r in rs.runs], "n_seeds": len(rs.runs),
           "trainable_params": m.get("trainable_params"), "total_params": m.get("total_params"),
           "epochs": m.get("epochs"), "max_length": m.get("max_length"), "threads": m.get("threads"),
           "encoder_layers": encoder_layers(rs.model_dir)}
    for key in STATS:
        s = seed_stat([r.get(key) for r in rs.runs])
        row[f"{key}_mean"] = None if s is None else round(s["mean"], 6)
        row[f"{key}_std"] = None if s is None else round(s["std"], 6)
    return row


def _pm(mean, std, n: int, fmt: str) -> str:
    if mean is None:
        return "n/a"
    if n > 1:
        return f"{mean:{fmt}} ± {std:{fmt}} ({n})"
    return f"{mean:{fmt}}"


def markdown(rows: list[dict], conditions: dict) -> str:
    bs = conditions.get("batch_size", 64)
    head = ["model", "trainable params", "total params", "train time (s)", "s / epoch", "whole run (s)",
            "peak RSS (MB)", "dev accuracy", "test accuracy"]
    if conditions.get("latency"):
        head += ["ms / sentence, batch 1", f"ms / sentence, batch {bs}"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in rows:
        n = r["n_seeds"]
        cells = [r["label"], f"{r['trainable_params']:,}", f"{r['total_params']:,}",
                 _pm(r["train_seconds_mean"], r["train_seconds_std"], n, ".1f"),
                 _pm(r["seconds_per_epoch_mean"], r["seconds_per_epoch_std"], 1, ".1f"),
                 _pm(r["total_seconds_mean"], r["total_seconds_std"], 1, ".1f"),
                 f"{r['peak_rss_mb_max']:,.0f}" if r.get("peak_rss_mb_max") is not None else "n/a",
                 _pm(r["dev_accuracy_mean"], r["dev_accuracy_std"], n, ".4f"),
                 _pm(r["test_accuracy_mean"], r["test_accuracy_std"], n, ".4f")]
        if conditions.get("latency"):
            if "inference_error" in r:
                cells += ["error", "error"]
            else:
                cells += [f"{r['b1_ms_p50']:.2f}", f"{r[f'b{bs}_ms_per_sentence_p50']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    env = conditions["environment"]
    notes = [
        "",
        f"Generated by `{conditions['command']}` on {conditions['date']}.",
        "Accuracies are fractions; with several seeds a cell reads mean ± sample std (number of seeds), and time "
        "and memory cells are means (peak RSS: the largest). Train time is the training loop (all epochs, dev "
        "scoring included); whole run adds start-up, frozen-feature encoding (efficient and partial models; "
        "zero when the cache was warm) and the final evaluation and report.",
    ]
    if conditions.get("latency"):
        n = conditions.get("rounds", 1)
        rounds = "in one round" if n == 1 else f"in {n} rounds, every model once a round"
        if n > 1 and conditions.get("fasttext"):
            rounds += " (the fastText anchor in one round, after them)"
        per_round = "" if n == 1 else " in each round"
        notes.append(
            f"Inference (runtime {conditions['runtime']}, {conditions['threads']} threads, tokenization included, "
            f"measured in one process, one model after another, {rounds}): batch 1 is the median over "
            f"{conditions['calls']} dev sentences, one call each{per_round}; batch {bs} is the median over "
            f"{conditions['repeats']} passes over the {conditions['dev_sentences']} dev sentences{per_round}, "
            f"length-sorted, per sentence.")
    notes += [f"{r['label']}: not timed ({r['inference_error']})." for r in rows if "inference_error" in r]
    notes.append(f"{env['cpu_model']}, {env['cpu_count']} CPUs; torch {env['versions'].get('torch')}, "
                 f"transformers {env['versions'].get('transformers')}; load average before "
                 f"{conditions['load_average_before'][0]:.2f}.")
    return "\n".join(lines + notes) + "\n"


def command_line(cfg: CompareConfig) -> str:
    """The command that re-runs this comparison: every option that differs from its default."""
    parts = ["sst2", "compare", *cfg.runs]
    if cfg.labels:
        parts += ["--labels", *cfg.labels]
    parts += ["--out", cfg.out]
    if not cfg.latency:
        parts.append("--no-latency")
    if cfg.runtimes:
        parts += ["--runtimes", *cfg.runtimes]
    elif cfg.runtime != "torch":
        parts += ["--runtime", cfg.runtime]
    if cfg.data is not None:
        parts += ["--data", cfg.data]
    defaults = {f.name: f.default for f in dataclasses.fields(CompareConfig)}
    for name in ("calls", "warmup", "batch_size", "repeats", "rounds", "threads"):  # every one that was changed
        if getattr(cfg, name) != defaults[name]:
            parts += ["--" + name.replace("_", "-"), str(getattr(cfg, name))]
    if cfg.fasttext:
        parts.append("--fasttext")
    return shlex.join(parts)


OUTPUT_FILES = ("compare.md", "compare.json", "compare.png", "pareto.png", "depth.png")


def _is_compare_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and {"conditions", "rows"} <= set(data)


def _files_written(path: Path) -> list[str]:
    """The files an earlier compare into this folder wrote (its ``compare.json`` lists them)."""
    if not path.is_file() or not _is_compare_json(path):
        return []
    files = json.loads(path.read_text()).get("files")
    return [f for f in files if f in OUTPUT_FILES] if isinstance(files, list) else []


def _row_names(cfg: CompareConfig, sets: list) -> list[str]:
    """``--labels``, else each run's description; runs described alike (the same recipe and preset) are told
    apart by their folder's name, else its path: a note or error naming a row must name one run."""
    if cfg.labels:
        twice = sorted({x for x in cfg.labels if cfg.labels.count(x) > 1})
        if twice:
            raise CompareError(f"--labels: {', '.join(map(repr, twice))} names more than one row; give each its own")
        return list(cfg.labels)
    names = [default_label(s.first) for s in sets]
    folders = [f"{n} [{Path(s.path).name}]" for n, s in zip(names, sets)]
    return [n if names.count(n) == 1 else f if folders.count(f) == 1 else f"{n} [{s.path}]"
            for n, f, s in zip(names, folders, sets)]


def compare(cfg: CompareConfig) -> dict:
    from sst2.data.dataset import load_splits
    from sst2.data.splits import resolve_data_dir
    from sst2.system import check_own_outputs, environment, set_threads

    sets = [load_run(p) for p in cfg.runs]  # every path checked before anything is measured
    check_own_outputs(cfg.out, OUTPUT_FILES, "compare.json", _is_compare_json, "compare")
    labels = _row_names(cfg, sets)
    threads = set_threads(cfg.threads)
    runtime_note = ("per row: " + "; ".join(f"{lab}: {rt}" for lab, rt in zip(labels, cfg.runtimes))
                    if cfg.runtimes else cfg.runtime)
    conditions = {"command": command_line(cfg), "date": datetime.date.today().isoformat(),
                  "latency": cfg.latency, "runtime": runtime_note, "threads": threads, "calls": cfg.calls,
                  "warmup": cfg.warmup, "repeats": cfg.repeats, "rounds": cfg.rounds, "batch_size": cfg.batch_size,
                  "load_average_before": list(os.getloadavg()), "environment": environment()}
    texts: list[str] = []
    splits = load_splits(resolve_data_dir(cfg.data)) if cfg.latency or cfg.fasttext else {}  # any format, k classes
    if cfg.latency:
        if "dev" not in splits:
            raise CompareError(f"{resolve_data_dir(cfg.data)}: no dev split to time the models on")
        dev = splits["dev"]
        texts = dev.texts
        conditions["dev_sentences"] = len(texts)
        conditions["data"] = str(dev.path)
    rows = []
    for rs, label in zip(sets, labels):
        row = summarize(rs, label)
        row["peak_rss_mb_max"] = max((r.get("peak_rss_mb") or 0 for r in rs.runs), default=None) or None
        rows.append(row)
    if cfg.latency:
        time_models(sets, rows, cfg.runtimes or [cfg.runtime] * len(sets), texts, cfg)
    if cfg.fasttext:
        from sst2.evaluation.anchors import fasttext_row

        if not cfg.quiet:
            print("training and measuring fastText (external anchor)", flush=True)
        row = fasttext_row(splits, texts, cfg.calls, cfg.warmup,
                           cfg.batch_size, cfg.repeats, threads)
        rows.append({**row, "run": None, "peak_rss_mb_max": None,
                     **{f"{k}_{s}": row.get(f"{k}_{s}") for k in STATS for s in ("mean", "std")
                        if f"{k}_{s}" not in row}})
        conditions["fasttext"] = row["fasttext_args"]

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out}: is a file, not a folder")
    md, files = _write_outputs(out, rows, conditions, cfg)
    if not cfg.quiet:
        print(md, end="")
        print(f"wrote {out}/ ({', '.join(files)})")
    failed = [f"{r['label']} ({r['inference_error']})" for r in rows if "inference_error" in r]
    if failed:  # the table is written with the others' figures, but the comparison is not complete
        raise CompareError(f"wrote {out}/, but {len(failed)} model(s) could not be timed: " + "; ".join(failed))
    return {"conditions": conditions, "rows": rows}


def _write_outputs(out: Path, rows: list[dict], conditions: dict, cfg: CompareConfig) -> tuple[str, list[str]]:
    """Write the table, the plots and ``compare.json`` into ``out``: each drawn into a temporary folder first
    and moved into place only when all are written, so a failure midway leaves an earlier comparison whole
    rather than a mix of old and new files. Returns the markdown and the file names."""
    import tempfile

    from sst2.system import process_tag, remove_orphans

    out.mkdir(parents=True, exist_ok=True)
    remove_orphans(out, ".compare-", r"-[a-z0-9_]{8}", dirs=True)  # what a killed compare left
    earlier = _files_written(out / "compare.json")
    md = markdown(rows, conditions)
    with tempfile.TemporaryDirectory(prefix=f".compare-{process_tag()}-", dir=out) as tmp:
        tmp = Path(tmp)
        (tmp / "compare.md").write_text(md)
        plot_compare(rows, tmp / "compare.png", batch_size=cfg.batch_size)
        files = ["compare.md", "compare.json", "compare.png"]
        if cfg.latency:
            plot_pareto(rows, tmp / "pareto.png", batch_size=cfg.batch_size)
            files.append("pareto.png")
        if len({r.get("encoder_layers") for r in rows if r.get("encoder_layers")}) > 1:
            plot_depth(rows, tmp / "depth.png", batch_size=cfg.batch_size)
            files.append("depth.png")
        (tmp / "compare.json").write_text(json.dumps({"conditions": conditions, "rows": rows, "files": files},
                                                     indent=2, default=_json_default) + "\n")
        for name in sorted(files, key=lambda n: n == "compare.json"):  # compare.json, the record, last
            os.replace(tmp / name, out / name)
    for name in set(earlier) - set(files):  # an earlier compare's plot, of other runs and timings
        (out / name).unlink(missing_ok=True)
    return md, files


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
