import json

import pytest

from sst2.evaluation.compare import compare, load_run
from sst2.config import CompareConfig, ConfigError
from sst2.errors import UserError


def fake_run(path, model="efficient", seed=0, dev=0.86, test=0.85, train_seconds=50.0, **extra):
    """A finished run directory as far as compare needs it: metrics.json (and an empty model/)."""
    path.mkdir(parents=True)
    (path / "model").mkdir()
    m = {"model": model, "preset": "improved" if model == "efficient" else None, "backbone": "all-MiniLM-L6-v2",
         "trainable_params": 494_345 if model == "efficient" else 22_713_601, "total_params": 23_207_641,
         "epochs": 10, "best_epoch": 3, "dev_accuracy": dev, "test_accuracy": test, "cache_seconds": 1.5,
         "train_seconds": train_seconds, "seconds_per_epoch": train_seconds / 10, "total_seconds": train_seconds + 9,
         "peak_rss_mb": 1100.0 + seed, "seed": seed, "max_length": 64, "threads": 2, **extra}
    (path / "metrics.json").write_text(json.dumps(m))
    return path


@pytest.fixture
def runs(tmp_path):
    single = fake_run(tmp_path / "efficient")
    multi = tmp_path / "vanilla"
    for seed, dev, test, secs in ((0, 0.88, 0.89, 200.0), (1, 0.89, 0.90, 210.0), (2, 0.90, 0.88, 220.0)):
        fake_run(multi / f"seed-{seed}", model="vanilla", seed=seed, dev=dev, test=test, train_seconds=secs)
    (multi / "summary.json").write_text("{}")
    return single, multi


