"""Faults while writing: two processes storing the same cache key, ``kill -9`` mid-write, a full disk.

Each leaves either a complete, valid result or nothing that a later run would trust, and a rerun
recognises and removes what a killed process left. Every case is bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sst2.features.cache import FeatureCache, Features, cache_key

ROOT = Path(__file__).resolve().parents[1]


def _features(n: int = 50, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, n).astype(np.int64)
    states = rng.standard_normal((int(lengths.sum()), 2, 8)).astype(np.float16)
    return Features(states, lengths, np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))


def _python(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


STORE_LOOP = """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_faults import _features
    from sst2.features.cache import FeatureCache, cache_key
    cache = FeatureCache({root!r}, log=lambda m: None)
    for i in range({n}):
        key = cache_key(i=i)
        got = cache.store(key, {{"i": i}}, _features(seed=i))
        assert np.array_equal(np.asarray(got.states), _features(seed=i).states), i
    print("ok")
"""


def test_two_processes_storing_the_same_keys_both_succeed(tmp_path):
    code = STORE_LOOP.format(tests=str(ROOT / "tests"), root=str(tmp_path / "cache"), n=40)
    procs = [_python(code) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "ok", err
    cache = FeatureCache(tmp_path / "cache")
    assert all(cache.load(cache_key(i=i)) is not None for i in range(40))
    assert not list((tmp_path / "cache").glob(".tmp-*"))


def test_an_encode_killed_mid_write_leaves_nothing_trusted_and_is_cleaned(tmp_path):
    root = tmp_path / "cache"
    proc = _python(f"""
        import time, numpy as np
        from sst2.features.cache import FeatureCache, cache_key
        def make(path):
            np.save(path, np.zeros((10, 2, 8), np.float16))
            print("writing", flush=True)
            time.sleep(60)
        FeatureCache({str(root)!r}).build(cache_key(k=1), {{}}, make)
    """)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = list(root.glob(".tmp-*"))
    assert len(left) == 1 and (left[0] / ".owner").is_file()
    cache = FeatureCache(root, log=lambda m: None)
    assert cache.load(cache_key(k=1)) is None  # nothing published
    cache.store(cache_key(k=2), {}, _features())  # a later build cleans what the killed one left
    assert not list(root.glob(".tmp-*"))
    assert cache.load(cache_key(k=2)) is not None


def test_a_full_disk_while_caching_is_a_clear_error_and_no_entry(tmp_path):
    root = tmp_path / "cache"
    proc = _python(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        from test_faults import _features
        from sst2.errors import UserError
        from sst2.features.cache import FeatureCache, cache_key
        try:
            FeatureCache({str(root)!r}).store(cache_key(k=1), {{}}, _features(n=2000))
        except UserError as exc:
            print(exc)
    """)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith(f"feature cache: cannot write the entry into {root} (")
    assert out.strip().endswith("free some space or choose another --cache-dir")
    assert [p.name for p in root.iterdir()] == []  # no entry, no temporary


def _train_argv(backbone, data, out, cache):
    return [sys.executable, "-m", "sst2.cli", "train", "--data", str(data), "--backbone", str(backbone),
            "--out", str(out), "--cache-dir", str(cache), "--batch-size", "8", "--max-length", "32",
            "--threads", "1", "--quiet"]


