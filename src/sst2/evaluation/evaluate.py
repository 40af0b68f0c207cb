"""``sst2 evaluate``: accuracy, per-class precision/recall/F1 and the confusion matrix of a saved model."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sst2.config import EvaluateConfig, window_options
from sst2.data.dataset import find_split_file, load_splits
from sst2.data.splits import resolve_data_dir
from sst2.errors import UserError
from sst2.evaluation.metrics import classification_metrics, format_metrics


def _scored(cfg: EvaluateConfig, model_labels: list[str]) -> tuple[list[str], list[int], str]:
    """``(texts, label indexes, what)`` of ``--file`` or of the ``--split`` of ``--data``, labels encoded
    against the model's label names (a label it does not know is an error naming file and line)."""
    from sst2.data.labels import LabelSet
    from sst2.data.readers import read_table

    if cfg.file is not None:
        table = read_table(cfg.file, cfg.format, cfg.text_column, cfg.label_column)
        return table.texts, LabelSet.of_model(model_labels).encode_table(table), str(cfg.file)
    data = resolve_data_dir(cfg.data)
    if data.is_file():
        return _split_of_file(cfg, data, model_labels)
    if not data.is_dir():
        load_splits(data)  # its own error: not found, with the hint where the data lives
    path = find_split_file(data, cfg.split)  # only the split scored is read
    if path is None:
        train = find_split_file(data, "train")
        if train is not None and _record(cfg) is not None:  # a folder whose dev (or test) the run split off
            return _split_of_file(cfg, train, model_labels)
        raise UserError(f"{data}: no {cfg.split} file to score (the folder has "
                        f"{', '.join(sorted(p.name for p in data.iterdir() if p.is_file())) or 'no files'})")
    table = read_table(path, cfg.format, cfg.text_column, cfg.label_column, require_labels=False)
    if table.labels is None:
        raise UserError(f"{path}: split '{cfg.split}' has no labels, so it cannot be scored")
    return table.texts, LabelSet.of_model(model_labels).encode_table(table), cfg.split


def _record(cfg: EvaluateConfig) -> Path | None:
    """The ``splits.json`` of the run that trained the model: beside its model directory, or one level up
    for a multi-seed run."""
    model_dir = Path(cfg.model_dir).resolve()
    return next((p for p in (model_dir.parent / "splits.json", model_dir.parent.parent / "splits.json")
                 if p.is_file()), None)


def _split_of_file(cfg: EvaluateConfig, path: Path, model_labels: list[str]) -> tuple[list[str], list[int], str]:
    """The ``--split`` rows of a single data file as the run that trained the model split it (its
    ``splits.json``, beside the model directory or one level up for a multi-seed run); anything else
    would score rows the model may have trained on."""
    from sst2.data.labels import LabelSet
    from sst2.data.readers import read_table

    record = _record(cfg)
    if record is None:
        raise UserError(f"{path}: a single file's {cfg.split} rows are the ones the run split off, and "
                        f"{cfg.model_dir} has no splits.json beside it; score a file of its own with --file")
    info = json.loads(record.read_text())
    table = read_table(path, cfg.format, cfg.text_column, cfg.label_column)
    if info.get("sha256") != table.sha256:
        raise UserError(f"{path}: not the file {record} records ({info.get('file')}), or it changed since the run")
    if cfg.split not in info["rows"]:
        raise UserError(f"{path}: the run split no {cfg.split} rows off it (splits: {', '.join(info['rows'])})")
    rows = info["rows"][cfg.split]
    labels = LabelSet.of_model(model_labels).encode([table.labels[i] for i in rows], str(path),
                                                    [table.lines[i] for i in rows], table.unit)
    return [table.texts[i] for i in rows], labels, cfg.split


def evaluate(cfg: EvaluateConfig) -> dict:
    from sst2.inference.classifier import SentimentClassifier

    clf = SentimentClassifier.from_pretrained(cfg.model_dir, runtime=cfg.runtime, threads=cfg.threads,
                                              batch_size=cfg.batch_size, **window_options(cfg))
    texts, labels, where = _scored(cfg, clf.labels)
    t0 = time.perf_counter()
    proba = clf.predict_proba(texts)
    seconds = time.perf_counter() - t0
    preds = proba.argmax(1).tolist()
    from sst2.calibration import ece

    m = {"split": where, "model_dir": str(cfg.model_dir), "runtime": cfg.runtime, "long_texts": cfg.long_texts,
         **({"window_length": clf.window_length, "window_overlap": clf.window_overlap}
            if cfg.long_texts == "windows" else {}),
         **classification_metrics(labels, preds, clf.labels), "ece": ece(proba, labels), "seconds": round(seconds, 3),
         "threads": cfg.threads}
    print(json.dumps(m, indent=2) if cfg.json else format_metrics(m))
    return m
