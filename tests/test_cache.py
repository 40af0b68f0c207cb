import numpy as np
import torch
import pytest

from sst2.modeling.backbone import Backbone
from sst2.data.batching import token_batches
from sst2.features.cache import FeatureCache, cache_key
from sst2.features.encode import encode_texts, prepare_features
from sst2.data.dataset import load_splits

TEXTS = ["good film", "the plot is very dull and the story is weak .", "lovely", "it 's a movie"]


@pytest.fixture
def backbone(tiny_backbone_dir):
    return Backbone.load(str(tiny_backbone_dir), layers=(-2, -1))


def test_encoded_states_match_a_single_sentence_forward(backbone):
    f = encode_texts(backbone, TEXTS, max_length=32, batch_size=3)
    assert f.states.shape == (int(f.lengths.sum()), 2, 32) and f.states.dtype == np.float16
    for i, text in enumerate(TEXTS):
        enc = backbone.tokenize([text], max_length=32)
        ref = backbone(enc["input_ids"], enc["attention_mask"])[0].detach().numpy()  # (T, K, H)
        np.testing.assert_allclose(f.states[f.offsets[i] : f.offsets[i] + f.lengths[i]], ref, atol=2e-3, rtol=2e-3)


def test_encoded_states_do_not_depend_on_the_batching(backbone):
    one_each = encode_texts(backbone, TEXTS, max_length=32, batch_tokens=1)
    together = encode_texts(backbone, TEXTS, max_length=32)
    np.testing.assert_allclose(one_each.states, together.states, atol=2e-3, rtol=2e-3)


def test_token_batches_cover_every_row_once_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 60, size=500)
    lengths[7] = 200  # longer than the budget: a batch of its own
    batches = token_batches(lengths, batch_tokens=256, max_batch=40)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    assert np.all(np.diff(lengths[flat]) >= 0)  # sorted by length: little padding
    assert [7] in [b.tolist() for b in batches]
    for b in batches:
        assert len(b) <= 40 and (len(b) == 1 or len(b) * lengths[b].max() <= 256)
    short = token_batches(np.full(100, 4), batch_tokens=256)
    assert [len(b) for b in short] == [64, 36]  # short rows: more of them per batch


def test_cache_hit_equals_fresh_encode(backbone, tmp_path):
    cache = FeatureCache(tmp_path)
    fresh = encode_texts(backbone, TEXTS, max_length=32)
    key = cache_key(a=1)
    stored = cache.store(key, {"a": 1}, fresh)
    hit = FeatureCache(tmp_path).load(key)
    assert hit is not None
    np.testing.assert_array_equal(np.asarray(hit.states), fresh.states)
    np.testing.assert_array_equal(hit.lengths, fresh.lengths)
    np.testing.assert_array_equal(np.asarray(stored.states), fresh.states)
    x, lengths = hit.batch(np.array([1, 0]))
    assert x.shape == (2, int(fresh.lengths[1]), 2, 32) and lengths.tolist() == [fresh.lengths[1], fresh.lengths[0]]