def test_a_run_killed_mid_training_is_cleaned_and_a_rerun_gives_the_clean_result(tiny_backbone_dir, tiny_data_dir,
                                                                                   tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = _train_argv(tiny_backbone_dir, tiny_data_dir, out, cache)
    proc = subprocess.Popen(argv + ["--epochs", "500"], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".run.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # into training
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(list(tmp_path.glob(".run.partial-*"))) == 1 and not out.exists()
    subprocess.run(argv + ["--epochs", "2"], env=env, check=True, capture_output=True, timeout=120)
    assert not list(tmp_path.glob(".run.partial-*"))  # the killed run's temporary was removed
    clean = tmp_path / "clean"
    subprocess.run(_train_argv(tiny_backbone_dir, tiny_data_dir, clean, tmp_path / "cache2") + ["--epochs", "2"],
                   env=env, check=True, capture_output=True, timeout=120)
    assert (out / "history.csv").read_text() == (clean / "history.csv").read_text()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (out, clean))
    assert (a["dev_accuracy"], a["test_accuracy"]) == (b["dev_accuracy"], b["test_accuracy"])


def test_a_full_disk_while_writing_the_model_is_a_clear_error_and_no_run(tiny_backbone_dir, tiny_data_dir, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = _train_argv(tiny_backbone_dir, tiny_data_dir, tmp_path / "warm", cache) + ["--epochs", "1"]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=120)  # the cache is written here
    code = (f"import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000)); "
            f"from sst2.cli import main; sys.exit(main({argv[3:-2] + ['--epochs', '1']!r}))")
    code = code.replace(str(tmp_path / "warm"), str(tmp_path / "run"))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("sst2 train: error: cannot write the run into ") and "File too large" in res.stderr
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))


def test_cache_dir_naming_a_file_is_an_error(tiny_backbone_dir, tiny_data_dir, tmp_path, capsys):
    from sst2.cli import main

    (tmp_path / "f").write_text("x")
    argv = _train_argv(tiny_backbone_dir, tiny_data_dir, tmp_path / "run", tmp_path / "f")[3:]
    assert main(argv + ["--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip() == (f"sst2 train: error: feature cache folder {tmp_path / 'f'} is a file, "
                                               f"not a folder (--cache-dir)")


@pytest.mark.parametrize("flag", ["--lr", "--max-length"])
def test_bad_numbers_are_refused_before_training(flag, tiny_backbone_dir, tiny_data_dir, tmp_path, capsys):
    from sst2.cli import main

    value = {"--lr": "inf", "--max-length": "100000"}[flag]
    argv = _train_argv(tiny_backbone_dir, tiny_data_dir, tmp_path / "run", tmp_path / "c")[3:]
    assert main(argv + ["--epochs", "1", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    expected = {"--lr": "lr: must be a finite number, got inf",
                "--max-length": "data.max_length: 100000 is more than the encoder's 64 positions"}[flag]
    assert expected in err and not (tmp_path / "run").exists()


def test_a_loss_that_becomes_nan_stops_the_run_and_saves_nothing(tiny_backbone_dir, tiny_data_dir, tmp_path, capsys):
    from sst2.cli import main

    argv = _train_argv(tiny_backbone_dir, tiny_data_dir, tmp_path / "run", tmp_path / "c")[3:]
    assert main(argv + ["--epochs", "2", "--lr", "1e38"]) == 2  # weights overflow to inf, the loss to nan
    err = capsys.readouterr().err.strip()
    assert err.startswith("sst2 train: error: the training loss became nan at epoch 1, step ")
    assert err.endswith("no model was saved (lower optim.lr or check the data)")
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))


def test_a_presets_data_file_missing_outside_the_repository_layout_names_the_preset(
        tiny_backbone_dir, tiny_data_dir, tiny_model_dir, tmp_path, capsys, monkeypatch):
    from sst2.cli import main

    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    glue = (tmp_path / "../shared/data/glue-sst2/train.tsv").resolve()
    common = ["--data", str(tiny_data_dir), "--backbone", str(tiny_backbone_dir), "--out", "run", "--epochs", "1"]
    assert main(["train", "--preset", "teacher", *common]) == 2
    assert capsys.readouterr().err.strip() == (  # before: "GLUE: training file not found (--train-file)"
        f"sst2 train: error: {glue}: not found; it is the teacher preset's data.train_file "
        f"(../shared/data/glue-sst2/train.tsv, a path in this repository's layout, from the working directory); "
        f"pass --train-file PATH")
    assert main(["distill", "--teacher", str(tiny_model_dir), *common]) == 2
    assert capsys.readouterr().err.strip().endswith(  # before: "GLUE: file not found"
        "it is the distill preset's distill.transfer_files (../shared/data/glue-sst2/train.tsv, a path in this "
        "repository's layout, from the working directory); pass --transfer-file PATH, or --set "
        "distill.transfer_files=[] for none")
    assert not (tmp_path / "run").exists()
