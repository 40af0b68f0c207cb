"""``model.linear_probe``: fit the fine-tuned models' linear classifier on the frozen encoder before any
encoder weight moves (LP-FT, Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features").

A randomly initialised classifier sends large, arbitrary gradients into the encoder in the first steps
of fine-tuning; starting from the logistic-regression optimum on the encoder's own pooled states, the
encoder changes only as far as the task needs. This matters most when the encoder already knows the task
well, as the SST-2 teacher's encoder does for five-class SST-5 (docs/experiments/sst5.md).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sst2.data.batching import score
from sst2.modeling.model import SentimentModel


def pooled_states(model: SentimentModel, inputs) -> np.ndarray:
    """The ``(N, H)`` features the linear classifier reads, for every text of ``inputs`` (``TokenBatches``),
    with the model in eval mode."""
    model.eval()

    @torch.no_grad()
    def run(idx):
        ids, mask = inputs(idx)
        return model.head.features(model.backbone(ids, mask), mask.sum(1)).float().numpy()

    return score(inputs.lengths, 256, run)


def fit_linear_probe(model: SentimentModel, inputs, labels: list[int]) -> dict:
    """Set ``model.head.fc`` to L2-regularised logistic regression (scikit-learn, C = 1) on the training
    texts' pooled states; returns the probe's training accuracy and time for ``metrics.json``."""
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    x, y = pooled_states(model, inputs), np.asarray(labels)
    probe = LogisticRegression(max_iter=2000).fit(x, y)
    fc = model.head.fc
    if fc.out_features != probe.coef_.shape[0]:  # binary: one logit for class 1, as the probe's one row
        raise ValueError(f"the probe has {probe.coef_.shape[0]} rows for a head of {fc.out_features} outputs")
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(probe.coef_).to(fc.weight.dtype))
        fc.bias.copy_(torch.from_numpy(probe.intercept_).to(fc.bias.dtype))
    return {"probe_train_accuracy": round(float(probe.score(x, y)), 6),
            "probe_seconds": round(time.perf_counter() - t0, 3)}
