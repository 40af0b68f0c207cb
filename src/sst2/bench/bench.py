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

import copy
import ctypes
import datetime as dt
import gc
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from sst2.modeling.backbone import Backbone
from sst2.config import PRESETS, BenchConfig, to_dict
from sst2.modeling.heads import HeadConfig, build_head, count_parameters
from sst2.modeling.model import SentimentModel
from sst2.system import current_rss_mb, environment, set_threads

FORMAT = "sst2-bench/1"
MIN_TIMED = 3  # a median of fewer runs is not a median
TRAIN_SENTENCES = 6920  # SST-2 train split: one epoch
BERT_BASE = "bert-base (BertConfig(), random weights)"
HEAD_PRESETS = ("seed", "improved")  # the reference head and the default efficient head
HEAD_LR = 1e-3  # Adam, as the presets (fused kernels, as sst2 train)
FINETUNE_LR = 2e-5  # AdamW, a usual BERT fine-tuning rate

# The keys of every row (None where a key does not apply), units in the names.
ROW_KEYS = (
    "case", "model", "features", "backbone", "head", "layers", "batch_size", "seq_len", "device", "threads",
    "status", "error", "warmup_iters", "timed_iters",
    "latency_ms_min", "latency_ms_p50", "latency_ms_p90", "latency_ms_mean", "samples_per_s", "tokens_per_s",
    "epoch_s_p50", "peak_rss_mb", "peak_rss_delta_mb", "baseline_rss_mb", "peak_cuda_mb", "memory_method",
    "trainable_params", "total_params",
)


# --- memory -------------------------------------------------------------------------------------
def _malloc_trim() -> None:
    """Hand freed heap back to the OS so one case's leftovers do not sit in the next one's baseline."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS; Linux >= 4.0."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """Peak memory of the code run inside ``with``.

    On CPU the peak is the process RSS high-water mark: the kernel's VmHWM after resetting it (exact),
    or else the maximum of RSS sampled every millisecond by a thread. ``delta_mb`` is the peak minus the
    RSS at entry (weights and inputs are already loaded then), i.e. what the case itself needed:
    activations, gradients, optimizer state, workspace. On CUDA the allocator's peak is also read.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.method = ""
        self.baseline_mb = self.peak_mb = self.delta_mb = 0.0
        self.cuda_mb: float | None = None
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self._samples.append(proc.memory_info().rss / 2**20)
            self._stop.wait(0.001)

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        _malloc_trim()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.baseline_mb = current_rss_mb()
        if _reset_rss_peak():
            self.method = "VmHWM"
        else:
            self.method = "sampled"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "VmHWM":
            self.peak_mb = _status_kib("VmHWM") / 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._samples + [current_rss_mb()])
        self.delta_mb = max(0.0, self.peak_mb - self.baseline_mb)
        if self.device == "cuda":
            self.cuda_mb = torch.cuda.max_memory_allocated() / 2**20


# --- timing -------------------------------------------------------------------------------------
def time_step(step: Callable[[], None], warmup: int, iters: int, seconds: float,
              sync: Callable[[], None] = lambda: None) -> tuple[int, list[float]]:
    """Run ``step`` for warm-up, then time it; returns ``(warm-up iterations, seconds per timed run)``.

    Warm-up: at least 1 and up to ``warmup`` iterations, stopping early once half the budget is spent.
    Timing: at least ``MIN_TIMED`` and up to ``iters`` runs, stopping early once ``seconds`` are spent.
    """
    n_warm = 0
    t0 = time.perf_counter()
    while n_warm < 1 or (n_warm < warmup and time.perf_counter() - t0 < seconds / 2):
        step()
        sync()
        n_warm += 1
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < MIN_TIMED or (len(times) < iters and time.perf_counter() - t0 < seconds):
        s = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - s)
    return n_warm, times


