"""Classifier API, the three runtimes (ONNX fp32 parity with PyTorch, int8 validity) and ``sst2 predict``."""

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from sst2.cli import main
from sst2.inference.export import PARITY_SENTENCES
from sst2 import SentimentClassifier
from sst2.inference.classifier import Prediction
from sst2.inference.runtimes import RuntimeUnavailableError
from sst2.modeling.model import SentimentModel

from conftest import make_sentences

SENTENCES = PARITY_SENTENCES + [s for s, _ in make_sentences(24, 7)]
LONG = " ".join(["the film is good and"] * 20)  # 100 words > max_length 32 of the tiny model


@pytest.fixture(scope="session")
def torch_clf(tiny_model_dir):
    return SentimentClassifier.from_pretrained(tiny_model_dir, threads=1)


def test_import_sst2_is_cheap_and_classifier_is_lazy():
    code = ("import sys, sst2; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "from sst2 import Classifier; assert Classifier.__name__ == 'Classifier'")
    subprocess.run([sys.executable, "-c", code], check=True)


def reference_logits(model_dir, texts) -> np.ndarray:
    """The model's forward pass on each text alone, tokenized here: no batching, no padding."""
    from sst2.data.text import normalize_texts

    model = SentimentModel.load(model_dir)
    out = []
    with torch.no_grad():
        for t in normalize_texts(texts, model.text_normalization):
            enc = model.tokenizer([t], truncation=True, max_length=model.max_length, return_tensors="pt")
            out.append(model(enc["input_ids"], enc["attention_mask"]).item())
    return np.array(out)


def test_predict_matches_the_reference_model_in_input_order(tiny_model_dir, torch_clf):
    preds = torch_clf.predict_details(SENTENCES, batch_size=5)
    assert len(preds) == len(SENTENCES) and all(isinstance(p, Prediction) for p in preds)
    from sst2.calibration import probabilities

    # the stored temperature (fitted on dev) applies to every runtime
    ref = probabilities(reference_logits(tiny_model_dir, SENTENCES), torch_clf.temperature)[:, 1]
    assert torch_clf.temperature != 1.0
    np.testing.assert_allclose([p.positive_prob for p in preds], ref, atol=1e-6)
    assert [p.label for p in preds] == ["positive" if r > 0.5 else "negative" for r in ref]
    # batching (and so padding) does not change a prediction
    one_by_one = [torch_clf.predict_details([s])[0].positive_prob for s in SENTENCES[:6]]
    np.testing.assert_allclose(one_by_one, [p.positive_prob for p in preds[:6]], atol=1e-6)


@pytest.mark.parametrize("runtime", ["torch", "onnx-int8"])
def test_concurrent_workers_give_the_same_predictions_in_input_order(exported_dir, runtime):
    one = SentimentClassifier.from_pretrained(exported_dir, runtime=runtime, threads=1)
    two = SentimentClassifier.from_pretrained(exported_dir, runtime=runtime, threads=1, workers=2)
    calls = []
    got = two.predict_details(SENTENCES, batch_size=4, progress=calls.append)
    ref = one.predict_details(SENTENCES, batch_size=4)
    assert [p.label for p in got] == [p.label for p in ref]
    np.testing.assert_allclose([p.positive_prob for p in got], [p.positive_prob for p in ref], atol=1e-6)
    assert sum(calls) == len(SENTENCES) and len(calls) >= len(SENTENCES) // 4  # one report per model call
    with pytest.raises(ValueError, match="^workers must be an integer >= 1, got 0$"):
        SentimentClassifier.from_pretrained(exported_dir, runtime=runtime, workers=0)
    for bad in (0, -1, 1.5):  # 0 was taken as the default, -1 failed inside torch or onnxruntime
        with pytest.raises(ValueError, match=f"^threads must be an integer >= 1, got {bad}$"):
            SentimentClassifier.from_pretrained(exported_dir, runtime=runtime, threads=bad)


def test_truncation_is_reported(torch_clf):
    short, long_ = torch_clf.predict_details(["good film", LONG])
    assert not short.truncated and long_.truncated
    assert 0 <= long_.positive_prob <= 1
    # the truncated text is scored on its first max_length tokens, as SentimentModel does
    ids, truncated = torch_clf.tokenize([LONG])
    assert truncated == [True] and len(ids[0]) == torch_clf.max_length
    two = Prediction("positive", {"negative": 0.1, "positive": 0.9}, False)
    assert two.to_dict() == {"label": "positive", "positive_prob": 0.9,
                             "probabilities": {"negative": 0.1, "positive": 0.9}, "truncated": False, "windows": 1}
    three = Prediction("b", {"a": 0.2, "b": 0.5, "c": 0.3}, True).to_dict()
    assert "positive_prob" not in three and three["probabilities"] == {"a": 0.2, "b": 0.5, "c": 0.3}
    other = Prediction("pos", {"pos": 0.1, "neg": 0.9}, False).to_dict()  # --labels pos,neg
    assert "positive_prob" not in other  # it was 0.9, P(neg), named the probability of "positive"
    # the property too: it gave the last label's probability (P(neg) here, P(c) for three classes)
    assert Prediction("pos", {"pos": 0.9, "neg": 0.1}, False).positive_prob is None
    assert Prediction("b", {"a": 0.2, "b": 0.5, "c": 0.3}, True).positive_prob is None
    assert Prediction("positive", {"positive": 0.7, "negative": 0.3}, False).positive_prob == 0.7


def test_predict_edge_cases(torch_clf, tiny_model_dir):
    assert torch_clf.predict_details([]) == []
    with pytest.raises(TypeError, match="a list of texts"):
        torch_clf.predict_details("good film")
    with pytest.raises(RuntimeUnavailableError, match="unknown runtime 'tensorrt'"):
        SentimentClassifier.from_pretrained(tiny_model_dir, runtime="tensorrt")


@pytest.mark.parametrize("runtime,flag", [("onnx", ""), ("onnx-int8", " --int8")])
def test_missing_onnx_file_names_the_export_command(tiny_model_dir, runtime, flag):
    with pytest.raises(RuntimeUnavailableError, match=rf"run 'sst2 export --model-dir \S+{flag}' first"):
        SentimentClassifier.from_pretrained(tiny_model_dir, runtime=runtime)


def test_onnx_fp32_matches_pytorch(exported_dir, torch_clf):
    onnx = SentimentClassifier.from_pretrained(exported_dir, runtime="onnx", threads=1)
    for batch_size in (1, 3, 64):  # dynamic batch and sequence axes, with and without padding
        got = onnx.predict_details(SENTENCES + [LONG], batch_size=batch_size)
        ref = torch_clf.predict_details(SENTENCES + [LONG], batch_size=batch_size)
        assert [p.label for p in got] == [p.label for p in ref]
        assert [p.truncated for p in got] == [p.truncated for p in ref]
        diff = np.abs(np.array([p.positive_prob for p in got]) - [p.positive_prob for p in ref])
        assert diff.max() < 1e-4  # fp32 parity: max |probability difference| with PyTorch


def _op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_export_fuse_gives_onnxruntime_transformer_ops_and_the_same_predictions(exported_dir, tmp_path, torch_clf):
    plain = _op_types(exported_dir / "model.onnx")  # the default: the plain traced graph
    assert "Attention" not in plain and "Softmax" in plain

    fused_dir = tmp_path / "model"
    shutil.copytree(exported_dir, fused_dir)
    assert main(["export", "--model-dir", str(fused_dir), "--fuse", "--int8", "--quiet", "--threads", "1"]) == 0
    fused = _op_types(fused_dir / "model.onnx")
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= fused
    assert "Softmax" not in fused  # every attention block was fused, none left as loose ops
    assert "QAttention" in _op_types(fused_dir / "model.int8.onnx")
    for batch_size in (1, 64):  # padding goes through the fused attention's mask
        got = SentimentClassifier.from_pretrained(fused_dir, runtime="onnx", threads=1).predict_details(SENTENCES + [LONG], batch_size)
        ref = torch_clf.predict_details(SENTENCES + [LONG], batch_size)
        assert max(abs(a.positive_prob - b.positive_prob) for a, b in zip(got, ref)) < 1e-4  # fp32 parity


def test_export_leaves_the_model_attention_as_it_was(tiny_model_dir, tmp_path):
    from sst2.inference.export import export_onnx

    model = SentimentModel.load(tiny_model_dir)
    before = model.backbone.encoder.config._attn_implementation
    export_onnx(model, tmp_path / "m.onnx", eager=True)
    assert model.backbone.encoder.config._attn_implementation == before


def test_an_export_that_fails_its_check_or_is_interrupted_keeps_the_earlier_files(tiny_model_dir, tmp_path,
                                                                                     monkeypatch, capsys):
    import sst2.inference.export as export_module

    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "model.onnx").write_bytes(b"an earlier export")
    from sst2.system import host_tag

    host = host_tag()
    (model_dir / f".export-{host}-999999-abcd_123").mkdir()  # left by an export killed with -9: process gone
    (model_dir / f".export-{host}-1-y2345678").mkdir()  # process 1 runs: an export in progress, kept
    (model_dir / ".export-2024-12-07-notes").mkdir()  # the user's: kept (it was removed as a stale temporary)
    (model_dir / ".export-2024-12-07-notes" / "todo.txt").write_text("mine")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the int8 file is written
    monkeypatch.setattr(export_module, "quantize_int8", stop)
    assert main(["export", "--model-dir", str(model_dir), "--int8"]) == 130  # sst2: "interrupted"
    assert (model_dir / "model.onnx").read_bytes() == b"an earlier export"  # the new one was not yet checked
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([p.name for p in tiny_model_dir.iterdir()]
                                                                 + ["model.onnx", f".export-{host}-1-y2345678",
                                                                    ".export-2024-12-07-notes"])
    assert main(["export", "--model-dir", str(model_dir), "--opset", "24"]) == 2
    assert "opset: must be from 14 to 20 (the TorchScript exporter's newest), got 24" in capsys.readouterr().err


