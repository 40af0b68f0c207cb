"""``sst2 evaluate``: which rows it scores (a file, a folder's split, the rows a run split off, the run's
own data), with which columns and labels."""

import json
import shutil

import pytest

from sst2 import SentimentClassifier
from sst2.cli import main

from conftest import make_sentences


def test_cli_evaluate_scores_any_labelled_file(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    import csv

    with open(tiny_data_dir / "dev.tsv", newline="") as f:
        dev = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    with open(tmp_path / "dev.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "sentiment"])
        w.writerows([r["sentence"], ("negative", "positive")[int(r["label"])]] for r in dev)
    assert main(["evaluate", "--model-dir", str(tiny_model_dir), "--data", str(tiny_data_dir), "--split", "dev",
                 "--json"]) == 0
    from_split = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--model-dir", str(tiny_model_dir), "--file", str(tmp_path / "dev.csv"), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_file["accuracy"] == from_split["accuracy"] and from_file["n"] == 16
    assert from_file["confusion"] == from_split["confusion"] and 0 <= from_file["ece"] <= 1
    (tmp_path / "bad.csv").write_text("text,label\ngood film,neutral\n")
    assert main(["evaluate", "--model-dir", str(tiny_model_dir), "--file", str(tmp_path / "bad.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"sst2 evaluate: error: {tmp_path / 'bad.csv'}:2: label 'neutral' is "
                                               f"not one of the training labels (negative, positive)")


def train_tiny(data, backbone, out, *flags) -> int:
    """``sst2 train`` of the tiny model on ``data`` for one epoch, into ``out`` (its cache beside it)."""
    return main(["train", "--data", str(data), "--backbone", str(backbone), "--out", str(out), "--cache-dir",
                 str(out.parent / "cache"), "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--threads",
                 "1", "--quiet", *flags])


def evaluate_json(capsys, model_dir, *args) -> dict:
    """What ``sst2 evaluate --json`` prints (it must succeed)."""
    capsys.readouterr()
    assert main(["evaluate", "--model-dir", str(model_dir), *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_model_trained_with_its_labels_reversed_scores_and_reports_positive(tiny_backbone_dir, tiny_data_dir,
                                                                             tmp_path, capsys):
    out = tmp_path / "rev"
    assert train_tiny(tiny_data_dir, tiny_backbone_dir, out, "--labels", "1,0") == 0
    trained = json.loads((out / "metrics.json").read_text())
    # before: "label '0' is not one of the training labels (positive, negative)"
    got = evaluate_json(capsys, out / "model", "--data", tiny_data_dir, "--split", "dev")
    assert got["accuracy"] == pytest.approx(trained["dev_accuracy"])
    clf = SentimentClassifier.from_pretrained(out / "model")
    assert clf.labels == ["positive", "negative"]
    p = clf.predict_details(["good film"])[0]
    assert p.to_dict()["positive_prob"] == p.probabilities["positive"] != p.probabilities["negative"]


def test_evaluate_on_a_single_file_scores_the_rows_the_run_split_off(tiny_backbone_dir, tmp_path, capsys):
    from conftest import write_tsv

    data = write_tsv(tmp_path / "all.tsv", make_sentences(60, 4))
    out = tmp_path / "one"
    assert train_tiny(data, tiny_backbone_dir, out, "--dev-ratio", "0.25", "--test-ratio", "0.2", "--seed", "3") == 0
    trained = json.loads((out / "metrics.json").read_text())
    rows = json.loads((out / "splits.json").read_text())["rows"]
    for split in ("dev", "test"):
        capsys.readouterr()
        assert main(["evaluate", "--model-dir", str(out / "model"), "--data", str(data), "--split", split,
                     "--json"]) == 0  # before: the file split again at ratio 0.1, seed 0 (training rows among them)
        got = json.loads(capsys.readouterr().out)
        assert got["n"] == len(rows[split]) and got["accuracy"] == pytest.approx(trained[f"{split}_accuracy"])
    bare = tmp_path / "bare"
    shutil.copytree(out / "model", bare / "model")
    assert main(["evaluate", "--model-dir", str(bare / "model"), "--data", str(data), "--split", "dev"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"sst2 evaluate: error: {data}: a single file's dev rows are the ones the run split off, and "
        f"{bare / 'model'} has no splits.json beside it; score a file of its own with --file")


def test_evaluate_on_a_folder_scores_the_dev_rows_the_run_split_off_and_names_a_missing_split(
        tiny_backbone_dir, tmp_path, capsys):
    from conftest import write_tsv

    folder = tmp_path / "f"
    folder.mkdir()
    write_tsv(folder / "train.tsv", make_sentences(60, 4))
    write_tsv(folder / "test.tsv", make_sentences(12, 5))
    out = tmp_path / "run"
    assert train_tiny(folder, tiny_backbone_dir, out, "--dev-ratio", "0.25") == 0
    trained = json.loads((out / "metrics.json").read_text())
    # before: "no dev file; add one, split the training file with --dev-ratio ..."
    got = evaluate_json(capsys, out / "model", "--data", folder, "--split", "dev")
    assert got["n"] == trained["dev_size"] == 15 and got["accuracy"] == pytest.approx(trained["dev_accuracy"])
    # the folder's train file minus the dev rows cut off it, with --data as without (it scored all 60)
    assert evaluate_json(capsys, out / "model", "--data", folder, "--split", "train")["n"] == 45
    assert evaluate_json(capsys, out / "model", "--split", "train")["n"] == 45
    (folder / "test.tsv").unlink()
    shutil.copytree(out / "model", tmp_path / "bare" / "model")
    assert main(["evaluate", "--model-dir", str(tmp_path / "bare" / "model"), "--data", str(folder),
                 "--split", "test"]) == 2
    assert capsys.readouterr().err.strip() == (f"sst2 evaluate: error: {folder}: no test file to score (the folder "
                                               f"has train.tsv)")
    assert main(["evaluate", "--model-dir", str(out / "model"), "--file", str(folder / "train.tsv"), "--data",
                 str(folder), "--split", "dev"]) == 2  # both were ignored
    assert capsys.readouterr().err.strip() == (
        f"sst2 evaluate: error: invalid evaluate options:\n  --data {folder}: --file scores that file alone; drop one "
        f"of them\n  --split dev: --file scores that file alone; drop one of them")


def test_evaluate_reads_a_folders_split_with_the_columns_given(tiny_model_dir, tmp_path, capsys):
    import csv

    folder = tmp_path / "cust"
    folder.mkdir()
    both = make_sentences(60, 8)
    rows = [r for r in both if r[1] == 1][:15] + [r for r in both if r[1] == 0][:5]  # 15 / 5: the counts tell
    with open(folder / "test.csv", "w", newline="") as f:  # a decoy "text" column and labels under "stars"
        w = csv.writer(f)
        w.writerow(["text", "review", "sentiment", "stars"])
        w.writerows([(s, s, 1 - y, y) for s, y in rows])
    assert main(["evaluate", "--model-dir", str(tiny_model_dir), "--file", str(folder / "test.csv"), "--text-column",
                 "review", "--label-column", "stars", "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--model-dir", str(tiny_model_dir), "--data", str(folder), "--split", "test",
                 "--text-column", "review", "--label-column", "stars", "--json"]) == 0
    from_folder = json.loads(capsys.readouterr().out)  # the flags were dropped: the labels under "sentiment"
    matrix = from_file["confusion"]["rows_true_cols_pred"]
    assert from_folder["confusion"]["rows_true_cols_pred"] == matrix != matrix[::-1]  # [::-1]: the labels inverted


def test_evaluate_without_data_scores_the_runs_own_data_as_it_split_it(tiny_backbone_dir, tiny_data_dir, tmp_path,
                                                                      capsys, monkeypatch):
    from conftest import write_tsv

    monkeypatch.setenv("SST2_DATA", str(tiny_data_dir))  # the default folder: 48 / 16 / 20 rows
    mine = tmp_path / "mine"
    mine.mkdir()
    write_tsv(mine / "train.tsv", make_sentences(40, 4), header=("review", "stars"))
    write_tsv(mine / "test.tsv", make_sentences(12, 5), header=("review", "stars"))
    phrases = write_tsv(tmp_path / "phrases.tsv", make_sentences(30, 6), header=("review", "stars"))
    out = tmp_path / "run"
    assert train_tiny(mine, tiny_backbone_dir, out, "--train-file", str(phrases), "--dev-ratio", "0.2", "--text-column",
                      "review", "--label-column", "stars", "--seeds", "2") == 0
    summary = json.loads((out / "seed-1" / "metrics.json").read_text())
    got = {split: evaluate_json(capsys, out / "seed-1" / "model", "--split", split)
           for split in ("train", "dev", "test")}
    # before: the default folder's splits (48, 16 and 20 rows, or its columns missing)
    assert [got[s]["n"] for s in ("train", "dev", "test")] == [24, 6, 12]
    assert [got[s]["data"] for s in ("train", "dev", "test")] == [str(phrases)] * 2 + [str(mine / "test.tsv")]
    assert got["dev"]["accuracy"] == pytest.approx(summary["dev_accuracy"])
    assert got["test"]["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert evaluate_json(capsys, out / "seed-1" / "model", "--data", tiny_data_dir)["n"] == 20  # --data still rules
    assert main(["evaluate", "--model-dir", str(out / "seed-1" / "model")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"data: {mine / 'test.tsv'}"
    edited = [(f"{text} (edited)", label) for text, label in make_sentences(30, 6)]  # same labels and rows
    for rows in (edited, make_sentences(31, 6)):  # the edit was scored: the re-split gives the same row numbers
        write_tsv(phrases, rows, header=("review", "stars"))
        assert main(["evaluate", "--model-dir", str(out / "seed-1" / "model"), "--split", "dev"]) == 2
        assert capsys.readouterr().err.strip() == (f"sst2 evaluate: error: {phrases}: it changed since the run split "
                                                   f"it ({out / 'splits.json'}); score it with --file")
    shutil.rmtree(mine)
    assert main(["evaluate", "--model-dir", str(out / "seed-1" / "model")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"sst2 evaluate: error: {mine}: data folder or file not found (pass --data PATH or set SST2_DATA; in this "
        f"repository layout the data is in ../shared/data/sst2-sentences) (the data {out / 'seed-1' / 'config.toml'} "
        f"trained on; score other data with --data or --file)")


def test_metrics_are_per_class_whatever_the_classes_are_named():
    from sst2.evaluation.metrics import classification_metrics

    labels, preds = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    plain = classification_metrics(labels, preds, ["a", "b", "c"])
    assert plain["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                       "support": 3}
    assert plain["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # before: "accuracy" was a TypeError, "macro avg" / "weighted avg" got the report's averages as their own
    for names in (["accuracy", "macro avg", "weighted avg"], ["micro avg", "b", "c"]):
        got = classification_metrics(labels, preds, names)
        assert list(got["per_class"].values()) == list(plain["per_class"].values())
        assert got["macro_f1"] == plain["macro_f1"]


def test_evaluate_refuses_a_split_without_labels(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    data = shutil.copytree(tiny_data_dir, tmp_path / "data")
    (data / "test.tsv").write_text("sentence\na good film\na dull film\n")  # GLUE's test split has no labels
    assert main(["evaluate", "--model-dir", str(tiny_model_dir), "--data", str(data), "--split", "test"]) == 2
    assert capsys.readouterr().err.strip() == (f"sst2 evaluate: error: {data / 'test.tsv'}: split 'test' has no "
                                               f"labels, so it cannot be scored")
