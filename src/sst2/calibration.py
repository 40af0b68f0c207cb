"""Calibrated probabilities: temperature scaling and expected calibration error (numpy and scipy only).

A trained model's logits are divided by one temperature ``T`` fitted on the dev split (the value that
minimises the dev negative log-likelihood; Guo et al. 2017). ``T`` does not change which class is
largest, so accuracy stays the same; it only makes the probabilities mean what they say. Every
runtime applies the ``temperature`` stored in the model directory.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """``(N, k)`` class probabilities: one logit per text (two classes, sigmoid) or k logits (softmax)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if z.ndim == 1:
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow warnings
        return np.stack([1.0 - p, p], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` (class indexes) under the tempered probabilities."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim == 1:  # log sigmoid(+-z), stable
        s = np.where(y == 1, z, -z)
        return float(np.mean(np.logaddexp(0.0, -s)))
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(y)), y]))


def fit_temperature(logits, labels) -> float:
    """The temperature in [0.05, 20] that minimises :func:`nll` (bounded search over log T); 1 (none) when
    dev has no labels, or when every dev text is right: the NLL then falls without end as T shrinks, and the
    search stopped at the bound, 0.05, making every probability about 0 or 1 on other texts."""
    from scipy.optimize import minimize_scalar

    if len(labels) == 0 or bool((probabilities(logits).argmax(1) == np.asarray(labels)).all()):
        return 1.0
    res = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20.0)),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def reliability(probs, labels, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins over [0, 1]: for each, the texts in it, their mean confidence (the
    largest probability) and their accuracy."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(m.sum()),
                    "confidence": float(conf[m].mean()) if m.any() else None,
                    "accuracy": float(correct[m].mean()) if m.any() else None})
    return out


def ece(probs, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the mean over texts of |accuracy - confidence| of their bin."""
    rows = reliability(probs, labels, bins)
    n = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]) / n) if n else 0.0


def calibration_report(logits_by_split: dict, labels_by_split: dict, temperature: float) -> dict:
    """ECE before and after the temperature, and the reliability bins after it, per labelled split."""
    out = {"temperature": temperature, "bins": ECE_BINS}
    for name, logits in logits_by_split.items():
        y = labels_by_split.get(name)
        if y is None:
            continue
        after = probabilities(logits, temperature)
        out[name] = {"ece_before": ece(probabilities(logits), y), "ece_after": ece(after, y),
                     "nll_before": nll(logits, y), "nll_after": nll(logits, y, temperature),
                     "reliability_after": reliability(after, y)}
    return out