def test_onnx_int8_stays_close_to_pytorch(exported_dir, torch_clf):
    """int8 weights cost a little precision, never a clear-cut label. On the tiny model the measured max
    |probability difference| from PyTorch was 4.0e-4 over these 32 sentences; the bound allows 5x that."""
    assert (exported_dir / "model.int8.onnx").stat().st_size > 0
    int8 = SentimentClassifier.from_pretrained(exported_dir, runtime="onnx-int8", threads=1, spin=False)  # as sst2 serve loads it
    probs = np.array([p.positive_prob for p in int8.predict_details(SENTENCES)])
    ref = np.array([p.positive_prob for p in torch_clf.predict_details(SENTENCES)])
    assert np.all(np.isfinite(probs)) and np.all((probs >= 0) & (probs <= 1))
    assert np.abs(probs - ref).max() <= 2e-3
    clear = np.abs(ref - 0.5) > 2e-3  # labels that a 2e-3 change cannot flip
    assert clear.sum() >= len(SENTENCES) // 2  # (not a vacuous check: all 32 are clear-cut on the tiny model)
    assert np.array_equal((probs > 0.5)[clear], (ref > 0.5)[clear])


def test_int8_keeps_the_ops_named_in_keep_fp32(exported_dir, tmp_path):
    import onnx

    from sst2.inference.export import quantize_int8

    def head_ops(path):
        return {n.op_type for n in onnx.load(str(path)).graph.node if n.name.startswith("/head/proj/")}

    quantize_int8(exported_dir / "model.onnx", tmp_path / "all.onnx")
    quantize_int8(exported_dir / "model.onnx", tmp_path / "kept.onnx", keep_fp32=(r"^/head/",))
    assert "MatMulInteger" in head_ops(tmp_path / "all.onnx")
    assert "MatMul" in head_ops(tmp_path / "kept.onnx") and "MatMulInteger" not in head_ops(tmp_path / "kept.onnx")
    assert "MatMulInteger" in _op_types(tmp_path / "kept.onnx")  # the encoder is still quantized


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_cli_predict_from_arguments(exported_dir, capsys):
    assert main(["predict", "--model-dir", str(exported_dir), "--runtime", "onnx", "good film", "dull plot"]) == 0
    rows = _lines(capsys.readouterr().out)
    assert [r["text"] for r in rows] == ["good film", "dull plot"]
    assert all(set(r) == {"text", "label", "positive_prob", "probabilities", "truncated", "windows"} for r in rows)
    assert all(r["label"] in ("negative", "positive") and 0 <= r["positive_prob"] <= 1 for r in rows)


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_cli_predict_from_file_and_stdin_agree(tiny_model_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "in.txt").write_text("good film\r\nthe plot is dull\n" + LONG + "\n", encoding="utf-8")
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", str(tmp_path / "in.txt"), "--quiet"]) == 0
    from_file = _lines(capsys.readouterr().out)
    assert [r["text"] for r in from_file] == ["good film", "the plot is dull", LONG]
    assert [r["truncated"] for r in from_file] == [False, False, True]
    _stdin(monkeypatch, (tmp_path / "in.txt").read_bytes())
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--chunk", "2"]) == 0  # chunks: the same output
    assert _lines(capsys.readouterr().out) == from_file


