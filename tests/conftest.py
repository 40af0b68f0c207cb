"""Fixtures: a tiny random-weight BERT (2 layers, hidden 32) with a tiny word-level vocabulary, and a
tiny SST-2 style data folder. Everything is built in tmp paths, offline, in well under a second."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

POSITIVE = ["good", "great", "fine", "superb", "lovely", "moving", "funny", "smart"]
NEGATIVE = ["bad", "awful", "dull", "boring", "weak", "tedious", "flat", "silly"]
NEUTRAL = ["the", "film", "movie", "is", "a", "story", "plot", "very", "and", "it", "'s", ".", "was", "quite"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_sentences(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(NEUTRAL, k=rng.randint(2, 9))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows, header=("sentence", "label")) -> Path:
    lines = ["\t".join(header)] + [f"{s}\t{y}" for s, y in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """A saved 2-layer, 32-wide random BERT plus a word-level BERT tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(d / "vocab.txt"))
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-data")
    write_tsv(d / "train.tsv", make_sentences(48, 1))
    write_tsv(d / "dev.tsv", make_sentences(16, 2))
    write_tsv(d / "test.tsv", make_sentences(20, 3))
    return d


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_backbone_dir, tiny_data_dir, tmp_path_factory) -> Path:
    """A saved model directory (improved preset, 2 hidden states, max_length 32) trained for one epoch."""
    from sst2.training.api import train

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    train(train_config(data=tiny_data_dir, backbone=str(tiny_backbone_dir), out=str(out),
                       cache_dir=str(out.parent / "cache"), epochs=1, batch_size=8, max_length=32, layers="-2,-1",
                       quiet=True, threads=1))
    return out / "model"


@pytest.fixture(scope="session")
def exported_dir(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model with model.onnx and model.int8.onnx, written by the real command."""
    import shutil

    from sst2.cli import main

    d = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(tiny_model_dir, d)
    assert main(["export", "--model-dir", str(d), "--int8", "--quiet", "--threads", "1"]) == 0
    return d


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray with 2 CPUs for the tests that run on Ray, started once and stopped at the end."""
    import logging

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


def actor_processes(udf: str) -> list:
    """This test's own Ray actor processes that run ``map_batches(udf)`` (our process tree only)."""
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if f"MapBatches({udf})" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


class ActorKiller:
    """Kills every actor process of ``udf`` as soon as it is up, and each of its restarts, until stopped."""

    def __init__(self, udf: str):
        import threading

        self.udf, self.killed, self.done = udf, set(), threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        import time

        while not self.done.is_set():
            for p in actor_processes(self.udf):
                if p.pid not in self.killed:
                    p.kill()
                    self.killed.add(p.pid)
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def left_truncating_copy(encoder_dir: Path, dst: Path) -> Path:
    """A copy of an encoder folder whose tokenizer cuts long texts on the left (``truncation_side``)."""
    import json
    import shutil

    shutil.copytree(encoder_dir, dst)
    config = json.loads((dst / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps({**config, "truncation_side": "left"}))
    return dst


def train_config(preset=None, model=None, data=None, layers=None, **kw):
    """A resolved training config from flat names (``epochs=2``, ``layers="-2,-1"``), as a test writes
    them; ``model`` is the recipe and ``data`` the data folder."""
    from sst2.training.config import config_for

    if data is not None:
        kw["path"] = str(data)
    if layers is not None:
        kw["layers"] = layers if layers == "all" else [int(x) for x in str(layers).split(",")]
    return config_for(model, preset=preset, **kw)
