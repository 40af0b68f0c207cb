"""sst2.data.readers and sst2.data.labels: users' own TSV / CSV / JSON lines / Parquet files."""

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sst2.data.labels import LabelSet, stratified_split
from sst2.data.formats import detect_format
from sst2.data.readers import pick_columns, read_table
from sst2.data.rows import RowWriter, iter_rows
from sst2.data.splits import DataError, read_split

ROWS = [("a good, \"fine\" film ", "pos"), ("  dull\u00a0and flat", "neg"), ("it's ok", "neu"), ("élan ✓", "pos")]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def write_rows(path: Path, rows: list[dict]) -> Path:
    """``rows`` in the format of ``path``'s extension, written with the standard tools (not our writer)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    if path.suffix == ".tsv":
        lines = ["\t".join(cols)] + ["\t".join("" if r.get(c) is None else str(r[c]) for c in cols) for r in rows]
        return write(path, "\n".join(lines) + "\n")
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(cols)
            w.writerows(["" if r.get(c) is None else r[c] for c in cols] for r in rows)
        return path
    if path.suffix == ".jsonl":
        return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---- formats and columns --------------------------------------------------------------------------------

def test_detect_format():
    assert [detect_format(f"x{e}") for e in (".tsv", ".CSV", ".jsonl", ".json", ".ndjson", ".parquet", ".pq")] == \
        ["tsv", "csv", "jsonl", "jsonl", "jsonl", "parquet", "parquet"]
    assert detect_format("data.txt", "csv") == "csv" and detect_format("data.txt", "json") == "jsonl"
    msg = error(detect_format, "data.txt")
    assert msg.startswith("data.txt: cannot tell the format") and "tsv, csv, jsonl, parquet" in msg
    assert "unknown format 'xls' (formats: tsv, csv, jsonl, parquet)" in error(detect_format, "d.csv", "xls")


def test_pick_columns():
    assert pick_columns(["id", "text", "sentence", "label"], "f") == ("sentence", "label")
    assert pick_columns(["Review", "Sentiment", "label"], "f") == ("Review", "label")
    assert pick_columns(["Review", "Sentiment"], "f") == ("Review", "Sentiment")
    assert pick_columns(["body", "text", "stars"], "f", "body", "stars") == ("body", "stars")
    assert pick_columns(["index", "sentence"], "f", require_labels=False) == ("sentence", None)
    assert error(pick_columns, ["id", "body", "stars"], "f.csv") == (
        "f.csv: no text column (looked for sentence, text, review; found: id, body, stars); pass --text-column")
    assert error(pick_columns, ["id", "text", "stars"], "f.csv") == (
        "f.csv: no label column (looked for label, labels, sentiment; found: id, text, stars); pass --label-column")
    assert error(pick_columns, ["text", "label"], "f.csv", "body") == (
        "f.csv: no column 'body' (found: text, label); check --text-column")
    # an empty name is a name (a header's first column often is), not "the default": before, "" took "text"
    assert error(pick_columns, ["text", "label"], "f.csv", "") == (
        "f.csv: no column '' (found: text, label); check --text-column")
    assert error(pick_columns, ["text", "label"], "f.csv", None, "") == (
        "f.csv: no column '' (found: text, label); check --label-column")
    assert pick_columns(["", "label"], "f.csv", "") == ("", "label")


@pytest.mark.parametrize("ext", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_table(tmp_path, ext):
    rows = [{"id": i, "text": t, "label": y} for i, (t, y) in enumerate(ROWS)]
    table = read_table(write_rows(tmp_path / f"d{ext}", rows))
    assert table.texts == ["a good, \"fine\" film", "dull\u00a0and flat", "it's ok", "élan ✓"]
    assert table.labels == ["pos", "neg", "neu", "pos"]
    assert (table.text_column, table.label_column, table.format) == ("text", "label", ext[1:])
    assert table.lines == ([0, 1, 2, 3] if ext == ".parquet" else [2, 3, 4, 5] if ext != ".jsonl" else [1, 2, 3, 4])
    assert len(table.sha256) == 64
    ints = read_table(write_rows(tmp_path / f"i{ext}", [{"text": t, "label": i % 2} for i, (t, _) in enumerate(ROWS)]))
    assert ints.labels == [0, 1, 0, 1]


def test_tsv_is_read_as_read_split_reads_it(tmp_path):
    p = write(tmp_path / "train.tsv", 'sentence\tlabel\nhide "new" secretions \t0\n2\u00a01\\/2 stars\t1\n')
    t, s = read_table(p), read_split(p)
    assert (t.texts, t.labels, t.sha256) == (s.texts, s.labels, s.sha256)
    g = write(tmp_path / "test.tsv", "index\tsentence\n0\tfirst one\n1\tsecond one\n")
    t = read_table(g, require_labels=False)
    assert t.texts == read_split(g, require_labels=False).texts and t.labels is None


def test_csv_quoted_line_breaks_keep_line_numbers(tmp_path):
    p = write(tmp_path / "d.csv", 'text,label\n"two\nlines",1\n"x ""y""",0\n   ,1\n')
    assert error(read_table, p) == f"{p}:5: empty text in column 'text'"
    p = write(tmp_path / "z.csv", 'text,label\ngood,1\n\u200b\u200b,0\n')
    assert error(read_table, p) == f"{p}:3: empty text (only invisible characters such as U+200B) in column 'text'"
    p = write(tmp_path / "m.csv", 'text,label\ngood,1\n\u0301 \u0301,0\n')  # accents with no letter: no tokens
    assert error(read_table, p) == f"{p}:3: empty text (only combining marks such as U+0301) in column 'text'"
    p = write(tmp_path / "e.csv", 'text,label\n"two\r\nlines",1\r\n"007",0\r\n')
    t = read_table(p)
    assert t.texts == ["two\r\nlines", "007"] and t.lines == [2, 4]