def test_compare_renders_a_table_from_single_and_multi_seed_runs(runs, tmp_path):
    single, multi = runs
    out = tmp_path / "cmp"
    result = compare(CompareConfig(runs=[str(single), str(multi)], out=str(out), latency=False, quiet=True))
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "compare.png"]
    md = (out / "compare.md").read_text()
    lines = md.splitlines()
    assert lines[0].startswith("| model | trainable params | total params | train time (s) |")
    assert "ms / sentence" not in lines[0]  # --no-latency: no timing columns
    eff, van = lines[2], lines[3]
    assert eff.startswith("| efficient (improved) | 494,345 | 23,207,641 | 50.0 |")
    assert "| 0.8600 | 0.8500 |" in eff
    # mean ± sample std (n): dev 0.88/0.89/0.90 -> 0.8900 ± 0.0100; train 200/210/220 -> 210.0 ± 10.0
    assert van.startswith("| vanilla (full fine-tune) | 22,713,601 | 23,207,641 | 210.0 ± 10.0 (3) |")
    assert "| 0.8900 ± 0.0100 (3) | 0.8900 ± 0.0100 (3) |" in van
    assert "| 1,102 |" in van  # peak RSS: the largest of the seeds
    assert f"`sst2 compare {single} {multi} --out {out} --no-latency`" in md
    saved = json.loads((out / "compare.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    row = saved["rows"][1]
    assert row["n_seeds"] == 3 and row["seeds"] == [0, 1, 2]
    assert row["dev_accuracy_mean"] == pytest.approx(0.89) and row["dev_accuracy_std"] == pytest.approx(0.01)


def test_labels_name_the_rows(runs, tmp_path):
    single, multi = runs
    compare(CompareConfig(runs=[str(single), str(multi)], labels=["head", "full"], out=str(tmp_path / "c"),
                          latency=False, quiet=True))
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "\n| head | 494,345 |" in md and "\n| full | 22,713,601 |" in md


def test_compare_times_inference_on_the_saved_models(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    from sst2.cli import main

    run = tiny_model_dir.parent
    out = tmp_path / "cmp"
    code = main(["compare", str(run), str(run), "--labels", "a", "b", "--data", str(tiny_data_dir), "--out", str(out),
                 "--calls", "5", "--warmup", "1", "--repeats", "1", "--threads", "1", "--rounds", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| model | trainable params |" in printed and "ms / sentence, batch 64 |" in printed
    rows = json.loads((out / "compare.json").read_text())["rows"]
    for row in rows:
        assert "inference_error" not in row
        assert row["b1_calls"] == 10 and row["b1_ms_p50"] > 0 and row["b64_ms_per_sentence_p50"] > 0  # 5 x 2 rounds
        assert row["inference_model_dir"] == str(run / "model")
    assert (out / "compare.png").stat().st_size > 0
    assert "in 2 rounds, every model once a round" in (out / "compare.md").read_text()
    assert json.loads((out / "compare.json").read_text())["conditions"]["command"] == (
        f"sst2 compare {run} {run} --labels a b --out {out} --data {tiny_data_dir} --calls 5 --warmup 1 --repeats 1 "
        "--rounds 2 --threads 1")  # every option given, so that it re-runs the same comparison


def test_a_model_that_cannot_be_timed_is_named_with_its_reason_and_the_exit_is_an_error(tiny_model_dir,
                                                                                       tiny_data_dir, tmp_path, capsys):
    import shutil

    from sst2.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir.parent, broken)
    for weights in (broken / "model").glob("*.safetensors"):
        weights.unlink()
    out = tmp_path / "cmp"
    code = main(["compare", str(tiny_model_dir.parent), str(broken), "--labels", "good", "bad", "--data",
                 str(tiny_data_dir), "--out", str(out), "--calls", "3", "--warmup", "1", "--repeats", "1",
                 "--threads", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2  # was 0, with only "error" in the table and the reason in compare.json
    assert err.startswith(f"sst2 compare: error: wrote {out}/, but 1 model(s) could not be timed: bad (")
    md = (out / "compare.md").read_text()
    assert "\nbad: not timed (" in md and "| error | error |" in md
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert rows[0]["b1_ms_p50"] > 0 and "inference_error" in rows[1]


def test_compare_and_bench_keep_a_users_own_files_of_their_output_names(tiny_model_dir, tiny_backbone_dir, tmp_path,
                                                                        capsys):
    from sst2.cli import main

    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "compare.md").write_text("my own compare notes\n")
    (mine / "bench.md").write_text("my own bench notes\n")
    run = str(tiny_model_dir.parent)
    assert main(["compare", run, "--no-latency", "--out", str(mine), "--quiet"]) == 2  # compare.md was replaced
    assert capsys.readouterr().err.strip() == (f"sst2 compare: error: --out {mine}: it holds compare.md, which sst2 "
                                               f"compare did not write (no compare.json of its own beside them); "
                                               f"move them or choose another --out")
    assert main(["bench", "--backbone", str(tiny_backbone_dir), "--out", str(mine), "--quiet"]) == 2
    assert "it holds bench.md, which sst2 bench did not write" in capsys.readouterr().err
    assert (mine / "compare.md").read_text() == "my own compare notes\n" and (mine / "bench.md").exists()
    again = tmp_path / "cmp"
    for _ in range(2):  # an earlier compare's files are replaced
        assert main(["compare", run, "--no-latency", "--out", str(again), "--quiet"]) == 0


def test_compare_reads_a_data_folder_of_any_labels_and_fasttext_needs_no_timing(tiny_model_dir, tmp_path):
    from conftest import write_tsv
    from sst2.cli import main

    data = tmp_path / "three"
    data.mkdir()
    for name, n in (("train", 30), ("dev", 9), ("test", 9)):
        write_tsv(data / f"{name}.tsv", [(f"text {i} good" if i % 3 else f"text {i}", i % 3) for i in range(n)])
    out = tmp_path / "cmp"
    # before: "label must be 0 or 1, got '2'" (dev read as SST-2), and a ZeroDivisionError with --no-latency
    assert main(["compare", str(tiny_model_dir.parent), "--data", str(data), "--out", str(out), "--no-latency",
                 "--fasttext", "--quiet"]) == 0
    anchor = json.loads((out / "compare.json").read_text())["rows"][-1]
    assert anchor["model"] == "fasttext" and 0 <= anchor["dev_accuracy_mean"] <= 1 and "b1_calls" not in anchor
    assert main(["compare", str(tiny_model_dir.parent), "--data", str(data), "--out", str(out), "--calls", "3",
                 "--warmup", "1", "--repeats", "1", "--quiet"]) == 0


def test_bad_run_directories_are_clear_errors(runs, tmp_path):
    single, multi = runs
    with pytest.raises(UserError, match=r"nope: no such run directory$"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty.partial").mkdir()
    with pytest.raises(UserError, match=r"empty\.partial: not a run directory: no metrics\.json and no "
                                        r"seed-\*/metrics\.json \(an unfinished run"):
        load_run(tmp_path / "empty.partial")
    (multi / "seed-2" / "metrics.json").unlink()
    with pytest.raises(UserError, match=r"vanilla: incomplete multi-seed run: no metrics\.json in seed-2$"):
        load_run(multi)
    (single / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match=r"metrics\.json: cannot read run metrics"):
        load_run(single)
    for other in ("{}", "[]", '{"split": "dev", "accuracy": 0.9}'):  # each was a TypeError / AttributeError
        (single / "metrics.json").write_text(other)
        with pytest.raises(UserError, match=r"metrics\.json: not the metrics of an sst2 train run \(no model, "
                                            r"dev_accuracy, .*\); an 'sst2 evaluate --json' output, for one, is not$"):
            load_run(single)


def test_compare_checks_every_path_before_measuring(runs, tmp_path):
    single, _ = runs
    with pytest.raises(UserError, match="missing: no such run directory"):
        compare(CompareConfig(runs=[str(single), str(tmp_path / "missing")], out=str(tmp_path / "c"), quiet=True))
    assert not (tmp_path / "c").exists()


def test_compare_config_errors():
    with pytest.raises(ConfigError, match="runs: give at least one run directory"):
        CompareConfig(runs=[])
    with pytest.raises(ConfigError, match=r"labels: give one per run directory \(2\), got 1"):
        CompareConfig(runs=["a", "b"], labels=["x"])


def test_compare_adds_the_fasttext_anchor_and_a_pareto_plot(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    from sst2.cli import main

    out = tmp_path / "cmp"
    code = main(["compare", str(tiny_model_dir.parent), "--data", str(tiny_data_dir), "--out", str(out), "--calls", "5",
                 "--warmup", "1", "--repeats", "1", "--threads", "1", "--batch-size", "16", "--fasttext"])
    assert code == 0
    assert "pareto.png" in capsys.readouterr().out
    data = json.loads((out / "compare.json").read_text())
    anchor = data["rows"][-1]
    assert anchor["label"] == "fastText (external anchor)" and data["conditions"]["fasttext"]["wordNgrams"] == 2
    assert 0 <= anchor["test_accuracy_mean"] <= 1 and anchor["b16_sentences_per_s"] > 0 and anchor["b1_calls"] == 5
    assert "--fasttext" in data["conditions"]["command"] and "--batch-size 16" in data["conditions"]["command"]
    assert (out / "pareto.png").stat().st_size > 0
    assert "| fastText (external anchor) |" in (out / "compare.md").read_text()


def test_runs_of_different_encoder_depths_get_a_depth_plot(tmp_path):
    paths = []
    for layers, dev in ((2, 0.85), (4, 0.87), (6, 0.88)):
        run = fake_run(tmp_path / f"d{layers}", dev=dev, depth=layers if layers < 6 else None)
        (run / "model" / "encoder").mkdir()
        (run / "model" / "encoder" / "config.json").write_text(json.dumps({"num_hidden_layers": layers}))
        paths.append(str(run))
    out = tmp_path / "cmp"
    data = compare(CompareConfig(runs=paths, out=str(out), latency=False, quiet=True))
    assert [r["encoder_layers"] for r in data["rows"]] == [2, 4, 6]
    assert [r["label"] for r in data["rows"]][:2] == ["efficient (improved), first 2 layers",
                                                      "efficient (improved), first 4 layers"]
    assert (out / "depth.png").stat().st_size > 0
    one = tmp_path / "one"
    compare(CompareConfig(runs=paths[:1], out=str(one), latency=False, quiet=True))
    assert not (one / "depth.png").exists()  # one depth: nothing to plot against


def test_runs_described_alike_get_rows_of_their_own_and_a_later_compare_drops_its_stale_plot(tmp_path):
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", dev=0.9)
    c = fake_run(tmp_path / "other" / "a", dev=0.8)
    out = tmp_path / "cmp"
    data = compare(CompareConfig(runs=[str(a), str(b), str(c)], out=str(out), latency=False, quiet=True))
    # before: three rows "efficient (improved)"; a note naming one could not say which
    assert [r["label"] for r in data["rows"]] == [f"efficient (improved) [{a}]", "efficient (improved) [b]",
                                                  f"efficient (improved) [{c}]"]
    with pytest.raises(UserError, match=r"^--labels: 'x' names more than one row; give each its own$"):
        compare(CompareConfig(runs=[str(a), str(b)], labels=["x", "x"], out=str(out), latency=False, quiet=True))
    for layers, run in ((2, a), (4, b)):  # two depths: a depth plot
        (run / "model" / "encoder").mkdir()
        (run / "model" / "encoder" / "config.json").write_text(json.dumps({"num_hidden_layers": layers}))
    compare(CompareConfig(runs=[str(a), str(b)], out=str(out), latency=False, quiet=True))
    assert (out / "depth.png").is_file()
    (out / "notes.md").write_text("mine")
    compare(CompareConfig(runs=[str(a)], out=str(out), latency=False, quiet=True))
    # before: the earlier depth.png (of two other runs) stayed beside the new table
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "compare.png", "notes.md"]


def test_a_compare_that_fails_while_drawing_leaves_the_earlier_comparison_whole(runs, tmp_path, monkeypatch):
    import sst2.evaluation.compare as compare_module

    single, multi = runs
    out = tmp_path / "cmp"
    compare(CompareConfig(runs=[str(single), str(multi)], out=str(out), latency=False, quiet=True))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("No space left on device")
    monkeypatch.setattr(compare_module, "plot_compare", broken)
    with pytest.raises(OSError):
        compare(CompareConfig(runs=[str(single)], out=str(out), latency=False, quiet=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # before: a new compare.md, old plot and json
