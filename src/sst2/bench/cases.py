"""The benchmark's cases: inputs, the models and training steps they time, and how one case runs.

Training steps are ``sst2 train``'s own (:func:`sst2.training.engine.train_step`, with each preset's
optimizer, learning rates, schedule and clipping), so the benchmark times the code that trains.
"""

from __future__ import annotations

import copy
import gc
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from sst2.bench.memory import PeakMemory
from sst2.modeling.backbone import Backbone
from sst2.modeling.heads import HeadConfig, build_head, count_parameters
from sst2.modeling.model import SentimentModel
from sst2.training.recipes.common import freeze_pooler, linear_head

MIN_TIMED = 3  # a median of fewer runs is not a median
TRAIN_SENTENCES = 6920  # SST-2 train split: one epoch
BERT_BASE = "bert-base (BertConfig(), random weights)"
HEAD_PRESETS = ("seed", "improved")  # the reference head and the default efficient head

# The keys of every row (None where a key does not apply), units in the names.
ROW_KEYS = (
    "case", "model", "features", "backbone", "head", "layers", "batch_size", "seq_len", "device", "threads",
    "status", "error", "warmup_iters", "timed_iters",
    "latency_ms_min", "latency_ms_p50", "latency_ms_p90", "latency_ms_mean", "samples_per_s", "tokens_per_s",
    "epoch_s_p50", "peak_rss_mb", "peak_rss_delta_mb", "baseline_rss_mb", "peak_cuda_mb", "memory_method",
    "trainable_params", "total_params",
)



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



def make_inputs(batch_size: int, seq_len: int, vocab_size: int, device: str, seed: int = 0):
    """Random ids of exactly ``seq_len`` tokens, no padding: ids and mask ``(B, T)``, lengths ``(B,)``."""
    g = torch.Generator().manual_seed(seed)
    low = min(1000, vocab_size // 2)  # past the special tokens of BERT-style vocabularies
    ids = torch.randint(low, vocab_size, (batch_size, seq_len), generator=g)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    lengths = torch.full((batch_size,), seq_len, dtype=torch.long)
    return ids.to(device), mask.to(device), lengths.to(device)


def preset_config(name: str):
    """A preset's resolved training config (``sst2/configs/NAME.toml``): the benchmark times what trains."""
    from sst2.training.config import resolve

    return resolve(preset=name)


def preset_layers(name: str, num_states: int) -> tuple[int, ...]:
    """The preset's layers that exist in this encoder ("all" = every hidden state, embeddings included;
    a 2-layer test encoder has no layer -4)."""
    layers = preset_config(name).model.layers
    if layers == "all":
        return tuple(range(num_states))
    layers = [i for i in layers if -num_states < i < num_states]
    return tuple(layers or [-1])


def lstm_head_config(name: str, hidden_size: int, num_states: int) -> HeadConfig:
    from sst2.training.recipes.efficient import head_config

    return head_config(preset_config(name), hidden_size, num_states)


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


def _train_step(model: nn.Module, params: list, name: str):
    """``step(*batch, labels)``: one step of ``sst2 train``'s own :func:`~sst2.training.engine.train_step`,
    with the optimizer, learning rates, schedule and clipping of preset ``name``."""
    from sst2.training.engine import train_step
    from sst2.training.optim import build_optimizer

    optim = preset_config(name).optim
    optimizer, scheduler = build_optimizer(model, params, optim, total_steps=10**6)

    def step(batch: tuple, labels: torch.Tensor) -> None:
        train_step(model, batch, labels, optimizer, params, optim.grad_clip, scheduler)

    return step


def head_train_setup(encoders: Encoders, label: str, preset: str, features: str, b: int, t: int, device: str):
    """Efficient model training step: encoder per batch (reference) or cached states (head only)."""

    def setup():
        encoder, tok = encoders.get(label)
        layers = preset_layers(preset, encoder.config.num_hidden_layers + 1)
        backbone = Backbone(encoder, tok, layers)
        torch.manual_seed(0)
        head = build_head(lstm_head_config(preset, backbone.hidden_size, len(layers))).to(device).train()
        step = _train_step(head, list(head.parameters()), preset)
        ids, mask, lengths = make_inputs(b, t, encoder.config.vocab_size, device)
        labels = (torch.arange(b, device=device) % 2).float()
        trainable, _ = count_parameters(head)
        info = {"layers": list(backbone.layers), "trainable_params": trainable}
        if features == "cached":
            # what the feature cache hands the head: (B, T, K, H) float32 states
            states = torch.randn(b, t, len(layers), backbone.hidden_size, device=device)
            info["total_params"] = count_parameters(head)[1]
            return (lambda: step((states, lengths), labels)), info

        info["total_params"] = trainable + count_parameters(encoder)[1]

        def encoder_step():
            with torch.no_grad():  # the frozen encoder, run again on every batch as the reference does
                states = backbone(ids, mask)  # (B, T, K, H)
            step((states, lengths), labels)

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
            torch.manual_seed(0)
            head = (build_head(lstm_head_config("improved", backbone.hidden_size, len(layers)))
                    if model == "efficient" else linear_head(preset_config("vanilla"), backbone))
            net = SentimentModel(backbone, head.to(device), spec={}).eval()
            layers = list(backbone.layers)

            def run():
                net(ids, mask)  # (B,) logits

        def step():
            with torch.inference_mode():
                run()

        return step, {"layers": layers, "trainable_params": 0, "total_params": count_parameters(net)[1]}

    return setup


def finetune_setup(encoders: Encoders, label: str, b: int, t: int, device: str):
    """Vanilla fine-tune step, as ``sst2 train --model vanilla`` runs it: encoder + linear head on
    mean-pooled states, full backward, the vanilla preset's AdamW, schedule and clipping."""

    def setup():
        shared, tok = encoders.get(label)
        encoder = copy.deepcopy(shared).train().requires_grad_(True)  # the shared copy stays frozen
        freeze_pooler(encoder)
        backbone = Backbone(encoder, tok, (-1,))
        torch.manual_seed(0)
        net = SentimentModel(backbone, linear_head(preset_config("vanilla"), backbone), spec={})
        net.to(device).train()
        params = [q for q in net.parameters() if q.requires_grad]
        train = _train_step(net, params, "vanilla")
        ids, mask, _ = make_inputs(b, t, encoder.config.vocab_size, device)
        labels = (torch.arange(b, device=device) % 2).float()
        trainable, total = count_parameters(net)
        return (lambda: train((ids, mask), labels)), {"layers": list(backbone.layers), "trainable_params": trainable,
                                                       "total_params": total}

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