def test_jsonl_blank_lines_numbers_and_dates(tmp_path):
    p = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": 0.0}\n'
                                    '{"text": "c", "label": "2"}\n')
    t = read_table(p)
    assert t.labels == [1, 0, 2] and t.lines == [1, 3, 4]
    p = write(tmp_path / "e.jsonl", '{"text": "2020-01-01", "label": "2020-01-01 10:00:00"}\n'
                                    '{"text": "2021-02-03", "label": "x"}\n')
    assert read_table(p).texts == ["2020-01-01", "2021-02-03"]  # pyarrow would make them timestamps


# ---- problems -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_empty_text_and_missing_label(tmp_path, ext):
    rows = [{"text": "ok", "label": 1}, {"text": "  ", "label": 0}, {"text": "x", "label": None}]
    p = write_rows(tmp_path / f"d{ext}", rows)
    at = (lambda i: f"{p}: row {i}") if ext == ".parquet" else (lambda i: f"{p}:{i + (1 if ext == '.jsonl' else 2)}")
    assert error(read_table, p) == f"{at(1)}: empty text in column 'text'\n{at(2)}: no label in column 'label'"
    p = write_rows(tmp_path / f"u{ext}", [{"text": "ok", "label": 1}, {"text": "x", "label": None}])
    assert read_table(p, require_labels=False).labels == [1, None]


def test_jsonl_missing_key_and_null_text(tmp_path):
    p = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": null, "label": 0}\n{"text": "c"}\n')
    assert error(read_table, p) == f"{p}:2: no text in column 'text'\n{p}:3: no label in column 'label'"


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_mixed_int_and_str_labels(tmp_path, ext):
    rows = [{"text": "a", "label": "1"}, {"text": "b", "label": "pos"}, {"text": "c", "label": "0"}]
    if ext == ".jsonl":
        rows[0]["label"] = 1
    p = write_rows(tmp_path / f"d{ext}", rows)
    unit, first = ("row", 0) if ext == ".parquet" else ("line", 1 if ext == ".jsonl" else 2)
    assert error(read_table, p) == (f"{p}: column 'label' mixes integer and string labels (integer 1 at {unit} "
                                    f"{first}, string 'pos' at {unit} {first + 1}); use one kind")


