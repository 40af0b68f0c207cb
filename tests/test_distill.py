"""Distillation (sst2.distillation): augmentation, the transfer set, the teacher-logit cache, the loss, and
a student trained end to end on the tiny model."""

from __future__ import annotations

import json
import re
import tomllib

import numpy as np
import pytest
import torch

from conftest import make_sentences, write_tsv
from sst2.distillation.augment import AugmentOptions, augment, augment_text, embedding_neighbours
from sst2.distillation.loss import DistillLoss, pack_targets


def test_embedding_neighbours_are_nearest_whole_words():
    vocab = {"[MASK]": 0, "good": 1, "great": 2, "bad": 3, "##ly": 4, "movie": 5}
    emb = np.array([[0, 0, 1], [1, 0, 0], [0.9, 0.1, 0], [-1, 0, 0], [0.95, 0, 0], [0, 1, 0]], dtype=np.float32)
    out = embedding_neighbours({"good", "unknownword", "bad"}, vocab, emb, k=2)
    assert out["good"] == ["great", "movie"]  # ##ly and [MASK] are never candidates; not the word itself
    assert "unknownword" not in out and out["bad"][0] == "movie"


def test_augment_is_seeded_and_deduplicated():
    texts = ["a fine film", "a dull , dull movie"]
    opts = AugmentOptions(copies=5, p_mask=0.3, p_replace=0.3, p_ngram=0.5)
    nb = {"fine": ["good"], "dull": ["flat"]}
    one = augment(texts, opts, 7, "[MASK]", nb, exclude=set(texts))
    assert one == augment(texts, opts, 7, "[MASK]", nb, exclude=set(texts))
    assert one != augment(texts, opts, 8, "[MASK]", nb, exclude=set(texts))
    assert len(one) == len(set(one)) and not set(one) & set(texts)
    assert any("[MASK]" in t for t in one) and any("good" in t or "flat" in t for t in one)


def test_augment_text_ngram_is_a_contiguous_slice():
    words = "one two three four five six seven".split()
    rng = np.random.default_rng(0)
    opts = AugmentOptions(p_mask=0, p_replace=0, p_ngram=1.0)
    for _ in range(20):
        cut = augment_text(words, opts, rng, "[MASK]", {}).split()
        assert 1 <= len(cut) <= 5 and " ".join(cut) in " ".join(words)


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_loss_is_zero_at_the_teacher_and_grows_away(kind):
    teacher = np.array([2.0, -1.0, 0.5])
    y = pack_targets(teacher, [1, -1, 0])
    loss = DistillLoss(kind, temperature=2.0)
    assert loss(torch.tensor(teacher, dtype=torch.float32), y).item() == pytest.approx(0, abs=1e-5)
    assert loss(torch.tensor([0.0, 0.0, 0.0]), y).item() > 0.1
    multi = pack_targets(np.array([[1.0, 0.0, -1.0]]), [-1])
    assert loss(torch.tensor([[1.0, 0.0, -1.0]]), multi).item() == pytest.approx(0, abs=1e-5)
    assert DistillLoss.classes(y).tolist() == [1, 0, 1]


def test_hard_weight_mixes_only_labelled_texts():
    y = pack_targets(np.array([3.0, 3.0]), [0, -1])
    logits = torch.tensor([3.0, 3.0])
    assert DistillLoss("mse", hard_weight=0.0)(logits, y).item() == pytest.approx(0, abs=1e-6)
    mixed = DistillLoss("mse", hard_weight=0.5)(logits, y).item()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(3.0), torch.tensor(0.0)).item()
    assert mixed == pytest.approx(0.5 * bce)


def _distill_config(tiny_data_dir, tiny_backbone_dir, teacher, tmp_path, preset="distill", **kw):
    """The preset on the tiny model and data; its transfer files (GLUE's phrases in ../shared/data) are
    dropped unless ``kw`` names some, so no test reads the real data by accident."""
    from sst2.training.config import resolve

    sets = {"distill.transfer_files": [], "distill.teacher": str(teacher), "model.backbone": str(tiny_backbone_dir),
            "data.path": str(tiny_data_dir), "data.max_length": 32, "model.layers": [-2, -1],
            "optim.epochs": 2, "optim.batch_size": 8,
            "run.out": str(tmp_path / "student"), "run.cache_dir": str(tmp_path / "cache"), "run.quiet": True,
            "run.threads": 1, "distill.copies": 2, **kw}
    return resolve(preset=preset, overrides=sets)


