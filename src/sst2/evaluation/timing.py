"""Inference timing for ``sst2 compare``: saved models loaded side by side in one process and measured in
turns, batch 1 and batched, so that every model meets the same machine.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from sst2.config import CompareConfig


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q))


class Timer:
    """One saved model loaded for timing: batch-1 ms per call over the first ``cfg.calls`` dev texts and
    batch-``cfg.batch_size`` ms per sentence over all, gathered over one or more rounds."""

    def __init__(self, model_dir: Path, texts: list[str], cfg: CompareConfig, runtime: str | None = None):
        from sst2.inference.classifier import SentimentClassifier

        self.clf = SentimentClassifier.from_pretrained(model_dir, runtime=runtime or cfg.runtime, threads=cfg.threads,
                                                       batch_size=cfg.batch_size)
        self.texts, self.cfg, self.b1, self.batched = texts, cfg, [], []
        for t in texts[: cfg.calls][: cfg.warmup]:
            self.clf.predict_details([t])
        self.clf.predict_logits(texts[: cfg.batch_size * 2])  # warm-up for the larger shapes

    def round(self) -> None:
        for t in self.texts[: self.cfg.calls]:
            t0 = time.perf_counter()
            self.clf.predict_details([t])
            self.b1.append((time.perf_counter() - t0) * 1000)
        for _ in range(self.cfg.repeats):
            t0 = time.perf_counter()
            self.clf.predict_logits(self.texts, batch_size=self.cfg.batch_size)
            self.batched.append((time.perf_counter() - t0) * 1000 / len(self.texts))

    def result(self) -> dict:
        bs, per_sentence = self.cfg.batch_size, statistics.median(self.batched)
        return {"b1_ms_p50": round(statistics.median(self.b1), 3), "b1_ms_p90": round(percentile(self.b1, 90), 3),
                "b1_calls": len(self.b1), f"b{bs}_ms_per_sentence_p50": round(per_sentence, 4),
                f"b{bs}_sentences_per_s": round(1000 / per_sentence, 1)}


def time_models(sets: list, rows: list[dict], runtimes: list[str], texts: list[str], cfg: CompareConfig) -> None:
    """Time every model (``sets``: the runs, each with its ``model_dir``) into its row: all are loaded first, then measured in turn, ``cfg.rounds`` times over,
    so that a change of the machine's speed during the run falls on every model alike. A model that cannot
    be loaded or run gets ``inference_error`` in its row; the others are still measured."""
    timers = {}
    for i, (rs, row, runtime) in enumerate(zip(sets, rows, runtimes)):
        try:
            timers[i] = Timer(rs.model_dir, texts, cfg, runtime)
            row["inference_model_dir"], row["runtime"] = str(rs.model_dir), runtime
        except Exception as exc:  # recorded in the table
            row["inference_error"] = f"{type(exc).__name__}: {exc}"
    for r in range(cfg.rounds):
        for i, timer in list(timers.items()):
            if not cfg.quiet:
                print(f"measuring inference (round {r + 1} of {cfg.rounds}): {rows[i]['label']}", flush=True)
            try:
                timer.round()
            except Exception as exc:
                rows[i]["inference_error"] = f"{type(exc).__name__}: {exc}"
                del timers[i]
    for i, timer in timers.items():
        rows[i].update(timer.result())
