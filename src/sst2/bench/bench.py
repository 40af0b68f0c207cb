"""``sst2 bench``: measured time and memory of the models against sequence length.

In the manner of timm's ``benchmark.py``: every case builds fixed inputs of exactly the length being
measured (random token ids, no padding, attention mask all ones), runs warm-up iterations, then timed
iterations with ``time.perf_counter()``, and becomes one flat row whose keys carry their units. A case
that fails becomes an error row; the sweep goes on.

Cases (``--cases``):

* ``train_step`` - one training step of the reference design (batch 128) with the frozen encoder run
  on every batch (under ``no_grad``, then head forward + backward + Adam) versus the head step alone
  on cached token states ``(B, T, K, H)``; for the default MiniLM and a BERT-base-sized encoder.
* ``latency`` - inference time of the encoder alone, the efficient model (encoder + LSTM head) and the
  vanilla model (encoder + linear head on mean-pooled states) against length.
* ``train_cost`` - a training step against length: the efficient heads on cached states versus a
  vanilla fine-tune step (encoder + linear head, full backward + AdamW).

Every row records the peak memory of its case, and the log-log slope of time against length over the
upper lengths is fitted for each curve (1 = linear, 2 = quadratic).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from sst2.bench.cases import MIN_TIMED, TRAIN_SENTENCES, Case, Encoders, plan_cases, run_case
from sst2.bench.report import cache_speedups, fit_slopes, plot, render_markdown
from sst2.config import BenchConfig, to_dict
from sst2.errors import PartialFailure, UserError
from sst2.modeling.heads import count_parameters
from sst2.system import check_own_outputs, environment, set_threads

FORMAT = "sst2-bench/1"


def run_cases(cases: list[Case], s: dict, threads: int, say: Callable[[str], None]) -> list[dict]:
    rows = []
    for i, c in enumerate(cases, 1):
        row = run_case(c, s, threads)
        rows.append(row)
        if c.after is not None:
            c.after()
        what = (f"{row['latency_ms_p50']:,.2f} ms p50, +{row['peak_rss_delta_mb']:,.0f} MB RSS"
                if row["status"] == "ok" else f"{row['status']}: {row['error']}")
        where = f" {c.backbone}" if c.case == "train_step" else ""
        say(f"[{i}/{len(cases)}] {c.case} {c.model} ({c.features}){where} b={c.batch_size} T={c.seq_len}: {what}")
    return rows


def command_line(cfg: BenchConfig) -> str:
    """``sst2 bench`` with the options that differ from their defaults."""
    parts = ["sst2 bench"]
    for name, value in to_dict(cfg).items():
        if value == getattr(BenchConfig, name, None) or (name in ("cases", "lengths", "batch_sizes") and value is None):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            parts.append(flag + " " + " ".join(map(str, value)))
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


OUTPUT_FILES = ("bench.json", "bench.md", "latency_vs_length.png", "memory_vs_length.png")


def _is_bench_json(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def bench(cfg: BenchConfig) -> dict:
    t_start = time.perf_counter()
    started = dt.datetime.now().isoformat(timespec="seconds")
    load_start = _load_avg()
    threads = set_threads(cfg.threads)
    s = cfg.resolved()
    if s["device"] == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available to torch")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    check_own_outputs(out, OUTPUT_FILES, "bench.json", _is_bench_json, "bench")
    say = (lambda msg: None) if cfg.quiet else (lambda msg: print(msg, flush=True))

    encoders = Encoders(cfg.backbone, s["device"])
    encoder, _ = encoders.get(cfg.backbone)  # fail early (a UserError) if the backbone cannot be loaded
    limit = getattr(encoder.config, "max_position_embeddings", None)
    for key, length in (("lengths", max(s["lengths"])), ("step_length", s["step_length"])):
        if isinstance(limit, int) and length > limit:
            raise UserError(f"{key}: {length} is more than the encoder's {limit} positions "
                            f"({cfg.backbone}); use lengths up to {limit}")
    # Everything loaded so far lives to the end: keep it out of the per-case gc.collect() (0.25 s each
    # with transformers imported, otherwise).
    gc.freeze()
    cases = plan_cases(s, cfg.backbone, encoders)
    say(f"sst2 bench: {len(cases)} cases on {cfg.backbone}, {threads} threads, device {s['device']}")
    try:
        rows = run_cases(cases, s, threads, say)
    finally:
        gc.unfreeze()

    env = environment()
    env.update(
        load_avg_start=load_start, load_avg_end=_load_avg(),
        backbone={"name": cfg.backbone, "layers": encoder.config.num_hidden_layers,
                  "hidden_size": encoder.config.hidden_size, "params": count_parameters(encoder)[1]},
    )
    result = {
        "format": FORMAT, "command": command_line(cfg), "started": started,
        "duration_s": round(time.perf_counter() - t_start, 1),
        "environment": env, "conditions": {**s, "min_timed_iters": MIN_TIMED, "train_sentences": TRAIN_SENTENCES},
        "config": to_dict(cfg), "rows": rows,
        "slopes": fit_slopes(rows, s["fit_from"]), "cache_speedup": cache_speedups(rows),
    }
    out.mkdir(parents=True, exist_ok=True)  # only now: a bench that fails early leaves no empty folder
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out)
    (out / "bench.md").write_text(render_markdown(result))
    n_err = sum(r["status"] == "error" for r in rows)
    say(f"wrote {out}/bench.json, bench.md, latency_vs_length.png, memory_vs_length.png "
        f"in {result['duration_s']:.0f} s ({n_err} error rows)")
    if n_err:
        raise PartialFailure(f"{n_err} of {len(rows)} cases failed (their errors are in {out}/bench.md)")
    return result
