"""The ``numpy`` runtime of the static tier: its convolutions folded into lookup tables at load time.

A static model is an embedding table ``E`` (V x H) under a CNN head (``sst2.modeling.heads.CNNHead``). A
convolution of width w is linear in its inputs, so output position p of width w is

    b + sum_j  W_j @ E[id(p - (w - 1) + j)]      (j = 0 .. w - 1; ids outside the text contribute 0)

and ``W_j @ E[v]`` can be computed once for every vocabulary entry v: one table ``E @ W_j.T`` (V x F) per
width and offset. Scoring then gathers and adds rows instead of multiplying matrices: per token and
width, w row additions of F floats in place of a (F x H x w) product. The result is the torch model's up
to float rounding (``tests/test_static.py``). The tables are built from the saved files when the model is
loaded (about 0.3 s; for 256 filters of widths 1-3 over 30,519 tokens, 188 MB of memory), so the model
directory keeps its size: ``encoder/static.safetensors``, ``head.safetensors`` and the tokenizer.

Needs numpy and safetensors only: no torch, no onnxruntime. With ``threads`` > 1 a batch's rows are split
among that many threads (numpy's gathers and element-wise operations release the GIL); a batch of fewer
than ``MIN_ROWS_PER_THREAD`` rows a thread runs on the calling thread alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sst2.errors import one_line
from sst2.inference.runtimes import RuntimeUnavailableError


MIN_ROWS_PER_THREAD = 16


class FoldedStaticRunner:
    """``(input_ids, attention_mask) -> logits`` for a static model; see the module docstring."""

    def __init__(self, model_dir: str | Path, spec: dict, threads: int | None = None):
        from safetensors.numpy import load_file

        model_dir = Path(model_dir)
        head = spec.get("head") or {}
        if spec.get("model") != "static" or head.get("kind") != "cnn":
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
        self.threads = max(1, threads or 1)
        self._pool = None
        if self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sst2-folded")

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        parts = min(self.threads, len(input_ids) // MIN_ROWS_PER_THREAD)
        if parts < 2:
            return self._logits(input_ids, attention_mask)
        bounds = np.linspace(0, len(input_ids), parts + 1).astype(int)
        chunks = self._pool.map(lambda lo_hi: self._logits(input_ids[lo_hi[0]:lo_hi[1]], attention_mask[lo_hi[0]:lo_hi[1]]),
                                zip(bounds[:-1], bounds[1:]))
        return np.concatenate(list(chunks))

    def _logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        lengths = attention_mask.sum(1)
        b, t = input_ids.shape
        ids = np.where(attention_mask.astype(bool), input_ids, self.pad_row)
        feats = []
        for w, tables in zip(self.widths, self.tables):
            padded = np.full((b, t + 2 * (w - 1)), self.pad_row, dtype=ids.dtype)
            padded[:, w - 1 : w - 1 + t] = ids
            span = t + w - 1  # output positions of a width-w convolution padded by w - 1 on both sides
            out = tables[0].take(padded[:, :span], axis=0)  # (B, span, F)
            for j in range(1, w):
                out += tables[j].take(padded[:, j : j + span], axis=0)
            np.maximum(out, 0.0, out=out)  # ReLU
            valid = (np.arange(span)[None, :] < (lengths + w - 1)[:, None])[:, :, None]
            out *= valid  # outputs are >= 0, so zeros outside the text change neither max nor sum
            counts = np.maximum(valid.sum(1), 1).astype(np.float32)
            pooled = [out.sum(1) / counts]
            if self.pooling == "maxmean":
                pooled.insert(0, out.max(1))
            feats.extend(pooled)
        logits = np.concatenate(feats, axis=1) @ self.fc_weight + self.fc_bias
        return logits[:, 0] if logits.shape[1] == 1 else logits
