"""Classification metrics (scikit-learn): accuracy, per-class precision / recall / F1, confusion matrix."""

from __future__ import annotations


def classification_metrics(labels: list[int], preds: list[int], names: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and ``confusion[true][pred]``."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ks = list(range(len(names)))
    # by class index, never by name: a class named "accuracy" or "macro avg" is a key of classification_report
    p, r, f, support = precision_recall_fscore_support(labels, preds, labels=ks, zero_division=0)
    per_class = {n: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(support[k])}
                 for k, n in enumerate(names)}
    return {
        "n": len(labels),
        "accuracy": float(accuracy_score(labels, preds)) if len(labels) else 0.0,
        "per_class": per_class,
        "macro_f1": float(f.mean()),
        "confusion": {"labels": list(names),
                      "rows_true_cols_pred": confusion_matrix(labels, preds, labels=ks).tolist()},
    }


def format_metrics(m: dict) -> str:
    names = m["confusion"]["labels"]
    lines = [f"{m['split']}: {m['n']} sentences, accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}",
             *([f"data: {m['data']}"] if m.get("data", m["split"]) != m["split"] else []),
             "", f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, v in m["per_class"].items():
        lines.append(f"{name:<10}{v['precision']:>10.4f}{v['recall']:>10.4f}{v['f1']:>10.4f}{v['support']:>10}")
    conf = m["confusion"]["rows_true_cols_pred"]
    lines += ["", "confusion (rows = true, columns = predicted)", f"{'':<10}" + "".join(f"{n:>10}" for n in names)]
    lines += [f"{n:<10}" + "".join(f"{v:>10}" for v in row) for n, row in zip(names, conf)]
    return "\n".join(lines)