def test_float_labels(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": pa.array([0.0, 1.0, None], pa.float64())}), p)
    assert read_table(p, require_labels=False).labels == [0, 1, None]
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0.0, 1.5, float("nan")]}), p)
    assert error(read_table, p) == (f"{p}: row 1: label 1.5 is not a whole number in column 'label'\n"
                                    f"{p}: row 2: no label in column 'label'")
    c = write(tmp_path / "d.csv", "text,label\na,1.0\nb,2.5\n")
    assert error(read_table, c) == f"{c}:3: label 2.5 is not a whole number in column 'label'"


def test_unreadable_parquet(tmp_path):
    good = write_rows(tmp_path / "good.parquet", [{"text": "a", "label": 1}] * 10)
    for name, data in [("cut.parquet", good.read_bytes()[:-20]), ("junk.pq", b"PAR1 not really")]:
        p = write(tmp_path / name, data)
        msg = error(read_table, p)
        assert msg.startswith(f"{p}: not a readable Parquet file (") and msg.endswith(")") and "\n" not in msg
        assert msg == error(lambda p=p: list(iter_rows(p)))


def test_csv_unbalanced_quote(tmp_path):
    p = write(tmp_path / "d.csv", 'text,label\nok,1\n"open,1\nnext,0\n')
    assert error(read_table, p) == (f"{p}:3: expected 2 comma-separated columns, got 1 "
                                    "(an unbalanced quote? the row runs over 2 lines)")
    assert error(lambda: list(iter_rows(p))) == (f"{p}: record 3 (the header is record 1): expected 2 comma-separated "
                                                 "columns, got 1 (an unbalanced quote? the row runs over 2 lines)")
    p = write(tmp_path / "e.csv", 'text,label\nok,1\n"open,1\n')
    assert error(read_table, p) == f"{p}:3: expected 2 comma-separated columns, got 1 (an unbalanced quote?)"
    p = write(tmp_path / "f.csv", 'text,label\nok,1\nfine,"0\n')  # pyarrow takes the value '0\n' without a word
    msg = f"{p}:3: unbalanced quote: a quoted value of this row runs to the end of the file"
    assert error(read_table, p) == msg and error(lambda: list(iter_rows(p))) == msg
    p = write(tmp_path / "g.csv", '"text,label\nok,1\n')  # pyarrow: "Empty CSV file or block"
    msg = f"{p}:1: unbalanced quote: a quoted value of the header runs to the end of the file"
    assert error(read_table, p) == msg and error(lambda: list(iter_rows(p))) == msg


def test_tsv_column_count_and_blank_line(tmp_path):
    p = write(tmp_path / "d.tsv", "sentence\tlabel\na\t1\nb\t0\textra\n\nc\t1\n")
    assert error(read_table, p) == (f"{p}:3: expected 2 tab-separated columns, got 3\n"
                                    f"{p}:4: empty text in column 'sentence'\n{p}:4: no label in column 'label'")
    assert error(lambda: list(iter_rows(p))) == f"{p}:3: expected 2 tab-separated columns, got 3"


@pytest.mark.parametrize("ext", [".tsv", ".csv", ".jsonl"])
def test_invalid_utf8(tmp_path, ext):
    sep = b"\t" if ext == ".tsv" else b","
    data = b"text%slabel\nok%s1\nb\xffd%s0\n" % (sep, sep, sep)
    if ext == ".jsonl":
        data = b'{"text": "ok", "label": 1}\n{"text": "b\xffd", "label": 0}\n'
    p = write(tmp_path / f"d{ext}", data)
    line, byte = (2, 12) if ext == ".jsonl" else (3, 2)
    msg = f"{p}:{line}: invalid UTF-8 at byte {byte} of the line (invalid start byte)"
    assert error(read_table, p) == msg and error(lambda: list(iter_rows(p))) == msg


