"""Running the frozen encoder over a split, and the cache entry that stores the result.

:func:`prepare_features` is what training calls: it keys each split by everything that changes the
states (encoder weights, tokenizer, the texts as encoded, max length, layers, dtype, batching), reads
the entry from :class:`~sst2.features.cache.FeatureCache` or encodes and stores it.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sst2.data.batching import pad_batch, token_batches
from sst2.data.text import texts_sha256
from sst2.features.cache import FeatureCache, Features, StatesFile, cache_key

DTYPES = {"float16": np.float16, "float32": np.float32}
# How the encoder batches a split (see encode_texts). Part of the cache key: the batch shapes change the
# order of floating-point sums, so the stored fp16 states can differ in their last bit, and a run must
# train on the same states whether its cache was cold or warm.
ENCODE_BATCH_TOKENS = 4096
ENCODE_BATCH_SIZE = 256


def encode_texts(backbone, texts: list[str], max_length: int, batch_tokens: int = ENCODE_BATCH_TOKENS,
                 dtype: str = "float16", progress=None, out: Path | None = None,
                 batch_size: int | None = ENCODE_BATCH_SIZE) -> Features:
    """Run the frozen encoder over ``texts`` (sorted by length to avoid padding) and collect states.

    Batches hold at most ``batch_tokens`` padded tokens (many short sentences or a few long ones, at
    most ``batch_size`` sentences), so every encoder call allocates buffers of about the same size.
    With a fixed 64 sentences per batch the buffers grew with the sorted lengths and the process's
    resident set with them: encoding GLUE's 67k phrases peaked at 2.36 GB, against 1.31 GB with
    these defaults, at the same speed (README, "GLUE's memory while encoding").
    With ``out`` the states are written straight to that ``.npy`` file batch by batch, so memory stays
    flat however large the data set (GLUE's phrases give several GB of states).
    """
    ids, lengths, offsets = tokenize_split(backbone, texts, max_length)
    states, write = states_sink(out, (int(lengths.sum()), len(backbone.layers), backbone.hidden_size), dtype)
    encode_batches(backbone, ids, token_batches(lengths, batch_tokens, batch_size), DTYPES[dtype],
                   lambda i, rows: write(int(offsets[i]), rows), progress, pad_id=backbone.tokenizer.pad_token_id or 0)
    return Features(states, lengths, offsets)


def tokenize_split(backbone, texts: list[str], max_length: int):
    """Token ids of every text, and their lengths and offsets in the ``(N_tokens, K, H)`` states array."""
    ids = backbone.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return ids, lengths, offsets


def states_sink(out: Path | None, shape: tuple[int, ...], dtype: str):
    """The states array (in memory, or the ``.npy`` file ``out`` written as it goes) and ``write(start, rows)``."""
    np_dtype = DTYPES[dtype]
    if out is not None:
        states = StatesFile.create(out, shape, np_dtype)
        return states, states.write_rows
    states = np.empty(shape, dtype=np_dtype)

    def write(start: int, rows: np.ndarray) -> None:
        states[start : start + len(rows)] = rows

    return states, write


def encode_batches(backbone, ids: list[list[int]], batches, np_dtype, write, progress=None, pad_id: int = 0) -> None:
    """Run the frozen encoder over ``batches`` (index arrays into ``ids``) and ``write(i, states)`` each
    sentence's ``(T_i, K, H)`` states: the one encoding loop, in this process or in a Ray actor."""
    was_training = backbone.training
    backbone.eval()
    with torch.inference_mode():
        for idx in batches:
            input_ids, mask = map(torch.from_numpy, pad_batch([ids[i] for i in idx], pad_id))
            # (B, T, K, H), converted once per batch rather than once per sentence
            batch_states = backbone(input_ids, mask).numpy().astype(np_dtype, copy=False)
            for row, i in enumerate(idx):
                write(i, batch_states[row, : len(ids[i])])
            if progress is not None:
                progress.update(len(idx))
    backbone.train(was_training)


@dataclass
class FeatureReport:
    seconds: float
    hits: dict[str, bool]
    nbytes: int


def prepare_features(backbone, splits: dict, max_length: int, normalize: str, cache_dir=None,
                     progress=None, log=lambda msg: None, dtype: str = "float16", encode_all=None):
    """The frozen states of every split (``{name: Split}``), from the cache or encoded and stored.

    ``progress(total, desc)`` returns a progress bar (a context manager with ``update``); ``log`` gets
    one summary line. ``encode_all``: encodes every missing split at once, as
    ``sst2.features.ray_encode.encode_splits_ray`` does on Ray (the same batches, so the same key); by
    default each missing split is encoded here with :func:`encode_texts`. Returns
    ``({name: Features}, FeatureReport)``."""
    cache = FeatureCache(cache_dir, log=log)
    t0 = time.perf_counter()
    base = {
        "backbone_weights": backbone.weights_fingerprint(),
        "tokenizer": backbone.tokenizer_fingerprint(),
        "max_length": max_length,
        "layers": list(backbone.layers),
        "dtype": dtype,
        "text_normalization": normalize,
        "encode_batch": {"tokens": ENCODE_BATCH_TOKENS, "sentences": ENCODE_BATCH_SIZE},
    }
    feats, missing = {}, {}
    for name, split in splits.items():
        # the texts as encoded (after normalization), not the file: the same texts with other labels or
        # in another format hit; a changed normalizer misses
        fields = {**base, "texts_sha256": texts_sha256(split.texts), "n": len(split.texts)}
        key = cache_key(**fields)
        f = cache.load(key)
        if f is None:
            missing[name] = (key, {**fields, "source": backbone.source, "file": str(split.path),
                                   "file_sha256": split.sha256})
        else:
            feats[name] = f
    hits = {name: name not in missing for name in splits}
    if missing:
        feats.update(_encode_missing(backbone, splits, missing, cache, max_length, dtype, progress, encode_all))
    feats = {name: feats[name] for name in splits}
    report = FeatureReport(time.perf_counter() - t0, hits, sum(f.nbytes for f in feats.values()))
    states = ", ".join(f"{k}={'hit' if v else 'miss'}" for k, v in hits.items())
    log(f"features: {'cache hit' if all(hits.values()) else 'encoded'} ({states}), "
        f"{report.nbytes / 2**20:.0f} MiB in {report.seconds:.1f} s, cache {cache.root}")
    return feats, report


def _encode_missing(backbone, splits: dict, missing: dict, cache: FeatureCache, max_length: int, dtype: str,
                    progress, encode_all) -> dict:
    """Encode and store the ``missing`` splits (name -> (key, key fields)): one by one here, or all at once
    with ``encode_all`` into a staging folder of the cache whose files each entry then takes over."""
    from contextlib import nullcontext

    opts = dict(dtype=dtype, batch_tokens=ENCODE_BATCH_TOKENS, batch_size=ENCODE_BATCH_SIZE)
    bar = (lambda total, desc: progress(total, desc)) if progress else (lambda total, desc: nullcontext())
    if encode_all is None:
        out = {}
        for name, (key, fields) in missing.items():
            with bar(len(splits[name]), f"encode {name}") as b:
                out[name] = cache.build(key, fields, lambda path: encode_texts(
                    backbone, splits[name].texts, max_length, progress=b, out=path, **opts))
        return out
    staging = cache.staging_dir()
    try:
        with bar(sum(len(splits[n]) for n in missing), f"encode {', '.join(missing)}") as b:
            staged = encode_all(backbone, {n: splits[n].texts for n in missing}, max_length,
                                outs={n: staging / f"{n}.npy" for n in missing}, progress=b, **opts)
        return {name: cache.build(key, fields, functools.partial(_take_over, staged[name]))
                for name, (key, fields) in missing.items()}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _take_over(features: Features, path: Path) -> Features:
    """``features`` written to a staging file, moved to ``path`` (an entry's ``states.npy``)."""
    os.replace(features.states.path, path)
    return features
