"""Augmented copies of training texts for the transfer set (after Tang et al. 2019, "Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks").

Each copy walks the text's words once: a word becomes the mask token with probability ``p_mask``, else
one of its nearest neighbours in the encoder's input embeddings with probability ``p_replace`` (Tang et
al. replace by part of speech; the embedding neighbours need no tagger and come from the encoder the
student reads); then, with probability ``p_ngram``, the copy is cut to a random n-gram, n = 1..5. The
copies carry no label: the teacher labels them. Words are the text's whitespace-separated tokens (SST
texts are tokenized already). Everything is seeded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

WORD = re.compile(r"^[a-z][a-z']+$")  # whole lowercase words only: no subword pieces, digits or [unused]
MAX_NGRAM = 5


@dataclass
class AugmentOptions:
    copies: int = 4
    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    neighbours: int = 10


def embedding_neighbours(words: set[str], vocab: dict[str, int], embeddings: np.ndarray, k: int,
                         chunk: int = 1024) -> dict[str, list[str]]:
    """The ``k`` nearest whole-word vocabulary entries (cosine of the input embeddings) of every word in
    ``words`` that is itself one vocabulary entry; other words get none."""
    candidates = sorted((w for w in vocab if WORD.match(w)), key=vocab.get)
    if not candidates:
        return {}
    cand_ids = np.array([vocab[w] for w in candidates])
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    cand = unit[cand_ids].astype(np.float32)
    queries = sorted(w for w in words if w in vocab and WORD.match(w))
    out: dict[str, list[str]] = {}
    k = min(k, len(candidates) - 1)
    if k < 1:
        return out
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        sims = unit[[vocab[w] for w in block]].astype(np.float32) @ cand.T  # (b, C)
        for row, w in enumerate(block):
            sims[row, cand_ids == vocab[w]] = -np.inf  # not the word itself
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        for row, w in enumerate(block):
            order = top[row][np.argsort(-sims[row, top[row]])]
            out[w] = [candidates[j] for j in order]
    return out


def augment_text(words: list[str], opts: AugmentOptions, rng: np.random.Generator, mask_token: str,
                 neighbours: dict[str, list[str]]) -> str:
    """One augmented copy of a text given as its words."""
    out = []
    for w in words:
        r = rng.random()
        if r < opts.p_mask:
            out.append(mask_token)
        elif r < opts.p_mask + opts.p_replace and neighbours.get(w.lower()):
            options = neighbours[w.lower()]
            out.append(options[int(rng.integers(len(options)))])
        else:
            out.append(w)
    if len(out) > 1 and rng.random() < opts.p_ngram:
        n = int(rng.integers(1, min(MAX_NGRAM, len(out)) + 1))
        start = int(rng.integers(0, len(out) - n + 1))
        out = out[start : start + n]
    return " ".join(out)


def augment(texts: list[str], opts: AugmentOptions, seed: int, mask_token: str,
            neighbours: dict[str, list[str]], exclude: set[str] = frozenset()) -> list[str]:
    """``opts.copies`` augmented copies of every text, in text order; a copy equal to a text in
    ``exclude`` or to an earlier copy is dropped (so the transfer set holds each text once)."""
    rng = np.random.default_rng(seed)
    seen = set(exclude)
    out = []
    for text in texts:
        words = text.split()
        for _ in range(opts.copies):
            copy = augment_text(words, opts, rng, mask_token, neighbours)
            if copy and copy not in seen:
                seen.add(copy)
                out.append(copy)
    return out
