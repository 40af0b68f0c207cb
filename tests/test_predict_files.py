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
    lines.write_text("great movie\n\n")
    assert predict(tiny_model_dir, "--input", lines, "--output", tmp_path / "u.jsonl") == 2
    assert f"{lines}:2: empty text" in capsys.readouterr().err and not (tmp_path / "u.jsonl").exists()


def test_a_parquet_column_empty_in_the_first_chunk_keeps_its_type(tiny_model_dir, tmp_path):
    src, out = tmp_path / "late.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "fine"], "extra": pa.array([None, 5, 6], pa.int64())}), src)
    assert predict(tiny_model_dir, "--input", src, "--output", out, "--chunk", "1") == 0
    assert pq.read_table(out).column("extra").to_pylist() == [None, 5, 6]


def test_a_json_column_empty_in_the_first_chunk_becomes_text_and_a_changing_type_is_named(tiny_model_dir, tmp_path,
                                                                                          capsys):
    src, out = tmp_path / "late.jsonl", tmp_path / "out.parquet"
    src.write_text('{"text": "good", "extra": null}\n{"text": "bad", "extra": 5}\n{"text": "ok", "extra": [1]}\n')
    assert predict(tiny_model_dir, "--input", src, "--output", out, "--chunk", "1") == 0
    assert pq.read_table(out).column("extra").to_pylist() == [None, "5", "[1]"]  # before: a pyarrow error
    src.write_text('{"text": "good", "extra": 3}\n{"text": "bad", "extra": "x"}\n')
    assert predict(tiny_model_dir, "--input", src, "--output", out, "--chunk", "1", "--overwrite") == 2
    assert (f"{out}: cannot write the rows to Parquet (column 'extra' is int64 from the first rows, but output row 2 "
            "holds a str; a Parquet column has one type: write CSV or JSON lines)") in capsys.readouterr().err
    assert pq.read_table(out).column("extra").to_pylist() == [None, "5", "[1]"]  # the old output is kept


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
