"""The teacher's logits over a transfer set, computed once and kept in the feature cache.

The entry is keyed like the frozen-encoder states (``sst2.features.encode``): by the teacher's files
(weights, spec, tokenizer), the texts, and the runtime that scored them. It stores one row per text,
``(N, 1, k)`` float32 raw logits (before the teacher's temperature), through the same atomic
:class:`~sst2.features.cache.FeatureCache`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from sst2.features.cache import FeatureCache, Features, cache_key
from sst2.inference.classifier import SentimentClassifier
from sst2.inference.runtimes import ONNX_FILES

def _skipped(runtime: str) -> set[str]:
    """Files that do not change ``runtime``'s logits: the model card, and the ONNX files of the other
    runtimes (an export after labelling must not make the cached logits look stale)."""
    return {"README.md"} | {f for r, f in ONNX_FILES.items() if r != runtime}


def model_fingerprint(model_dir: str | Path, runtime: str = "torch") -> str:
    """sha256 over the names and contents of the files of a model directory that ``runtime`` reads (hidden
    files and folders left out: an export's temporary, ``.export-*``, is not part of the model)."""
    h = hashlib.sha256()
    skip = _skipped(runtime)
    files = (p for p in Path(model_dir).rglob("*") if p.is_file() and p.name not in skip
             and not any(part.startswith(".") for part in p.relative_to(model_dir).parts))  # temporaries
    for path in sorted(files):
        h.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def teacher_logits(teacher: SentimentClassifier, texts: list[str], texts_sha256: str, cache_dir=None,
                   progress=None, log=lambda msg: None) -> tuple[np.ndarray, dict]:
    """``(logits (N,) or (N, k), report)`` of ``teacher`` on ``texts``, from the cache or scored and stored."""
    cache = FeatureCache(cache_dir, log=log)
    fields = {"kind": "teacher-logits", "teacher": model_fingerprint(teacher.model_dir, teacher.runtime),
              "runtime": teacher.runtime, "texts_sha256": texts_sha256, "n": len(texts)}
    key = cache_key(**fields)
    t0 = time.perf_counter()
    entry = cache.load(key)
    hit = entry is not None
    if entry is None:
        ids, _ = teacher.tokenize(texts)
        from contextlib import nullcontext

        with (progress(len(ids), "teacher") if progress else nullcontext()) as bar:
            logits = teacher.logits_from_ids(ids, progress=bar.update if bar else None)
        rows = logits.reshape(len(texts), 1, -1).astype(np.float32)
        ones = np.ones(len(texts), dtype=np.int64)
        entry = cache.store(key, {**fields, "model_dir": str(teacher.model_dir)},
                            Features(rows, ones, np.arange(len(texts), dtype=np.int64)))
    logits = np.asarray(entry.states, dtype=np.float32)[:, 0, :]
    seconds = time.perf_counter() - t0
    log(f"teacher logits: {'cache hit' if hit else 'scored'} ({len(texts):,} texts in {seconds:.1f} s)")
    return (logits[:, 0] if logits.shape[1] == 1 else logits), {"cache_hit": hit, "seconds": round(seconds, 3)}