def test_distill_trains_a_student_and_records_the_transfer_set(tiny_model_dir, tiny_data_dir, tiny_backbone_dir,
                                                               tmp_path):
    import shutil

    from sst2 import SentimentClassifier
    from sst2.distillation.api import distill

    teacher = shutil.copytree(tiny_model_dir, tmp_path / "teacher")
    extra = write_tsv(tmp_path / "phrases.tsv", make_sentences(30, 9) + make_sentences(5, 1)[:5])
    cfg = _distill_config(tiny_data_dir, tiny_backbone_dir, teacher, tmp_path,
                          **{"distill.transfer_files": [str(extra)]})
    metrics = distill(cfg)
    out = tmp_path / "student"
    info = metrics["distill"]
    sizes = info["transfer"]
    assert sizes["train"] == 48 and sizes["files"][str(extra)] <= 30  # duplicates of training texts are dropped
    assert 0 < sizes["augmented"] <= 96 and sizes["total"] == metrics["train_size"]
    assert not info["teacher_cache_hit"] and 0 <= info["teacher_dev_accuracy"] <= 1
    assert (out / "model").is_dir() and json.loads((out / "metrics.json").read_text())["distill"] == info
    toml = (out / "config.toml").read_text()
    assert "[distill]" in toml and str(teacher) in toml
    clf = SentimentClassifier.from_pretrained(out / "model")
    assert clf.predict(["a good film", "a bad film"]) in (["positive", "negative"], ["negative", "positive"],
                                                          ["positive", "positive"], ["negative", "negative"])
    # the same transfer set again, after an ONNX export of the teacher: its logits come from the cache
    from sst2.distillation.teacher import model_fingerprint

    before = model_fingerprint(teacher)
    (teacher / "model.onnx").write_bytes(b"not read by the torch runtime")
    assert model_fingerprint(teacher) == before != model_fingerprint(teacher, "onnx")
    onnx = model_fingerprint(teacher, "onnx")
    (teacher / ".export-999999-x").mkdir()  # what an export killed with -9 leaves: not part of the model
    (teacher / ".export-999999-x" / "model.onnx").write_bytes(b"half written")
    assert (model_fingerprint(teacher), model_fingerprint(teacher, "onnx")) == (before, onnx)
    again = distill(cfg.with_run(out=str(tmp_path / "student2")))
    assert again["distill"]["teacher_cache_hit"] and again["dev_accuracy"] == metrics["dev_accuracy"]


def test_dev_and_test_texts_never_enter_the_transfer_set(tiny_model_dir, tiny_data_dir, tiny_backbone_dir, tmp_path):
    from sst2.distillation.api import distill
    from sst2.data.dataset import load_splits

    splits = load_splits(tiny_data_dir)
    held = set(splits["dev"].texts) | set(splits["test"].texts)
    files = [str(tiny_data_dir / "dev.tsv"), str(tiny_data_dir / "test.tsv")]
    cfg = _distill_config(tiny_data_dir, tiny_backbone_dir, tiny_model_dir, tmp_path,
                          **{"distill.copies": 4, "distill.transfer_files": files, "distill.hard_weight": 0.5})
    metrics = distill(cfg)
    sizes = metrics["distill"]["transfer"]
    assert sizes["held_out_texts"] == len(held - set(splits["train"].texts)) > 0
    assert sizes["files"] == {str(tiny_data_dir / "dev.tsv"): 0, str(tiny_data_dir / "test.tsv"): 0}  # they were
    #   all added: the student trained on the texts it is scored on, and on their labels with hard_weight


