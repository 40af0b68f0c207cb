"""``sst2 train --out``: nothing that sst2 did not write is ever replaced or removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sst2.cli import main


@pytest.fixture
def train_cli(tiny_backbone_dir, tiny_data_dir, tmp_path, capsys):
    """``train_cli(out, *extra) -> (status, stderr)``: a one-epoch efficient run through the CLI."""

    def run(out, *extra, data=tiny_data_dir, cache=None):
        argv = ["train", "--data", str(data), "--backbone", str(tiny_backbone_dir), "--out", str(out),
                "--cache-dir", str(cache or tmp_path / "cache"), "--epochs", "1", "--batch-size", "8",
                "--max-length", "32", "--threads", "1", "--quiet", *extra]
        capsys.readouterr()
        status = main(argv)
        return status, capsys.readouterr().err

    return run


def test_overwrite_refuses_a_folder_sst2_did_not_write(train_cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    status, err = train_cli(out, "--overwrite")
    assert status == 2
    assert err.strip() == (f"sst2 train: error: refusing to replace {out}: it was not written by sst2 train "
                           f"(no .sst2-run marker); it holds precious.txt")
    assert (out / "precious.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".mine.partial-*"))


def test_overwrite_replaces_a_real_run(train_cli, tmp_path):
    out = tmp_path / "run"
    assert train_cli(out)[0] == 0
    first = json.loads((out / "metrics.json").read_text())
    status, err = train_cli(out)
    assert status == 2 and "already exists and is not empty (pass --overwrite, in Python overwrite=True, to " in err
    assert train_cli(out, "--overwrite", "--seed", "1")[0] == 0
    second = json.loads((out / "metrics.json").read_text())
    assert first["seed"] == 0 and second["seed"] == 1
    assert json.loads((out / ".sst2-run").read_text())["state"] == "complete"
    assert (out / "model" / "head.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]  # no temporaries left
    mask = os.umask(0o022)
    os.umask(mask)
    for path, full in ((out, 0o777), (out / "model", 0o777), (out / "model" / "head.safetensors", 0o666),
                       *((p, 0o666) for p in (out / "model" / "encoder").glob("*.safetensors"))):
        assert oct(path.stat().st_mode & 0o777) == oct(full & ~mask), path  # readable by others, as the umask allows


def test_overwrite_refuses_a_run_holding_what_it_did_not_write_or_what_this_run_reads(train_cli, tmp_path,
                                                                                        tiny_backbone_dir):
    import shutil

    out = tmp_path / "run"
    assert train_cli(out)[0] == 0
    (out / "notes.txt").write_text("mine")
    (out / "compare").mkdir()
    status, err = train_cli(out, "--overwrite")
    assert status == 2 and err.strip() == (f"sst2 train: error: refusing to replace {out}: it holds what the run did "
                                           "not write (compare/, notes.txt); move it elsewhere first")
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "compare").rmdir()
    (out / "model" / "my-notes.md").write_text("mine")  # one folder down: deleted with the run
    status, err = train_cli(out, "--overwrite")
    assert status == 2 and err.strip() == (f"sst2 train: error: refusing to replace {out}: it holds what the run did "
                                           "not write (model/my-notes.md); move it elsewhere first")
    (out / "model" / "my-notes.md").unlink()
    shutil.copytree(tiny_backbone_dir, out / "model" / "encoder-copy")
    status, err = train_cli(out, "--overwrite", "--backbone", str(out / "model" / "encoder-copy"))
    assert status == 2 and err.strip() == (f"sst2 train: error: refusing to write the run into {out}: it holds the "
                                           f"encoder (model.backbone) ({out / 'model' / 'encoder-copy'})")
    assert (out / "model" / "encoder-copy" / "config.json").is_file()


@pytest.mark.parametrize("where", ["cwd", "parent"])
def test_out_is_never_the_working_directory_or_a_parent(train_cli, tmp_path, monkeypatch, where):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("x")
    monkeypatch.chdir(work)
    out = "." if where == "cwd" else ".."
    status, err = train_cli(out, "--overwrite")
    what = "the working directory" if where == "cwd" else "a parent of the working directory"
    assert status == 2 and err.strip() == f"sst2 train: error: refusing to write the run into {out}: it is {what}"
    assert (work / "notes.txt").read_text() == "x"


def test_out_never_holds_the_data_or_the_cache(train_cli, tmp_path, tiny_data_dir):
    import shutil

    holder = tmp_path / "holder"
    shutil.copytree(tiny_data_dir, holder / "data")
    status, err = train_cli(holder, "--overwrite", data=holder / "data")
    assert status == 2 and err.strip() == (f"sst2 train: error: refusing to write the run into {holder}: it holds "
                                           f"the data folder ({holder / 'data'})")
    status, err = train_cli(tmp_path / "c", "--overwrite", cache=tmp_path / "c" / "features")
    assert status == 2 and "it holds the feature cache" in err
    assert sorted(p.name for p in (holder / "data").iterdir()) == ["dev.tsv", "test.tsv", "train.tsv"]


def test_out_naming_a_file_is_an_error(train_cli, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    status, err = train_cli(f, "--overwrite")
    assert status == 2 and err.strip() == f"sst2 train: error: run directory {f} is a file, not a directory"
    assert f.read_text() == "x"


def test_a_users_sibling_partial_folder_is_left_alone(train_cli, tmp_path):
    sibling = tmp_path / "results.partial"
    sibling.mkdir()
    (sibling / "mine.txt").write_text("x")
    assert train_cli(tmp_path / "results")[0] == 0
    assert (sibling / "mine.txt").read_text() == "x"


def test_an_empty_out_is_used_without_overwrite(train_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert train_cli(tmp_path / "empty")[0] == 0
    assert (tmp_path / "empty" / "metrics.json").is_file()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_runs_are_removed_and_nothing_else(train_cli, tmp_path):
    import socket

    def temp(name, pid=None, marker=True):
        d = tmp_path / name
        d.mkdir()
        if marker:
            (d / ".sst2-run").write_text(json.dumps({"format": "sst2-run/1", "state": "writing", "pid": pid,
                                                     "host": socket.gethostname()}))
        (d / "config.json").write_text("{}")
        return d

    stale = temp(".run.partial-dead0000", pid=_dead_pid())
    live = temp(".run.partial-live0000", pid=os.getpid())
    unmarked = temp(".run.partial-user0000", marker=False)
    assert train_cli(tmp_path / "run")[0] == 0
    assert not stale.exists() and live.is_dir() and unmarked.is_dir()


def test_overwrite_replaces_a_run_of_sst2_0_1_which_wrote_no_marker(train_cli, tmp_path):
    old = tmp_path / "old"
    (old / "model").mkdir(parents=True)
    for name in ("config.json", "history.csv", "epochs.csv", "metrics.json", "plot.png"):
        (old / name).write_text("{}")
    (old / "model" / "sst2_model.json").write_text("{}")
    assert train_cli(old, "--overwrite")[0] == 0
    assert (old / ".sst2-run").is_file() and (old / "config.toml").is_file()
    # anything else in it, and it is not an old run
    other = tmp_path / "other"
    (other / "model").mkdir(parents=True)
    (other / "metrics.json").write_text("{}")
    (other / "model" / "sst2_model.json").write_text("{}")
    (other / "notes.txt").write_text("mine")
    status, err = train_cli(other, "--overwrite")
    assert status == 2 and "not written by sst2 train" in err and (other / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_run_whose_model_was_exported(train_cli, tmp_path):
    from sst2.cli import main

    out = tmp_path / "run"
    assert train_cli(out)[0] == 0
    assert main(["export", "--model-dir", str(out / "model"), "--int8", "--quiet", "--threads", "1"]) == 0
    assert (out / "model" / "model.int8.onnx").is_file()
    # before: "refusing to replace ...: it holds what the run did not write (model/model.int8.onnx, model/model.onnx)"
    status, err = train_cli(out, "--overwrite")
    assert status == 0, err
    assert not (out / "model" / "model.onnx").exists()  # the old model's export went with it
    (out / "model" / "model.onnx.bak").write_text("mine")  # any other file is still the user's
    status, err = train_cli(out, "--overwrite")
    assert status == 2 and "it holds what the run did not write (model/model.onnx.bak)" in err


def test_a_saved_config_re_run_elsewhere_does_not_replace_that_folder(train_cli, tmp_path):
    import tomli_w
    import tomllib

    a, b = tmp_path / "a", tmp_path / "b"
    assert train_cli(a)[0] == 0 and train_cli(a, "--overwrite")[0] == 0  # a's config made with --overwrite
    saved = tomllib.loads((a / "config.toml").read_text())
    assert "overwrite" not in saved["run"] and saved["run"]["out"] == str(a)
    older = tmp_path / "older.toml"  # as runs saved it before: overwrite = true
    older.write_text(tomli_w.dumps({**saved, "run": {**saved["run"], "overwrite": True}}))
    assert train_cli(b)[0] == 0
    kept = (b / "metrics.json").read_bytes()
    for config in (a / "config.toml", older):
        status, err = train_cli(b, "--config", str(config))
        assert status == 2 and f"{b} already exists and is not empty (pass --overwrite" in err
    assert (b / "metrics.json").read_bytes() == kept
    assert train_cli(b, "--config", str(older), "--overwrite")[0] == 0


def test_a_seeds_config_re_runs_that_seed_into_its_own_folder(train_cli, tmp_path, monkeypatch, capsys):
    import tomllib

    monkeypatch.chdir(tmp_path)
    assert train_cli("multi", "--seeds", "2")[0] == 0  # a relative --out
    multi = tmp_path / "multi"
    saved = tomllib.loads((multi / "seed-1" / "config.toml").read_text())
    assert saved["run"]["out"] == str(multi / "seed-1")  # was "multi": the whole run, relative to the cwd
    assert tomllib.loads((multi / "config.toml").read_text())["run"]["out"] == str(multi)
    summary, seed0 = (multi / "summary.json").read_bytes(), (multi / "seed-0" / "metrics.json").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = str(multi / "seed-1" / "config.toml")
    assert main(["train", "--config", config, "--quiet"]) == 2  # it exists: refused, from any directory
    assert f"{multi / 'seed-1'} already exists and is not empty" in capsys.readouterr().err
    assert main(["train", "--config", config, "--overwrite", "--quiet"]) == 0  # before: replaced multi/ whole
    assert (multi / "summary.json").read_bytes() == summary and (multi / "seed-0" / "metrics.json").read_bytes() == seed0
    assert not list(elsewhere.iterdir())
