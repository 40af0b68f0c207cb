import numpy as np
import pytest
import torch

from sst2.modeling.backbone import Backbone, BackboneError, resolve_backbone


def test_unavailable_hub_name_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match=r"backbone 'no-such-org/no-such-model' is not available offline and "
                                            r"could not be downloaded\. Pass --backbone DIR with a local directory"):
        Backbone.load("no-such-org/no-such-model")


def test_missing_local_directory():
    with pytest.raises(BackboneError, match="backbone directory ./no/such/dir not found"):
        resolve_backbone("./no/such/dir")


def test_a_folder_that_is_not_an_encoder_is_named_with_a_hint(tiny_model_dir, tmp_path):
    run = tiny_model_dir.parent
    assert resolve_backbone(tiny_model_dir) == str((tiny_model_dir / "encoder").resolve())  # a model's encoder
    with pytest.raises(BackboneError, match=rf"^backbone directory {run} holds no encoder \(no config.json\); "
                                            rf"a run directory: its model is {run / 'model'}$"):
        resolve_backbone(run)  # was the tokenizer loader's message about backends
    with pytest.raises(BackboneError, match=rf"^backbone directory {tmp_path} holds no encoder \(no config.json\)$"):
        resolve_backbone(tmp_path)


def test_layer_out_of_range(tiny_backbone_dir):
    with pytest.raises(BackboneError, match=r"layers: index -4 is out of range for an encoder with 3 hidden states"):
        Backbone.load(str(tiny_backbone_dir), layers=(-4,))
    with pytest.raises(BackboneError, match=r"^layers: \[0, -3\] names hidden state 0 twice on an encoder with 3 "
                                            r"hidden states \(0 = embeddings, negative = from the top\)$"):
        Backbone.load(str(tiny_backbone_dir), layers=(0, -3))  # the head read the embeddings twice


def test_backbone_returns_kept_layers(tiny_backbone_dir):
    bb = Backbone.load(str(tiny_backbone_dir), layers=(0, -1))
    enc = bb.tokenize(["good film", "bad"], max_length=16)
    states = bb(enc["input_ids"], enc["attention_mask"])
    assert states.shape == (2, enc["input_ids"].shape[1], 2, 32)
    full = bb.encoder(**{k: enc[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
    torch.testing.assert_close(states[:, :, 1], full.last_hidden_state)


@pytest.mark.slow
def test_packaged_minilm_loads_offline_and_classifies(monkeypatch):
    from sst2.modeling.heads import HeadConfig, build_head
    from sst2.modeling.model import SentimentModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = Backbone.load(None, layers=(-1,))
    assert bb.hidden_size == 384 and bb.num_layers == 6
    assert bb.tokenizer.tokenize("A wonderful film") == ["a", "wonderful", "film"]
    from sst2 import SentimentClassifier

    model = SentimentModel(bb, build_head(HeadConfig(hidden_size=384)), {"max_length": 128}).eval()
    logits = SentimentClassifier.from_model(model).predict_logits(["a wonderful , moving film .", "dull and lifeless ."])
    assert logits.shape == (2,) and np.isfinite(logits).all()