def summarize(times: list[float], batch_size: int, seq_len: int) -> dict:
    t = np.asarray(times)
    p50 = float(np.median(t))
    return {
        "timed_iters": len(times),
        "latency_ms_min": round(float(t.min()) * 1e3, 3),
        "latency_ms_p50": round(p50 * 1e3, 3),
        "latency_ms_p90": round(float(np.percentile(t, 90)) * 1e3, 3),
        "latency_ms_mean": round(float(t.mean()) * 1e3, 3),
        "samples_per_s": round(batch_size / p50, 2),
        "tokens_per_s": round(batch_size * seq_len / p50, 1),
    }


def fit_slope(lengths, times) -> float:
    """Least-squares slope of log(time) against log(length): ~1 for O(n), ~2 for O(n^2)."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(times, float))
    if len(x) < 2:
        raise ValueError("a slope needs at least two lengths")
    return float(np.polyfit(x, y, 1)[0])


# --- inputs and models ----------------------------------------------------------------------------
def make_inputs(batch_size: int, seq_len: int, vocab_size: int, device: str, seed: int = 0):
    """Random ids of exactly ``seq_len`` tokens, no padding: ids and mask ``(B, T)``, lengths ``(B,)``."""
    g = torch.Generator().manual_seed(seed)
    low = min(1000, vocab_size // 2)  # past the special tokens of BERT-style vocabularies
    ids = torch.randint(low, vocab_size, (batch_size, seq_len), generator=g)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    lengths = torch.full((batch_size,), seq_len, dtype=torch.long)
    return ids.to(device), mask.to(device), lengths.to(device)


def preset_layers(preset: str, num_states: int) -> tuple[int, ...]:
    """The preset's layers that exist in this encoder ("all" = every hidden state, embeddings included;
    a 2-layer test encoder has no layer -4)."""
    if PRESETS[preset]["layers"] == "all":
        return tuple(range(num_states))
    layers = [i for i in PRESETS[preset]["layers"] if -num_states < i < num_states]
    return tuple(layers or [-1])


def lstm_head_config(preset: str, hidden_size: int, num_states: int) -> HeadConfig:
    return HeadConfig.lstm(PRESETS[preset], hidden_size, num_states)


def vanilla_head_config(hidden_size: int) -> HeadConfig:
    return HeadConfig(kind="linear", hidden_size=hidden_size, num_states=1, pooling="mean", dropout=0.1)


class Encoders:
    """Encoders loaded once and shared by the cases: ``get(label) -> (encoder, tokenizer)``."""

    def __init__(self, backbone: str, device: str):
        self.backbone, self.device = backbone, device
        self._loaded: dict[str, tuple] = {}

    def get(self, label: str):
        if label not in self._loaded:
            if label == BERT_BASE:
                from transformers import BertConfig, BertModel

                torch.manual_seed(0)
                encoder, tokenizer = BertModel(BertConfig()), None  # timing only: weights are untrained
            else:
                bb = Backbone.load(self.backbone)
                encoder, tokenizer = bb.encoder, bb.tokenizer
            encoder.requires_grad_(False)
            self._loaded[label] = (encoder.eval().to(self.device), tokenizer)
        return self._loaded[label]

    def drop(self, label: str) -> None:
        self._loaded.pop(label, None)
        gc.collect()


@dataclass
class Case:
    """One row to measure. ``setup()`` builds the model, inputs and optimizer (untimed, before the memory
    baseline) and returns ``(step, info)``: the function to time and extra row fields."""

    case: str
    model: str
    features: str  # "encoder": the encoder runs in the step; "cached": precomputed token states
    backbone: str
    head: str | None
    batch_size: int
    seq_len: int
    setup: Callable[[], tuple[Callable[[], None], dict]]
    skip: str | None = None
    after: Callable[[], None] | None = None  # runs after the case (e.g. free an encoder no longer needed)


def _head_step(head: nn.Module, optimizer, clip: float = 1.0):
    """Head forward + backward + optimizer step, as ``train_one_epoch`` (loss per sentence, clipping)."""
    loss_fn = nn.BCEWithLogitsLoss()

    def step(states: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> None:
        loss = loss_fn(head(states, lengths), labels)  # states (B, T, K, H) -> logits (B,)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(head.parameters(), clip)
        optimizer.step()

    return step


def head_train_setup(encoders: Encoders, label: str, preset: str, features: str, b: int, t: int, device: str):
    """Efficient model training step: encoder per batch (reference) or cached states (head only)."""

    def setup():
        encoder, tok = encoders.get(label)
        layers = preset_layers(preset, encoder.config.num_hidden_layers + 1)
        backbone = Backbone(encoder, tok, layers)
        torch.manual_seed(0)
        head = build_head(lstm_head_config(preset, backbone.hidden_size, len(layers))).to(device).train()
        step = _head_step(head, torch.optim.Adam(head.parameters(), lr=HEAD_LR, fused=True))
        ids, mask, lengths = make_inputs(b, t, encoder.config.vocab_size, device)
        labels = (torch.arange(b, device=device) % 2).float()
        trainable, _ = count_parameters(head)
        info = {"layers": list(backbone.layers), "trainable_params": trainable}
        if features == "cached":
            # what the feature cache hands the head: (B, T, K, H) float32 states
            states = torch.randn(b, t, len(layers), backbone.hidden_size, device=device)
            info["total_params"] = count_parameters(head)[1]
            return (lambda: step(states, lengths, labels)), info

        info["total_params"] = trainable + count_parameters(encoder)[1]

        def encoder_step():
            with torch.no_grad():  # the frozen encoder, run again on every batch as the reference does
                states = backbone(ids, mask)  # (B, T, K, H)
            step(states, lengths, labels)

        return encoder_step, info

    return setup


def inference_setup(encoders: Encoders, label: str, model: str, b: int, t: int, device: str):
    """Forward pass of the encoder alone, the efficient model or the vanilla model."""

    def setup():
        encoder, tok = encoders.get(label)
        ids, mask, _ = make_inputs(b, t, encoder.config.vocab_size, device)
        num_states = encoder.config.num_hidden_layers + 1
        if model == "encoder":
            net, layers = encoder, None

            def run():
                encoder(input_ids=ids, attention_mask=mask)
        else:
            layers = preset_layers("improved", num_states) if model == "efficient" else (-1,)
            backbone = Backbone(encoder, tok, layers)
            cfg = (lstm_head_config("improved", backbone.hidden_size, len(layers)) if model == "efficient"
                   else vanilla_head_config(backbone.hidden_size))
            torch.manual_seed(0)
            net = SentimentModel(backbone, build_head(cfg).to(device), spec={}).eval()
            layers = list(backbone.layers)

            def run():
                net(ids, mask)  # (B,) logits

        def step():
            with torch.inference_mode():
                run()

        return step, {"layers": layers, "trainable_params": 0, "total_params": count_parameters(net)[1]}

    return setup


def finetune_setup(encoders: Encoders, label: str, b: int, t: int, device: str):
    """Vanilla fine-tune step: encoder + linear head on mean-pooled states, full backward + AdamW."""

    def setup():
        shared, tok = encoders.get(label)
        encoder = copy.deepcopy(shared).train().requires_grad_(True)  # the shared copy stays frozen
        backbone = Backbone(encoder, tok, (-1,))
        torch.manual_seed(0)
        net = SentimentModel(backbone, build_head(vanilla_head_config(backbone.hidden_size)), spec={})
        net.to(device).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=FINETUNE_LR, fused=True)
        loss_fn = nn.BCEWithLogitsLoss()
        ids, mask, _ = make_inputs(b, t, encoder.config.vocab_size, device)
        labels = (torch.arange(b, device=device) % 2).float()

        def step():
            loss = loss_fn(net(ids, mask), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()

        trainable, total = count_parameters(net)
        return step, {"layers": list(backbone.layers), "trainable_params": trainable, "total_params": total}

    return setup


def plan_cases(s: dict, backbone: str, encoders: Encoders) -> list[Case]:
    """Every case of the sweep ``s`` (``BenchConfig.resolved()``), in run order."""
    dev, cases = s["device"], []

    def too_long(b: int, t: int, key: str = "max_tokens") -> str | None:
        if b * t > s[key]:
            return f"batch_size x seq_len = {b * t} > --{key.replace('_', '-')} {s[key]}"
        return None

    if "train_step" in s["cases"]:
        b, t = s["step_batch_size"], s["step_length"]
        labels = ([BERT_BASE] if s["bert_base"] else []) + [backbone]
        for label in labels:
            for preset in HEAD_PRESETS:
                for features in ("encoder", "cached"):
                    cases.append(Case("train_step", f"efficient-{preset}", features, label, preset, b, t,
                                      head_train_setup(encoders, label, preset, features, b, t, dev)))
            if label == BERT_BASE:  # free its 420 MB of weights before the MiniLM cases
                cases[-1].after = lambda: encoders.drop(BERT_BASE)
    if "latency" in s["cases"]:
        for b in s["batch_sizes"]:
            for model in ("encoder", "efficient", "vanilla"):
                head = {"encoder": None, "efficient": "improved", "vanilla": "linear"}[model]
                for t in s["lengths"]:
                    cases.append(Case("latency", model, "encoder", backbone, head, b, t,
                                      inference_setup(encoders, backbone, model, b, t, dev), skip=too_long(b, t)))
    if "train_cost" in s["cases"]:
        b = s["train_batch_size"]
        for preset in HEAD_PRESETS:
            for t in s["lengths"]:
                cases.append(Case("train_cost", f"efficient-{preset}", "cached", backbone, preset, b, t,
                                  head_train_setup(encoders, backbone, preset, "cached", b, t, dev)))
        for t in s["lengths"]:
            cases.append(Case("train_cost", "vanilla-finetune", "encoder", backbone, "linear", b, t,
                              finetune_setup(encoders, backbone, b, t, dev),
                              skip=too_long(b, t, "max_train_tokens")))
    return cases


def run_case(c: Case, s: dict, threads: int) -> dict:
    """Measure one case; any exception becomes an error row."""
    row = dict.fromkeys(ROW_KEYS)
    row.update(case=c.case, model=c.model, features=c.features, backbone=c.backbone, head=c.head,
               batch_size=c.batch_size, seq_len=c.seq_len, device=s["device"], threads=threads)
    if c.skip:
        row.update(status="skipped", error=c.skip)
        return row
    sync = torch.cuda.synchronize if s["device"] == "cuda" else (lambda: None)
    try:
        step, info = c.setup()
        row.update(info)
        with PeakMemory(s["device"]) as mem:
            n_warm, times = time_step(step, s["warmup"], s["iters"], s["seconds"], sync)
        del step
        row.update(status="ok", warmup_iters=n_warm, **summarize(times, c.batch_size, c.seq_len))
        row.update(peak_rss_mb=round(mem.peak_mb, 1), peak_rss_delta_mb=round(mem.delta_mb, 1),
                   baseline_rss_mb=round(mem.baseline_mb, 1), memory_method=mem.method,
                   peak_cuda_mb=None if mem.cuda_mb is None else round(mem.cuda_mb, 1))
        if c.case == "train_step":
            row["epoch_s_p50"] = round(row["latency_ms_p50"] / 1e3 * TRAIN_SENTENCES / c.batch_size, 2)
    except Exception as exc:  # noqa: BLE001 - a failing case is a result, not a crash
        row.update(status="error", error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        gc.collect()
    return row


# --- summaries ------------------------------------------------------------------------------------
def curve_key(r: dict) -> tuple:
    return (r["case"], r["model"], r["features"], r["backbone"], r["batch_size"])


def fit_slopes(rows: list[dict], fit_from: int) -> list[dict]:
    """One slope per curve over lengths >= ``fit_from`` (else its top three lengths)."""
    curves: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["case"] in ("latency", "train_cost") and r["status"] == "ok":
            curves.setdefault(curve_key(r), []).append(r)
    out = []
    for (case, model, features, backbone, b), rs in curves.items():
        rs = sorted(rs, key=lambda r: r["seq_len"])
        upper = [r for r in rs if r["seq_len"] >= fit_from]
        pts = upper if len(upper) >= 2 else rs[-3:]
        if len(pts) < 2:
            continue
        out.append({
            "case": case, "model": model, "features": features, "backbone": backbone, "batch_size": b,
            "fit_min_len": pts[0]["seq_len"], "fit_max_len": pts[-1]["seq_len"], "points": len(pts),
            "time_slope": round(fit_slope([r["seq_len"] for r in pts], [r["latency_ms_p50"] for r in pts]), 3),
        })
    return out


def cache_speedups(rows: list[dict]) -> list[dict]:
    """Training step with the encoder per batch versus cached states, per backbone and head."""
    ok = {(r["backbone"], r["head"], r["features"]): r for r in rows
          if r["case"] == "train_step" and r["status"] == "ok"}
    out = []
    for (backbone, head, features), enc in ok.items():
        cached = ok.get((backbone, head, "cached"))
        if features != "encoder" or cached is None:
            continue
        out.append({
            "backbone": backbone, "head": head, "batch_size": enc["batch_size"], "seq_len": enc["seq_len"],
            "batches_per_epoch": round(TRAIN_SENTENCES / enc["batch_size"], 2),
            "encoder_s_per_batch": round(enc["latency_ms_p50"] / 1e3, 4),
            "cached_s_per_batch": round(cached["latency_ms_p50"] / 1e3, 4),
            "encoder_s_per_epoch": enc["epoch_s_p50"], "cached_s_per_epoch": cached["epoch_s_p50"],
            "speedup": round(enc["latency_ms_p50"] / cached["latency_ms_p50"], 1),
        })
    return out


# --- outputs --------------------------------------------------------------------------------------
def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def _pivot(rows: list[dict], case: str, value: str, lengths: list[int]) -> list[str]:
    """A markdown table: one line per curve, one column per length."""
    lines = ["| model | features | batch | " + " | ".join(map(str, lengths)) + " |",
             "|---|---|---:|" + "---:|" * len(lengths)]
    curves: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r["case"] == case:
            curves.setdefault(curve_key(r), {})[r["seq_len"]] = r
    for (_, model, features, _, b), by_len in curves.items():
        cells = []
        for t in lengths:
            r = by_len.get(t)
            cells.append("-" if r is None else _fmt(r[value]) if r["status"] == "ok" else r["status"])
        lines.append(f"| {model} | {features} | {b} | " + " | ".join(cells) + " |")
    return lines


def _describe_preset(name: str) -> str:
    p = PRESETS[name]
    if p["layers"] == "all":
        layers = "all hidden states concatenated" if p["combine"] == "concat" else "a learned mix of all hidden states"
    else:
        layers = f"hidden states {p['layers']}"
    lstm = f"{'bidirectional ' if p['bidirectional'] else ''}LSTM {p['lstm_size']}"
    return f"{layers}, projection {p['proj_size']}, {lstm}, {p['pooling']} pooling"


def render_markdown(result: dict) -> str:
    env, s, rows = result["environment"], result["conditions"], result["rows"]
    v = env["versions"]
    methods = ", ".join(sorted({r["memory_method"] for r in rows if r["memory_method"]})) or "-"
    lines = [
        "# sst2 efficiency benchmark (measured)", "",
        f"Command: `{result['command']}` ({result['started']}, {result['duration_s']:.0f} s).", "",
        "## Conditions", "",
        f"- CPU: {env['cpu_model']}; {env['cpu_count']} logical CPUs; torch threads: {env['threads']}; "
        f"device: {s['device']}.",
        f"- Load average (1 min) at start / end: {env['load_avg_start']} / {env['load_avg_end']} "
        "(above 0 means other work shared the CPU).",
        f"- Versions: python {v.get('python')}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
        f"sst2 {v.get('sst2')}.",
        f"- Backbone: {env['backbone']['name']} ({env['backbone']['layers']} layers, hidden "
        f"{env['backbone']['hidden_size']}, {env['backbone']['params']:,} parameters, weights as loaded).",
    ]
    if s["bert_base"]:
        lines.append(f"- {BERT_BASE}: 12 layers, hidden 768, about 109 M parameters; random weights are "
                     "enough to time it (same shapes and operations as trained weights).")
    lines += [
        "- Inputs: random token ids of exactly `seq_len` tokens, no padding, attention mask all ones.",
        f"- Timing: at least 1 and up to {s['warmup']} warm-up iterations, then at least {MIN_TIMED} and up "
        f"to {s['iters']} timed iterations or {s['seconds']} s per case, whichever first "
        "(`time.perf_counter()`); times are per iteration (a forward pass, or a whole training step).",
        f"- Memory: peak RSS of the case ({methods}: the kernel's RSS "
        "high-water mark, reset before each case); `delta` = peak minus the RSS before the case, "
        "with weights and inputs already loaded (= activations, gradients, optimizer state, workspace).",
        f"- Skipped (to bound the sweep's time): inference cases above {s['max_tokens']} tokens per batch "
        f"(`--max-tokens`), fine-tune steps above {s['max_train_tokens']} (`--max-train-tokens`).",
        f"- Efficient head: preset `improved` ({_describe_preset('improved')}); `seed` is the reference head "
        f"({_describe_preset('seed')}). Vanilla: the same encoder + a linear layer on mean-pooled states.",
        "",
    ]
    if result["cache_speedup"]:
        b = result["cache_speedup"][0]
        lines += [
            f"## 1. Training step: encoder per batch vs cached features (batch {b['batch_size']}, "
            f"{b['seq_len']} tokens)", "",
            f"An epoch is {TRAIN_SENTENCES:,} sentences = {b['batches_per_epoch']} batches of {b['batch_size']}. "
            f"Sequence length {b['seq_len']}: SST-2 train sentences average 25 tokens (max 80) with "
            "special tokens.", "",
            "| backbone | head | encoder per batch: s / batch | s / epoch | cached: s / batch | s / epoch | speed-up |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in result["cache_speedup"]:
            lines.append(f"| {r['backbone']} | {r['head']} | {r['encoder_s_per_batch']:.3f} | "
                         f"{r['encoder_s_per_epoch']:.1f} | {r['cached_s_per_batch']:.4f} | "
                         f"{r['cached_s_per_epoch']:.2f} | {r['speedup']:.1f}x |")
        lines.append("")
    lengths = s["lengths"]
    if any(r["case"] == "latency" for r in rows):
        lines += ["## 2. Inference latency (ms per batch, median)", ""]
        lines += _pivot(rows, "latency", "latency_ms_p50", lengths)
        lines += ["", "Samples per second:", ""] + _pivot(rows, "latency", "samples_per_s", lengths) + [""]
    if any(r["case"] == "train_cost" for r in rows):
        lines += [f"## 3. Training step cost (ms per step, median, batch {s['train_batch_size']})", "",
                  "`cached`: head step on cached token states; `encoder`: full fine-tune step (AdamW).", ""]
        lines += _pivot(rows, "train_cost", "latency_ms_p50", lengths) + [""]
    if any(r["case"] in ("latency", "train_cost") for r in rows):
        lines += ["## 4. Peak memory above the case's baseline (MB of RSS)", ""]
        for case in ("latency", "train_cost"):
            if any(r["case"] == case for r in rows):
                lines += [f"`{case}`:", ""] + _pivot(rows, case, "peak_rss_delta_mb", lengths) + [""]
    if result["slopes"]:
        lines += ["## 5. Fitted complexity: log-log slope of time against length", "",
                  "1 = linear in length, 2 = quadratic. Fitted on the median times over the range shown.", "",
                  "| case | model | features | batch | lengths | slope |", "|---|---|---|---:|---|---:|"]
        for r in result["slopes"]:
            lines.append(f"| {r['case']} | {r['model']} | {r['features']} | {r['batch_size']} | "
                         f"{r['fit_min_len']}-{r['fit_max_len']} | {r['time_slope']:.2f} |")
        lines.append("")
    errors = [r for r in rows if r["status"] == "error"]
    if errors:
        lines += ["## Errors", ""] + [f"- {r['case']} {r['model']} b={r['batch_size']} T={r['seq_len']}: "
                                      f"{r['error']}" for r in errors] + [""]
    lines += ["Plots: `latency_vs_length.png`, `memory_vs_length.png`. Every row: `bench.json`.", ""]
    return "\n".join(lines)


def plot(result: dict, out_dir: Path) -> list[Path]:
    """``latency_vs_length.png`` and ``memory_vs_length.png``: one panel per case and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["status"] == "ok" and r["case"] in ("latency", "train_cost")]
    panels = sorted({(r["case"], r["batch_size"]) for r in rows}, key=lambda p: (p[0] != "latency", p[1]))
    paths = []
    for fname, key, ylabel in (("latency_vs_length.png", "latency_ms_p50", "ms per iteration (median)"),
                               ("memory_vs_length.png", "peak_rss_delta_mb", "peak RSS above baseline (MB)")):
        fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
        for ax, (case, b) in zip(axes[0], panels):
            curves: dict[tuple, list[dict]] = {}
            for r in rows:
                if (r["case"], r["batch_size"]) == (case, b):
                    curves.setdefault((r["model"], r["features"]), []).append(r)
            for (model, features), rs in curves.items():
                rs.sort(key=lambda r: r["seq_len"])
                label = f"{model} ({features})" if case == "train_cost" else model
                # log axes: an RSS delta of ~0 (a case that fits in memory already held) is drawn at 0.1 MB
                ax.plot([r["seq_len"] for r in rs], [max(r[key], 0.1) for r in rs], "o-", ms=3, label=label)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ticks = sorted({r["seq_len"] for r in rows})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            if key == "latency_ms_p50" and curves:  # guides: O(n) and O(n^2) through the slowest curve's top
                top = max((rs[-1] for rs in curves.values()), key=lambda r: r[key])
                xs = np.array(sorted({r["seq_len"] for r in rows}), float)
                for k, ls in ((1, ":"), (2, "--")):
                    ax.plot(xs, top[key] * (xs / top["seq_len"]) ** k, ls, color="grey", lw=0.8, label=f"O(n^{k})")
            title = "inference" if case == "latency" else "training step"
            ax.set(title=f"{title}, batch {b}", xlabel="sequence length (tokens)", ylabel=ylabel)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        paths.append(out_dir / fname)
    return paths


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


def bench(cfg: BenchConfig) -> dict:
    t_start = time.perf_counter()
    started = dt.datetime.now().isoformat(timespec="seconds")
    load_start = _load_avg()
    threads = set_threads(cfg.threads)
    s = cfg.resolved()
    if s["device"] == "cuda" and not torch.cuda.is_available():
        from sst2.errors import UserError

        raise UserError("--device cuda: no CUDA device is available to torch")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda msg: None) if cfg.quiet else (lambda msg: print(msg, flush=True))

    encoders = Encoders(cfg.backbone, s["device"])
    encoder, _ = encoders.get(cfg.backbone)  # fail early (a UserError) if the backbone cannot be loaded
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
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out)
    (out / "bench.md").write_text(render_markdown(result))
    n_err = sum(r["status"] == "error" for r in rows)
    say(f"wrote {out}/bench.json, bench.md, latency_vs_length.png, memory_vs_length.png "
        f"in {result['duration_s']:.0f} s ({n_err} error rows)")
    return result
