"""The fine-tuned models: vanilla (every weight), partial (top K layers over cached states), lora (peft)."""

import csv
import json

import numpy as np
import pytest
import torch

from sst2.modeling.backbone import Backbone
from sst2.config import ConfigError, TrainConfig
from sst2.data.splits import load_splits
from sst2.errors import UserError
from sst2.modeling.model import SentimentModel
from sst2.training.api import RUN_FILES, TopLayers, _setup_finetune, train


def cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, **kw):
    base = dict(data=str(tiny_data_dir), backbone=str(tiny_backbone_dir), out=str(tmp_path / "run"),
                cache_dir=str(tmp_path / "cache"), epochs=2, batch_size=8, max_length=32, quiet=True, threads=1,
                lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def dev_accuracy(model_dir, data_dir) -> float:
    model = SentimentModel.load(model_dir)
    dev = load_splits(data_dir)["dev"]
    return ((model.predict_logits(dev.texts) > 0).long() == torch.tensor(dev.labels)).float().mean().item()


def test_vanilla_every_parameter_gets_a_gradient(tiny_backbone_dir, tiny_data_dir, tmp_path):
    cfg = cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="vanilla")
    job = _setup_finetune(cfg, cfg.resolved(), load_splits(tiny_data_dir))
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
    assert m["model"] == "vanilla" and m["preset"] is None and m["max_length"] == 32
    bb = Backbone.load(str(tiny_backbone_dir))
    pooler = sum(p.numel() for n, p in bb.encoder.named_parameters() if n.startswith("pooler."))
    assert m["trainable_params"] == m["total_params"] - pooler
    assert dev_accuracy(run / "model", tiny_data_dir) == pytest.approx(m["dev_accuracy"])
    # the encoder itself was trained
    saved = SentimentModel.load(run / "model").backbone.encoder.state_dict()
    assert not torch.equal(saved["encoder.layer.0.attention.self.query.weight"],
                           bb.encoder.state_dict()["encoder.layer.0.attention.self.query.weight"])


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


def test_partial_with_the_lstm_head_reads_every_hidden_state(tiny_backbone_dir, tiny_data_dir, tmp_path):
    m = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="partial", unfreeze=1, head="lstm"))
    before = Backbone.load(str(tiny_backbone_dir)).encoder.state_dict()
    model = SentimentModel.load(tmp_path / "run" / "model")
    after = model.backbone.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith("encoder.layer.1.")}
    assert model.backbone.layers == (0, 1, 2) and model.head.cfg.combine == "concat"
    assert model.head.proj.in_features == 3 * 32
    head_params = sum(q.numel() for q in model.head.parameters())
    top = sum(before[k].numel() for k in before if k.startswith("encoder.layer.1."))
    assert m["trainable_params"] == top + head_params
    # cached states 0..1 + the trained layer in training; the whole encoder in the saved model: the same scores
    assert dev_accuracy(tmp_path / "run" / "model", tiny_data_dir) == pytest.approx(m["dev_accuracy"], abs=1 / 16)
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert resolved["head"] == "lstm" and resolved["head_lr"] == 1e-3
    with pytest.raises(ConfigError, match="head: only the partial model has a choice of head"):
        TrainConfig(model="vanilla", head="lstm")


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
    with pytest.raises(UserError, match=r"^unfreeze: the encoder has 2 layers, cannot train the top 3$"):
        train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="partial", unfreeze=3))
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))


def test_lora_trains_only_adapters_and_head(tiny_backbone_dir, tiny_data_dir, tmp_path):
    cfg = cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="lora", lora_r=4, lr=1e-2)
    job = _setup_finetune(cfg, cfg.resolved(), load_splits(tiny_data_dir))
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
    with pytest.raises(UserError, match=r"^lora_targets \['nonexistent'\]: "):
        train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="lora", lora_targets=["nonexistent"]))


def test_seeds_write_one_run_per_seed_and_a_summary(tiny_backbone_dir, tiny_data_dir, tmp_path):
    s = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, seeds=3, seed=5, epochs=1, layers="-1",
                      preset="seed"))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [".sst2-run", "seed-5", "seed-6", "seed-7", "summary.json"]
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


@pytest.mark.parametrize("model", ["vanilla", "partial", "partial-lstm", "lora"])
def test_every_model_type_serves_through_classifier_and_onnx(model, tiny_backbone_dir, tiny_data_dir, tmp_path):
    from sst2.cli import main
    from sst2.inference.export import PARITY_SENTENCES
    from sst2.inference.classifier import Classifier

    model, _, head = model.partition("-")
    train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model=model, epochs=1, unfreeze=1, head=head or "linear"))
    model_dir = tmp_path / "run" / "model"
    ref = SentimentModel.load(model_dir).predict_logits(PARITY_SENTENCES)
    clf = Classifier.load(model_dir, threads=1)
    np.testing.assert_allclose(clf.predict_logits(PARITY_SENTENCES), ref.numpy(), atol=1e-5)
    assert main(["export", "--model-dir", str(model_dir), "--quiet", "--threads", "1"]) == 0
    onnx = Classifier.load(model_dir, runtime="onnx", threads=1).predict(PARITY_SENTENCES)
    diff = np.abs(np.array([p.positive_prob for p in onnx]) - torch.sigmoid(ref).numpy())
    assert diff.max() < 1e-4  # fp32 parity: max |probability difference| with PyTorch