def test_the_teacher_is_given_the_texts_as_read_and_normalizes_them_itself(tiny_model_dir, tiny_data_dir,
                                                                           tiny_backbone_dir, tmp_path, monkeypatch):
    import shutil

    import sst2.distillation.api as api
    from sst2.modeling.modeldir import SPEC_FILE

    teacher = shutil.copytree(tiny_model_dir, tmp_path / "teacher")  # a teacher that reads "-lrb-" as it is
    spec = json.loads((teacher / SPEC_FILE).read_text())
    (teacher / SPEC_FILE).write_text(json.dumps({**spec, "text_normalization": "none"}))
    data = shutil.copytree(tiny_data_dir, tmp_path / "data")
    for split, line in (("train", "a -lrb- great -rrb- film\t1\n"), ("dev", "a -lrb- dull -rrb- film\t0\n")):
        with open(data / f"{split}.tsv", "a") as f:
            f.write(line)
    extra = write_tsv(tmp_path / "phrases.tsv", [("a ``good'' film", 1)])
    given, scored = [], []
    real, predict = api.teacher_logits, api.SentimentClassifier.predict_logits
    monkeypatch.setattr(api, "teacher_logits", lambda t, texts, *a: given.append(texts) or real(t, texts, *a))
    monkeypatch.setattr(api.SentimentClassifier, "predict_logits",
                        lambda self, texts, *a, **k: scored.append(list(texts)) or predict(self, texts, *a, **k))
    cfg = _distill_config(data, tiny_backbone_dir, teacher, tmp_path, **{"distill.transfer_files": [str(extra)],
                                                                         "data.normalize": "treebank"})
    sizes = api.distill(cfg)["distill"]["transfer"]
    (texts,) = given
    read = texts[: sizes["train"] + 1]  # the training texts and the file's, as read; then augmented copies
    assert read[-1] == "a ``good'' film" and "a -lrb- great -rrb- film" in read  # were 'a "good" film' and
    assert not any("( great )" in t for t in read)  # "a ( great ) film", which this teacher never saw
    assert len(scored) == 2 and "a -lrb- dull -rrb- film" in scored[0]  # the teacher's dev accuracy, too


def _other_teacher(tiny_model_dir, path):
    """A copy of the tiny model whose head weights are perturbed: a second teacher with other logits."""
    import shutil

    from safetensors.torch import load_file, save_file

    other = shutil.copytree(tiny_model_dir, path)
    gen = torch.Generator().manual_seed(0)
    head = {k: v + 0.5 * torch.randn(v.shape, generator=gen) for k, v in load_file(other / "head.safetensors").items()}
    save_file(head, other / "head.safetensors")
    return other


def test_an_ensemble_of_teachers_targets_the_mean_of_their_logits(tiny_model_dir, tiny_data_dir, tiny_backbone_dir,
                                                                  tmp_path, monkeypatch):
    import sst2.distillation.api as api
    from sst2 import SentimentClassifier
    from sst2.cli import main
    from sst2.distillation.transfer import build_transfer
    from sst2.training.config import resolve

    a, b = tiny_model_dir, _other_teacher(tiny_model_dir, tmp_path / "other")
    seen = {}  # the transfer set and the targets the student trains on
    monkeypatch.setattr(api, "build_transfer", lambda *x: seen.setdefault("transfer", build_transfer(*x)))
    monkeypatch.setattr(api, "pack_targets", lambda t, hard: seen.setdefault("targets", pack_targets(t, hard)))
    out, cache = tmp_path / "ens", tmp_path / "cache"
    assert main(["distill", "--teacher", str(a), str(b), "--data", str(tiny_data_dir), "--backbone",
                 str(tiny_backbone_dir), "--max-length", "32", "--epochs", "1", "--batch-size", "8", "--copies", "1",
                 "--set", "model.layers=[-2,-1]", "distill.transfer_files=[]", "--out", str(out), "--cache-dir",
                 str(cache), "--threads", "1", "--quiet"]) == 0
    members = [SentimentClassifier.from_pretrained(d) for d in (a, b)]
    texts = seen["transfer"].texts
    own = [m.predict_logits(texts) for m in members]
    assert not np.allclose(own[0], own[1], atol=1e-3)
    np.testing.assert_allclose(seen["targets"][:, 0].numpy(), (own[0] + own[1]) / 2, atol=1e-5)
    info = json.loads((out / "metrics.json").read_text())["distill"]
    assert info["teacher"] == [str(a), str(b)] and [m["teacher"] for m in info["ensemble"]] == [str(a), str(b)]
    dev = [line.split("\t") for line in (tiny_data_dir / "dev.tsv").read_text().splitlines()[1:]]
    mean = sum(m.predict_logits([t for t, _ in dev]) for m in members) / 2
    assert info["teacher_dev_accuracy"] == pytest.approx(((mean > 0) == np.array([int(y) for _, y in dev])).mean())
    assert tomllib.loads((out / "config.toml").read_text())["distill"]["teacher"] == [str(a), str(b)]
    # each member's logits are cached on their own: a student of b alone labels nothing
    again = {"distill.teacher": str(b), "run.out": str(tmp_path / "b")}
    alone = api.distill(resolve(config=out / "config.toml", overrides=again))
    assert alone["distill"]["teacher_cache_hit"] and "ensemble" not in alone["distill"]


