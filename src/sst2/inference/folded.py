"""The ``numpy`` runtime of the static tier: its convolutions folded into lookup tables at load time.

A static model is an embedding table ``E`` (V x H) under a CNN head (``sst2.modeling.heads.CNNHead``). A
convolution of width w is linear in its inputs, so output position p of width w is

    b + sum_j  W_j @ E[id(p - (w - 1) + j)]      (j = 0 .. w - 1; ids outside the text contribute 0)

and ``W_j @ E[v]`` can be computed once for every vocabulary entry v: one table ``E @ W_j.T`` (V x F) per
width and offset. Scoring then gathers and adds rows instead of multiplying matrices: per token and
width, w row additions of F floats in place of a (F x H x w) product. The result is the torch model's up
to float rounding (``tests/test_static.py``). The tables are built from the saved files when the model is
loaded (student B's whole load took 0.63-0.69 s, against 0.15 s for its ONNX graph; for 256 filters of
widths 1-3 over 30,519 tokens the tables take 188 MB of memory), so the model directory keeps its size: ``encoder/static.safetensors``, ``head.safetensors`` and the tokenizer.

Needs numpy and safetensors only: no torch, no onnxruntime. One call runs on one thread; to use several
cores, ``SentimentClassifier`` runs calls side by side (its ``workers``, which for this runtime default to
``threads``): numpy's gathers and element-wise operations release the GIL, and on 2 cores two calls at a
time did 1.45x the work of one (measured on student B's dev batches).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sst2.errors import one_line
from sst2.inference.runtimes import RuntimeUnavailableError, runtimes_for


class FoldedStaticRunner:
    """``(input_ids, attention_mask) -> logits`` for a static model; see the module docstring."""

    def __init__(self, model_dir: str | Path, spec: dict):
        from safetensors.numpy import load_file

        model_dir = Path(model_dir)
        head = spec.get("head") or {}
        if "numpy" not in runtimes_for(spec):
            raise RuntimeUnavailableError(
                f"{model_dir}: runtime 'numpy' runs the static tier (a static model with a cnn head); this model "
                f"is {spec.get('model')!r} with a {head.get('kind')!r} head: choose torch, onnx or onnx-int8")
        try:
            table = load_file(model_dir / "encoder" / "static.safetensors")["embedding"].astype(np.float32)
            weights = load_file(model_dir / "head.safetensors")
        except Exception as exc:  # missing or damaged files: safetensors raises its own error types
            raise RuntimeUnavailableError(f"{model_dir}: cannot load the static model's weights ({one_line(exc)})") from None
        self.pooling = head.get("pooling", "maxmean")
        self.pad_row = table.shape[0]  # the index of an all-zero row: padding and positions outside the text
        self.widths = [int(w) for w in head["kernel_sizes"]]
        self.margin = max(self.widths) - 1  # padding rows on each side, enough for the widest convolution
        self.tables = []
        for i, w in enumerate(self.widths):
            kernel = weights[f"convs.{i}.weight"]  # (F, H, w)
            per_offset = []
            for j in range(w):
                folded = np.zeros((table.shape[0] + 1, kernel.shape[0]), dtype=np.float32)
                np.matmul(table, kernel[:, :, j].T, out=folded[:-1])
                per_offset.append(folded)
            # the bias, folded into offset 0, whose row every output position gathers once (the padding row too)
            per_offset[0] += weights[f"convs.{i}.bias"].astype(np.float32)
            self.tables.append(per_offset)
        self.fc_weight = weights["fc.weight"].astype(np.float32).T  # (features, labels)
        self.fc_bias = weights["fc.bias"].astype(np.float32)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        lengths = attention_mask.sum(1)
        b, t = input_ids.shape
        full = bool(lengths.min() == t)  # no padding in this call: every output position is valid
        ids = input_ids if full else np.where(attention_mask.astype(bool), input_ids, self.pad_row)
        m = self.margin
        padded = np.full((b, t + 2 * m), self.pad_row, dtype=ids.dtype)
        padded[:, m : m + t] = ids
        feats = []
        for w, tables in zip(self.widths, self.tables):
            span = t + w - 1  # output positions of a width-w convolution padded by w - 1 on both sides
            start = m - (w - 1)  # where that padding begins in ``padded``
            out = tables[0].take(padded[:, start : start + span], axis=0)  # (B, span, F)
            for j in range(1, w):
                out += tables[j].take(padded[:, start + j : start + j + span], axis=0)
            np.maximum(out, 0.0, out=out)  # ReLU
            if full:
                counts = np.float32(span)
            else:
                valid = (np.arange(span)[None, :] < (lengths + w - 1)[:, None])[:, :, None]
                out *= valid  # outputs are >= 0, so zeros outside the text change neither max nor sum
                counts = np.maximum(valid.sum(1), 1).astype(np.float32)
            pooled = [out.sum(1) / counts]
            if self.pooling == "maxmean":
                pooled.insert(0, out.max(1))
            feats.extend(pooled)
        logits = np.concatenate(feats, axis=1) @ self.fc_weight + self.fc_bias
        return logits[:, 0] if logits.shape[1] == 1 else logits
