"""``sst2 evaluate``: accuracy, per-class precision/recall/F1 and the confusion matrix of a saved model."""

from __future__ import annotations

import json
import time

import torch

from sst2.config import EvaluateConfig
from sst2.data.splits import LABEL_NAMES, load_splits, resolve_data_dir
from sst2.errors import UserError
from sst2.modeling.model import SentimentModel
from sst2.system import set_threads


def classification_metrics(labels: list[int], preds: list[int]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and ``confusion[true][pred]``."""
    k = len(LABEL_NAMES)
    confusion = [[0] * k for _ in range(k)]
    for y, p in zip(labels, preds):
        confusion[y][p] += 1
    per_class = {}
    for c, name in enumerate(LABEL_NAMES):
        tp = confusion[c][c]
        predicted = sum(confusion[r][c] for r in range(k))
        support = sum(confusion[c])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    n = len(labels)
    return {
        "n": n,
        "accuracy": sum(confusion[c][c] for c in range(k)) / n if n else 0.0,
        "per_class": per_class,
        "macro_f1": sum(v["f1"] for v in per_class.values()) / k,
        "confusion": {"labels": list(LABEL_NAMES), "rows_true_cols_pred": confusion},
    }


def format_metrics(m: dict) -> str:
    lines = [f"{m['split']}: {m['n']} sentences, accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}",
             "", f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, v in m["per_class"].items():
        lines.append(f"{name:<10}{v['precision']:>10.4f}{v['recall']:>10.4f}{v['f1']:>10.4f}{v['support']:>10}")
    conf = m["confusion"]["rows_true_cols_pred"]
    lines += ["", "confusion (rows = true, columns = predicted)",
              f"{'':<10}" + "".join(f"{n:>10}" for n in LABEL_NAMES)]
    lines += [f"{n:<10}" + "".join(f"{v:>10}" for v in row) for n, row in zip(LABEL_NAMES, conf)]
    return "\n".join(lines)


def evaluate(cfg: EvaluateConfig) -> dict:
    set_threads(cfg.threads)
    splits = load_splits(resolve_data_dir(cfg.data))
    split = splits[cfg.split]
    if not split.labelled:
        raise UserError(f"{split.path}: split '{cfg.split}' has no labels, so it cannot be scored")
    model = SentimentModel.load(cfg.model_dir)
    t0 = time.perf_counter()
    logits = model.predict_logits(split.texts, batch_size=cfg.batch_size)
    seconds = time.perf_counter() - t0
    preds = (logits > 0).long().tolist()
    m = {"split": cfg.split, "model_dir": str(cfg.model_dir), **classification_metrics(split.labels, preds),
         "seconds": round(seconds, 3), "threads": torch.get_num_threads()}
    print(json.dumps(m, indent=2) if cfg.json else format_metrics(m))
    return m
