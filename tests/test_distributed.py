"""Data-parallel training (``sst2.training.distributed``): torchrun with 2 processes trains the same weights as
one process with the same global batch, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sst2.modeling.model import SentimentModel
from sst2.training.api import train
from sst2.training.distributed import SINGLE, Group
from sst2.training.rundir import RUN_FILES

from conftest import NEGATIVE, NEUTRAL, POSITIVE, SPECIAL, make_sentences, train_config, write_tsv


@pytest.fixture(scope="module")
def no_dropout_backbone(tmp_path_factory) -> Path:
    """The tiny BERT of conftest without dropout: the ranks' dropout masks would differ from one process's."""
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    vocab = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """45 training sentences: with batch 11 the global batches are 11, 11, 11, 11 and 1, so the two ranks'
    shares are 6 and 5, and the last batch gives rank 1 nothing at all."""
    d = tmp_path_factory.mktemp("odd-data")
    write_tsv(d / "train.tsv", make_sentences(45, 11))
    write_tsv(d / "dev.tsv", make_sentences(16, 12))
    write_tsv(d / "test.tsv", make_sentences(10, 13))
    return d


def test_shares_of_a_global_batch_cover_it_once_even_when_it_does_not_divide():
    idx = np.arange(11)
    shares = [Group(r, 2).shard(idx) for r in range(2)]
    assert [len(s) for s in shares] == [6, 5]
    assert sorted(np.concatenate(shares).tolist()) == idx.tolist()
    assert Group(1, 2).shard(np.array([7])).tolist() == []  # a batch smaller than the world: an empty share
    assert SINGLE.shard(idx) is idx and not SINGLE.active and SINGLE.is_main


def _args(recipe: str, backbone: Path, data: Path, out: Path, cache: Path) -> list[str]:
    return ["--model", recipe, "--data", str(data), "--backbone", str(backbone), "--out", str(out),
            "--cache-dir", str(cache), "--epochs", "2", "--batch-size", "11", "--max-length", "32", "--lr", "1e-3",
            "--threads", "1", "--set", "model.dropout=0.0", "--set", "model.layers=[-2,-1]"]


def _torchrun(nproc: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "sst2", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in SentimentModel.load(run / "model").state_dict().items()}


@pytest.mark.parametrize("recipe", ["vanilla", "efficient"])
def test_two_processes_train_the_same_weights_as_one(recipe, no_dropout_backbone, odd_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # one process, no torchrun at all
    cfg = train_config(model=recipe, data=odd_data, backbone=str(no_dropout_backbone), out=str(one),
                       cache_dir=str(tmp_path / "cache1"), epochs=2, batch_size=11, max_length=32, lr=1e-3,
                       threads=1, quiet=True, dropout=0.0, layers="-2,-1")
    m1 = train(cfg)
    r = _torchrun(2, _args(recipe, no_dropout_backbone, odd_data, two, tmp_path / "cache2"), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m2 = json.loads((two / "metrics.json").read_text())
    assert m2["processes"] == 2 and m1["processes"] == 1
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    exact = sum(torch.equal(w1[k], w2[k]) for k in w1)
    print(f"{recipe}: {exact} of {len(w1)} tensors bit-identical, the rest within rtol 1e-4")
    h1 = [float(x.split(",")[2]) for x in (one / "history.csv").read_text().splitlines()[1:]]
    h2 = [float(x.split(",")[2]) for x in (two / "history.csv").read_text().splitlines()[1:]]
    assert len(h1) == len(h2) == 10  # 5 global batches a epoch, both runs
    np.testing.assert_allclose(h2, h1, rtol=1e-4, atol=1e-5)  # the global batch's loss, not rank 0's share
    assert m2["dev_accuracy"] == m1["dev_accuracy"] and m2["best_epoch"] == m1["best_epoch"]
    assert m2["test_accuracy"] == m1["test_accuracy"]
    # only rank 0 wrote: the run's files and nothing else beside it; its log lines appear once
    assert sorted(p.name for p in two.iterdir()) == sorted(RUN_FILES)
    assert {p.name for p in tmp_path.iterdir()} - {"cache1", "cache2"} == {"one", "two"}  # no stray temporaries
    assert r.stderr.count("epoch  1:") == 1 and r.stderr.count("best epoch") == 1
    card = (two / "model" / "README.md").read_text()
    assert "torchrun --nproc-per-node 2 -m sst2 train" in card


def test_an_error_on_every_rank_fails_the_run_and_says_which_rank(no_dropout_backbone, odd_data, tmp_path):
    bad = tmp_path / "bad-data"
    bad.mkdir()
    write_tsv(bad / "train.tsv", [("good film", 1), ("dull", 3)], header=("sentence", "label"))
    r = _torchrun(2, ["--data", str(bad), "--backbone", str(no_dropout_backbone), "--out", str(tmp_path / "run"),
                      "--quiet"], tmp_path)
    assert r.returncode != 0
    assert "sst2 train: error:" in r.stderr and "sst2 train (rank 1): error:" in r.stderr
    assert not (tmp_path / "run").exists()
