"""The fine-tuned models: vanilla (every weight), partial (top K layers over cached states), lora (peft)."""

import json

import numpy as np
import pytest
import torch

from sst2.modeling.backbone import Backbone
from sst2.data.dataset import load_splits
from sst2.errors import UserError
from sst2.modeling.model import SentimentModel
from sst2.training.api import train
from sst2.training.recipes.partial import TopLayers
from sst2.training.rundir import RUN_FILES

from conftest import train_config


def cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, **kw):
    base = dict(data=str(tiny_data_dir), backbone=str(tiny_backbone_dir), out=str(tmp_path / "run"),
                cache_dir=str(tmp_path / "cache"), epochs=2, batch_size=8, max_length=32, quiet=True, threads=1,
                lr=1e-3)
    base.update(kw)
    return train_config(**base)


def dev_accuracy(model_dir, data_dir) -> float:
    from sst2 import SentimentClassifier

    clf = SentimentClassifier.from_pretrained(model_dir)
    dev = load_splits(data_dir)["dev"]
    return float(np.mean((clf.predict_logits(dev.texts) > 0).astype(int) == np.asarray(dev.labels)))


def test_vanilla_every_parameter_gets_a_gradient(tiny_backbone_dir, tiny_data_dir, tmp_path):
    cfg = cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="vanilla")
    from sst2.training.recipes import setup

    job = setup(cfg, load_splits(tiny_data_dir), None)
    model = job.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # the whole encoder trains except BERT's pooler, which no head reads
    assert trainable == {n for n, _ in model.named_parameters() if ".pooler." not in n}
    assert {n for n in trainable if n.startswith("head.")} == {"head.fc.weight", "head.fc.bias"}
    model.train()
    ids, mask = job.inputs["train"](np.arange(8))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(job.forward(ids, mask), torch.ones(8))
    loss.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_vanilla_run_directory_and_saved_model(tiny_backbone_dir, tiny_data_dir, tmp_path):
    m = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="vanilla"))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)
    assert m["model"] == "vanilla" and m["preset"] == "vanilla" and m["max_length"] == 32
    bb = Backbone.load(str(tiny_backbone_dir))
    pooler = sum(p.numel() for n, p in bb.encoder.named_parameters() if n.startswith("pooler."))
    assert m["trainable_params"] == m["total_params"] - pooler
    assert dev_accuracy(run / "model", tiny_data_dir) == pytest.approx(m["dev_accuracy"])
    # the encoder itself was trained
    saved = SentimentModel.load(run / "model").backbone.encoder.state_dict()
    assert not torch.equal(saved["encoder.layer.0.attention.self.query.weight"],
                           bb.encoder.state_dict()["encoder.layer.0.attention.self.query.weight"])
    # an sst2 model directory given as the backbone starts a new run from its fine-tuned encoder
    again = Backbone.load(str(run / "model"))
    assert again.source == str((run / "model" / "encoder").resolve())
    assert torch.equal(again.encoder.state_dict()["encoder.layer.0.attention.self.query.weight"],
                       saved["encoder.layer.0.attention.self.query.weight"])


def test_partial_trains_exactly_the_top_layers_and_head(tiny_backbone_dir, tiny_data_dir, tmp_path):
    m = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="partial", unfreeze=1))
    assert m["model"] == "partial" and m["unfreeze"] == 1 and m["cache_hits"]["train"] is False
    before = Backbone.load(str(tiny_backbone_dir)).encoder.state_dict()
    after = SentimentModel.load(tmp_path / "run" / "model").backbone.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    top = {k for k in before if k.startswith("encoder.layer.1.")}
    assert changed == top  # every tensor of the top layer moved; embeddings, layer 0 and pooler did not
    assert m["trainable_params"] == sum(before[k].numel() for k in top) + 32 + 1
    assert dev_accuracy(tmp_path / "run" / "model", tiny_data_dir) == pytest.approx(m["dev_accuracy"], abs=1 / 16)


def test_top_layers_over_lower_states_equal_the_full_encoder(tiny_backbone_dir):
    bb = Backbone.load(str(tiny_backbone_dir), (1, 2))
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        states = bb(ids, mask)  # (B, T, 2, H): hidden state 1 (input of layer 1) and 2 (output)
        top = TopLayers(bb.encoder, 1).eval()
        out = top(states[:, :, 0], mask.sum(1))
    valid = mask.bool()
    torch.testing.assert_close(out[valid], states[:, :, 1][valid], atol=1e-5, rtol=1e-5)


def test_partial_rejects_more_layers_than_the_encoder_has(tiny_backbone_dir, tiny_data_dir, tmp_path):
    with pytest.raises(UserError, match=r"^model.unfreeze: the encoder has 2 layers, cannot train the top 3$"):
        train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="partial", unfreeze=3))
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))


def test_lora_trains_only_adapters_and_head(tiny_backbone_dir, tiny_data_dir, tmp_path):
    cfg = cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="lora", lora_r=4, lr=1e-2)
    from sst2.training.recipes import setup

    job = setup(cfg, load_splits(tiny_data_dir), None)
    names = [n for n, p in job.model.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in n or n.startswith("head.") for n in names)
    adapters, _ = job.model.backbone.encoder.get_nb_trainable_parameters()  # peft's own count
    assert job.extra["adapter_params"] == adapters
    # rank 4 on query, key, value, attention output, intermediate and output of 2 layers (32 wide, FFN 64)
    assert adapters == 2 * 4 * ((32 + 32) * 4 + (32 + 64) * 2)

    m = train(cfg)
    assert m["model"] == "lora" and m["lora_r"] == 4
    assert m["trainable_params"] == adapters + 33
    before = Backbone.load(str(tiny_backbone_dir)).encoder.state_dict()
    model = SentimentModel.load(tmp_path / "run" / "model")  # a plain encoder: adapters merged in
    after = model.backbone.encoder.state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(".weight") and ("attention" in k or "dense" in k) for k in changed)
    assert not any(k.startswith(("embeddings.", "pooler.")) or "LayerNorm" in k for k in changed)
    # the reported accuracy is the saved (merged) model's
    assert dev_accuracy(tmp_path / "run" / "model", tiny_data_dir) == pytest.approx(m["dev_accuracy"])


