"""The Python API: ``fit`` trains on in-memory lists and returns a ``SentimentClassifier``; ``distill``
trains a student of a saved model on data files."""

from __future__ import annotations

from sst2.inference.classifier import SentimentClassifier
from sst2.training.inmemory import fit_model


def fit(train_texts, train_labels, dev_texts=None, dev_labels=None, test_texts=None, test_labels=None, *,
        recipe: str | None = None, config=None, out=None, **overrides) -> tuple[SentimentClassifier, dict]:
    """Train a classifier on in-memory texts and labels: integers or strings, two classes or more (0 / 1
    are named "negative" / "positive"; ``labels=[...]`` gives the order, else they are sorted).

    ``recipe``: efficient (the default), vanilla, partial or lora, each with its preset
    (``sst2/configs/*.toml``); ``config``: a TOML file or a ``TrainConfig`` instead; ``overrides`` by
    field name (``epochs=3``, ``lr=2e-3``, ``backbone="path/to/encoder"``). With ``dev_*`` the epoch
    with the best dev accuracy is kept, else the last. ``out``: also write a run directory there, as
    ``sst2 train`` does, with the lists in ``OUT/data/`` so that its ``config.toml`` re-runs it. Returns
    ``(classifier, report)``; the report is the run's metrics dict.
    """
    trained, card = fit_model(train_texts, train_labels, dev_texts, dev_labels, test_texts, test_labels,
                              recipe=recipe, config=config, out=out, **overrides)
    return SentimentClassifier.from_model(trained.model, card=card), trained.metrics


def distill(teacher, *, preset: str = "distill", config=None, out=None,
            **overrides) -> tuple[SentimentClassifier, dict]:
    """Train a student of ``teacher`` (a model directory, or a list of them: an ensemble) on its soft
    targets over a transfer set, as ``sst2 distill`` does: the data comes from files (``path=``,
    ``transfer_files=[...]``; default: the preset's); ``preset``: ``distill`` (the efficient student) or
    ``distill-static`` (the static tier); ``overrides`` by field name (``copies=8``, ``loss="kl"``,
    ``depth=3``). Writes the run directory ``out`` (default: the preset's) and returns ``(student, metrics)``."""
    from pathlib import Path

    from sst2.distillation.api import distill as run
    from sst2.training.config import config_for

    if teacher is None or (not isinstance(teacher, (str, Path)) and not hasattr(teacher, "__iter__")):
        from sst2.config import ConfigError

        raise ConfigError(f"teacher: a model directory or a list of them, got {teacher!r}")
    overrides["teacher"] = str(teacher) if isinstance(teacher, (str, Path)) else [str(t) for t in teacher]
    if out is not None:
        overrides["out"] = str(out)
    cfg = config_for(config=config, preset=None if config is not None else preset, quiet=overrides.pop("quiet", True),
                     **overrides)
    if cfg.run.seeds != 1:
        raise ValueError("distill returns one student; use sst2 distill --seeds N for several")
    metrics = run(cfg, command="sst2.distill(...)")
    return SentimentClassifier.from_pretrained(Path(cfg.run.out) / "model"), metrics
