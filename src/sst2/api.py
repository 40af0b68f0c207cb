"""The Python API: ``fit`` trains on in-memory lists and returns a ``SentimentClassifier``."""

from __future__ import annotations

from sst2.inference.classifier import SentimentClassifier
from sst2.training.api import fit_model


def fit(train_texts, train_labels, dev_texts=None, dev_labels=None, test_texts=None, test_labels=None, *,
        recipe: str = "efficient", config=None, out=None, **overrides) -> tuple[SentimentClassifier, dict]:
    """Train a classifier on in-memory texts and labels (0 / 1 or "negative" / "positive").

    ``recipe``: efficient (default), vanilla, partial or lora, each with its preset
    (``sst2/configs/*.toml``); ``config``: a TOML file or a ``TrainConfig`` instead; ``overrides`` by
    field name (``epochs=3``, ``lr=2e-3``, ``backbone="path/to/encoder"``). With ``dev_*`` the epoch
    with the best dev accuracy is kept, else the last. ``out``: also write a run directory there, as
    ``sst2 train`` does. Returns ``(classifier, report)``; the report is the run's metrics dict.
    """
    trained, card = fit_model(train_texts, train_labels, dev_texts, dev_labels, test_texts, test_labels,
                              recipe=recipe, config=config, out=out, **overrides)
    return SentimentClassifier.from_model(trained.model, card=card), trained.metrics