def test_probe_fits_only_the_classifier_on_the_untrained_features(tiny_backbone_dir, tiny_data_dir, tmp_path):
    from sst2.training.api import fit_probe

    cfg = cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path, model="vanilla")
    splits = load_splits(tiny_data_dir)
    job = _setup_finetune(cfg, cfg.resolved(), splits)
    before = {n: q.detach().clone() for n, q in job.model.named_parameters()}
    labels = torch.tensor(splits["train"].labels, dtype=torch.float32)
    out = fit_probe(job, job.inputs["train"], labels, epochs=30, lr=1e-2, batch_size=8, rng=np.random.default_rng(0))
    changed = {n for n, q in job.model.named_parameters() if not torch.equal(q, before[n])}
    assert changed == {"head.fc.weight", "head.fc.bias"}
    # the reported accuracy is the whole model's, scored end to end on the training split
    job.model.eval()
    with torch.no_grad():
        logits = job.forward(*job.inputs["train"](np.arange(len(labels))))
    assert out["probe_train_accuracy"] == pytest.approx(((logits > 0).float() == labels).float().mean().item())
    assert out["probe_train_accuracy"] > 0.75  # the sentiment word is in every sentence
    assert out["probe_epochs"] == 30 and out["probe_seconds"] >= out["probe_encode_seconds"] > 0


def test_probe_stage_runs_before_fine_tuning_and_is_recorded(tiny_backbone_dir, tiny_data_dir, tmp_path):
    """The order, checked: each model trains once without and once with a 2-epoch probe (same seed, so
    the same batches and dropout stream). (1) Fine-tuning starts from the probed classifier: the very
    first training loss already differs from the run without the probe. (2) The probe saw the model as
    loaded: vanilla, partial and lora differ only in what fine-tuning trains, so a probe fitted before
    fine-tuning gives them the same result (partial reads fp16 cached states: equal to 1e-4), which a
    probe fitted after it would not."""
    def first_loss(run):
        with open(run / "history.csv") as f:
            return float(next(csv.DictReader(f))["loss"])

    probes = {}
    for model in ("vanilla", "partial", "lora"):
        kw = dict(model=model, epochs=1, unfreeze=1)
        train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path / model / "plain", **kw))
        m = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path / model / "probe", probe_epochs=2, **kw))
        assert m["probe_epochs"] == 2 and 0 <= m["probe_train_accuracy"] <= 1
        resolved = json.loads((tmp_path / model / "probe" / "run" / "config.json").read_text())["resolved"]
        assert resolved["probe_epochs"] == 2 and resolved["probe_lr"] == 1e-3
        assert first_loss(tmp_path / model / "probe" / "run") != first_loss(tmp_path / model / "plain" / "run"), model
        probes[model] = (m["probe_train_loss"], m["probe_train_accuracy"])
    for model in ("partial", "lora"):
        assert probes[model] == pytest.approx(probes["vanilla"], abs=1e-4), model


def test_probe_needs_a_fine_tuned_linear_head():
    for kw in (dict(model="efficient"), dict(model="partial", head="lstm")):
        with pytest.raises(ConfigError, match="probe_epochs: only a fine-tuned model's linear head can be fitted first"):
            TrainConfig(probe_epochs=3, **kw)
    with pytest.raises(ConfigError, match="probe_epochs: must be >= 0, got -1\n  rdrop: must be >= 0, got -0.5"):
        TrainConfig(model="vanilla", probe_epochs=-1, rdrop=-0.5)


def test_bernoulli_symmetric_kl():
    from torch.distributions import Bernoulli, kl_divergence

    from sst2.training.api import bernoulli_sym_kl

    a, b = torch.tensor([0.3, -2.0, 8.0]), torch.tensor([0.3, 1.0, -1.0])
    ref = (kl_divergence(Bernoulli(logits=a), Bernoulli(logits=b)) + kl_divergence(Bernoulli(logits=b), Bernoulli(logits=a))) / 2
    torch.testing.assert_close(bernoulli_sym_kl(a, b), ref)
    assert bernoulli_sym_kl(a, b)[0] == 0
    # confident, opposite predictions: each KL is about the logit (15 or 30 nats); at 30 torch's formula gives inf
    assert bernoulli_sym_kl(torch.tensor([-15.0]), torch.tensor([15.0])).item() == pytest.approx(15.0, rel=1e-4)
    assert bernoulli_sym_kl(torch.tensor([-30.0]), torch.tensor([30.0])).item() == pytest.approx(30.0, rel=1e-4)


def test_rdrop_without_dropout_trains_like_plain_training(tiny_backbone_dir, tiny_data_dir, tmp_path):
    """With no dropout anywhere both passes of a batch agree: the KL term is zero and the mean of the two
    losses is the plain loss, so R-Drop must follow the plain run step for step."""
    kw = dict(preset="seed", layers="-1", dropout=0.0, epochs=2)
    plain = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path / "a", **kw))
    rdrop = train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path / "b", rdrop=1.0, **kw))
    a = np.loadtxt(tmp_path / "a" / "run" / "history.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(tmp_path / "b" / "run" / "history.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert rdrop["dev_accuracy"] == plain["dev_accuracy"]


def test_rdrop_with_dropout_changes_training(tiny_backbone_dir, tiny_data_dir, tmp_path):
    kw = dict(model="vanilla", epochs=1, dropout=0.3)
    train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path / "a", **kw))
    train(cfg_for(tiny_backbone_dir, tiny_data_dir, tmp_path / "b", rdrop=1.0, **kw))
    a = np.loadtxt(tmp_path / "a" / "run" / "history.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(tmp_path / "b" / "run" / "history.csv", delimiter=",", skiprows=1)
    assert not np.allclose(a[:, 2], b[:, 2])
