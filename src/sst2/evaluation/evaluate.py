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


def _scored(cfg: EvaluateConfig, model_labels: list[str]) -> tuple[list[str], list[int], str, str]:
    """``(texts, label indexes, what, the file read)`` of ``--file``, of the ``--split`` of ``--data``, or
    without either of the data the model's run trained on; labels encoded against the model's label names
    (a label it does not know is an error naming file and line)."""
    from sst2.data.labels import LabelSet
    from sst2.data.readers import read_table

    if cfg.file is None and cfg.data is None and (saved := _run_config(cfg)) is not None:
        return _split_of_run(cfg, saved, model_labels)
    if cfg.file is not None:
        table = read_table(cfg.file, cfg.format, cfg.text_column, cfg.label_column)
        return table.texts, LabelSet.of_model(model_labels).encode_table(table), str(cfg.file), str(cfg.file)
    data = resolve_data_dir(cfg.data)
    if data.is_file():
        return _split_of_file(cfg, data, model_labels)
    if not data.is_dir():
        load_splits(data)  # its own error: not found, with the hint where the data lives
    path = find_split_file(data, cfg.split)  # only the split scored is read
    if path is not None and _split_off(cfg, path):  # the run cut dev (or test) off this file: its own rows
        return _split_of_file(cfg, path, model_labels)
    if path is None:
        train = find_split_file(data, "train")
        if train is not None and _record(cfg) is not None:  # a folder whose dev (or test) the run split off
            return _split_of_file(cfg, train, model_labels)
        raise UserError(f"{data}: no {cfg.split} file to score (the folder has "
                        f"{', '.join(sorted(p.name for p in data.iterdir() if p.is_file())) or 'no files'})")
    table = read_table(path, cfg.format, cfg.text_column, cfg.label_column, require_labels=False)
    if table.labels is None:
        raise _unlabelled(path, cfg.split)
    return table.texts, LabelSet.of_model(model_labels).encode_table(table), cfg.split, str(path)


def _unlabelled(path, split: str) -> UserError:
    return UserError(f"{path}: split '{split}' has no labels, so it cannot be scored")


def _split_off(cfg: EvaluateConfig, path: Path) -> bool:
    """Whether the model's run split ``path`` by ratio (its ``splits.json`` names that file)."""
    record = _record(cfg)
    if record is None:
        return False
    recorded = json.loads(record.read_text()).get("file")
    return recorded is not None and Path(recorded).resolve() == path.resolve()


def _record(cfg: EvaluateConfig) -> Path | None:
    """The ``splits.json`` of the run that trained the model: beside its model directory, or one level up
    for a multi-seed run."""
    model_dir = Path(cfg.model_dir).resolve()
    return next((p for p in (model_dir.parent / "splits.json", model_dir.parent.parent / "splits.json")
                 if p.is_file()), None)


def _run_config(cfg: EvaluateConfig) -> Path | None:
    """The ``config.toml`` of the sst2 run whose model ``--model-dir`` is (``RUN/model`` or
    ``RUN/seed-S/model``), if it is one."""
    from sst2.training.rundir import read_marker

    run = Path(cfg.model_dir).resolve().parent
    if (run / "config.toml").is_file() and any(read_marker(d) is not None for d in (run, run.parent)):
        return run / "config.toml"
    return None


def _split_of_run(cfg: EvaluateConfig, saved: Path, model_labels: list[str]):
    """The ``--split`` of the run's own data, split as the run split it (its ``config.toml`` read as
    ``sst2 train --config`` reads it): a model trained on one's own data is scored on its own test split,
    not on the default folder's. ``--text-column``, ``--label-column`` and ``--format`` still apply."""
    from sst2.data.dataset import load_data
    from sst2.training.config import resolve

    d, seed = (run := resolve(config=saved)).data, run.run.seed
    try:
        splits, info = load_data(resolve_data_dir(d.path), d.train_file, format=cfg.format or d.format,
                                 text_column=cfg.text_column or d.text_column,
                                 label_column=cfg.label_column or d.label_column, labels=d.labels,
                                 dev_ratio=d.dev_ratio, test_ratio=d.test_ratio,
                                 seed=seed if d.split_seed is None else d.split_seed)
    except UserError as exc:
        raise UserError(f"{exc} (the data {saved} trained on; score other data with --data or --file)") from None
    record = _record(cfg)
    recorded = json.loads(record.read_text()) if info is not None and record is not None else None
    if recorded is not None and (recorded.get("rows") != info["rows"] or recorded.get("sha256") != info["sha256"]):
        # the rows alone follow from the labels and the row count: an edited text keeps them
        raise UserError(f"{info['file']}: it changed since the run split it ({record}); score it with --file")
    split = splits.get(cfg.split)
    if split is None:
        raise UserError(f"{d.path}: the run {saved.parent} has no {cfg.split} split (it has "
                        f"{', '.join(splits)}); score a file of its own with --file")
    if not split.labelled:
        raise _unlabelled(split.path, cfg.split)
    if list(split.label_names) != list(model_labels):
        raise UserError(f"{saved}: its data gives the labels {', '.join(split.label_names)}, but the model has "
                        f"{', '.join(model_labels)}; score it with --data or --file")
    return split.texts, split.labels, cfg.split, str(split.path)


def _split_of_file(cfg: EvaluateConfig, path: Path, model_labels: list[str]) -> tuple[list[str], list[int], str, str]:
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
    return [table.texts[i] for i in rows], labels, cfg.split, str(path)


def evaluate(cfg: EvaluateConfig) -> dict:
    from sst2.inference.classifier import SentimentClassifier

    clf = SentimentClassifier.from_pretrained(cfg.model_dir, runtime=cfg.runtime, threads=cfg.threads,
                                              batch_size=cfg.batch_size, **window_options(cfg))
    texts, labels, where, source = _scored(cfg, clf.labels)
    t0 = time.perf_counter()
    proba = clf.predict_proba(texts)
    seconds = time.perf_counter() - t0
    preds = proba.argmax(1).tolist()
    from sst2.calibration import ece

    m = {"split": where, "data": source, "model_dir": str(cfg.model_dir), "runtime": cfg.runtime,
         "long_texts": cfg.long_texts,
         **({"window_length": clf.window_length, "window_overlap": clf.window_overlap}
            if cfg.long_texts == "windows" else {}),
         **classification_metrics(labels, preds, clf.labels), "ece": ece(proba, labels), "seconds": round(seconds, 3),
         "threads": cfg.threads}
    print(json.dumps(m, indent=2) if cfg.json else format_metrics(m))
    return m
