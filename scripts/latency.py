"""Measure inference speed and accuracy of a saved model on each runtime (torch, onnx, onnx-int8).

Per runtime:
* batch-1 latency of ``SentimentClassifier.predict_details([sentence])`` for a 12-token sentence (special tokens
  included; the first such SST-2 dev sentence), tokenization included: warm-up calls, then
  ``--calls`` timed calls; median and p90 in ms;
* throughput at ``--batch-size`` over all SST-2 dev sentences (length-sorted batches, tokenization
  included), the median of ``--repeats`` passes after a warm-up pass; and the same with ``--workers``
  model calls at a time, each on ``threads / workers`` threads (passes of the two set-ups alternate,
  so their ratio is measured under the same conditions);
* dev accuracy of the same predictions, so the int8 accuracy change is visible.

Writes JSON (conditions + one flat row per runtime, units in the key names) and a markdown table.
A runtime that cannot run (e.g. its ONNX file is missing) is recorded as an error row.

    python scripts/latency.py --model-dir runs/efficient/model --out runs/latency.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from sst2.data.splits import read_split, resolve_data_dir
from sst2.inference.classifier import SentimentClassifier
from sst2.inference.runtimes import RUNTIMES, physical_cores, runtimes_for
from sst2.modeling.modeldir import read_spec
from sst2.system import environment, peak_rss_mb, set_threads

SENTENCE_TOKENS = 12


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def pick_sentence(clf: SentimentClassifier, texts: list[str], n_tokens: int) -> str:
    ids, _ = clf.tokenize(texts)
    for t, row in zip(texts, ids):
        if len(row) == n_tokens:
            return t
    raise SystemExit(f"no dev sentence has exactly {n_tokens} tokens")


def measure(runtime: str, args, texts: list[str], labels: list[int], sentence: str | None) -> dict:
    row: dict = {"runtime": runtime}
    try:
        clf = SentimentClassifier.from_pretrained(args.model_dir, runtime=runtime, threads=args.threads, batch_size=args.batch_size)
    except Exception as exc:  # recorded, not raised: the other runtimes are still measured
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    sentence = sentence or pick_sentence(clf, texts, SENTENCE_TOKENS)
    row["sentence"] = sentence
    row["sentence_tokens"] = len(clf.tokenize([sentence])[0][0])

    for _ in range(args.warmup):
        clf.predict_details([sentence])
    times = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        clf.predict_details([sentence])
        times.append((time.perf_counter() - t0) * 1000)
    row.update(latency_calls=len(times), latency_median_ms=round(statistics.median(times), 3),
               latency_p90_ms=round(percentile(times, 90), 3), latency_min_ms=round(min(times), 3))

    setups = {1: clf}
    threads = {1: args.threads, args.workers: max(1, args.threads // args.workers)}
    if args.workers > 1:
        setups[args.workers] = SentimentClassifier.from_pretrained(args.model_dir, runtime=runtime, workers=args.workers,
                                               threads=threads[args.workers], batch_size=args.batch_size)
    rates: dict[int, list[float]] = {w: [] for w in setups}
    logits = {}
    for rep in range(args.repeats + 1):  # pass 0 is the warm-up
        for w, c in setups.items():
            set_threads(threads[w])  # torch's thread count is per process, not per model: set it each pass
            t0 = time.perf_counter()
            logits[w] = c.predict_logits(texts, batch_size=args.batch_size)
            if rep:
                rates[w].append(len(texts) / (time.perf_counter() - t0))
    set_threads(args.threads)
    row.update(throughput_batch_size=args.batch_size, throughput_sentences=len(texts),
               throughput_sentences_per_s=round(statistics.median(rates[1]), 1),
               throughput_passes_per_s=[round(r, 1) for r in rates[1]],
               dev_accuracy=round(float(np.mean((logits[1] > 0).astype(int) == np.asarray(labels))), 4))
    if args.workers > 1:
        w = args.workers
        if not np.array_equal(logits[w] > 0, logits[1] > 0):
            raise SystemExit(f"{runtime}: {w} workers changed predictions")  # same model, same inputs
        row.update(throughput_workers=w, throughput_threads_per_worker=max(1, args.threads // w),
                   throughput_workers_sentences_per_s=round(statistics.median(rates[w]), 1),
                   throughput_workers_passes_per_s=[round(r, 1) for r in rates[w]])
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def markdown(rows: list[dict], conditions: dict) -> str:
    base = next((r["dev_accuracy"] for r in rows if r["runtime"] == "torch" and "dev_accuracy" in r), None)
    workers = conditions["workers"]
    lines = ["| runtime | batch-1 latency median (ms) | p90 (ms) | batch-64 throughput (sentences/s) | "
             f"same, {workers} workers | dev accuracy | vs torch (points) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['runtime']} | error: {r['error']} | | | | | |")
            continue
        delta = "" if base is None else f"{(r['dev_accuracy'] - base) * 100:+.2f}"
        par = f"{r['throughput_workers_sentences_per_s']:.0f}" if "throughput_workers" in r else "–"
        lines.append(f"| {r['runtime']} | {r['latency_median_ms']:.2f} | {r['latency_p90_ms']:.2f} | "
                     f"{r['throughput_sentences_per_s']:.0f} | {par} | {r['dev_accuracy'] * 100:.2f} | {delta} |")
    env = conditions["environment"]
    lines.append("")
    lines.append(f"{env['cpu_model']}, {conditions['threads']} threads, load average before "
                 f"{conditions['load_average_before'][0]:.2f}; onnxruntime {env['versions'].get('onnxruntime')}, "
                 f"torch {env['versions'].get('torch')}; {conditions['calls']} calls after {conditions['warmup']} "
                 f"warm-up; throughput = median of {conditions['repeats']} passes over "
                 f"{conditions['dev_sentences']} dev sentences.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default="runs/efficient/model")
    ap.add_argument("--data", default=None, help="data folder with dev.tsv (default: as sst2 train)")
    ap.add_argument("--runtimes", nargs="+", default=None, choices=RUNTIMES,
                    help="default: every runtime that can run this model (numpy: the static tier only)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    ap.add_argument("--calls", type=int, default=300, help="timed batch-1 calls (>= 200)")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed throughput passes over dev")
    ap.add_argument("--workers", type=int, default=2,
                    help="also measure throughput with this many model calls at a time (1: skip)")
    ap.add_argument("--out", default=None, help="write JSON here (and the table beside it as .md)")
    args = ap.parse_args(argv)
    args.threads = args.threads or physical_cores()
    args.runtimes = args.runtimes or list(runtimes_for(read_spec(args.model_dir)))
    set_threads(args.threads)

    dev = read_split(resolve_data_dir(args.data) / "dev.tsv", "dev")
    conditions = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "model_dir": args.model_dir,
        "threads": args.threads, "calls": args.calls, "warmup": args.warmup, "repeats": args.repeats,
        "batch_size": args.batch_size, "workers": args.workers, "dev_sentences": len(dev), "load_average_before": os.getloadavg(),
        "environment": environment(),
    }
    rows = []
    for runtime in args.runtimes:
        rows.append(measure(runtime, args, dev.texts, dev.labels, None))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    conditions["load_average_after"] = os.getloadavg()
    result = {"conditions": conditions, "rows": rows}
    table = markdown(rows, conditions)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(table + "\n")
    print(json.dumps(result, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
