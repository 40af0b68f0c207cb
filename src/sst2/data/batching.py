"""Batching and padding: the one place that decides which texts go together and how they are padded.

* :func:`pad_batch` right-pads token id lists (every model call pads with it);
* :func:`training_batches` shuffles a split into training batches, grouped by length;
* :func:`sorted_batches` cuts a length-sorted split into scoring batches, and :func:`score` runs a
  model over them and puts the results back in input order (every batched inference uses it);
* :func:`token_batches` cuts by a budget of padded tokens (the frozen encoder's batches);
* :func:`split_padded` splits one sorted batch where padding would cost more than another call.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to the longest: ``(B, T)`` int64 ids and attention mask."""
    t_max = max(len(s) for s in seqs)
    ids = np.full((len(seqs), t_max), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), t_max), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return ids, mask


def training_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     bucket: bool = True) -> list[np.ndarray]:
    """Shuffled batches. With ``bucket``, each run of 20 batches is sorted by length before being cut,
    so a batch holds texts of similar length; the order of batches is then shuffled again."""
    perm = rng.permutation(len(lengths))
    if not bucket:
        return [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    span = batch_size * 20
    batches = []
    for start in range(0, len(perm), span):
        chunk = perm[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Indexes sorted by length (stable), cut into batches of ``batch_size``."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def score(lengths, batch_size: int, run: Callable[[np.ndarray], np.ndarray], split: bool = False,
          progress: Callable[[int], None] | None = None, workers: int = 1) -> np.ndarray:
    """``run(idx) -> (len(idx), ...)`` over length-sorted batches, results in input order.

    ``split``: cut each batch further where padding would cost more than a call (:func:`split_padded`).
    ``workers`` > 1 runs that many calls at once in threads (torch and onnxruntime release the GIL).
    """
    lengths = np.asarray(lengths)
    calls = []
    for idx in sorted_batches(lengths, batch_size):
        if split:
            calls += [idx[lo:hi] for lo, hi in split_padded(lengths[idx].tolist())]
        else:
            calls.append(idx)
    out = None
    pool = None
    if workers > 1 and len(calls) > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(min(workers, len(calls)), thread_name_prefix="sst2-batch")
    try:
        for idx, result in (pool.map if pool else map)(lambda i: (i, run(i)), calls):
            result = np.asarray(result)
            if out is None:
                out = np.empty((len(lengths), *result.shape[1:]), dtype=result.dtype)
            out[idx] = result
            if progress is not None:
                progress(len(idx))
    finally:
        if pool is not None:
            pool.shutdown()
    return out if out is not None else np.empty(0, dtype=np.float32)


def token_batches(lengths: np.ndarray, batch_tokens: int, max_batch: int | None = None) -> list[np.ndarray]:
    """Indexes of ``lengths`` sorted by length, cut into batches of at most ``batch_tokens`` padded
    tokens (rows x longest row; a single longer row gets a batch of its own) and ``max_batch`` rows."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        stop = start + 1
        while (stop < len(order) and (stop + 1 - start) * int(lengths[order[stop]]) <= batch_tokens
               and (max_batch is None or stop - start < max_batch)):
            stop += 1
        batches.append(order[start:stop])
        start = stop
    return batches


# The fixed cost of one model call (session run, padding, head set-up) in padded-token units: a
# measured order of magnitude on this CPU, where one token row costs ~0.1-0.3 ms and a call ~1 ms.
CALL_COST_TOKENS = 8


def split_padded(lengths: list[int], call_cost: int = CALL_COST_TOKENS) -> list[tuple[int, int]]:
    """Cut sorted ``lengths`` into contiguous ``[lo, hi)`` runs minimising the total computed tokens,
    ``sum(call_cost + rows * longest)``, by dynamic programming over the ends of the runs of equal lengths:
    a cut inside such a run never helps (moving it to the run's end pads no row more and may save a call),
    so a batch of n rows with m distinct lengths costs O(m^2), not O(n^2). That matters for the static tier,
    where a whole batch of 256 is scored in about the time the O(n^2) version took to plan it."""
    n = len(lengths)
    ends = [j for j in range(1, n + 1) if j == n or lengths[j] != lengths[j - 1]]  # candidate cut positions
    best = {0: 0.0}  # best[j]: cheapest cost of the first j rows, for j = 0 and every run end
    cut = {}
    starts = [0]
    for j in ends:
        longest = lengths[j - 1]
        best[j], cut[j] = min((best[i] + call_cost + (j - i) * longest, i) for i in starts)
        starts.append(j)
    runs, j = [], n
    while j > 0:
        runs.append((cut[j], j))
        j = cut[j]
    return runs[::-1]