def test_cli_predict_gives_one_output_line_per_input_line(tiny_model_dir, tmp_path, capsys):
    # str.splitlines() also breaks at these; a line of input is what ends with \n
    odd = ["a\x0bgood film", "dull\x0c plot", "x\x1cy\x1dz\x1e film", "good\x85 film", "bad\u2028film", "ok\u2029"]
    (tmp_path / "in.txt").write_text("\n".join(odd) + "\n", encoding="utf-8")
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", str(tmp_path / "in.txt")]) == 0
    assert [r["text"] for r in _lines(capsys.readouterr().out)] == odd


def test_cli_predict_rejects_bad_lines_the_same_way_from_a_file_and_stdin(tiny_model_dir, tmp_path, capsys,
                                                                          monkeypatch):
    bad = b"good film\ngood \xff film\n"
    (tmp_path / "bad.txt").write_bytes(bad)
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"sst2 predict: error: {tmp_path / 'bad.txt'}:2: not UTF-8 (invalid start byte at byte 6 "
                           f"of the line)")
    _stdin(monkeypatch, bad)
    assert main(["predict", "--model-dir", str(tiny_model_dir)]) == 2
    assert capsys.readouterr().err.strip() == ("sst2 predict: error: <stdin>:2: not UTF-8 (invalid start byte at "
                                               "byte 6 of the line)")
    _stdin(monkeypatch, b"good film\n\nbad film\n")
    assert main(["predict", "--model-dir", str(tiny_model_dir)]) == 2
    assert capsys.readouterr().err.strip() == "sst2 predict: error: <stdin>:2: empty text"
    assert main(["predict", "--model-dir", str(tiny_model_dir), "good", " "]) == 2
    assert capsys.readouterr().err.strip() == "sst2 predict: error: texts[1]: empty text"
    assert main(["predict", "--model-dir", str(tiny_model_dir), "bad \ud800 text"]) == 2
    assert capsys.readouterr().err.strip() == ("sst2 predict: error: texts[0]: not valid Unicode text (a lone "
                                               "surrogate at character 5)")


