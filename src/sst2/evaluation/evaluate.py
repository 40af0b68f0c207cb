"""``sst2 evaluate``: accuracy, per-class precision/recall/F1 and the confusion matrix of a saved model."""

from __future__ import annotations

import json
import time

from sst2.config import EvaluateConfig
from sst2.data.dataset import load_splits
from sst2.data.splits import resolve_data_dir
from sst2.errors import UserError
from sst2.evaluation.metrics import classification_metrics, format_metrics


def evaluate(cfg: EvaluateConfig) -> dict:
    from sst2.inference.classifier import SentimentClassifier

    splits = load_splits(resolve_data_dir(cfg.data))
    split = splits[cfg.split]
    if not split.labelled:
        raise UserError(f"{split.path}: split '{cfg.split}' has no labels, so it cannot be scored")
    clf = SentimentClassifier.from_pretrained(cfg.model_dir, runtime=cfg.runtime, threads=cfg.threads,
                                              batch_size=cfg.batch_size, long_texts=cfg.long_texts,
                                              window_overlap=cfg.window_overlap)
    t0 = time.perf_counter()
    proba = clf.predict_proba(split.texts)
    seconds = time.perf_counter() - t0
    preds = proba.argmax(1).tolist()
    m = {"split": cfg.split, "model_dir": str(cfg.model_dir), "runtime": cfg.runtime, "long_texts": cfg.long_texts,
         **classification_metrics(split.labels, preds, clf.labels), "seconds": round(seconds, 3),
         "threads": cfg.threads}
    print(json.dumps(m, indent=2) if cfg.json else format_metrics(m))
    return m
