"""Bulk scoring on Ray Data (``sst2 predict --engine ray``): every row out once with its row_id, failed rows in
the error output with file, line and reason, exit status 1 then; clear errors for bad addresses, globs and
outputs; an actor killed mid-run loses nothing. One local Ray (2 CPUs, conftest's ``local_ray``) serves them."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sst2 import SentimentClassifier
from sst2.cli import main
from sst2.data.rows import RowWriter
from sst2.errors import UserError

from conftest import ActorKiller, actor_processes, make_sentences

ray = pytest.importorskip("ray")


def read_dir(path) -> list[dict]:
    files = sorted(path.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist() if files else []


def _predict(*args) -> int:
    return main(["predict", "--engine", "ray", "--quiet", *map(str, args)])


def test_every_row_comes_out_once_and_failed_rows_say_where_and_why(local_ray, exported_dir, tmp_path, capsys):
    texts = [s for s, _ in make_sentences(300, 21)]
    a = [{"review": t, "stars": i % 5} for i, t in enumerate(texts[:200])]
    a[5]["review"], a[17]["review"] = "", "   "
    (tmp_path / "in").mkdir()
    with RowWriter(tmp_path / "in" / "a.jsonl", "jsonl") as w:
        w.write(a)
    lines = [json.dumps({"review": t, "stars": 1}) for t in texts[200:]]
    lines[3] = "[1, 2]"  # JSON, but not an object
    (tmp_path / "in" / "b.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    status = _predict("--model-dir", exported_dir, "--input", tmp_path / "in" / "*.*", "--output", out,
                      "--chunk", 64, "--actors", 2, "--runtime", "onnx")  # fp32: the same scores in any batch
    err = capsys.readouterr().err
    assert status == 1, err  # some rows failed: PartialFailure
    assert "3 of 300 rows could not be scored; each is listed with its file, line and reason in" in err
    assert f"(first: {tmp_path / 'in' / 'a.jsonl'}:6: empty text in column 'review')" in err
    preds, errors = read_dir(out / "predictions"), read_dir(out / "errors")
    ids = sorted(r["row_id"] for r in preds + errors)
    assert ids == list(range(300))  # every row exactly once
    assert sorted((r["row_id"], r["file"].rsplit("/", 1)[1], r["line"], r["reason"]) for r in errors) == [
        (5, "a.jsonl", 6, "empty text in column 'review'"), (17, "a.jsonl", 18, "empty text in column 'review'"),
        (203, "b.jsonl", 4, "expected a JSON object, got an array (JSON lines: one object a line)")]
    preds.sort(key=lambda r: r["row_id"])
    clf = SentimentClassifier.from_pretrained(exported_dir, runtime="onnx", threads=1)
    expected = {i: t for i, t in enumerate(texts) if i not in (5, 17, 203)}
    assert [r["review"] for r in preds] == list(expected.values())  # input columns kept, ids in input order
    assert [r["stars"] for r in preds[:3]] == [0, 1, 2]
    np.testing.assert_allclose([r["prob_positive"] for r in preds],
                               clf.predict_proba(list(expected.values()))[:, 1], atol=1e-6)
    assert [r["label"] for r in preds] == clf.predict(list(expected.values()))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["rows"], summary["predicted"], summary["failed"], summary["actors"]) == (300, 297, 3, 2)
    assert json.loads((out / ".sst2-output").read_text())["state"] == "complete"


def test_plain_text_lines_and_the_python_api(local_ray, exported_dir, tmp_path):
    from sst2.inference.ray_predict import predict_files

    texts = [s for s, _ in make_sentences(50, 22)]
    (tmp_path / "in.txt").write_bytes(("\n".join(texts[:10]) + "\n\xff bad\n" + "\n".join(texts[10:]) + "\n")
                                      .encode("latin-1"))
    report = predict_files(str(exported_dir), str(tmp_path / "in.txt"), str(tmp_path / "out"), runtime="onnx",
                           chunk=16, output_format="jsonl", quiet=True)
    assert (report.rows, report.predicted, report.failed) == (51, 50, 1)
    assert report.first_error == f"{tmp_path / 'in.txt'}:11: not UTF-8 (invalid start byte at byte 1 of the line)"
    rows = [json.loads(x) for f in sorted((tmp_path / "out" / "predictions").glob("*.jsonl"))
            for x in f.read_text().splitlines()]
    assert sorted(r["row_id"] for r in rows) == [i for i in range(51) if i != 10]
    assert {r["row_id"]: r["text"] for r in rows}[11] == texts[10]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_addresses_globs_and_outputs_are_clear_errors(exported_dir, tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("good film\n")
    port = _free_port()  # nothing listens there
    assert _predict("--model-dir", exported_dir, "--input", src, "--output", tmp_path / "o1", "--ray-address",
                    f"127.0.0.1:{port}") == 2
    assert (f"cannot reach a Ray cluster at 127.0.0.1:{port} (Connection refused); start one there with 'ray start "
            f"--head', or leave out --ray-address") in capsys.readouterr().err
    assert _predict("--model-dir", exported_dir, "--input", tmp_path / "nothing-*.csv", "--output", tmp_path / "o2") == 2
    assert f"error: {tmp_path / 'nothing-*.csv'}: no file matches" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert _predict("--model-dir", exported_dir, "--input", src, "--output", tmp_path / "a-file" / "out") == 2
    assert f"cannot write the output folder {tmp_path / 'a-file' / 'out'} (Not a directory)" in capsys.readouterr().err
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert _predict("--model-dir", exported_dir, "--input", src, "--output", theirs, *extra) == 2
        assert (f"refusing to write into {theirs}: it is not empty and was not written by sst2 predict (no "
                f".sst2-output marker); it holds notes.txt") in capsys.readouterr().err
    assert (theirs / "notes.txt").read_text() == "keep me"
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.csv").write_text("text\ngood film\n")
    (tmp_path / "mixed" / "b.jsonl").write_text('{"text": "dull"}\n')
    assert _predict("--model-dir", exported_dir, "--input", tmp_path / "mixed" / "*", "--output", tmp_path / "o2") == 2
    assert "the files are not all of one format (a.csv: csv, b.jsonl: jsonl); score each format on its own" in \
        capsys.readouterr().err
    assert _predict("--model-dir", tiny_model_dir, "--input", src, "--output", tmp_path / "o3") == 2
    assert "runtime 'onnx-int8' needs" in capsys.readouterr().err  # checked before Ray starts
    assert main(["predict", "--engine", "ray", "--model-dir", str(exported_dir), "good film"]) == 2
    err = capsys.readouterr().err
    assert "input: --engine ray reads files: give --input PATH_OR_GLOB" in err
    assert "output: --engine ray writes a folder: give --output DIR" in err
    assert main(["predict", "--model-dir", str(exported_dir), "--retries", "2", "good film"]) == 2
    assert "retries: goes with --engine ray" in capsys.readouterr().err
    assert _predict("--model-dir", exported_dir, "--input", src, "--output", tmp_path / "o5", "--retries", "-1") == 2
    assert "retries: must be >= 0, got -1" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as mp:  # a Python without Ray Data
        mp.setitem(sys.modules, "ray", None)
        assert _predict("--model-dir", exported_dir, "--input", src, "--output", tmp_path / "o4") == 2
    assert "this needs Ray Data, which is not installed: pip install 'sst2[ray]'" in capsys.readouterr().err
    # all refused before writing anything
    assert not any((tmp_path / p).exists() for p in ("o1", "o2", "o3", "o4", "o5"))


def test_an_earlier_output_is_replaced_only_with_overwrite(local_ray, exported_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("good film\ndull plot\n")
    out = tmp_path / "out"
    assert _predict("--model-dir", exported_dir, "--input", src, "--output", out) == 0
    assert json.loads((out / "summary.json").read_text())["runtime"] == "onnx-int8"  # the default
    # int8 quantizes activations per model call: the one call of two rows equals the same call in process
    clf = SentimentClassifier.from_pretrained(exported_dir, runtime="onnx-int8", threads=1)
    np.testing.assert_allclose([r["prob_positive"] for r in read_dir(out / "predictions")],
                               clf.predict_proba(["good film", "dull plot"])[:, 1], atol=1e-6)
    assert _predict("--model-dir", exported_dir, "--input", src, "--output", out) == 2
    assert "holds the output of an earlier sst2 predict --engine ray (pass --overwrite to replace it)" in \
        capsys.readouterr().err
    src.write_text("good film\n")
    assert _predict("--model-dir", exported_dir, "--input", src, "--output", out, "--overwrite") == 0
    assert [r["row_id"] for r in read_dir(out / "predictions")] == [0]


def test_an_actor_killed_mid_run_loses_no_row(local_ray, exported_dir, tmp_path, monkeypatch):
    from sst2.inference.ray_predict import predict_files

    # output files of 256 rows, so that they appear as the run goes: the kill waits for the first one
    monkeypatch.setattr("sst2.inference.ray_io.ROWS_PER_FILE", 256)
    texts = [s for s, _ in make_sentences(400, 23)]
    n = 12_000
    (tmp_path / "in.txt").write_text("\n".join(texts[i % 400] for i in range(n)) + "\n")
    predictions, killed = tmp_path / "out" / "predictions", []

    def kill_one():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            written = len(list(predictions.glob("part-*"))) if predictions.is_dir() else 0
            if written and (actors := actor_processes("Scorer")):
                actors[0].kill()
                killed.append((actors[0].pid, written))
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one)
    killer.start()
    report = predict_files(str(exported_dir), str(tmp_path / "in.txt"), str(tmp_path / "out"), runtime="onnx",
                           chunk=32, quiet=True)
    killer.join()
    assert killed, "no scoring actor was found to kill"
    pid, written = killed[0]
    files = len(list(predictions.glob("part-*")))
    print(f"killed actor {pid} when {written} of {files} output files were written")
    assert files > written  # mid-run: the pool went on scoring after the kill
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    ids = sorted(r["row_id"] for r in read_dir(predictions))
    assert ids == list(range(n)) and (report.predicted, report.failed) == (n, 0)


def test_an_actor_that_keeps_dying_fails_the_run_after_its_retries(local_ray, exported_dir, tmp_path):
    """Ray Data alone would restart the actor and retry its batch without limit, and the run would never end."""
    from sst2.inference.ray_predict import ScoringError, predict_files

    texts = [s for s, _ in make_sentences(400, 29)]
    n = 12_000
    (tmp_path / "in.txt").write_text("\n".join(texts[i % 400] for i in range(n)) + "\n")
    t0 = time.monotonic()
    with ActorKiller("Scorer") as killer, pytest.raises(ScoringError) as info:
        predict_files(str(exported_dir), str(tmp_path / "in.txt"), str(tmp_path / "out"), runtime="onnx",
                      actors=1, chunk=32, retries=1, quiet=True)
    killed = killer.killed
    print(f"{len(killed)} actor processes killed; the run failed after {time.monotonic() - t0:.1f} s")
    assert 2 <= len(killed) and time.monotonic() - t0 < 120
    msg = str(info.value)
    assert "rows are missing from the output (row_id " in msg and "; Ray gave up after 1 retry: " in msg, msg
    assert json.loads((tmp_path / "out" / ".sst2-output").read_text())["state"] == "failed"
    with pytest.raises(UserError, match=r"^retries must be a whole number >= 0, got -1$"):
        predict_files(str(exported_dir), str(tmp_path / "in.txt"), str(tmp_path / "out2"), retries=-1)


def test_rows_missing_from_the_output_fail_the_run_naming_them(tmp_path):
    from sst2.inference.ray_io import InputFile, prepare_output
    from sst2.inference.ray_predict import RayPredictReport, ScoringError, _check_coverage

    out = tmp_path / "out"
    prepare_output(out, overwrite=False)
    files = [InputFile(str(tmp_path / "a.txt"), "lines", 10, 0, "text", ["text"]),
             InputFile(str(tmp_path / "b.txt"), "lines", 10, 10, "text", ["text"])]
    # rows 0-11 and 15-19 were written; 12-14 were not
    pq.write_table(pa.table({"row_id": list(range(12)) + list(range(15, 20))}), out / "predictions" / "part-0.parquet")
    report = RayPredictReport(str(out), 20, 0, 0, files, 2, 1, "onnx-int8", 0.0, 1.0)
    with pytest.raises(ScoringError) as info:
        _check_coverage(report, out, "parquet", None)
    assert str(info.value) == (f"{out}: 3 of 20 rows are missing from the output (row_id 12-14; the first is "
                               f"{tmp_path / 'b.txt'} row 3). The rows written are kept in {out}; run again with "
                               f"--overwrite to score everything")
    assert json.loads((out / ".sst2-output").read_text())["state"] == "failed"