def test_cli_predict_never_prints_nan(tiny_model_dir, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    head = load_file(broken / "head.safetensors")
    head = {k: v.fill_(float("nan")) if k.endswith("fc.bias") else v for k, v in head.items()}
    save_file(head, broken / "head.safetensors", metadata={"format": "sst2-model/1"})
    assert main(["predict", "--model-dir", str(broken), "good film"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == ("sst2 predict: error: texts[0]: the model gave a "
                                                          "probability of nan (its weights are not finite numbers); "
                                                          "retrain or re-export it")


def test_cli_predict_with_workers_matches_one_worker(exported_dir, capsys):
    args = ["predict", "--model-dir", str(exported_dir), "--runtime", "onnx", "--batch-size", "2", *SENTENCES[:7]]
    assert main(args) == 0
    one = _lines(capsys.readouterr().out)
    assert main(args + ["--workers", "2"]) == 0
    assert _lines(capsys.readouterr().out) == one
    assert main(args + ["--workers", "0"]) == 2
    assert "workers: must be >= 1, got 0" in capsys.readouterr().err


def test_cli_predict_errors(tiny_model_dir, tmp_path, capsys, monkeypatch):
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--runtime", "onnx", "good"]) == 2
    assert "run 'sst2 export --model-dir" in capsys.readouterr().err
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt: file not found" in capsys.readouterr().err
    _stdin(monkeypatch, b"")
    assert main(["predict", "--model-dir", str(tiny_model_dir)]) == 2
    assert "<stdin>: no texts to classify" in capsys.readouterr().err
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", "x.txt", "good"]) == 2
    assert "not both" in capsys.readouterr().err


def test_split_padded_is_optimal_and_covers_every_row():
    import itertools

    from sst2.data.batching import split_padded

    assert split_padded([12] * 64) == [(0, 64)]  # equal lengths: one call
    assert split_padded([]) == []
    lengths = [3, 4, 9, 10, 11, 30]

    def cost(runs):
        return sum(8 + (hi - lo) * lengths[hi - 1] for lo, hi in runs)

    runs = split_padded(lengths, call_cost=8)
    assert [r[0] for r in runs][0] == 0 and runs[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    cuts = range(1, len(lengths))
    every = [[(lo, hi) for lo, hi in zip((0, *c), (*c, len(lengths)))]
             for k in range(len(lengths)) for c in itertools.combinations(cuts, k)]
    assert cost(runs) == min(cost(r) for r in every)
    # with repeated lengths (it plans over the ends of runs of equal lengths only): still the optimum
    import random

    rng = random.Random(0)
    for _ in range(300):
        lengths = sorted(rng.choice([1, 2, 3, 5, 8, 13, 20]) for _ in range(rng.randint(1, 8)))
        call_cost = rng.choice([0, 1, 8, 30])
        runs = split_padded(lengths, call_cost=call_cost)
        assert runs[0][0] == 0 and runs[-1][1] == len(lengths) and all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
        every = [[(lo, hi) for lo, hi in zip((0, *c), (*c, len(lengths)))]
                 for k in range(len(lengths)) for c in itertools.combinations(range(1, len(lengths)), k)]
        best = min(sum(call_cost + (hi - lo) * lengths[hi - 1] for lo, hi in r) for r in every)
        assert sum(call_cost + (hi - lo) * lengths[hi - 1] for lo, hi in runs) == best


def test_treebank_and_plain_text_give_the_same_tokens(tiny_model_dir, torch_clf):
    """The saved model records its text normalization and every runtime applies it before tokenizing."""
    assert SentimentModel.load(tiny_model_dir).text_normalization == "contractions"
    treebank, plain = "it does n't look like a good film .", "it doesn't look like a good film ."
    assert torch_clf.tokenize([treebank])[0] == torch_clf.tokenize([plain])[0]
    assert np.array_equal(reference_logits(tiny_model_dir, [treebank]), reference_logits(tiny_model_dir, [plain]))


def test_the_onnx_paths_tokenizer_gives_the_same_ids_as_the_models(exported_dir, torch_clf):
    from sst2.data.text import normalize_texts

    onnx = SentimentClassifier.from_pretrained(exported_dir, runtime="onnx", threads=1)
    texts = SENTENCES + [LONG, "it doesn't look good", "ünïcödé and 'quotes'"]
    hf = torch_clf.model.tokenizer(normalize_texts(texts, "contractions"), truncation=True,
                                   max_length=torch_clf.max_length)["input_ids"]
    assert onnx.tokenize(texts)[0] == torch_clf.tokenize(texts)[0] == hf
    assert onnx.pad_id == torch_clf.pad_id == 0
    assert onnx.tokenize([LONG, "good"])[1] == [True, False]


def test_predict_with_onnx_does_not_import_torch(exported_dir):
    code = ("import sys; from sst2.cli import main; "
            f"rc = main(['predict', '--model-dir', {str(exported_dir)!r}, '--runtime', 'onnx-int8', 'good film']); "
            "assert rc == 0 and 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_long_texts_are_scored_as_overlapping_windows_and_averaged(tiny_model_dir, exported_dir, torch_clf):
    from sst2.calibration import probabilities

    win = SentimentClassifier.from_pretrained(tiny_model_dir, threads=1, long_texts="windows", window_overlap=8)
    # the model's own window length: 90 % of its training texts fit (at least 16 tokens)
    assert win.spec["window_length"] == win.window_length == 16 < win.max_length
    windows = win.windows([LONG])[0]
    assert len(windows) > 1 and all(len(w) <= win.window_length for w in windows)
    assert all(w[0] == windows[0][0] and w[-1] == windows[0][-1] for w in windows)  # [CLS] ... [SEP] each
    # each window alone through the model, then the mean of the calibrated probabilities
    alone = np.concatenate([win.logits_from_ids([w]) for w in windows])
    expected = probabilities(alone, win.temperature).mean(0)
    (pred,) = win.predict_details([LONG])
    assert pred.windows == len(windows) and not pred.truncated
    np.testing.assert_allclose(list(pred.probabilities.values()), expected, atol=1e-6)
    # a text that fits is one window, scored exactly as with truncation
    short = ["good film", "the plot is dull"]
    np.testing.assert_allclose(win.predict_proba(short), torch_clf.predict_proba(short), atol=1e-7)
    onnx = SentimentClassifier.from_pretrained(exported_dir, runtime="onnx", threads=1, long_texts="windows",
                                               window_overlap=8)
    np.testing.assert_allclose(onnx.predict_proba([LONG]), win.predict_proba([LONG]), atol=1e-4)
    with pytest.raises(ValueError, match="window_overlap must be in 0..13, got 40"):  # windows of 16 tokens
        SentimentClassifier.from_pretrained(tiny_model_dir, long_texts="windows", window_overlap=40)


def test_a_model_windows_long_texts_as_long_as_90_percent_of_its_training_texts():
    from sst2.features.sources import window_length_for

    assert window_length_for(np.arange(1, 101), 128) == 91  # the 90th percentile, rounded up
    assert window_length_for(np.full(50, 5), 128) == 16  # never below 16 tokens
    assert window_length_for(np.full(50, 300), 128) == 128  # never beyond max_length
    assert window_length_for(np.array([], dtype=int), 64) == 64


def test_window_length_sets_the_windows_and_a_quarter_of_it_their_overlap(tiny_model_dir, exported_dir):
    win = SentimentClassifier.from_pretrained(tiny_model_dir, threads=1, long_texts="windows", window_length=12)
    assert (win.window_length, win.window_overlap) == (12, 3)
    windows = win.windows([LONG, "good film"])
    assert len(windows[0]) > 1 and all(len(w) <= 12 for w in windows[0])
    assert windows[0][1][1:4] == windows[0][0][-4:-1]  # 3 tokens shared (between [CLS] and [SEP])
    assert windows[1] == [win.tokenize(["good film"])[0][0]]  # a text that fits: one window
    onnx = SentimentClassifier.from_pretrained(exported_dir, runtime="onnx", threads=1, long_texts="windows",
                                               window_length=12)
    np.testing.assert_allclose(onnx.predict_proba([LONG]), win.predict_proba([LONG]), atol=1e-4)
    with pytest.raises(ValueError, match=r"window_length must be in 3..32 \(the model's max_length\), got 33"):
        SentimentClassifier.from_pretrained(tiny_model_dir, long_texts="windows", window_length=33)
    with pytest.raises(ValueError, match="window_overlap must be in 0..9, got 10"):
        SentimentClassifier.from_pretrained(tiny_model_dir, long_texts="windows", window_length=12, window_overlap=10)
    for name, value in (("window_length", 20.5), ("window_length", "20"), ("window_overlap", 2.5)):
        with pytest.raises(ValueError, match=f"^{name} must be an integer, got {value!r}$"):  # was a TypeError
            SentimentClassifier.from_pretrained(tiny_model_dir, long_texts="windows", **{name: value})
    assert SentimentClassifier.from_pretrained(tiny_model_dir, long_texts="windows",
                                               window_length=np.int64(12)).window_length == 12


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet", "tsv"])
def test_cli_predict_a_table_keeps_every_column_and_writes_its_format(ext, tiny_model_dir, tmp_path, capsys):
    from sst2.data.rows import RowWriter, iter_rows

    rows = [{"id": i, "review": t, "stars": i % 5} for i, t in enumerate(SENTENCES[:10])]
    src = tmp_path / f"in.{ext}"
    with RowWriter(src, ext) as w:
        w.write(rows)
    out = tmp_path / f"out.{ext}"
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", str(src), "--output", str(out),
                 "--chunk", "4"]) == 0
    got = [r for chunk in iter_rows(out, ext) for r in chunk]
    assert [str(r["id"]) for r in got] == [str(r["id"]) for r in rows]  # every row, in order, columns kept
    assert [r["review"] for r in got] == SENTENCES[:10] and "stars" in got[0]
    clf = SentimentClassifier.from_pretrained(tiny_model_dir)
    assert [r["label"] for r in got] == clf.predict(SENTENCES[:10])
    np.testing.assert_allclose([float(r["prob_positive"]) for r in got], clf.predict_proba(SENTENCES[:10])[:, 1],
                               atol=1e-6)
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", str(src), "--output", str(out)]) == 2
    assert "output file already exists (pass --overwrite to replace it)" in capsys.readouterr().err
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", str(src)]) == 0  # JSON lines to stdout
    # CSV and TSV values are read as the strings they are
    assert [str(json.loads(x)["id"]) for x in capsys.readouterr().out.splitlines()] == [str(r["id"]) for r in rows]


def test_cli_window_length_reaches_evaluate_and_predict(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "long.csv").write_text(f"text,label\n{LONG},positive\ngood film,positive\n")
    args = ["--long-texts", "windows", "--window-length", "12"]
    assert main(["evaluate", "--model-dir", str(tiny_model_dir), "--file", str(tmp_path / "long.csv"), "--json",
                 *args]) == 0
    m = json.loads(capsys.readouterr().out)
    assert (m["long_texts"], m["window_length"], m["window_overlap"], m["n"]) == ("windows", 12, 3, 2)
    assert main(["predict", "--model-dir", str(tiny_model_dir), *args, LONG]) == 0
    expected = len(SentimentClassifier.from_pretrained(tiny_model_dir, long_texts="windows", window_length=12)
                   .windows([LONG])[0])
    assert json.loads(capsys.readouterr().out)["windows"] == expected > 1
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--long-texts", "windows", "--window-length", "40",
                 "good"]) == 2
    assert "window_length must be in 3..32 (the model's max_length), got 40" in capsys.readouterr().err


def test_predict_options_that_cannot_apply_are_refused(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"sentence\tlabel\ngood\t1\n")))
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--format", "tsv"]) == 2  # was a TypeError traceback
    assert capsys.readouterr().err.strip() == ("sst2 predict: error: invalid predict options:\n  format: goes with an "
                                               "--input table file; arguments and standard input are read one text a "
                                               "line")
    (tmp_path / "a.txt").write_text("good film\n")
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--input", str(tmp_path / "a.txt"), "--text-column",
                 "nope"]) == 2  # was ignored
    assert "text_column: goes with an --input table" in capsys.readouterr().err
    assert main(["predict", "--model-dir", str(tiny_model_dir), "--window-length", "16", "good film"]) == 2
    assert capsys.readouterr().err.strip() == ("sst2 predict: error: window_length goes with long_texts='windows' "
                                               "(--long-texts windows); long_texts is 'truncate'")
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    assert main(["export", "--model-dir", str(tmp_path / "m"), "--json", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["files"]["onnx"]["parity"]["n"] > 0  # a text line came first


def test_a_left_truncating_tokenizer_keeps_the_end_of_a_text_at_inference_as_in_training(
        tiny_backbone_dir, tiny_data_dir, tmp_path):
    from conftest import left_truncating_copy, train_config
    from sst2.cli import main
    from sst2.modeling.backbone import Backbone
    from sst2.training.api import train

    encoder = left_truncating_copy(tiny_backbone_dir, tmp_path / "left")
    out = tmp_path / "run"
    train(train_config(data=tiny_data_dir, backbone=str(encoder), out=str(out), cache_dir=str(tmp_path / "c"),
                       epochs=1, batch_size=8, max_length=8, quiet=True, threads=1))
    assert main(["export", "--model-dir", str(out / "model"), "--quiet", "--threads", "1"]) == 0
    text = "good film " * 10 + "a very dull and awful plot"
    trained = Backbone.load(str(encoder)).tokenize([text], max_length=8, pad=False)["input_ids"][0]
    for runtime in ("torch", "onnx"):
        clf = SentimentClassifier.from_pretrained(out / "model", runtime=runtime)
        ids, _ = clf.tokenize([text])
        assert list(ids[0]) == list(trained), runtime  # before: the first 8 tokens, not the last
