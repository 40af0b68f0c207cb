import re

import pytest

from sst2.data.dataset import load_splits
from sst2.data.splits import DataError, read_split

from conftest import write_tsv


def write_raw(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_reads_labelled_split(tmp_path):
    p = write_raw(tmp_path / "train.tsv", "sentence\tlabel\na good film\t1\na bad film\t0\n")
    s = read_split(p)
    assert s.texts == ["a good film", "a bad film"] and s.labels == [1, 0] and s.labelled


def test_glue_trailing_space_is_stripped_and_unlabelled_test_is_allowed(tmp_path):
    p = write_raw(tmp_path / "dev.tsv", "sentence\tlabel\nhide new secretions \t0\n")
    assert read_split(p).texts == ["hide new secretions"]
    t = write_raw(tmp_path / "test.tsv", "index\tsentence\n0\tfirst one\n1\tsecond one\n")
    s = read_split(t, require_labels=False)
    assert s.labels is None and s.texts == ["first one", "second one"]


def test_missing_file(tmp_path):
    write_tsv(tmp_path / "train.tsv", [("ok", 1), ("bad", 0)])
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}: no dev file; add one, split the training file "
                                                  "with --dev-ratio, or train without dev with --dev-ratio 0")):
        load_splits(tmp_path)
    (tmp_path / "train.tsv").unlink()
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}: no train file")):
        load_splits(tmp_path)
    write_tsv(tmp_path / "train.tsv", [("ok", 1), ("bad", 0)])
    write_tsv(tmp_path / "dev.tsv", [("fine", 1)])
    splits = load_splits(tmp_path)  # test is optional
    assert sorted(splits) == ["dev", "train"] and splits["train"].label_names == ("negative", "positive")


def test_dev_ratio_0_trains_without_dev_and_a_ratio_the_folder_makes_moot_is_refused(tmp_path):
    rows = [("ok", 1), ("fine", 1), ("good", 1), ("bad", 0), ("dull", 0), ("flat", 0)]
    write_tsv(tmp_path / "train.tsv", rows)
    assert sorted(load_splits(tmp_path, dev_ratio=0)) == ["train"]  # was "no dev file"
    one = tmp_path / "train.tsv"
    assert [len(s) for s in load_splits(one, dev_ratio=0).values()] == [6]  # was split at 0.1
    assert {k: len(s) for k, s in load_splits(one, dev_ratio=0, test_ratio=0.34).items()} == {"train": 4, "test": 2}
    write_tsv(tmp_path / "dev.tsv", rows[:2])
    write_tsv(tmp_path / "test.tsv", rows[2:4])
    for key, split in (("dev_ratio", "dev"), ("test_ratio", "test")):  # the ratio was ignored without a word
        with pytest.raises(DataError, match="^" + re.escape(f"{tmp_path}: data.{key} is 0.2, but the folder has its "
                                                            f"own {split} file ({split}.tsv); drop one of them")):
            load_splits(tmp_path, **{key: 0.2})


def test_a_test_ratio_with_a_folders_dev_file_cuts_test_off_the_training_file(tmp_path):
    from sst2.data.dataset import load_data

    rows = [(f"good film {i}", 1) for i in range(6)] + [(f"bad film {i}", 0) for i in range(6)]
    write_tsv(tmp_path / "train.tsv", rows)
    write_tsv(tmp_path / "dev.tsv", [("fine", 1), ("dull", 0)])
    splits, info = load_data(tmp_path, test_ratio=0.25)  # no test file: it was ignored, and the run had no test
    assert {k: len(s) for k, s in splits.items()} == {"train": 9, "dev": 2, "test": 3}
    assert splits["dev"].texts == ["fine", "dull"] and info["ratios"] == {"test": 0.25}
    assert sorted(splits["train"].texts + splits["test"].texts) == sorted(t for t, _ in rows)


def test_a_file_too_small_to_split_by_ratio_is_named(tmp_path):
    write_tsv(tmp_path / "train.tsv", [("ok", 1), ("fine", 1), ("good", 1), ("bad", 0), ("dull", 0)])
    with pytest.raises(DataError, match="^" + re.escape(f"{tmp_path / 'train.tsv'}: the dev split would have 1 row(s), "
                                                        "fewer than the 2 labels; raise its ratio or bring more data")):
        load_splits(tmp_path, dev_ratio=0.2)


def test_missing_folder_names_the_default(tmp_path):
    with pytest.raises(DataError, match=r"data folder or file not found \(pass --data PATH or set SST2_DATA; in "
                                        r"this repository layout the data is in \.\./shared/data/sst2-sentences\)"):
        load_splits(tmp_path / "nope")


def test_wrong_header(tmp_path):
    p = write_raw(tmp_path / "train.tsv", "text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:1: bad header: expected 'sentence<TAB>label', "
                                                  "got 'text<TAB>label'")):
        read_split(p)


def test_bad_label_and_every_problem_is_reported(tmp_path):
    p = write_raw(tmp_path / "train.tsv", "sentence\tlabel\nfine\t1\nodd\t2\nworse\tneg\n")
    with pytest.raises(DataError) as exc:
        read_split(p)
    assert str(exc.value) == f"{p}:3: label must be 0 or 1, got '2'\n{p}:4: label must be 0 or 1, got 'neg'"


def test_empty_sentence(tmp_path):
    p = write_raw(tmp_path / "train.tsv", "sentence\tlabel\nfine\t1\n   \t0\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:3: empty sentence")):
        read_split(p)