def test_the_teacher_distilled_preset_fine_tunes_every_weight_on_the_teacher_logits(
        tiny_model_dir, tiny_data_dir, tiny_backbone_dir, tmp_path):
    from sst2.distillation.api import distill
    from sst2.modeling.backbone import Backbone
    from sst2.modeling.model import SentimentModel

    cfg = _distill_config(tiny_data_dir, tiny_backbone_dir, tiny_model_dir, tmp_path, preset="teacher-distilled",
                          **{"optim.ema": 0.9})
    assert (cfg.model.recipe, cfg.data.train_file, cfg.optim.epochs, cfg.distill.loss) == ("vanilla", None, 2, "mse")
    metrics = distill(cfg)
    assert metrics["model"] == "vanilla" and metrics["preset"] == "teacher-distilled"
    assert metrics["distill"]["transfer"]["augmented"] > 0
    assert 'preset = "teacher-distilled"' in (tmp_path / "student" / "config.toml").read_text()
    # every encoder weight but the unread pooler trained, starting from the pretrained encoder
    bb = Backbone.load(str(tiny_backbone_dir))
    pooler = sum(p.numel() for n, p in bb.encoder.named_parameters() if n.startswith("pooler."))
    assert metrics["trainable_params"] == metrics["total_params"] - pooler
    key = "encoder.layer.0.attention.self.query.weight"
    saved = SentimentModel.load(tmp_path / "student" / "model").backbone.encoder.state_dict()[key]
    assert not torch.equal(saved, bb.encoder.state_dict()[key])


def test_train_refuses_a_distillation_config(tiny_model_dir, tiny_data_dir, tiny_backbone_dir, tmp_path):
    from sst2.training.api import train
    from sst2.training.config import ConfigError

    cfg = _distill_config(tiny_data_dir, tiny_backbone_dir, tiny_model_dir, tmp_path)
    with pytest.raises(ConfigError, match=r"distill.teacher is set .*run it with sst2 distill"):
        train(cfg)


def test_train_refuses_distillation_settings_it_would_ignore(tiny_data_dir, tiny_backbone_dir, tmp_path, capsys):
    from sst2.cli import main

    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_data_dir), "--backbone", str(tiny_backbone_dir), "--out", str(out),
            "--cache-dir", str(tmp_path / "c"), "--quiet", "--set", "distill.loss=kl", "distill.copies=9"]
    assert main(argv) == 2 and not out.exists()
    assert capsys.readouterr().err.strip().endswith(
        "error: distill.copies = 9, distill.loss = 'kl': distillation settings, which sst2 train does not use; "
        "run sst2 distill --teacher MODEL_DIR, or leave them out")


def test_distill_needs_a_teacher_with_the_same_labels(tiny_model_dir, tiny_backbone_dir, tiny_data_dir, tmp_path,
                                                      monkeypatch):
    import sst2.distillation.api as api
    from sst2.distillation.api import distill
    from sst2.errors import UserError

    def never(*args, **kwargs):
        raise AssertionError("the transfer set was built before the teacher was checked")

    monkeypatch.setattr(api, "build_transfer", never)  # it took about 9.5 s on the real data before the error
    cfg = _distill_config(tiny_data_dir, tiny_backbone_dir, tiny_model_dir.parent / "nope", tmp_path)
    with pytest.raises(UserError, match=r"nope: not an sst2 model directory \(sst2_model.json not found\)"):
        distill(cfg)

    d = tmp_path / "abc"
    d.mkdir()
    rows = [(s, "abc"[i % 3]) for i, (s, _) in enumerate(make_sentences(30, 4))]
    for name in ("train", "dev"):
        write_tsv(d / f"{name}.tsv", rows)
    cfg = _distill_config(d, tiny_backbone_dir, tiny_model_dir, tmp_path)
    with pytest.raises(UserError, match=r"predicts the labels negative, positive, but the training data has a, b, c"):
        distill(cfg)


