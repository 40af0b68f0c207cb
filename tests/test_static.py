"""The static tier (recipe ``static``): model2vec embeddings of the tiny encoder and a CNN head, trained,
saved, reloaded, exported to ONNX and run without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import train_config


@pytest.fixture(scope="module")
def static_run(tiny_backbone_dir, tiny_data_dir, tmp_path_factory):
    from sst2.training.api import train

    out = tmp_path_factory.mktemp("static") / "run"
    metrics = train(train_config(model="static", data=tiny_data_dir, backbone=str(tiny_backbone_dir), out=str(out),
                                 epochs=20, batch_size=8, max_length=32, quiet=True, threads=1, static_dims=16,
                                 filters=8))
    return out, metrics


def test_static_model_learns_the_tiny_task_and_counts_its_table(static_run):
    out, metrics = static_run
    assert metrics["model"] == "static" and metrics["dev_accuracy"] >= 0.9
    # model2vec keeps the 30 words, [PAD] and [UNK] of the 35-token vocabulary (not [CLS], [SEP], [MASK]):
    # a 32 x 16 table (it trains), CNN 16 -> 8 channels at widths 1, 2, 3, a linear layer on max + mean
    assert metrics["static"]["vocab_size"] == 32
    assert metrics["trainable_params"] == 32 * 16 + (16 * 8 * 6 + 3 * 8) + (8 * 3 * 2 + 1)
    assert metrics["static"]["pca_dims"] == 16 and metrics["static"]["library"] == "model2vec"
    spec = json.loads((out / "model" / "sst2_model.json").read_text())
    assert spec["model"] == "static" and spec["head"]["kind"] == "cnn" and spec["head"]["kernel_sizes"] == [1, 2, 3]


def test_static_model_reloads_and_exports_to_an_equal_onnx_graph(static_run):
    from sst2 import SentimentClassifier
    from sst2.config import ExportConfig
    from sst2.inference.export import export

    out, metrics = static_run
    texts = ["the film is good", "the movie was awful and dull", "great"]
    torch_clf = SentimentClassifier.from_pretrained(out / "model")
    assert torch_clf.predict(["a good film", "a bad film"]) == ["positive", "negative"]
    export(ExportConfig(model_dir=str(out / "model")))
    onnx_clf = SentimentClassifier.from_pretrained(out / "model", runtime="onnx")
    assert abs(onnx_clf.predict_proba(texts) - torch_clf.predict_proba(texts)).max() < 1e-5
    # the ONNX path imports neither torch nor transformers
    code = ("import sys; from sst2 import SentimentClassifier; "
            f"c = SentimentClassifier.from_pretrained({str(out / 'model')!r}, runtime='onnx'); "
            "print(c.predict(['a good film'])[0], 'torch' in sys.modules, 'transformers' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["positive", "False", "False"]


def test_the_numpy_runtime_folds_the_convolutions_and_matches_torch(static_run, tiny_model_dir):
    from sst2 import SentimentClassifier
    from sst2.inference.runtimes import RuntimeUnavailableError

    out, _ = static_run
    # lengths 1 to 9 in one batch: padding, and windows that reach past a text's end
    texts = ["great", "the film is good", "the movie was awful and dull", "not good", "dull dull dull film",
             "a good film , not a bad one at all"]
    torch_clf = SentimentClassifier.from_pretrained(out / "model")
    folded = SentimentClassifier.from_pretrained(out / "model", runtime="numpy", threads=1)
    threaded = SentimentClassifier.from_pretrained(out / "model", runtime="numpy", threads=2)
    for batch_size in (1, 64):
        assert abs(folded.predict_logits(texts, batch_size) - torch_clf.predict_logits(texts, batch_size)).max() < 1e-5
    from sst2.data.batching import pad_batch

    assert threaded.workers == 2 and folded.workers == 1  # numpy: calls side by side, one thread each
    many = texts * 20
    assert abs(threaded.predict_logits(many, 8) - torch_clf.predict_logits(many, 8)).max() < 1e-5
    batch = pad_batch(folded.tokenize(["not good", "dull film"])[0], folded.pad_id)  # no padding: the fast path
    assert abs(folded.runner(*batch) - torch_clf.runner(*batch)).max() < 1e-5
    assert folded.predict(texts) == torch_clf.predict(texts)
    code = ("import sys; from sst2 import SentimentClassifier; "
            f"c = SentimentClassifier.from_pretrained({str(out / 'model')!r}, runtime='numpy'); "
            "print(c.predict(['a good film'])[0], *(m in sys.modules for m in ('torch', 'transformers', 'onnxruntime')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["positive", "False", "False", "False"]
    with pytest.raises(RuntimeUnavailableError, match=r"runtime 'numpy' runs the static tier \(a static model with a "
                                                      r"cnn head\); this model is 'efficient' with a 'lstm' head"):
        SentimentClassifier.from_pretrained(tiny_model_dir, runtime="numpy")
    from sst2.inference.runtimes import runtimes_for
    from sst2.modeling.modeldir import read_spec
    assert runtimes_for(read_spec(out / "model")) == ("torch", "onnx", "onnx-int8", "numpy")
    assert runtimes_for(read_spec(tiny_model_dir)) == ("torch", "onnx", "onnx-int8")  # what scripts/latency.py runs


def test_compare_times_each_run_with_its_own_runtime(static_run, tiny_model_dir, tiny_data_dir, tmp_path):
    from sst2.config import CompareConfig, ConfigError
    from sst2.evaluation.compare import compare

    out, _ = static_run
    runs = [str(tiny_model_dir.parent), str(out)]
    data = compare(CompareConfig(runs=runs, runtimes=["torch", "numpy"], data=str(tiny_data_dir), out=str(tmp_path / "c"),
                                 calls=3, warmup=1, repeats=1, threads=1, quiet=True))
    assert [r["runtime"] for r in data["rows"]] == ["torch", "numpy"]
    assert all(r["b1_ms_p50"] > 0 and "inference_error" not in r for r in data["rows"])
    assert "--runtimes torch numpy" in data["conditions"]["command"]
    assert "Inference (runtime per row: efficient (improved): torch; static (model2vec + CNN): numpy, 1 threads" in (
        tmp_path / "c" / "compare.md").read_text()
    with pytest.raises(ConfigError, match=r"runtimes: give one per run directory \(2\), got 1\n  runtimes: must "
                                          r"be one of torch, onnx, onnx-int8, numpy, got 'tf'"):
        CompareConfig(runs=runs, runtimes=["tf"])


def test_static_export_refuses_fuse(static_run):
    from sst2.config import ExportConfig
    from sst2.inference.export import ExportError, export

    out, _ = static_run
    with pytest.raises(ExportError, match="this static model has no encoder"):
        export(ExportConfig(model_dir=str(out / "model"), fuse=True))


def test_kernel_sizes_are_checked():
    from sst2.training.config import ConfigError, resolve

    with pytest.raises(ConfigError, match=r"model.kernel_sizes: expected a list of widths >= 1 such as \[1, 2, 3\], "
                                          r"got \[0, 2\]"):
        resolve(preset="static", overrides={"model.kernel_sizes": [0, 2]})


def test_model2vec_progress_bar_follows_the_run(tiny_backbone_dir, capfd):
    from sst2.modeling.static import StaticBackbone

    StaticBackbone.distill(str(tiny_backbone_dir), 16, progress=False)
    assert "Encoding tokens" not in capfd.readouterr().err  # --quiet, or not a terminal
    StaticBackbone.distill(str(tiny_backbone_dir), 16, progress=True)
    assert "Encoding tokens" in capfd.readouterr().err


def test_a_static_model_of_a_left_truncating_encoder_keeps_the_end_of_a_long_text_in_every_runtime(
        tiny_backbone_dir, tiny_data_dir, tmp_path):
    from conftest import left_truncating_copy
    from sst2 import SentimentClassifier
    from sst2.modeling.model import SentimentModel
    from sst2.training.api import train

    encoder = left_truncating_copy(tiny_backbone_dir, tmp_path / "left")
    out = tmp_path / "run"
    train(train_config(model="static", data=tiny_data_dir, backbone=str(encoder), out=str(out), epochs=1,
                       batch_size=8, max_length=8, quiet=True, threads=1, static_dims=16, filters=8))
    text = "good film " * 10 + "a very dull and awful plot"
    kept = SentimentModel.load(out / "model").tokenizer([text], truncation=True, max_length=8)["input_ids"][0]
    end = SentimentModel.load(out / "model").tokenizer(["a very dull and awful plot"])["input_ids"][0]
    assert len(kept) == 8 and kept[-len(end):] == end  # training keeps the end, as its encoder does (it kept the start)
    for runtime in ("torch", "numpy"):  # before: torch kept the start, numpy the end
        ids, _ = SentimentClassifier.from_pretrained(out / "model", runtime=runtime).tokenize([text])
        assert list(ids[0]) == list(kept), runtime