def test_empty_files_and_no_rows(tmp_path):
    for ext in (".tsv", ".csv"):
        p = write(tmp_path / f"e{ext}", "")
        assert error(read_table, p) == f"{p}: file is empty (expected a header line)"
        for end in ("\n", ""):  # without a line break pyarrow says "Empty CSV file or block"
            p = write(tmp_path / f"h{ext}", ("text\tlabel" if ext == ".tsv" else "text,label") + end)
            assert error(read_table, p) == f"{p}: no data rows after the header" and list(iter_rows(p)) == []
    p = write(tmp_path / "b.jsonl", "\n  \n")
    assert error(read_table, p) == f"{p}: no data rows (only blank lines)"
    p = tmp_path / "z.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())}), p)
    assert error(read_table, p) == f"{p}: no data rows"
    assert error(read_table, tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: file not found"


def test_duplicate_header_names(tmp_path):
    p = write(tmp_path / "d.csv", "text,label,text\na,1,b\n")
    msg = f"{p}:1: duplicate column name(s) in the header: 'text'"
    assert error(read_table, p) == msg and error(lambda: list(iter_rows(p))) == msg


def test_a_key_or_column_twice_is_refused_not_resolved_silently(tmp_path):
    p = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "good", "label": 1, "text": "bad"}\n')
    msg = f"{p}:2: the key 'text' appears twice in one object"
    assert error(read_table, p) == msg and error(lambda: list(iter_rows(p))) == msg
    q = tmp_path / "d.parquet"
    pq.write_table(pa.table([pa.array(["a"]), pa.array([1]), pa.array(["b"])], names=["text", "label", "text"]), q)
    msg = f"{q}: duplicate column name(s): 'text'"
    assert error(read_table, q) == msg and error(lambda: list(iter_rows(q))) == msg


def test_jsonl_syntax_errors(tmp_path):
    p = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": oops}\n[1, 2]\n')
    assert error(read_table, p) == (f"{p}:2: invalid JSON (Expecting value at column 10)\n"
                                    f"{p}:3: expected a JSON object, got an array (JSON lines: one object a line)")


def test_problems_are_collected_and_capped(tmp_path):
    p = write(tmp_path / "d.csv", "text,label\n" + "".join(f",{i % 2}\n" for i in range(25)))
    lines = error(read_table, p).splitlines()
    assert len(lines) == 21 and lines[0] == f"{p}:2: empty text in column 'text'"
    assert lines[-1] == "... and 5 more problem(s)"


# ---- streaming and writing ------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_iter_rows_streams_in_chunks(tmp_path, ext):
    p = write_rows(tmp_path / f"d{ext}", [{"id": str(i), "text": f"row {i}"} for i in range(10_000)])
    chunks = list(iter_rows(p, chunk=1024))
    assert [len(c) for c in chunks] == [1024] * 9 + [784]
    assert [r["id"] for c in chunks for r in c] == [str(i) for i in range(10_000)]


