"""The Python API (``from sst2 import SentimentClassifier, fit``) and the config files that re-run a run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sst2.cli import main

from conftest import make_sentences


def texts_labels(n: int, seed: int):
    rows = make_sentences(n, seed)
    return [s for s, _ in rows], [y for _, y in rows]


@pytest.fixture(scope="module")
def fitted(tiny_backbone_dir, tmp_path_factory):
    from sst2 import fit

    train_x, train_y = texts_labels(256, 11)
    dev_x, dev_y = texts_labels(64, 12)
    cache = tmp_path_factory.mktemp("api-cache")
    clf, report = fit(train_x, train_y, dev_x, dev_y, backbone=str(tiny_backbone_dir), epochs=8, batch_size=16,
                      lr=3e-3, max_length=32, cache_dir=str(cache), threads=1)
    return clf, report, dev_x, dev_y


def test_public_names_and_lazy_import():
    code = ("import sys, sst2; assert 'torch' not in sys.modules; "
            "from sst2 import SentimentClassifier, fit; "
            "assert sorted(sst2.__all__) == ['Classifier', 'SentimentClassifier', 'TrainConfig', 'distill', 'fit', "
            "'train']")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_on_lists_returns_a_classifier_with_label_names(fitted):
    clf, report, dev_x, dev_y = fitted
    assert clf.labels == ["negative", "positive"]
    assert clf.predict("a great film") in ("negative", "positive")
    assert clf.predict("the film is very great and superb .") == "positive"
    assert clf.predict("the film is very awful and dull .") == "negative"
    labels = clf.predict(dev_x)
    assert isinstance(labels, list) and len(labels) == len(dev_x)
    accuracy = np.mean([clf.labels.index(y) == t for y, t in zip(labels, dev_y)])
    assert accuracy == pytest.approx(report["dev_accuracy"]) and accuracy >= 0.8
    assert report["train_size"] == 256 and report["dev_size"] == 64 and "test_accuracy" in report


def test_predict_proba_rows_sum_to_one_in_label_order(fitted):
    clf, _, dev_x, _ = fitted
    proba = clf.predict_proba(dev_x)
    assert proba.shape == (len(dev_x), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    assert [clf.labels[k] for k in proba.argmax(1)] == clf.predict(dev_x)
    assert clf.predict_proba("a great film").shape == (1, 2)


def test_save_pretrained_drops_the_old_models_exports_and_refuses_a_folder_of_other_files(fitted, tmp_path):
    from sst2 import SentimentClassifier
    from sst2.modeling.modeldir import ModelDirError

    clf = fitted[0]
    clf.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.onnx").write_bytes(b"the previous model's export")
    (tmp_path / "m" / "notes.txt").write_text("mine")
    clf.save_pretrained(tmp_path / "m")  # over a model directory: its export would serve the old weights
    assert not (tmp_path / "m" / "model.onnx").exists() and (tmp_path / "m" / "notes.txt").read_text() == "mine"
    assert SentimentClassifier.from_pretrained(tmp_path / "m").predict("a great film") == clf.predict("a great film")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "README.md").write_text("my project")
    with pytest.raises(ModelDirError, match=f"^refusing to write a model into {proj}: it is not empty and not an "
                                            r"sst2 model directory \(its files would be replaced\)$"):
        clf.save_pretrained(proj)
    assert (proj / "README.md").read_text() == "my project"


def test_careless_inputs_to_the_classifier_get_an_error_not_a_wrong_answer(fitted, tiny_backbone_dir):
    from sst2 import fit
    from sst2.data.splits import DataError
    from sst2.inference.classifier import OptionError

    clf, _, dev_x, _ = fitted
    for bad in (-1, 0, 2.5):  # -1 returned [] for any texts; 0 and 2.5 crashed inside the batching
        with pytest.raises(OptionError, match=f"^batch_size must be an integer >= 1, got {bad}$"):
            clf.predict(dev_x[:3], batch_size=bad)
    arr = np.array(dev_x[:3])
    assert [p.label for p in clf.predict_details(arr)] == clf.predict(list(arr))  # an array was "ambiguous"
    with pytest.raises(TypeError, match=r"^texts must be strings, not bytes: decode them first"):
        clf.predict(b"good film")
    class Table(list):  # stands for a DataFrame, which iterates over its column names
        columns = ["text"]
    with pytest.raises(TypeError, match=r"^texts is a table \(Table\): pass one of its columns, such as df\['text'\]$"):
        clf.predict_proba(Table(["text"]))
    with pytest.raises(DataError, match="^train_labels: training needs a label for every text, got None$"):
        fit(["good", "bad"], None, backbone=str(tiny_backbone_dir))


def test_save_and_load_round_trip_the_predictions_exactly(fitted, tmp_path):
    from sst2 import SentimentClassifier

    clf, report, dev_x, _ = fitted
    clf.save_pretrained(tmp_path / "m")
    again = SentimentClassifier.from_pretrained(tmp_path / "m")
    assert np.array_equal(again.predict_proba(dev_x), clf.predict_proba(dev_x))
    assert again.labels == clf.labels
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sst2\n")
    for part in ("Labels, in the order of `predict_proba`'s columns: `negative`, `positive`.",
                 "Trained with `sst2.fit(...)`", f"| {report['dev_accuracy']:.4f} |", "train: 256 rows, `in memory`",
                 "Texts are cut at 32 tokens", "SentimentClassifier.from_pretrained"):
        assert part in card, part


def test_fit_rejects_bad_labels_with_their_index(tiny_backbone_dir):
    from sst2 import fit
    from sst2.data.splits import DataError

    with pytest.raises(DataError, match=r"^train_texts\[2\]: empty text\n"
                                        r"train_labels: the labels mix integers and strings \(integer 1 at index 0, "
                                        r"string 'meh' at index 1\); use one kind$"):
        fit(["good", "bad", " "], [1, "meh", 0], backbone=str(tiny_backbone_dir))
    with pytest.raises(DataError, match=r"^train_texts\[0\]: not valid Unicode text \(a lone surrogate at character 4\)\n"
                                        r"train_texts\[1\]: empty text \(only invisible characters such as U\+FEFF\)$"):
        fit(["bad\ud800", "\ufeff"], [0, 1], backbone=str(tiny_backbone_dir))
    with pytest.raises(DataError, match=r"^dev_labels\[1\]: label 'neu' is not one of the training labels \(neg, pos\)$"):
        fit(["good", "bad"], ["pos", "neg"], ["fine", "so-so"], ["pos", "neu"], backbone=str(tiny_backbone_dir))
    with pytest.raises(DataError, match=r"^train_texts: expected a list, got a single str \('a good film'\)$"):
        fit("a good film", [1], backbone=str(tiny_backbone_dir))
    with pytest.raises(Exception, match=r"^unknown option 'epoch' \(known: "):
        fit(["good"], [1], epoch=3)


def test_fit_refuses_options_it_would_ignore(tiny_backbone_dir, tmp_path):
    from sst2 import fit
    from sst2.config import ConfigError
    from sst2.data.splits import DataError

    x, y = texts_labels(16, 3)
    for key in ("path", "train_file", "dev_ratio", "data.text_column"):  # all were ignored without a word
        with pytest.raises(ConfigError, match=rf"^{key}: fit trains on the lists it is given; data files are for "
                                              r"sst2.train \(sst2 train --data\)$"):
            fit(x, y, **{key: "x"})
    with pytest.raises(ConfigError, match=r"^recipe='vanilla' and config= both given: a config names its own recipe"):
        fit(x, y, recipe="vanilla", config=str(tmp_path / "any.toml"))  # the recipe was dropped
    with pytest.raises(DataError, match=r"^dev_labels given without dev_texts: the dev split picks the kept epoch"):
        fit(x, y, dev_labels=y)
    for key in ("teacher", "copies", "distill.loss"):
        with pytest.raises(ConfigError, match=rf"^{key}: a distillation option; fit trains on labels"):
            fit(x, y, **{key: "x"})
    with pytest.raises(ConfigError, match=r"^run__out: pass out=DIR, the run directory fit writes$"):
        fit(x, y, run__out=str(tmp_path / "zz"))  # returned without writing anything
    with pytest.raises(ConfigError, match=r"^overwrite: goes with out=DIR \(without it fit writes nothing\)$"):
        fit(x, y, overwrite=True)
    import pandas as pd

    df = pd.DataFrame({"text": x, "label": y})
    with pytest.raises(DataError, match=r"^train_texts is a table \(DataFrame\): pass one of its columns, such as "
                                        r"df\['text'\]$"):
        fit(df, df["label"])  # trained on the two column names


def test_fit_trains_named_classes_in_the_given_order_from_numpy_labels(tiny_backbone_dir, tmp_path):
    from sst2 import fit

    words = {"neg": "awful", "neu": "film", "pos": "superb"}
    rows = [(f"the {words[k]} story {i % 7}", k) for i in range(40) for k in ("neg", "neu", "pos")]
    x, y = [t for t, _ in rows], np.array([k for _, k in rows])  # a DataFrame column's values
    clf, report = fit(x, y, x[:30], list(y[:30]), labels=["pos", "neu", "neg"], backbone=str(tiny_backbone_dir),
                      epochs=6, batch_size=16, lr=3e-3, max_length=32, cache_dir=str(tmp_path), threads=1)
    assert clf.labels == ["pos", "neu", "neg"] and report["labels"] == ["pos", "neu", "neg"]
    assert clf.predict_proba(["the superb story"]).shape == (1, 3)
    assert clf.predict(["the superb story 3", "the awful story 2"]) == ["pos", "neg"]
    kw = dict(backbone=str(tiny_backbone_dir), epochs=1, max_length=32, cache_dir=str(tmp_path), threads=1)
    ints = np.array(["neg neu pos".split().index(k) for k in y])
    _, report = fit(x, ints, x[:30], [str(k) for k in ints[:30]], labels=np.array([2, 1, 0]), **kw)
    assert report["labels"] == ["2", "1", "0"]  # NumPy integers were "not an integer or a string", and an order
    #                                              of integers or dev labels as digit strings were refused
    _, report = fit(x, [f" {k} " for k in y], x[:3], ["pos", "neg", "neu"], labels=["neg", " pos", "neu"], **kw)
    assert report["labels"] == ["neg", "pos", "neu"]  # stripped, as a file's labels are
    from sst2.data.splits import DataError

    with pytest.raises(DataError, match=r"^train_labels\[0\]: no label\ntrain_labels\[1\]: no label$"):
        fit(x[:3], ["", " ", "pos"], **kw)  # an empty label trained, and its saved run could not be re-read


def test_fit_accepts_label_names_and_trains_like_integers(tiny_backbone_dir, tmp_path):
    from sst2 import fit

    x, y = texts_labels(32, 3)
    kw = dict(backbone=str(tiny_backbone_dir), epochs=1, batch_size=8, max_length=32, cache_dir=str(tmp_path),
              threads=1)
    _, a = fit(x, y, x[:8], y[:8], **kw)
    _, b = fit(x, [("negative", "positive")[k] for k in y], x[:8], y[:8], **kw)
    assert a["dev_accuracy"] == b["dev_accuracy"] and a["dev_loss"] == b["dev_loss"]


def test_fit_with_an_earlier_runs_config_saves_one_that_re_runs_from_any_directory(tiny_backbone_dir, tmp_path,
                                                                                     monkeypatch):
    from sst2 import fit

    earlier = tmp_path / "earlier.toml"  # what a run of sst2 train on a CSV file saves
    earlier.write_text(f'preset = "improved"\n[data]\npath = "/nonexistent/reviews.csv"\nformat = "csv"\n'
                       f'text_column = "body"\nlabel_column = "stars"\ndev_ratio = 0.3\n'
                       f'[model]\nbackbone = "{tiny_backbone_dir}"\n')
    x, y = texts_labels(32, 7)
    monkeypatch.chdir(tmp_path)
    _, report = fit(x, y, x[:8], y[:8], config=str(earlier), epochs=1, batch_size=8, max_length=32,
                    cache_dir=str(tmp_path / "cache"), threads=1, out="a")  # a relative out
    saved = (tmp_path / "a" / "config.toml").read_text()
    assert "body" not in saved and "csv" not in saved and f'path = "{tmp_path / "a" / "data"}"' in saved
    monkeypatch.chdir(tmp_path / "a")  # the config re-ran only from where fit ran (and not with the CSV options)
    assert main(["train", "--config", str(tmp_path / "a" / "config.toml"), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["dev_accuracy"] == report["dev_accuracy"]


@pytest.mark.parametrize("with_dev", [True, False])
def test_a_fit_runs_config_toml_re_runs_it_from_the_data_it_saved(with_dev, tiny_backbone_dir, tmp_path):
    from sst2 import fit

    x, y = texts_labels(48, 5)
    dev = (x[:16], y[:16]) if with_dev else (None, None)
    _, report = fit(x, y, *dev, x[16:24], y[16:24], backbone=str(tiny_backbone_dir), epochs=2, batch_size=8,
                    max_length=32, cache_dir=str(tmp_path / "cache"), threads=1, out=tmp_path / "a")
    lines = (tmp_path / "a" / "data" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 48 and json.loads(lines[0]) == {"text": x[0], "label": ("negative", "positive")[y[0]]}
    assert sorted(p.name for p in (tmp_path / "a" / "data").iterdir()) == ["dev.jsonl"] * with_dev + ["test.jsonl",
                                                                                                      "train.jsonl"]
    # it trained on the default data folder instead, without a word
    assert main(["train", "--config", str(tmp_path / "a" / "config.toml"), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    again = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert (again["train_size"], again["dev_accuracy"], again["test_accuracy"]) == (
        48, report["dev_accuracy"], report["test_accuracy"])
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()
    assert (report["dev_accuracy"] is None) == (not with_dev)
    if not with_dev:  # the scorer read the whole folder, and a folder without dev was an error
        assert main(["evaluate", "--model-dir", str(tmp_path / "a" / "model"), "--data", str(tmp_path / "a" / "data"),
                     "--split", "test", "--json"]) == 0


def _train(tiny_backbone_dir, tiny_data_dir, tmp_path, out, *flags):
    return main(["train", "--data", str(tiny_data_dir), "--backbone", str(tiny_backbone_dir), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--epochs", "2", "--batch-size", "8", "--max-length", "32",
                 "--threads", "1", "--quiet", *flags])


def test_a_runs_config_toml_re_runs_it(tiny_backbone_dir, tiny_data_dir, tmp_path):
    assert _train(tiny_backbone_dir, tiny_data_dir, tmp_path, tmp_path / "a", "--preset", "seed",
                  "--set", "model.dropout=0.2", "optim.lr=2e-3") == 0
    assert main(["train", "--config", str(tmp_path / "a" / "config.toml"), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    a, b = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in "ab")
    assert (a["dev_accuracy"], a["test_accuracy"]) == (b["dev_accuracy"], b["test_accuracy"])
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()
    text = (tmp_path / "a" / "config.toml").read_text()
    assert 'preset = "seed"' in text and "dropout = 0.2" in text and "lr = 0.002" in text


def test_a_preset_file_trains_like_the_preset_name(tiny_backbone_dir, tiny_data_dir, tmp_path):
    from sst2.training.config import PRESET_DIR

    assert _train(tiny_backbone_dir, tiny_data_dir, tmp_path, tmp_path / "a", "--preset", "seed") == 0
    assert _train(tiny_backbone_dir, tiny_data_dir, tmp_path, tmp_path / "b", "--config",
                  str(PRESET_DIR / "seed.toml")) == 0
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()


def test_config_errors_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[optim]\nlearning_rate = 1e-3\n')
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sst2 train: error: {bad}: unknown key optim.learning_rate (known: batch_size, bucket,")
    bad.write_text('preset = "distill"\n[distill]\nseed = 3\n')  # a config.toml written before the rename
    assert main(["train", "--config", str(bad)]) == 2
    assert capsys.readouterr().err == (f"sst2 train: error: {bad}: distill.seed was renamed distill.transfer_seed "
                                       "(the augmentation's seed; run.seed is the student's)\n")
    bad.write_text("[optim\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert f"{bad}: not valid TOML" in capsys.readouterr().err
    assert main(["train", "--set", "lr=1"]) == 2
    assert "--set 'lr=1': expected group.field=value, e.g. optim.lr=2e-3" in capsys.readouterr().err
    assert main(["train", "--lr", "inf"]) == 2
    assert "lr: must be a finite number, got inf" in capsys.readouterr().err
    assert main(["train", "--set", "optim.lr=nan"]) == 2
    assert "optim.lr: must be a finite number, got nan" in capsys.readouterr().err


def test_the_deprecated_classifier_keeps_its_interface(tiny_model_dir):
    from sst2 import Classifier, SentimentClassifier

    with pytest.warns(DeprecationWarning, match="use sst2.SentimentClassifier.from_pretrained"):
        clf = Classifier.load(tiny_model_dir)
    preds = clf.predict(["good film", "bad film"])
    assert preds == clf.predict_details(["good film", "bad film"])
    assert [p.label for p in preds] == SentimentClassifier.from_pretrained(tiny_model_dir).predict(["good film",
                                                                                                   "bad film"])


@pytest.mark.parametrize("recipe", ["efficient", "vanilla", "partial", "lora"])
def test_every_recipe_trains_three_named_classes_from_a_csv(recipe, tiny_backbone_dir, tmp_path, capsys):
    import csv

    from sst2 import SentimentClassifier

    words = {"neg": "awful", "neu": "film", "pos": "superb"}
    rows = [(f"the {words[y]} story {i % 7}", y) for i in range(60) for y in ("neg", "neu", "pos")]
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        w.writerows(rows)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "reviews.csv"), "--backbone", str(tiny_backbone_dir),
                 "--model", recipe, "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--epochs", "2",
                 "--batch-size", "16", "--max-length", "32", "--dev-ratio", "0.2", "--test-ratio", "0.2",
                 "--labels", "neg,neu,pos", "--threads", "1", "--quiet", "--set", "model.unfreeze=1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == ["neg", "neu", "pos"] and m["train_size"] == 108 and m["dev_size"] == m["test_size"] == 36
    assert len(m["test_confusion"]) == 3 and 0 <= m["test_macro_f1"] <= 1
    assert (out / "confusion.png").is_file() and (out / "reliability.png").is_file()
    split = json.loads((out / "splits.json").read_text())
    assert sorted(i for rows_ in split["rows"].values() for i in rows_) == list(range(180))
    clf = SentimentClassifier.from_pretrained(out / "model")
    assert clf.labels == ["neg", "neu", "pos"] and clf.predict_proba(["the superb story"]).shape == (1, 3)
    assert set(clf.predict(["the awful story", "the superb story"])) <= {"neg", "neu", "pos"}
    if recipe == "efficient":  # k logits through ONNX too
        assert main(["export", "--model-dir", str(out / "model"), "--quiet", "--threads", "1"]) == 0
        onnx = SentimentClassifier.from_pretrained(out / "model", runtime="onnx", threads=1)
        texts = ["the superb story 3", "the awful story", "the film story 1 2 3"]
        np.testing.assert_allclose(onnx.predict_proba(texts), clf.predict_proba(texts), atol=1e-4)


def test_list_options_can_be_repeated():
    from sst2.cli import build_parser

    args = build_parser().parse_args(["train", "--set", "optim.lr=1e-3", "--set", "model.dropout=0.2", "optim.epochs=2"])
    assert args.set == ["optim.lr=1e-3", "model.dropout=0.2", "optim.epochs=2"]
    args = build_parser().parse_args(["serve", "--cors-origin", "http://a", "--cors-origin", "http://b"])
    assert args.cors_origin == ["http://a", "http://b"]


def test_a_seeds_config_toml_in_a_multi_seed_run_re_runs_that_seed_on_the_same_split(tiny_backbone_dir, tmp_path):
    from conftest import write_tsv

    data = write_tsv(tmp_path / "all.tsv", make_sentences(60, 4))
    common = ["--backbone", str(tiny_backbone_dir), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
              "--batch-size", "8", "--max-length", "32", "--threads", "1", "--quiet"]
    assert main(["train", "--data", str(data), "--seeds", "2", "--out", str(tmp_path / "multi"), *common]) == 0
    assert main(["train", "--config", str(tmp_path / "multi" / "seed-1" / "config.toml"), "--out",
                 str(tmp_path / "again"), "--quiet"]) == 0
    split = json.loads((tmp_path / "multi" / "splits.json").read_text())["rows"]
    again = json.loads((tmp_path / "again" / "splits.json").read_text())["rows"]
    assert again == split  # was split with seed 1, where every seed of the run had the base seed's split
    assert ((tmp_path / "multi" / "seed-1" / "history.csv").read_text()
            == (tmp_path / "again" / "history.csv").read_text())


def test_a_runs_config_toml_holds_absolute_paths_and_re_runs_from_another_directory(tiny_backbone_dir,
                                                                                    tiny_data_dir, tmp_path,
                                                                                    monkeypatch):
    import shutil

    shutil.copytree(tiny_data_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "data", "--backbone", str(tiny_backbone_dir), "--out", "a", "--cache-dir",
                 "cache", "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--threads", "1",
                 "--quiet"]) == 0
    saved = (tmp_path / "a" / "config.toml").read_text()
    assert f'path = "{tmp_path / "data"}"' in saved and f'cache_dir = "{tmp_path / "cache"}"' in saved
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # was "data: data folder or file not found"
    assert main(["train", "--config", str(tmp_path / "a" / "config.toml"), "--out", "b", "--quiet"]) == 0
    assert ((tmp_path / "a" / "history.csv").read_text()
            == (tmp_path / "elsewhere" / "b" / "history.csv").read_text())


def test_a_loaded_model_saved_again_keeps_its_model_card(tiny_model_dir, tmp_path):
    from sst2 import SentimentClassifier

    card = (tiny_model_dir / "README.md").read_text()
    assert "## Training and results" in card
    copy = tmp_path / "copy"
    SentimentClassifier.from_pretrained(tiny_model_dir).save_pretrained(copy)
    assert (copy / "README.md").read_text() == card  # before: the training record was dropped
    SentimentClassifier.from_pretrained(copy).save_pretrained(copy)  # over its own model directory
    assert (copy / "README.md").read_text() == card