def test_distill_config_problems():
    from sst2.training.config import ConfigError, resolve

    with pytest.raises(ConfigError) as err:
        resolve(preset="distill", overrides={"distill.loss": "l1", "distill.p_mask": 0.8, "distill.p_replace": 0.5,
                                             "distill.hard_weight": 2.0})
    msg = str(err.value)
    assert "distill.loss: must be mse or kl, got 'l1'" in msg
    assert "distill.p_mask + distill.p_replace: must be at most 1, got 1.3" in msg
    assert "distill.hard_weight: must be in [0, 1], got 2.0" in msg
    for teacher, problem in (([], "expected a model directory or a non-empty list of them, got []"),
                             (["a", "a"], "an ensemble lists each model once, got ['a', 'a']")):
        with pytest.raises(ConfigError, match=re.escape(f"distill.teacher: {problem}")):
            resolve(preset="distill", overrides={"distill.teacher": teacher})


def test_the_python_api_returns_the_student(tiny_model_dir, tiny_data_dir, tiny_backbone_dir, tmp_path, capsys):
    import sst2
    from sst2.config import ConfigError

    with pytest.raises(ConfigError, match=r"^teacher: a model directory or a list of them, got None$"):
        sst2.distill(None)  # was a TypeError

    student, metrics = sst2.distill(tiny_model_dir, out=tmp_path / "api", path=str(tiny_data_dir),
                                    backbone=str(tiny_backbone_dir), max_length=32, layers=[-2, -1], epochs=1,
                                    batch_size=8, cache_dir=str(tmp_path / "cache"), threads=1, copies=1,
                                    transfer_files=[])
    assert isinstance(student, sst2.SentimentClassifier) and student.labels == ["negative", "positive"]
    assert metrics["distill"]["transfer"]["augmented"] > 0 and (tmp_path / "api" / "model").is_dir()
    assert capsys.readouterr().out == ""  # the command line's JSON line was printed from Python too


def test_transfer_files_have_columns_of_their_own_and_text_files_are_one_text_a_line(tiny_backbone_dir, tmp_path):
    import dataclasses

    from sst2.data.splits import LABEL_NAMES, Split
    from sst2.distillation.transfer import _file_texts
    from sst2.data.labels import LabelSet
    from sst2.training.config import resolve

    (tmp_path / "extra.jsonl").write_text('{"text": "an extra text"}\n{"text": "one more"}\n')
    (tmp_path / "extra.txt").write_text("a line\nanother line\n")
    cfg = resolve(preset="distill", overrides={"data.text_column": "body", "data.label_column": "stars"})
    labels = LabelSet.of_model(LABEL_NAMES)
    # the training data's --text-column body: was "no text column ... found: text"
    two = ["an extra text", "one more"]
    assert _file_texts(str(tmp_path / "extra.jsonl"), cfg, labels) == (two, two, [-1, -1])
    lines = ["a line", "another line"]
    assert _file_texts(str(tmp_path / "extra.txt"), cfg, labels) == (lines, lines, [-1, -1])


def test_a_transfer_files_labels_are_checked_only_when_they_are_used(tmp_path):
    from sst2.data.labels import LabelSet
    from sst2.data.splits import LABEL_NAMES, DataError
    from sst2.distillation.transfer import _file_texts
    from sst2.training.config import resolve

    path = tmp_path / "reviews.tsv"  # a star rating where the teacher has negative / positive
    path.write_text("sentence\tlabel\na fine film\t4\na dull film\t1\n")
    labels = LabelSet.of_model(LABEL_NAMES)
    soft_only = resolve(preset="distill", overrides={"distill.hard_weight": 0.0})
    two = ["a fine film", "a dull film"]
    assert _file_texts(str(path), soft_only, labels) == (two, two, [-1, -1])
    mixed = resolve(preset="distill", overrides={"distill.hard_weight": 0.5})
    with pytest.raises(DataError, match=r"reviews\.tsv:2: label '4' is not one of the training labels "
                                        r"\(negative, positive\)$"):
        _file_texts(str(path), mixed, labels)
