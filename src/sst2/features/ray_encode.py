"""Encoding the frozen-feature cache on Ray Data (``run.encode = "ray"``).

The driver tokenizes the missing splits and cuts each into exactly the batches the single-process path runs
(``sst2.data.batching.token_batches`` with the same budget), so the cache key, which records that batching,
is the same, and so is the entry: ``map_batches`` hands the batches to a pool of actors that each hold the
driver's own encoder (its class, config and weights, shipped once through the object store, so the
weights are the ones the key was computed from) and run them with the one encoding loop (:func:`sst2.features.encode.encode_batches`);
the driver writes every sentence's states to its place in its split's ``states.npy`` as results arrive,
in whatever order. All the missing splits go through one pipeline, so the actors start once. The states equal the single-process ones within fp16 rounding (other thread counts
may sum in another order). :class:`~sst2.features.cache.FeatureCache` publishes the entry atomically as
always.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sst2.cluster import ACTOR_RETRIES
from sst2.data.batching import token_batches
from sst2.errors import UserError
from sst2.features.cache import Features
from sst2.features.encode import (DTYPES, ENCODE_BATCH_SIZE, ENCODE_BATCH_TOKENS, encode_batches, states_sink,
                                  tokenize_split)

__all__ = ["encode_splits_ray", "BatchEncoder", "encoder_spec"]


def encoder_spec(backbone) -> dict:
    """What an actor needs to rebuild ``backbone``'s encoder exactly: its class, config and weights (the
    Hugging Face objects themselves do not pickle), the layers kept and the padding id."""
    enc = backbone.encoder
    return {"model_class": type(enc), "config_class": type(enc.config), "config": enc.config.to_dict(),
            "state": {k: v.detach().clone() for k, v in enc.state_dict().items()}, "layers": backbone.layers,
            "pad_id": backbone.tokenizer.pad_token_id or 0}


def rebuild(spec: dict):
    """The :class:`~sst2.modeling.backbone.Backbone` of :func:`encoder_spec`, in eval mode."""
    from types import SimpleNamespace

    from sst2.modeling.backbone import Backbone

    config = spec["config_class"].from_dict(spec["config"])
    encoder = spec["model_class"](config)
    encoder.load_state_dict(spec["state"])
    encoder.eval()
    return Backbone(encoder, SimpleNamespace(pad_token_id=spec["pad_id"]), spec["layers"])


class BatchEncoder:
    """The ``map_batches`` class: one encoder per actor; each input row names one encoder batch of one split."""

    def __init__(self, spec: dict, ids: dict, batches: dict, dtype: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.backbone, self.pad_id = rebuild(spec), spec["pad_id"]
        self.ids, self.batches, self.dtype = ids, batches, DTYPES[dtype]

    def __call__(self, batch: dict) -> dict:
        blobs = []
        for split, k in zip(batch["split"], batch["batch"]):
            parts = []
            encode_batches(self.backbone, self.ids[split], [self.batches[split][int(k)]], self.dtype,
                           lambda i, rows: parts.append(rows), pad_id=self.pad_id)
            blobs.append(np.concatenate(parts).tobytes())  # the batch's sentences back to back, in batch order
        return {"split": np.asarray(batch["split"]), "batch": np.asarray(batch["batch"]),
                "states": np.array(blobs, dtype=object)}


def encode_splits_ray(backbone, texts: dict[str, list[str]], max_length: int, outs: dict[str, Path],
                      batch_tokens: int = ENCODE_BATCH_TOKENS, dtype: str = "float16", progress=None,
                      batch_size: int | None = ENCODE_BATCH_SIZE, address: str | None = None,
                      actors: int | None = None, threads: int = 1, retries: int = ACTOR_RETRIES,
                      quiet: bool = True) -> dict[str, Features]:
    """The states of every split of ``texts`` (name -> texts), written to the ``.npy`` files ``outs`` (name ->
    path), encoded by Ray actors in one pipeline over the batches of all the splits (module docstring).
    ``address``: a running Ray cluster (default: the Ray of this process, else a local one); ``actors``:
    encoder actors (default: the cluster's CPUs divided by ``threads``); ``retries``: restarts of a dead actor,
    and retries of its batch, before Ray gives up. For ``prepare_features(encode_all=)``."""
    from sst2.cluster import cluster_cpus, gave_up, map_on_actors, ray_session

    ids, lengths, offsets, batches, write = {}, {}, {}, {}, {}
    states = {}
    for name, split_texts in texts.items():
        ids[name], lengths[name], offsets[name] = tokenize_split(backbone, split_texts, max_length)
        shape = (int(lengths[name].sum()), len(backbone.layers), backbone.hidden_size)
        states[name], write[name] = states_sink(outs[name], shape, dtype)
        batches[name] = token_batches(lengths[name], batch_tokens, batch_size)
    todo = {(name, k) for name in texts for k in range(len(batches[name]))}
    row_shape = (len(backbone.layers), backbone.hidden_size)
    with ray_session(address, quiet) as ray:
        ray.data.DataContext.get_current().enable_progress_bars = False  # the caller's bar counts sentences
        pool = ray.data.ActorPoolStrategy(size=actors or max(1, cluster_cpus(ray) // threads))
        # the batch names come from the driver: no read task, which would wait for a CPU the actors hold
        items = [{"split": name, "batch": k} for name in texts for k in range(len(batches[name]))]
        ds = map_on_actors(ray.data.from_items(items), BatchEncoder, retries=retries, fn_constructor_kwargs=dict(
            spec=encoder_spec(backbone), ids=ids, batches=batches, dtype=dtype, threads=threads),
            batch_size=1, batch_format="numpy", compute=pool, num_cpus=threads)
        try:
            for row in ds.iter_rows():
                name, k = str(row["split"]), int(row["batch"])
                flat = np.frombuffer(row["states"], dtype=DTYPES[dtype]).reshape(-1, *row_shape)
                pos = 0
                for i in batches[name][k]:
                    write[name](int(offsets[name][i]), flat[pos : pos + lengths[name][i]])
                    pos += int(lengths[name][i])
                todo.discard((name, k))
                if progress is not None:
                    progress.update(len(batches[name][k]))
        except ray.exceptions.RayActorError as exc:  # an actor died more often than it may be restarted
            raise UserError(f"encoding on Ray: {gave_up(retries, exc)}") from None
    if todo:  # never expected: Ray returns every row or raises
        raise UserError(f"encoding on Ray: {len(todo)} encoder batches did not come back")
    return {name: Features(states[name], lengths[name], offsets[name]) for name in texts}
