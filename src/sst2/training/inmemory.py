"""Training on in-memory lists: :func:`fit_model`, under ``sst2.fit``.

The lists become splits as a data folder's files would (``sst2.data.dataset.from_lists``): labels are
integers or strings, two classes or more, in the order ``labels=[...]`` gives. With ``out`` the run
directory also holds that data, as JSON lines in ``OUT/data/`` (``train.jsonl``, ``dev.jsonl``,
``test.jsonl``), and its ``config.toml`` reads it from there, so ``sst2 train --config OUT/config.toml
--out OUT2`` trains the same run again from files.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from sst2.data.dataset import from_lists
from sst2.data.rows import RowWriter
from sst2.data.splits import DataError, Split
from sst2.system import set_threads
from sst2.training import rundir
from sst2.training.api import Context, Trained, _normalized, run_one
from sst2.training.config import FIELD_GROUP, ConfigError, TrainConfig, config_for

DATA_FOLDER = "data"  # OUT/data: the lists, as the files the saved config reads
# data fields that describe files: sst2.fit trains on the lists it is given
FILE_FIELDS = ("path", "train_file", "format", "text_column", "label_column", "dev_ratio", "test_ratio",
               "split_seed")


def _check_options(recipe: str | None, config, out, overrides: dict) -> dict:
    """Refuse what fit would otherwise ignore without a word; returns the overrides with a label order
    of any kind (``[1, 0]``, an array, ``"b,a"``) as the list of strings the config holds."""
    if recipe is not None and config is not None:
        raise ConfigError(f"recipe={recipe!r} and config= both given: a config names its own recipe "
                          f"(model.recipe); to change it, pass **{{'model.recipe': {recipe!r}}}")
    overrides = dict(overrides)
    for key, value in list(overrides.items()):
        group, _, name = key.replace("__", ".").rpartition(".")
        group = group or FIELD_GROUP.get(name)
        if group == "data" and name in FILE_FIELDS:
            raise ConfigError(f"{key}: fit trains on the lists it is given; data files are for sst2.train "
                              f"(sst2 train --data)")
        if group == "distill":
            raise ConfigError(f"{key}: a distillation option; fit trains on labels (sst2.distill trains a student "
                              "of a teacher)")
        if (group, name) == ("run", "out"):
            raise ConfigError(f"{key}: pass out=DIR, the run directory fit writes")
        if (group, name) == ("run", "overwrite") and out is None:
            raise ConfigError(f"{key}: goes with out=DIR (without it fit writes nothing)")
        if (group, name) == ("data", "labels") and value is not None:
            values = value.split(",") if isinstance(value, str) else list(value)
            overrides[key] = [str(v.item() if hasattr(v, "item") else v) for v in values]
    return overrides


def _pairs(train_texts, train_labels, dev_texts, dev_labels, test_texts, test_labels) -> dict[str, tuple]:
    if train_labels is None:
        raise DataError("train_labels: training needs a label for every text, got None")
    if (dev_texts is None) != (dev_labels is None):
        given, missing = ("dev_texts", "dev_labels") if dev_labels is None else ("dev_labels", "dev_texts")
        raise DataError(f"{given} given without {missing}: the dev split picks the kept epoch by its accuracy, "
                        "so it needs both")
    if test_texts is None and test_labels is not None:
        raise DataError("test_labels given without test_texts")
    pairs = {"train": (train_texts, train_labels)}
    if dev_texts is not None:
        pairs["dev"] = (dev_texts, dev_labels)
    if test_texts is not None:
        pairs["test"] = (test_texts, test_labels)
    return pairs


def fit_model(train_texts, train_labels, dev_texts=None, dev_labels=None, test_texts=None, test_labels=None, *,
              recipe: str | None = None, config=None, out: str | None = None, **overrides) -> tuple[Trained, dict]:
    """:func:`sst2.fit` without the classifier wrapper: ``(Trained, model card info)``."""
    overrides = _check_options(recipe, config, out, overrides)
    cfg = config_for(recipe, config, quiet=overrides.pop("quiet", True), **overrides)
    # the lists are the data: a config file's data-file settings (an earlier run's config.toml) do not apply
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **dict.fromkeys(FILE_FIELDS)))
    if cfg.run.seeds != 1:
        raise ConfigError("fit trains one seed; use sst2.train (or sst2 train --seeds N) for several")
    if cfg.distill.teacher is not None:
        raise ConfigError(f"distill.teacher is set ({cfg.distill.teacher}): fit trains on labels; a student of a "
                          "teacher is sst2.distill")
    t_start = time.perf_counter()
    set_threads(cfg.run.threads)
    given = from_lists(_pairs(train_texts, train_labels, dev_texts, dev_labels, test_texts, test_labels),
                       cfg.data.labels)
    splits = _normalized(given, cfg.data.normalize)
    ctx = Context(cfg)
    command = "sst2.fit(...)"
    if out is None:
        trained = run_one(cfg, splits, ctx, t_start)
        return trained, rundir.card_info(cfg, trained.metrics, splits, command)
    out = Path(out)
    tmp = rundir.prepare(out, cfg.with_run(out=str(out)), None, ctx.log)
    cfg = _as_files(cfg, out, given)
    try:
        write_lists(tmp / DATA_FOLDER, given)
        trained = run_one(cfg, splits, ctx, t_start)
        rundir.write_run(tmp, cfg, trained, splits, command)
    except BaseException:
        rundir.abort(tmp)
        raise
    rundir.finish(out, tmp)
    return trained, rundir.card_info(cfg, trained.metrics, splits, command)


def _as_files(cfg: TrainConfig, out: Path, splits: dict[str, Split]) -> TrainConfig:
    """The config that trains this run again from ``OUT/data`` (an absolute path, so that it re-runs from any
    working directory): its label order, and no dev split if none was given."""
    data = dataclasses.replace(cfg.data, path=str(out.resolve() / DATA_FOLDER),
                               labels=list(splits["train"].label_names), dev_ratio=None if "dev" in splits else 0.0)
    return dataclasses.replace(cfg, data=data, run=dataclasses.replace(cfg.run, out=str(out)))


def write_lists(folder: Path, splits: dict[str, Split]) -> None:
    """Each split as ``folder/NAME.jsonl``: ``{"text": ..., "label": ...}`` with the label's name (no label for
    an unlabelled split), the texts as given (before normalization, which the training run applies)."""
    folder.mkdir()
    for name, split in splits.items():
        with RowWriter(folder / f"{name}.jsonl", "jsonl") as writer:
            if split.labels is None:
                writer.write({"text": t} for t in split.texts)
            else:
                writer.write({"text": t, "label": split.label_names[y]} for t, y in zip(split.texts, split.labels))
