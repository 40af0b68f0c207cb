"""``model.depth``: an efficient model on the first L encoder layers, trained from the whole encoder's
cache entry, saved with only those layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import train_config


def test_a_shallow_model_reads_the_full_cache_and_saves_only_its_layers(tiny_backbone_dir, tiny_data_dir, tmp_path):
    from sst2 import SentimentClassifier
    from sst2.modeling.backbone import Backbone
    from sst2.training.api import train

    common = dict(data=tiny_data_dir, backbone=str(tiny_backbone_dir), cache_dir=str(tmp_path / "cache"), epochs=2,
                  batch_size=8, max_length=32, quiet=True, threads=1)
    full = train(train_config(out=str(tmp_path / "full"), **common))
    shallow = train(train_config(out=str(tmp_path / "d1"), depth=1, **common))
    assert not any(full["cache_hits"].values()) and all(shallow["cache_hits"].values())  # no encode of its own
    assert shallow["depth"] == 1
    model_dir = tmp_path / "d1" / "model"
    assert json.loads((model_dir / "encoder" / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((model_dir / "sst2_model.json").read_text())["layers"] == [0, 1]
    # the saved one-layer model scores dev as the training run did, from the states of two hidden layers
    clf = SentimentClassifier.from_pretrained(model_dir)
    from sst2.data.dataset import load_splits

    dev = load_splits(tiny_data_dir)["dev"]
    acc = float((np.asarray(clf.predict(dev.texts)) == np.asarray(dev.label_names)[dev.labels]).mean())
    assert acc == pytest.approx(shallow["dev_accuracy"])
    enc = Backbone.load(str(tiny_backbone_dir), "all")
    cut = enc.truncated(1, "all")
    assert len(cut.encoder.encoder.layer) == 1 and len(enc.encoder.encoder.layer) == 2  # the original is intact


def test_depth_is_for_the_efficient_recipe_and_within_the_encoder(tiny_backbone_dir):
    from sst2.modeling.backbone import Backbone, BackboneError
    from sst2.training.config import ConfigError, resolve

    with pytest.raises(ConfigError, match=r"model.depth: applies to the efficient recipe, not 'vanilla'"):
        resolve(recipe="vanilla", overrides={"model.depth": 2})
    with pytest.raises(BackboneError, match=r"model.depth: must be in 1..2 for this encoder, got 3"):
        Backbone.load(str(tiny_backbone_dir), "all").truncated(3, "all")