def test_corrupt_entry_is_detected_and_removed(backbone, tmp_path):
    messages = []
    cache = FeatureCache(tmp_path, log=messages.append)
    key = cache_key(a=2)
    cache.store(key, {"a": 2}, encode_texts(backbone, TEXTS, max_length=32))
    states = cache.entry_dir(key) / "states.npy"
    data = bytearray(states.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the last value
    states.write_bytes(bytes(data))
    assert cache.load(key) is None
    assert "checksum mismatch in states.npy" in messages[0] and "rebuilding it" in messages[0]
    assert not cache.entry_dir(key).exists()


def test_changed_key_misses_and_same_key_hits(tiny_backbone_dir, tiny_data_dir, tmp_path, monkeypatch):
    splits = load_splits(tiny_data_dir)
    bb = Backbone.load(str(tiny_backbone_dir), layers=(-1,))
    cfg = dict(max_length=32, normalize="contractions", cache_dir=str(tmp_path))
    _, first = prepare_features(bb, splits, **cfg)
    _, again = prepare_features(bb, splits, **cfg)
    assert not any(first.hits.values()) and all(again.hits.values())

    _, other_len = prepare_features(bb, splits, **{**cfg, "max_length": 16})
    assert not any(other_len.hits.values())

    _, other_text = prepare_features(bb, splits, **{**cfg, "normalize": "none"})
    assert not any(other_text.hits.values())

    monkeypatch.setattr("sst2.features.encode.ENCODE_BATCH_TOKENS", 128)  # other batch shapes: other last bits
    _, other_batching = prepare_features(bb, splits, **cfg)
    assert not any(other_batching.hits.values())
    monkeypatch.undo()

    bb2 = Backbone.load(str(tiny_backbone_dir), layers=(-2, -1))
    _, other_layers = prepare_features(bb2, splits, **cfg)
    assert not any(other_layers.hits.values())

    with __import__("torch").no_grad():
        bb.encoder.embeddings.word_embeddings.weight[5, 0] += 1.0  # different weights
    _, other_weights = prepare_features(bb, splits, **cfg)
    assert not any(other_weights.hits.values())


def test_changed_data_file_misses(tiny_backbone_dir, tiny_data_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    bb = Backbone.load(str(tiny_backbone_dir), layers=(-1,))
    cfg = dict(max_length=32, normalize="contractions", cache_dir=str(tmp_path / "c"))
    prepare_features(bb, load_splits(data), **cfg)
    with open(data / "dev.tsv", "a") as f:
        f.write("a new sentence\t1\n")
    _, rep = prepare_features(bb, load_splits(data), **cfg)
    assert rep.hits == {"train": True, "dev": False, "test": True}


def test_streamed_encode_to_disk_equals_in_memory_encode(backbone, tmp_path):
    in_memory = encode_texts(backbone, TEXTS, max_length=32, batch_size=2)
    cache = FeatureCache(tmp_path)
    on_disk = cache.build(cache_key(b=1), {"b": 1},
                          lambda path: encode_texts(backbone, TEXTS, max_length=32, batch_size=2, out=path))
    np.testing.assert_array_equal(np.asarray(on_disk.states), in_memory.states)
    x1, l1 = on_disk.batch(np.array([2, 1, 0]))
    x2, l2 = in_memory.batch(np.array([2, 1, 0]))
    assert torch.equal(x1, x2) and torch.equal(l1, l2)


def test_states_file_reads_rows_straight_into_a_buffer(tmp_path):
    from sst2.features.cache import StatesFile

    rows = np.arange(5 * 3 * 4, dtype=np.float16).reshape(5, 3, 4)
    f = StatesFile.create(tmp_path / "s.npy", rows.shape, np.float16)
    f.write_rows(0, rows)
    out = np.zeros((4, 3, 3, 4), dtype=np.float16)  # a padded batch: read into row 1's first 2 positions
    f.read_into(2, out[1, :2])
    assert np.array_equal(out[1, :2], rows[2:4]) and not out[0].any() and not out[1, 2].any()
    assert np.array_equal(f[1:3], rows[1:3])
    with pytest.raises(ValueError, match=r"read_into needs a C-contiguous float16 array of rows \(3, 4\)"):
        f.read_into(0, np.zeros((1, 3, 4), dtype=np.float32))
    with pytest.raises(OSError, match="short read"):
        f.read_into(4, np.zeros((2, 3, 4), dtype=np.float16))
    f.close()


def test_encoder_config_and_truncation_side_are_part_of_the_key(tiny_backbone_dir, tiny_data_dir, tmp_path):
    import json
    import shutil

    splits = load_splits(tiny_data_dir)
    cfg = dict(max_length=4, normalize="none", cache_dir=str(tmp_path / "c"))
    feats, first = prepare_features(Backbone.load(str(tiny_backbone_dir)), splits, **cfg)
    moved = shutil.copytree(tiny_backbone_dir, tmp_path / "elsewhere")  # the same encoder in another folder
    _, same = prepare_features(Backbone.load(str(moved)), splits, **cfg)
    assert not any(first.hits.values()) and all(same.hits.values())

    left = Backbone.load(str(tiny_backbone_dir))
    left.tokenizer.truncation_side = "left"  # long texts keep their end: other tokens, other states
    feats_left, rep = prepare_features(left, splits, **cfg)
    assert not any(rep.hits.values())
    assert not np.array_equal(feats_left["train"].states, feats["train"].states)

    for key, value in (("hidden_act", "relu"), ("layer_norm_eps", 1e-3)):  # config.json edited, same weights
        edited = shutil.copytree(tiny_backbone_dir, tmp_path / key)
        config = json.loads((edited / "config.json").read_text())
        (edited / "config.json").write_text(json.dumps({**config, key: value}))
        feats_other, rep = prepare_features(Backbone.load(str(edited)), splits, **cfg)
        assert not any(rep.hits.values()), key
        assert not np.array_equal(feats_other["train"].states, feats["train"].states), key


def test_the_key_is_the_texts_not_the_file(tiny_backbone_dir, tiny_data_dir, tmp_path):
    import csv

    from sst2.data.dataset import from_lists

    bb = Backbone.load(str(tiny_backbone_dir))
    cfg = dict(max_length=32, normalize="none", cache_dir=str(tmp_path / "c"))
    splits = load_splits(tiny_data_dir)
    _, first = prepare_features(bb, splits, **cfg)
    as_csv, flipped = tmp_path / "csv", tmp_path / "flipped"
    as_csv.mkdir(), flipped.mkdir()
    for name, split in splits.items():
        with open(as_csv / f"{name}.csv", "w", newline="") as f:  # the same texts in another format
            csv.writer(f).writerows([("sentence", "label"), *zip(split.texts, split.labels)])
        (flipped / f"{name}.tsv").write_text(  # the same texts with every label flipped
            "sentence\tlabel\n" + "".join(f"{t}\t{1 - y}\n" for t, y in zip(split.texts, split.labels)))
    for other in (as_csv, flipped):
        _, rep = prepare_features(bb, load_splits(other), **cfg)
        assert not any(first.hits.values()) and all(rep.hits.values()), other

    # texts holding newlines: joined with newlines these two lists are the same string, yet other texts
    one = from_lists({"train": (["good film\nlovely", "dull"], [1, 0])})
    two = from_lists({"train": (["good film", "lovely\ndull"], [1, 0])})
    feats_one, _ = prepare_features(bb, one, **cfg)
    feats_two, rep = prepare_features(bb, two, **cfg)
    assert rep.hits == {"train": False}
    assert feats_one["train"].lengths.tolist() != feats_two["train"].lengths.tolist()