@pytest.mark.parametrize("ext", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_row_writer_round_trip(tmp_path, ext):
    rows = [{"id": str(i), "text": t, "gold": y} for i, (t, y) in enumerate(ROWS)]
    src = write_rows(tmp_path / f"in{ext}", rows)
    out = tmp_path / f"out{ext}"
    with RowWriter(out) as w:
        for chunk in iter_rows(src, chunk=3):
            w.write([{**r, "pred": "pos", "score": 0.5} for r in chunk])
    assert [r for c in iter_rows(out) for r in c] == [
        {**r, "pred": "pos", "score": "0.5" if ext in (".tsv", ".csv") else 0.5} for r in rows]
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted([src.name, out.name])
    before = out.read_bytes()
    assert error(RowWriter, out) == f"{out}: output file already exists (pass --overwrite to replace it)"
    w = RowWriter(out, overwrite=True)
    w.write([{"id": "x", "text": "y"}])
    w.close()
    assert out.read_bytes() != before and [r for c in iter_rows(out) for r in c] == [{"id": "x", "text": "y"}]


def test_row_writer_abort_leaves_nothing(tmp_path):
    out = tmp_path / "o.csv"
    with pytest.raises(RuntimeError), RowWriter(out) as w:
        w.write([{"a": 1}])
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    w = RowWriter(tmp_path / "o.tsv")
    assert "cannot write 'a\\tb' to a TSV file" in error(w.write, [{"a": "a\tb"}])
    w.abort()
    assert list(tmp_path.iterdir()) == []


# ---- label sets and splits ------------------------------------------------------------------------------

def test_label_set_sorted_and_named():
    assert LabelSet.from_training(["pos", "neg", "neu", "pos"]).names == ("neg", "neu", "pos")
    assert LabelSet.from_training([1, 0, 1]).names == ("negative", "positive")
    five = LabelSet.from_training([4, 0, 3, 1, 2, 10])
    assert five.names == ("0", "1", "2", "3", "4", "10") and five.values == (0, 1, 2, 3, 4, 10)
    assert LabelSet.from_training([1, 2]).names == ("1", "2")


def test_label_set_given_order_and_errors():
    s = LabelSet.from_training(["pos", "neg", "neu"], ["neg", "neu", "pos"])
    assert s.names == ("neg", "neu", "pos") and s.encode(["pos", "neg"]) == [2, 0]
    assert LabelSet.from_training([0, 1], ["1", "0"]).names == ("positive", "negative")
    assert error(LabelSet.from_training, ["pos", "neg", "bad"], ["neg", "pos"], "t.csv", [2, 3, 4]) == (
        "t.csv:4: label 'bad' is not one of --labels (neg, pos)")
    assert error(LabelSet.from_training, ["pos", "neg"], ["neg", "neu", "pos"], "t.csv", [2, 3]) == (
        "label 'neu' has no training example in t.csv")
    assert error(LabelSet.from_training, [1, "pos"], None, "t.csv", [2, 3]) == (
        "t.csv: the labels mix integers and strings (integer 1 at line 2, string 'pos' at line 3); use one kind")
    assert "a classifier needs at least two labels" in error(LabelSet.from_training, ["a", "a"])
    for order, what in (([], "no label"), ([""], "an empty label name"), (["0", " ", "1"], "an empty label name")):
        # before: "t.csv:2: label '0' is not one of --labels ()" for every training label
        assert error(LabelSet.from_training, [0, 1], order, "t.csv", [2, 3]) == (
            f"--labels {','.join(o.strip() for o in order)!r} lists {what}; list every training label, "
            "comma-separated (neg,neu,pos), or leave --labels out for the training labels, sorted")


def test_encode_unseen_label_names_file_and_line(tmp_path):
    s = LabelSet.from_training(["a", "b", "c"])
    assert error(s.encode, ["a", "x"], "dev.csv", [2, 3]) == (
        "dev.csv:3: label 'x' is not one of the training labels (a, b, c)")
    assert error(s.encode, ["a", "x"], "dev.parquet", [0, 1], unit="row") == (
        "dev.parquet: row 1: label 'x' is not one of the training labels (a, b, c)")
    binary = LabelSet.from_training([0, 1])
    assert binary.encode([1, 0, "positive"]) == [1, 0, 1]
    table = read_table(write(tmp_path / "d.csv", "text,label\na,1\nb,0\n"))
    assert LabelSet.from_table(table).encode_table(table) == [1, 0]


def test_stratified_split_is_stratified_and_seeded():
    labels = [0] * 600 + [1] * 300 + [2] * 100
    a = stratified_split(labels, {"dev": 0.1, "test": 0.2}, seed=1)
    assert list(a) == ["train", "dev", "test"] and [len(a[s]) for s in a] == [700, 100, 200]
    assert sorted(a["train"] + a["dev"] + a["test"]) == list(range(1000))
    assert Counter(labels[i] for i in a["dev"]) == {0: 60, 1: 30, 2: 10}
    assert Counter(labels[i] for i in a["test"]) == {0: 120, 1: 60, 2: 20}
    assert stratified_split(labels, {"dev": 0.1, "test": 0.2}, seed=1) == a
    assert stratified_split(labels, {"dev": 0.1, "test": 0.2}, seed=2)["dev"] != a["dev"]
    assert list(stratified_split(labels, {"dev": 0.1}, seed=0)) == ["train", "dev"]


def test_stratified_split_errors():
    labels = [0] * 50 + [1] * 50
    assert "between 0 and 1" in error(stratified_split, labels, {"dev": 1.0}, 0)
    assert "between 0 and 1" in error(stratified_split, labels, {"dev": 0}, 0)
    assert "sum to 1; they must sum to less than 1" in error(stratified_split, labels, {"dev": 0.5, "test": 0.5}, 0)
    assert error(stratified_split, labels + [2, 2], {"dev": 0.1, "test": 0.1}, 0, ["a", "b", "c"]) == (
        "cannot split stratified into train, dev, test: label 'c' has 2 example(s) (each label needs at least 3)")
    assert "the dev split would have 1 row(s), fewer than the 2 labels" in error(
        stratified_split, labels, {"dev": 0.01}, 0)


# ---- the real SST folders -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/data beside the repository")
def test_real_sst_folders_read_as_read_split_reads_them():
    for folder in ("sst2-sentences", "glue-sst2", "sst5-sentences"):
        for split in ("train", "dev", "test"):
            path = SHARED / folder / f"{split}.tsv"
            labelled = (folder, split) != ("glue-sst2", "test")
            table = read_table(path, require_labels=labelled)
            if folder == "sst5-sentences":  # read_split takes 0 / 1 only; the README says csv reads these exactly
                with open(path, newline="", encoding="utf-8") as f:
                    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
                expected = ([r[0].strip() for r in rows], [int(r[1]) for r in rows])
            else:
                s = read_split(path, require_labels=labelled)
                expected = (s.texts, s.labels)
                assert table.sha256 == s.sha256
            assert (table.texts, table.labels) == expected, path
            assert table.lines == list(range(2, len(table) + 2))
            if labelled and split == "train":
                names = LabelSet.from_table(table).names
                assert names == (("0", "1", "2", "3", "4") if folder == "sst5-sentences" else ("negative", "positive"))
    assert any("\u00a0" in t for t in read_table(SHARED / "sst2-sentences" / "train.tsv").texts)


def test_predicts_table_extensions_are_the_readers():
    from sst2.config import TABLE_EXTENSIONS
    from sst2.data.formats import EXTENSIONS

    assert sorted(TABLE_EXTENSIONS) == sorted(EXTENSIONS)  # one list kept light for the command line's checks


def test_labels_that_differ_only_in_case_are_refused_unless_listed(tmp_path):
    from sst2.data.dataset import load_splits

    f = tmp_path / "case.csv"
    f.write_text("text,label\n" + "".join(f"t{i},{y}\n" for i, y in enumerate(["Pos", "pos", "Neg", "neg"] * 5)))
    with pytest.raises(DataError, match=r"^" + re.escape(f"{f}: the labels 'Neg' and 'neg'; 'Pos' and 'pos' differ "
                                                         "only in case; write each class one way")):
        load_splits(f)  # trained four classes without a word
    assert load_splits(f, labels=["pos", "Pos", "neg", "Neg"], dev_ratio=0)["train"].label_names == (
        "pos", "Pos", "neg", "Neg")