def test_wrong_column_count(tmp_path):
    p = write_raw(tmp_path / "train.tsv", "sentence\tlabel\nfine\t1\nno label here\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:3: expected 2 tab-separated columns, got 1")):
        read_split(p)


def test_undecodable_bytes(tmp_path):
    p = write_raw(tmp_path / "train.tsv", b"sentence\tlabel\nfine\t1\ncaf\xe9 au lait\t1\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:3: invalid UTF-8 at byte 4 of the line "
                                                  "(invalid continuation byte)")):
        read_split(p)


def test_unlabelled_train_is_rejected(tmp_path):
    p = write_raw(tmp_path / "train.tsv", "index\tsentence\n0\tfine\n")
    with pytest.raises(DataError, match="bad header: expected 'sentence<TAB>label', got 'index<TAB>sentence'"):
        read_split(p)


def test_no_row_is_dropped(tmp_path):
    rows = [(f"sentence number {i}", i % 2) for i in range(1000)]
    s = read_split(write_tsv(tmp_path / "train.tsv", rows))
    assert len(s) == 1000 and s.labels == [y for _, y in rows]


def test_too_many_problems_are_summarised(tmp_path):
    p = write_raw(tmp_path / "train.tsv", "sentence\tlabel\n" + "x\t7\n" * 25)
    with pytest.raises(DataError, match=r"\.\.\. and 5 more problem\(s\)$"):
        read_split(p)


def test_train_file_replaces_the_folders_train_split(tmp_path):
    other = tmp_path / "phrases"
    other.mkdir()
    write_tsv(other / "train.tsv", [("good", 1), ("a bad film", 0), ("bad", 0)])
    folder = tmp_path / "sentences"
    folder.mkdir()
    write_tsv(folder / "dev.tsv", [("a good film", 1)])
    write_tsv(folder / "test.tsv", [("a dull film", 0)])
    splits = load_splits(folder, other / "train.tsv")  # the folder needs no train.tsv
    assert splits["train"].texts == ["good", "a bad film", "bad"] and splits["train"].labels == [1, 0, 0]
    assert splits["train"].path == other / "train.tsv" and splits["train"].name == "train"
    assert splits["dev"].texts == ["a good film"] and splits["test"].texts == ["a dull film"]
    write_tsv(folder / "train.tsv", [("ignored", 1)])
    assert load_splits(folder, other / "train.tsv")["train"].texts == ["good", "a bad film", "bad"]
    export = tmp_path / "export.txt"  # CSV under a name that does not say: --format is for it alone
    export.write_text("sentence,label\ngood,1\na bad film,0\n")
    splits = load_splits(folder, export, format="csv")  # dev.tsv and test.tsv were read as CSV too
    assert splits["train"].texts == ["good", "a bad film"] and splits["dev"].texts == ["a good film"]


def test_train_file_errors(tmp_path):
    write_tsv(tmp_path / "dev.tsv", [("ok", 1)])
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nope.tsv'}: training file not found (--train-file)")):
        load_splits(tmp_path, tmp_path / "nope.tsv")
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\nfine\t1\n\t0\n")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'bad.tsv'}:3: empty text in column 'sentence'")):
        load_splits(tmp_path, tmp_path / "bad.tsv")
    write_tsv(tmp_path / "phrases.tsv", [("ok", 1), ("no", 0)])
    write_tsv(tmp_path / "dev.tsv", [("ok", 1), ("meh", 2)])
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'dev.tsv'}:3: label '2' is not one of the training "
                                                  "labels (negative, positive)")):
        load_splits(tmp_path, tmp_path / "phrases.tsv")


def test_a_file_with_cr_only_line_endings_gets_a_short_error(tmp_path):
    rows = "".join(f"sentence number {i}\t{i % 2}\r" for i in range(2000))
    (tmp_path / "train.tsv").write_bytes(("sentence\tlabel\r" + rows).encode())
    with pytest.raises(DataError) as exc:
        read_split(tmp_path / "train.tsv")
    msg = str(exc.value)
    assert msg == (f"{tmp_path / 'train.tsv'}:1: bad header: expected 'sentence<TAB>label', got "
                   "'sentence<TAB>label\\rsentence number 0<TAB>0\\rsentence number 1... (52,908 characters)'")


def test_texts_shared_between_train_and_a_held_out_split_are_noted(tmp_path, tiny_backbone_dir, capsys):
    from sst2.cli import main
    from sst2.data.dataset import shared_with_train

    d = tmp_path / "d"
    d.mkdir()
    rows = [("a good film", 1), ("a bad film", 0), ("good", 1), ("bad", 0)]
    write_tsv(d / "train.tsv", rows)
    write_tsv(d / "dev.tsv", [("a fine film", 1), ("a dull film", 0)])
    write_tsv(d / "test.tsv", [("a bad film", 0), ("a great film", 1), ("good", 1)])
    splits = load_splits(d)
    assert shared_with_train(splits) == [
        "note: 2 of 3 test texts are also training texts (first: 'a bad film'); they are not held out"]
    assert shared_with_train({"train": splits["train"], "dev": splits["dev"]}) == []
    assert main(["train", "--data", str(d), "--backbone", str(tiny_backbone_dir), "--out", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "cache"), "--epochs", "1", "--max-length", "16"]) == 0
    assert "note: 2 of 3 test texts are also training texts" in capsys.readouterr().err  # before: no word
