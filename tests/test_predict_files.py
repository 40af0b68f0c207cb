"""sst2 predict on files that are unusual or wrong: nothing the user had is lost or replaced."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sst2 import SentimentClassifier
from sst2.cli import main
from sst2.data.rows import iter_rows


def predict(model_dir, *args) -> int:
    return main(["predict", "--model-dir", str(model_dir), *map(str, args)])


def test_a_failed_run_leaves_an_existing_output_as_it_was(tiny_model_dir, tmp_path, capsys):
    src, out = tmp_path / "h.csv", tmp_path / "scored.csv"
    src.write_text("text,label\n")
    out.write_text("precious\n")
    assert predict(tiny_model_dir, "--input", src, "--output", out, "--overwrite") == 2
    assert f"{src}: no rows to classify" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    fresh = tmp_path / "fresh.csv"
    assert predict(tiny_model_dir, "--input", src, "--output", fresh) == 2
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["h.csv", "scored.csv"]


def test_input_columns_named_like_a_prediction_column_are_kept(tiny_model_dir, tmp_path):
    src, out = tmp_path / "l.csv", tmp_path / "o.csv"
    src.write_text("text,label,prob_positive,input_label\ngreat movie,7,x,y\n")
    assert predict(tiny_model_dir, "--input", src, "--output", out) == 0
    (row,) = next(iter_rows(out))
    assert row["input_input_label"] == "7" and row["input_label"] == "y" and row["input_prob_positive"] == "x"
    assert row["label"] == SentimentClassifier.from_pretrained(tiny_model_dir).predict("great movie")


@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
def test_a_labelled_parquet_or_json_lines_file_scores_into_parquet(tiny_model_dir, tmp_path, ext):
    src, out = tmp_path / f"two{ext}", tmp_path / "out.parquet"
    if ext == ".parquet":
        pq.write_table(pa.table({"sentence": ["a good film", "a bad film"], "label": [1, 0]}), src)
    else:
        src.write_text('{"sentence": "a good film", "label": 1}\n{"sentence": "a bad film", "label": 0}\n')
    # before: exit 2, "column 'label' is int64 from the first rows, but output row 1 holds a str": the
    # input label's type stayed on the name the prediction's label took
    assert predict(tiny_model_dir, "--input", src, "--output", out) == 0
    table = pq.read_table(out)
    assert table.column("input_label").to_pylist() == [1, 0] and table.schema.field("label").type == pa.string()
    clf = SentimentClassifier.from_pretrained(tiny_model_dir)
    assert table.column("label").to_pylist() == [clf.predict("a good film"), clf.predict("a bad film")]


def test_the_output_extension_names_its_format_and_a_text_file_can_be_written(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("text\ngreat movie\ndull\n")
    assert predict(tiny_model_dir, "--input", src, "--output", tmp_path / "o.parquet") == 0
    assert pq.read_table(tmp_path / "o.parquet").column("text").to_pylist() == ["great movie", "dull"]
    lines = tmp_path / "in.txt"
    lines.write_text("\ufeffgreat movie\ndull\n")  # a byte-order mark (Notepad's UTF-8) is not text
    assert predict(tiny_model_dir, "--input", lines, "--output", tmp_path / "t.jsonl") == 0
    assert capsys.readouterr().out == ""
    got = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["text"] for r in got] == ["great movie", "dull"] and {"label", "prob_positive"} <= set(got[0])
    assert predict(tiny_model_dir, "--input", lines, "--output", tmp_path / "t.out") == 2
    assert "t.out: cannot tell the output format from the extension '.out'" in capsys.readouterr().err
    assert predict(tiny_model_dir, "--input", src, "--output", tmp_path / "o.csv.gz") == 2  # was plain CSV
    assert "o.csv.gz: cannot tell the output format from the extension '.gz'" in capsys.readouterr().err
    assert predict(tiny_model_dir, "--input", src, "--output", tmp_path / "o") == 0  # no extension: the input's
    assert (tmp_path / "o").read_text().startswith("text,label,")
    lines.write_text("great movie\n\n")
    assert predict(tiny_model_dir, "--input", lines, "--output", tmp_path / "u.jsonl") == 2
    assert f"{lines}:2: empty text" in capsys.readouterr().err and not (tmp_path / "u.jsonl").exists()


def test_a_parquet_column_empty_in_the_first_chunk_keeps_its_type(tiny_model_dir, tmp_path):
    src, out = tmp_path / "late.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "fine"], "extra": pa.array([None, 5, 6], pa.int64())}), src)
    assert predict(tiny_model_dir, "--input", src, "--output", out, "--chunk", "1") == 0
    assert pq.read_table(out).column("extra").to_pylist() == [None, 5, 6]


def test_a_json_column_empty_in_the_first_chunk_or_of_two_types_becomes_text(tiny_model_dir, tmp_path,
                                                                                          capsys):
    src, out = tmp_path / "late.jsonl", tmp_path / "out.parquet"
    src.write_text('{"text": "good", "extra": null}\n{"text": "bad", "extra": 5}\n{"text": "ok", "extra": [1]}\n')
    assert predict(tiny_model_dir, "--input", src, "--output", out, "--chunk", "1") == 0
    assert pq.read_table(out).column("extra").to_pylist() == [None, "5", "[1]"]  # before: a pyarrow error
    src.write_text('{"text": "good", "extra": 3, "n": 1}\n{"text": "bad", "extra": "x", "n": 2.5}\n')
    assert predict(tiny_model_dir, "--input", src, "--output", out, "--chunk", "1", "--overwrite") == 0
    table = pq.read_table(out)  # the file is read first: a column of two types is text (it failed after row 1)
    assert table.column("extra").to_pylist() == ["3", "x"] and table.column("n").to_pylist() == [1.0, 2.5]


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_json_lines_keys_seen_late_make_columns_whatever_the_chunk(ext, tiny_model_dir, tmp_path):
    src = tmp_path / "v.jsonl"
    src.write_text('{"text": "good film"}\n{"text": "bad film", "extra": 1}\n')
    outs = [tmp_path / f"c{chunk}.{ext}" for chunk in (1, 1024)]
    for chunk, out in zip((1, 1024), outs):  # --chunk 1 failed: "rows have column(s) 'extra' that the first rows had not"
        assert predict(tiny_model_dir, "--input", src, "--output", out, "--chunk", chunk, "--quiet") == 0
    a, b = ([row for rows in iter_rows(out) for row in rows] for out in outs)
    # a batch of 1 and a batch of 2 may differ in the last bits of a probability (the CPU's kernels)
    probs = [[float(v) for r in rows for k, v in r.items() if k.startswith("prob_")] for rows in (a, b)]
    assert probs[0] == pytest.approx(probs[1], abs=1e-6)
    rest = [[{k: v for k, v in r.items() if not k.startswith("prob_")} for r in rows] for rows in (a, b)]
    assert rest[0] == rest[1] and [r["extra"] for r in a] in ([None, 1], ["", "1"])


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tiny_model_dir, tmp_path):
    from sst2.system import host_tag

    src, out = tmp_path / "t.txt", tmp_path / "out.csv"
    src.write_text("good film\n")
    host = host_tag()
    stale, live = tmp_path / f".out.csv.{host}-999999.tmp", tmp_path / f".out.csv.{host}-1.tmp"  # 1 runs: kept
    elsewhere = tmp_path / ".out.csv.0badc0de-999999.tmp"  # another machine's writer (a shared disk): kept
    mine = [tmp_path / ".out.csv.20241207", tmp_path / ".out.csv.999999", tmp_path / f".out.csv.{host}-999999.tmp.bak"]
    for path in (stale, live, elsewhere, *mine):
        path.write_text("half")
    (tmp_path / f".out.csv.{host}-999998.tmp").mkdir()  # a folder: not a temporary of ours
    (tmp_path / f".out.csv.{host}-999998.tmp" / "notes.txt").write_text("mine")
    assert predict(tiny_model_dir, "--input", src, "--output", out, "--quiet") == 0
    assert not stale.exists() and out.is_file()
    assert all(p.read_text() == "half" for p in (live, elsewhere, *mine))  # before: the user's files were deleted
    assert (tmp_path / f".out.csv.{host}-999998.tmp" / "notes.txt").read_text() == "mine"


def test_the_text_column_of_json_lines_is_found_in_any_row_of_the_first_chunk(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "k.jsonl"
    src.write_text('{"id": 1}\n{"id": 2, "review": "good"}\n')
    assert predict(tiny_model_dir, "--input", src) == 2  # the first row is the one without a text, not the file
    assert f"{src}:1: no text in column 'review'" in capsys.readouterr().err


def test_bad_rows_are_named_by_their_line(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "m.csv"
    src.write_text('text,id\n"two\nlines",1\n"",2\n')
    assert predict(tiny_model_dir, "--input", src) == 2
    assert f"{src}:4: empty text in column 'text'" in capsys.readouterr().err
    js = tmp_path / "n.jsonl"
    js.write_text('{"text": "ok"}\n{"text": 123}\n{"text": "bad \\ud800 x"}\n')
    assert predict(tiny_model_dir, "--input", js) == 2
    assert f"{js}:2: text in column 'text' is not a string: '123'" in capsys.readouterr().err
    js.write_text('{"text": "bad \\ud800 x"}\n')
    assert predict(tiny_model_dir, "--input", js) == 2
    assert f"{js}:1: not valid Unicode text (a lone surrogate at character 5) in column 'text'" in capsys.readouterr().err


def test_files_that_cannot_be_read_or_written_are_errors_not_tracebacks(tiny_model_dir, tmp_path, capsys,
                                                                        monkeypatch):
    src = tmp_path / "in.csv"
    src.write_text("text\ngreat movie\n")
    (tmp_path / "d.csv").mkdir()
    assert predict(tiny_model_dir, "--input", src, "--output", tmp_path / "d.csv", "--overwrite") == 2
    assert "d.csv: is a folder; name the output file" in capsys.readouterr().err
    assert predict(tiny_model_dir, "--input", tmp_path / "d.csv") == 2
    assert "d.csv: is a folder, not a file" in capsys.readouterr().err
    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr("sst2.data.rows.open", unreadable, raising=False)  # as for a file of mode 000
    assert predict(tiny_model_dir, "--input", src) == 2
    assert capsys.readouterr().err == f"sst2 predict: error: {src}: Permission denied\n"


def test_the_api_refuses_texts_it_cannot_classify(tiny_model_dir):
    clf = SentimentClassifier.from_pretrained(tiny_model_dir)
    with pytest.raises(TypeError, match=r"texts\[1\]: expected a string, got NoneType"):
        clf.predict(["good", None])
    with pytest.raises(ValueError, match=r"texts\[0\]: empty text"):
        clf.predict_proba([" "])
    with pytest.raises(ValueError, match=r"texts\[0\]: not valid Unicode text \(a lone surrogate at character 2\)"):
        clf.predict_details(["a\ud800"])


def test_ray_output_overwrite_keeps_files_added_inside_predictions_and_errors(tmp_path):
    from sst2.inference.ray_io import OutputError, finish_output, prepare_output
    from sst2.system import process_tag

    out = tmp_path / "scored"
    prepare_output(out, False)
    (out / "predictions" / "part-000000000000.csv").write_text("text,label\n")
    (out / "errors" / f".part-000000000000.csv.{process_tag()}.tmp").write_text("half")
    finish_output(out, {}, "complete")  # an earlier output
    (out / "predictions" / "part-000000000000.csv").write_text("text,label\n")
    prepare_output(out, True)  # only what sst2 wrote: replaced
    assert sorted(p.name for p in out.iterdir()) == [".sst2-output", "errors", "predictions"]
    assert not any((out / "predictions").iterdir())
    finish_output(out, {}, "complete")
    (out / "predictions" / "my-notes.md").write_text("mine")
    (out / "errors" / "fixed-by-hand.csv").write_text("mine")
    with pytest.raises(OutputError) as exc:
        prepare_output(out, True)  # before: both files were deleted with the folders
    assert str(exc.value) == (f"refusing to replace {out}: it also holds predictions/my-notes.md, "
                              "errors/fixed-by-hand.csv, which sst2 predict did not write; move them elsewhere first")
    assert (out / "predictions" / "my-notes.md").read_text() == (out / "errors" / "fixed-by-hand.csv").read_text()


def test_nan_and_nested_values_of_an_input_column_are_written_as_strict_json(tiny_model_dir, tmp_path, capsys):
    import datetime
    import json as js

    src = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"sentence": ["good film", "bad film"], "score": [float("nan"), 1.5],
                             "meta": [{"day": datetime.date(2024, 12, 7)}, None]}), src)
    assert predict(tiny_model_dir, "--input", src) == 0  # stdout
    for out in (tmp_path / "o.jsonl", tmp_path / "o.csv"):
        assert predict(tiny_model_dir, "--input", src, "--output", out, "--quiet") == 0  # csv: a TypeError
    lines = capsys.readouterr().out.splitlines() + (tmp_path / "o.jsonl").read_text().splitlines()
    rows = [js.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) for line in lines]
    assert [r["score"] for r in rows] == [None, 1.5, None, 1.5]  # before: NaN, which strict readers refuse
    assert rows[0]["meta"] == {"day": "2024-12-07"}
    csv_rows = [row for rows in iter_rows(tmp_path / "o.csv") for row in rows]
    assert [r["meta"] for r in csv_rows] == ['{"day": "2024-12-07"}', ""]
