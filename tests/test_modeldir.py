"""A damaged model directory is one clear error naming the file and what is wrong, exit status 2, in
every command that loads one (predict, evaluate, export, serve)."""

from __future__ import annotations

import json
import shutil

import pytest

from sst2.cli import main


def _spec(d):
    return json.loads((d / "sst2_model.json").read_text())


def _write_spec(d, spec):
    (d / "sst2_model.json").write_text(json.dumps(spec))


def _head_shape_changed(d):
    spec = _spec(d)
    spec["head"]["proj_size"] += 1
    _write_spec(d, spec)


DAMAGE = {
    "missing head": (lambda d: (d / "head.safetensors").unlink(), r"head\.safetensors: missing$"),
    "garbage spec": (lambda d: (d / "sst2_model.json").write_text("{not json"), r"sst2_model\.json: not valid JSON"),
    "spec not an object": (lambda d: (d / "sst2_model.json").write_text("[1, 2]"),
                           r"sst2_model\.json: expected a JSON object, got an array$"),
    "missing field": (lambda d: _write_spec(d, {k: v for k, v in _spec(d).items() if k != "head"}),
                      r"sst2_model\.json: field 'head' is missing or not a dict$"),
    "unknown head field": (lambda d: _write_spec(d, {**_spec(d), "head": {**_spec(d)["head"], "wings": 2}}),
                           r"sst2_model\.json: does not describe a model this encoder can run \(.*wings"),
    "changed size": (_head_shape_changed, r"head\.safetensors: cannot load the head weights \(.*size mismatch"),
    "garbage weights": (lambda d: (d / "head.safetensors").write_bytes(b"\x00garbage" * 10),
                        r"head\.safetensors: cannot load the head weights"),
    "truncated weights": (lambda d: (d / "head.safetensors").write_bytes((d / "head.safetensors").read_bytes()[:200]),
                          r"head\.safetensors: cannot load the head weights"),
    "bad normalization": (lambda d: _write_spec(d, {**_spec(d), "text_normalization": "shout"}),
                          r"sst2_model\.json: unknown text_normalization 'shout' \(one of none, contractions, treebank\)$"),
    "max_length beyond the encoder": (lambda d: _write_spec(d, {**_spec(d), "max_length": 100000}),
                                      r"sst2_model\.json: max_length 100000 is more than the encoder's 64 positions$"),
    "window beyond max_length": (lambda d: _write_spec(d, {**_spec(d), "window_length": 33}),
                                 r"sst2_model\.json: window_length must be an integer in 3\.\.max_length, got 33$"),
    # before: a negative temperature flipped every label, 0 / null / "abc" gave a traceback
    "negative temperature": (lambda d: _write_spec(d, {**_spec(d), "temperature": -1.0}),
                             r"sst2_model\.json: temperature must be a finite number > 0, got -1\.0$"),
    "temperature not a number": (lambda d: _write_spec(d, {**_spec(d), "temperature": None}),
                                 r"sst2_model\.json: temperature must be a finite number > 0, got None$"),
    # before: a third label dropped without a word, a name twice hid one class, a string gave labels p, o, s
    "labels not matching the head": (lambda d: _write_spec(d, {**_spec(d), "labels": ["a", "b", "c"]}),
                                     r"sst2_model\.json: labels must be 2 distinct names \(the head has 1 output\), "
                                     r"got \['a', 'b', 'c'\]$"),
    "a label twice": (lambda d: _write_spec(d, {**_spec(d), "labels": ["a", "a"]}),
                      r"sst2_model\.json: labels must be 2 distinct names .*got \['a', 'a'\]$"),
    "labels a string": (lambda d: _write_spec(d, {**_spec(d), "labels": "negative,positive"}),
                        r"sst2_model\.json: labels must be a list of label names \(strings\), "
                        r"got 'negative,positive'$"),
    # before: the torch runtime built an empty vocabulary (every word [UNK]) and predicted without a word
    "no tokenizer": (lambda d: (d / "encoder" / "tokenizer.json").unlink(),
                     r"encoder/tokenizer\.json: missing \(a model directory holds the tokenizer it was trained with\)$"),
    # before: "sst2_model.json: does not describe a model this encoder can run (... no file named ...)"
    "no encoder weights": (lambda d: (d / "encoder" / "model.safetensors").unlink(),
                           r"/encoder: cannot load the encoder \(.*no file named model\.safetensors"),
    "no encoder folder": (lambda d: shutil.rmtree(d / "encoder"),
                          r"encoder: missing \(a model directory holds the encoder it was trained with\)$"),
}


def _commands(d, data):
    return {"predict": ["predict", "--model-dir", str(d), "good film"],
            "evaluate": ["evaluate", "--model-dir", str(d), "--data", str(data), "--split", "dev"],
            "export": ["export", "--model-dir", str(d), "--quiet"],
            "serve": ["serve", "--model-dir", str(d), "--port", "0"]}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_model_directory_is_a_clear_error(damage, tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    harm, message = DAMAGE[damage]
    harm(d)
    for name, argv in _commands(d, tiny_data_dir).items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"sst2 {name}: error: "), (name, err)
        assert len(err.splitlines()) == 1, (name, err)  # one line, no traceback
        import re

        assert re.search(message, err), (name, err)


def test_garbage_onnx_file_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    (d / "model.int8.onnx").write_bytes(b"not an onnx graph")
    assert main(["predict", "--model-dir", str(d), "--runtime", "onnx-int8", "good film"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sst2 predict: error: {d / 'model.int8.onnx'}: not a loadable ONNX model (")
    assert err.endswith("re-run 'sst2 export' to write it again")


def test_a_run_directory_given_as_the_model_names_its_model(tiny_model_dir, capsys):
    run = tiny_model_dir.parent
    assert main(["predict", "--model-dir", str(run), "good film"]) == 2
    assert capsys.readouterr().err.strip() == (f"sst2 predict: error: {run}: not an sst2 model directory "
                                               f"(sst2_model.json not found); a run directory: its model is "
                                               f"{run / 'model'}")
