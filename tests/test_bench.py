"""The benchmark harness on the tiny random BERT: rows, files, error rows, skips, slopes, memory.

No assertion here depends on how fast the machine is: budgets are set so that every case runs
exactly one warm-up and the minimum number of timed iterations.
"""

import json

import numpy as np
import pytest
import torch

from sst2.bench.cases import MIN_TIMED, ROW_KEYS, fit_slope, time_step
from sst2.bench.memory import PeakMemory
from sst2.cli import main
from sst2.config import BenchConfig, ConfigError

OUT_FILES = {"bench.json", "bench.md", "latency_vs_length.png", "memory_vs_length.png"}
# one warm-up, MIN_TIMED timed runs, one thread: the smallest honest measurement
FAST = ["--quick", "--threads", "1", "--warmup", "1", "--iters", "3", "--seconds", "0.001", "--quiet"]


def run_bench(tiny_backbone_dir, out, *extra) -> dict:
    assert main(["bench", "--backbone", str(tiny_backbone_dir), "--out", str(out), *FAST, *extra]) == 0
    return json.loads((out / "bench.json").read_text())


def test_fit_slope_recovers_linear_and_quadratic():
    n = np.array([128, 256, 512])
    assert fit_slope(n, 0.3 * n) == pytest.approx(1.0)
    assert fit_slope(n, 2e-4 * n**2) == pytest.approx(2.0)
    assert 1 < fit_slope(n, 0.5 * n + 1e-3 * n**2) < 2  # a linear + quadratic mix lies in between
    with pytest.raises(ValueError, match="at least two lengths"):
        fit_slope([128], [1.0])


def test_time_step_counts_warmup_and_timed_iterations():
    calls = []
    n_warm, times = time_step(lambda: calls.append(1), warmup=5, iters=50, seconds=1e-9)
    assert (n_warm, len(times)) == (1, MIN_TIMED)  # budget spent: the minimums still run
    n_warm, times = time_step(lambda: None, warmup=2, iters=7, seconds=60.0)
    assert (n_warm, len(times)) == (2, 7)  # iteration caps reached first
    assert len(calls) == 1 + MIN_TIMED and all(t >= 0 for t in times)


def test_peak_memory_sees_an_allocation_inside_the_case():
    with PeakMemory() as mem:
        x = torch.ones(50_000_000)  # 200 MB, touched
        del x
    assert mem.method in ("VmHWM", "sampled")
    assert mem.delta_mb > 150 and mem.peak_mb >= mem.baseline_mb + mem.delta_mb - 1


