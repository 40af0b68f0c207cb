"""The five defects of the reference implementation, each pinned by a test, plus the head shapes."""

import numpy as np
import pytest
import torch

from sst2.modeling.backbone import Backbone
from sst2.modeling.heads import HeadConfig, build_head, count_parameters
from sst2.modeling.model import SentimentModel
from sst2.training.config import resolve
from sst2.training.engine import Job, evaluate, train_one_epoch


def seed_head(hidden=32, **kw):
    p = resolve(preset="seed").model
    cfg = HeadConfig(hidden_size=hidden, proj_size=p.proj_size, lstm_size=p.lstm_size,
                     bidirectional=p.bidirectional, pooling=p.pooling, dropout=p.dropout, **kw)
    return build_head(cfg)


HEADS = {
    "seed": lambda: seed_head(),
    "improved": lambda: build_head(HeadConfig(hidden_size=32, num_states=3, proj_size=16, lstm_size=8,
                                              bidirectional=True, pooling="maxmean")),
    "bi-last": lambda: build_head(HeadConfig(hidden_size=32, num_states=2, proj_size=16, lstm_size=8,
                                             bidirectional=True, pooling="last")),
    "concat": lambda: build_head(HeadConfig(hidden_size=32, num_states=3, proj_size=16, lstm_size=8,
                                            bidirectional=True, pooling="maxmean", combine="concat")),
    "linear-mean": lambda: build_head(HeadConfig(kind="linear", hidden_size=32, num_states=2, pooling="mean")),
    "cnn": lambda: build_head(HeadConfig(kind="cnn", hidden_size=32, num_states=1, filters=6, kernel_sizes=(1, 2, 3),
                                         pooling="maxmean")),
}


def test_seed_head_on_a_768_wide_encoder_has_exactly_723457_trainable_parameters():
    from transformers import BertConfig, BertModel

    encoder = BertModel(BertConfig())  # random BERT-base: hidden 768
    backbone = Backbone(encoder, tokenizer=None, layers=(-1,))
    backbone.requires_grad_(False)
    model = SentimentModel(backbone, seed_head(hidden=768), spec={})
    trainable, total = count_parameters(model)
    assert trainable == 723_457
    assert total == 723_457 + sum(p.numel() for p in encoder.parameters())


@pytest.mark.parametrize("name", list(HEADS))
def test_padding_does_not_change_a_prediction(name):
    """Defect 1: the LSTM ran over padding, so the final state depended on the batch's padding."""
    torch.manual_seed(0)
    head = HEADS[name]().eval()
    k = HEADS[name]().cfg.num_states
    x = torch.randn(4, 9, k, 32)
    lengths = torch.tensor([9, 2, 5, 7])
    alone = torch.stack([head(x[i : i + 1, : lengths[i]], lengths[i : i + 1])[0] for i in range(4)])
    batched = head(x, lengths)
    garbage = torch.cat([x, 100 * torch.randn(4, 6, k, 32)], 1)  # more, and wild, padding
    padded = head(garbage, lengths)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_model_emits_logits_and_the_loss_applies_the_only_sigmoid():
    """Defect 2: sigmoid then BCE-with-logits (a double sigmoid)."""
    torch.manual_seed(0)
    head = seed_head()
    with torch.no_grad():
        head.fc.bias.fill_(5.0)  # a confident positive model: logits far above 1
    x, lengths, y = torch.randn(8, 5, 1, 32), torch.full((8,), 5), torch.ones(8)
    head.eval()
    logits = head(x, lengths)
    assert (logits > 1).all(), "the head must return logits, not probabilities"

    class Source:
        def __call__(self, idx):
            return x[idx], lengths[idx]

    head.dropout.p = 0.0
    job = Job(head, head, {"train": Source()}, list(head.parameters()), [head])
    stats, rows = train_one_epoch(job, y, [np.arange(8)], torch.optim.SGD(head.parameters(), lr=0.0),
                                  grad_clip=1.0, epoch=1, step=0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item()
    assert rows[0]["loss"] == pytest.approx(expected, abs=1e-5)
    assert expected < 0.01  # a double sigmoid could never go below log(1 + e^-1) = 0.31


def test_accuracy_counts_examples_not_nominal_batches():
    """Defect 3: accuracy divided by the nominal batch size even for the short last batch."""
    torch.manual_seed(0)
    head = seed_head().eval()
    x, lengths = torch.randn(5, 4, 1, 32), torch.full((5,), 4)

    class Source:
        lengths = np.full(5, 4)

        def __call__(self, idx):
            return x[idx], lengths[idx]

    with torch.no_grad():
        preds = (head(x, lengths) > 0).float()
    labels = preds.clone()
    labels[0] = 1 - labels[0]  # exactly 4 of 5 right
    assert evaluate(head, Source(), labels, batch_size=4)["accuracy"] == pytest.approx(0.8)

    head.dropout.p = 0.0
    opt = torch.optim.SGD(head.parameters(), lr=0.0)
    job = Job(head, head, {"train": Source()}, list(head.parameters()), [head])
    stats, _ = train_one_epoch(job, labels, [np.arange(4), np.arange(4, 5)], opt, 0.0, 1, 0)
    assert stats["train_accuracy"] == pytest.approx(0.8)


@pytest.mark.parametrize("name", list(HEADS))
def test_batch_of_one(name):
    """Defect 4: squeezing the final state broke batch size 1."""
    head = HEADS[name]()
    k = HEADS[name]().cfg.num_states
    out = head(torch.randn(1, 6, k, 32), torch.tensor([6]))
    assert out.shape == (1,)
    out.sum().backward()


def test_full_model_from_text_matches_padding_free_scoring(tiny_backbone_dir):
    backbone = Backbone.load(str(tiny_backbone_dir), layers=(-1,))
    from sst2 import SentimentClassifier

    clf = SentimentClassifier.from_model(SentimentModel(backbone, seed_head(), {"max_length": 32}))
    texts = ["good", "the film is very good and it was quite lovely .", "bad plot"]
    batched = clf.predict_logits(texts, batch_size=3)
    alone = np.concatenate([clf.predict_logits([t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=1e-5)