def test_lora_unknown_target_is_a_clear_error(tiny_backbone_dir, tiny_data_dir, tmp_path):
    with pytest.raises(UserError, match=r"^model.lora_targets \['nonexistent'\]: "):
        train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="lora", lora_targets=["nonexistent"]))


def test_seeds_write_one_run_per_seed_and_a_summary(tiny_backbone_dir, tiny_data_dir, tmp_path):
    s = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, seeds=3, seed=5, epochs=1, layers="-1",
                      preset="seed"))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [".sst2-run", "config.toml", "seed-5", "seed-6", "seed-7",
                                                 "summary.json"]
    runs = [json.loads((run / f"seed-{k}" / "metrics.json").read_text()) for k in (5, 6, 7)]
    assert [r["seed"] for r in runs] == [5, 6, 7]
    assert sorted(p.name for p in (run / "seed-6").iterdir()) == sorted(RUN_FILES)
    dev = [r["dev_accuracy"] for r in runs]
    assert s == json.loads((run / "summary.json").read_text())
    assert s["seeds"] == [5, 6, 7] and s["dev_accuracy"]["values"] == dev
    assert s["dev_accuracy"]["mean"] == pytest.approx(np.mean(dev))
    assert s["dev_accuracy"]["std"] == pytest.approx(np.std(dev, ddof=1))
    # different seeds give different training runs
    hist = {(run / f"seed-{k}" / "history.csv").read_text() for k in (5, 6, 7)}
    assert len(hist) == 3


@pytest.mark.parametrize("model", ["vanilla", "partial", "lora"])
def test_every_model_type_serves_through_classifier_and_onnx(model, tiny_backbone_dir, tiny_data_dir, tmp_path):
    from sst2 import SentimentClassifier
    from sst2.cli import main
    from sst2.inference.export import PARITY_SENTENCES

    train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model=model, epochs=1, unfreeze=1))
    model_dir = tmp_path / "run" / "model"
    clf = SentimentClassifier.from_pretrained(model_dir, threads=1)
    alone = np.concatenate([clf.predict_logits([t]) for t in PARITY_SENTENCES])  # no padding at all
    np.testing.assert_allclose(clf.predict_logits(PARITY_SENTENCES, batch_size=4), alone, atol=1e-5)
    assert main(["export", "--model-dir", str(model_dir), "--quiet", "--threads", "1"]) == 0
    onnx = SentimentClassifier.from_pretrained(model_dir, runtime="onnx", threads=1)
    diff = np.abs(onnx.predict_proba(PARITY_SENTENCES)[:, 1] - clf.predict_proba(PARITY_SENTENCES)[:, 1])
    assert diff.max() < 1e-4  # fp32 parity: max |probability difference| with PyTorch


def test_weight_average_is_an_ema_from_the_end_of_warmup_and_swaps_back():
    from sst2.training.optim import WeightAverage

    p = torch.nn.Parameter(torch.zeros(3))
    avg = WeightAverage([p], decay=0.5, start_step=1)
    with torch.no_grad():
        p.fill_(1.0)
    avg.update(1)  # still warming up: nothing averaged, the live weights are scored
    with avg.swapped():
        assert torch.equal(p.detach(), torch.ones(3))
    for step, value in ((2, 2.0), (3, 4.0)):
        with torch.no_grad():
            p.fill_(value)
        avg.update(step)
    with avg.swapped():  # 0.5 * 2 + 0.5 * 4
        assert torch.equal(p.detach(), torch.full((3,), 3.0))
    assert torch.equal(p.detach(), torch.full((3,), 4.0))  # the live weights are back


def test_vanilla_with_ema_keeps_the_averaged_weights(tiny_backbone_dir, tiny_data_dir, tmp_path):
    import csv

    train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path / "plain", model="vanilla", warmup_ratio=0.0))
    m = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path / "ema", model="vanilla", warmup_ratio=0.0,
                      ema=0.9))
    with open(tmp_path / "ema" / "run" / "epochs.csv") as f:
        epochs = list(csv.DictReader(f))
    assert list(epochs[0])[-1] == "raw_dev_accuracy" and all(0 <= float(r["raw_dev_accuracy"]) <= 1 for r in epochs)
    # the saved model is the average, and it scores the dev accuracy recorded for it
    assert dev_accuracy(tmp_path / "ema" / "run" / "model", tiny_data_dir) == pytest.approx(m["dev_accuracy"])
    assert float(epochs[m["best_epoch"] - 1]["dev_accuracy"]) == pytest.approx(m["dev_accuracy"])
    key = "encoder.layer.0.attention.self.query.weight"
    weights = [SentimentModel.load(tmp_path / x / "run" / "model").backbone.encoder.state_dict()[key]
               for x in ("plain", "ema")]
    assert not torch.equal(weights[0], weights[1])