def test_quick_sweep_writes_rows_with_the_documented_keys(tiny_backbone_dir, tmp_path):
    out = tmp_path / "bench"
    result = run_bench(tiny_backbone_dir, out, "--lengths", "8", "16", "32")
    assert OUT_FILES <= {p.name for p in out.iterdir()}
    rows = result["rows"]
    assert all(set(r) == set(ROW_KEYS) for r in rows)
    assert all(r["status"] == "ok" and r["error"] is None for r in rows), [r["error"] for r in rows]
    assert {r["case"] for r in rows} == {"train_step", "latency", "train_cost"}
    for r in rows:
        assert r["timed_iters"] == MIN_TIMED and r["warmup_iters"] == 1 and r["threads"] == 1
        assert 0 < r["latency_ms_min"] <= r["latency_ms_p50"] <= r["latency_ms_p90"]
        assert r["samples_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["peak_rss_delta_mb"] >= 0
    # latency: 3 models x 2 batch sizes (--quick: 1 4) x 3 lengths; train_cost: 3 curves x 3 lengths;
    # train_step: 2 heads x {encoder, cached}, MiniLM-only backbone (no BERT-base with --quick)
    assert sum(r["case"] == "latency" for r in rows) == 3 * 2 * 3
    assert sum(r["case"] == "train_cost" for r in rows) == 3 * 3
    steps = [r for r in rows if r["case"] == "train_step"]
    assert {(r["head"], r["features"]) for r in steps} == {(h, f) for h in ("seed", "improved")
                                                           for f in ("encoder", "cached")}
    assert all(r["batch_size"] == 16 and r["seq_len"] == 32 and r["epoch_s_p50"] > 0 for r in steps)
    # the 2-layer encoder has no layer -4: the improved head gets the top two that exist
    assert {tuple(r["layers"]) for r in steps if r["head"] == "improved"} == {(0, 1, 2)}  # "all": embeddings + 2 layers
    assert {s["head"] for s in result["cache_speedup"]} == {"seed", "improved"}
    # one slope per curve, fitted on its top three lengths (none reaches --fit-from 128)
    assert len(result["slopes"]) == 3 * 2 + 3
    assert all((s["fit_min_len"], s["fit_max_len"], s["points"]) == (8, 32, 3) for s in result["slopes"])
    env = result["environment"]
    assert env["threads"] == 1 and env["cpu_model"] and env["versions"]["torch"] == torch.__version__
    assert env["backbone"] == {"name": str(tiny_backbone_dir), "layers": 2, "hidden_size": 32,
                               "params": env["backbone"]["params"]}
    assert result["conditions"]["quick"] is True and " --quick " in result["command"]
    md = (out / "bench.md").read_text()
    for heading in ("## Conditions", "## 1. Training step", "## 2. Inference latency", "## 3. Training step cost",
                    "## 4. Peak memory", "## 5. Fitted complexity"):
        assert heading in md
    assert "## Errors" not in md


def test_a_failing_case_becomes_an_error_row_and_the_status_says_so(tiny_backbone_dir, tmp_path, monkeypatch,
                                                                      capsys):
    import sst2.bench.cases as cases

    real = cases.make_inputs

    def make_inputs(batch_size, seq_len, *a, **k):  # one length breaks every case that runs the encoder
        if seq_len == 16 and batch_size == 2:
            raise RuntimeError("injected failure")
        return real(batch_size, seq_len, *a, **k)

    monkeypatch.setattr(cases, "make_inputs", make_inputs)
    out = tmp_path / "b"
    assert main(["bench", "--backbone", str(tiny_backbone_dir), "--out", str(out), *FAST, "--cases", "latency",
                 "--lengths", "8", "16", "--batch-sizes", "2"]) == 1
    assert capsys.readouterr().err.strip() == (f"sst2 bench: error: 3 of 6 cases failed (their errors are in "
                                               f"{out}/bench.md)")
    rows = json.loads((out / "bench.json").read_text())["rows"]
    bad = [r for r in rows if r["status"] == "error"]
    assert {r["model"] for r in bad} == {"encoder", "efficient", "vanilla"}
    assert all(r["seq_len"] == 16 and r["error"] == "RuntimeError: injected failure" for r in bad)
    assert all(r["status"] == "ok" for r in rows if r not in bad)
    assert "## Errors" in (out / "bench.md").read_text()


def test_lengths_beyond_the_encoders_positions_are_refused(tiny_backbone_dir, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["bench", "--backbone", str(tiny_backbone_dir), "--out", str(out), *FAST,
                 "--lengths", "16", "1024"]) == 2
    assert capsys.readouterr().err.strip() == (f"sst2 bench: error: lengths: 1024 is more than the encoder's 64 "
                                               f"positions ({tiny_backbone_dir}); use lengths up to 64")
    assert not out.exists()  # an empty folder was left behind
    assert main(["bench", "--backbone", str(tiny_backbone_dir), "--out", str(out), *FAST, "--lengths", "16",
                 "--step-length", "100"]) == 2  # was an index error inside the training-step case
    assert capsys.readouterr().err.strip() == (f"sst2 bench: error: step_length: 100 is more than the encoder's 64 "
                                               f"positions ({tiny_backbone_dir}); use lengths up to 64")


def test_max_tokens_records_skipped_cases(tiny_backbone_dir, tmp_path):
    result = run_bench(tiny_backbone_dir, tmp_path / "b", "--cases", "latency", "train_cost", "--lengths", "8", "16",
                       "--batch-sizes", "1", "2", "--max-tokens", "16", "--train-batch-size", "2",
                       "--max-train-tokens", "16")
    status = {(r["model"], r["batch_size"], r["seq_len"]): r["status"] for r in result["rows"]}
    assert status[("encoder", 2, 16)] == "skipped" and status[("encoder", 2, 8)] == "ok"
    assert status[("vanilla-finetune", 2, 16)] == "skipped" and status[("vanilla-finetune", 2, 8)] == "ok"
    assert status[("efficient-seed", 2, 16)] == "ok"  # cached-state heads have no token cap
    assert sum(s == "skipped" for s in status.values()) == 4
    skipped = [r for r in result["rows"] if r["status"] == "skipped"]
    assert all(r["error"].startswith("batch_size x seq_len = 32 > --max-") for r in skipped)


def test_bench_config_reports_every_problem():
    with pytest.raises(ConfigError, match=r"(?s)cases: each must be one of.*nope.*lengths: must be.*seconds"):
        BenchConfig(cases=["latency", "nope"], lengths=[0, 8], seconds=0)
    s = BenchConfig(quick=True).resolved()
    assert (s["lengths"], s["batch_sizes"], s["bert_base"]) == ([16, 64, 128], [1, 4], False)
    s = BenchConfig().resolved()
    assert s["lengths"] == [8, 16, 32, 64, 128, 256, 512] and s["step_batch_size"] == 128 and s["bert_base"]
