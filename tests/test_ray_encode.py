"""The frozen-feature cache encoded on Ray (``run.encode = "ray"``): the same keys and, within fp16 rounding, the
same states as the single-process encode, and an ordinary cache afterwards."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sst2.data.dataset import load_splits
from sst2.data.text import normalize_texts
from sst2.errors import UserError
from sst2.features.encode import prepare_features
from sst2.modeling.backbone import Backbone
from sst2.training.api import train

from conftest import ActorKiller, make_sentences, train_config

pytest.importorskip("ray")


def test_a_run_encoding_on_ray_writes_the_entries_the_single_process_path_writes(
        local_ray, tiny_backbone_dir, tiny_data_dir, tmp_path, monkeypatch):
    # small encoder batches (part of the key, for both paths), so every split is several batches for 2 actors
    monkeypatch.setattr("sst2.features.encode.ENCODE_BATCH_TOKENS", 64)
    common = dict(data=tiny_data_dir, backbone=str(tiny_backbone_dir), epochs=2, batch_size=8, max_length=32,
                  layers="-2,-1", quiet=True, threads=1)
    on_ray = train(train_config(out=str(tmp_path / "a"), cache_dir=str(tmp_path / "ray"), encode="ray",
                                encode_actors=2, **common))
    assert on_ray["cache_hits"] == {"train": False, "dev": False, "test": False}
    local = train(train_config(out=str(tmp_path / "b"), cache_dir=str(tmp_path / "local"), **common))
    # the same keys, and no staging folder left behind
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(list((tmp_path / "ray").iterdir())) == 3
    splits = load_splits(tiny_data_dir)
    splits = {k: dataclasses.replace(s, texts=normalize_texts(s.texts, "contractions")) for k, s in splits.items()}
    bb = Backbone.load(str(tiny_backbone_dir), layers=(-2, -1))
    kw = dict(max_length=32, normalize="contractions")
    from_ray, hits = prepare_features(bb, splits, cache_dir=tmp_path / "ray", **kw)  # read by the local path
    from_local, _ = prepare_features(bb, splits, cache_dir=tmp_path / "local", **kw)
    assert all(hits.hits.values())
    for name in splits:
        a, b = np.asarray(from_local[name].states), np.asarray(from_ray[name].states)
        np.testing.assert_array_equal(from_local[name].lengths, from_ray[name].lengths)
        assert a.dtype == b.dtype == np.float16 and a.shape == b.shape
        np.testing.assert_allclose(b.astype(np.float32), a.astype(np.float32), rtol=2e-3, atol=2e-3)  # fp16 rounding
    assert on_ray["dev_accuracy"] == local["dev_accuracy"]
    assert abs(on_ray["dev_loss"] - local["dev_loss"]) < 1e-3


def test_an_encoder_actor_that_keeps_dying_fails_the_encode_after_its_retries(local_ray, tiny_backbone_dir,
                                                                               tmp_path):
    """Ray Data alone would restart the actor and retry its batch without limit, and the encode would never end.
    Past the retries the run fails with one error and leaves nothing in the cache folder."""
    import functools
    import time

    from sst2.data.dataset import from_lists
    from sst2.features.ray_encode import encode_splits_ray

    bb = Backbone.load(str(tiny_backbone_dir), layers=(-2, -1))
    rows = make_sentences(400, 31)
    splits = from_lists({"train": ([s for s, _ in rows], [y for _, y in rows])})
    encode = functools.partial(encode_splits_ray, actors=1, retries=1)
    cache = tmp_path / "cache"
    t0 = time.monotonic()
    with ActorKiller("BatchEncoder") as killer, pytest.raises(UserError) as info:
        prepare_features(bb, splits, 32, "none", cache_dir=cache, encode_all=encode)
    print(f"{len(killer.killed)} actor processes killed; the encode failed after {time.monotonic() - t0:.1f} s")
    assert len(killer.killed) >= 2 and time.monotonic() - t0 < 120
    assert str(info.value).startswith("encoding on Ray: Ray gave up after 1 retry: "), str(info.value)
    assert not cache.exists() or not list(cache.iterdir())
