"""Benchmarks of the distributed paths against their single-process counterparts, on this machine.

    # bulk scoring: N texts synthesised from GLUE's phrases; sst2 predict --workers 2 against --engine ray
    python scripts/ray_bench.py predict --model-dir runs/efficient/model --texts 1000000
    # encoding GLUE's training phrases for the feature cache: one process against Ray actors
    python scripts/ray_bench.py encode --limit 0
    # fine-tuning: one process against torchrun with 2 processes (the same global batch)
    python scripts/ray_bench.py ddp -- --model vanilla --seed 0

``predict`` runs both commands as child processes, samples the resident memory of each whole process tree
(the Ray driver, raylet, workers and actors included) every 0.2 s, and counts the rows in and out.
``encode`` encodes the same phrases twice with the packaged MiniLM (all hidden states, fp16, into two
temporary caches) and compares the states. ``ddp`` runs ``sst2 train`` and ``torchrun --nproc-per-node 2 -m
sst2 train`` with the arguments after ``--`` and reports their accuracies and times. Each prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue-sst2" / "train.tsv"


def run_measured(argv: list[str], stdout=subprocess.DEVNULL, env: dict | None = None) -> dict:
    """Wall time, exit status and the peak summed RSS of the process tree of ``argv``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=env)
    root, peak, done = psutil.Process(proc.pid), [0], threading.Event()

    def sample():
        while not done.is_set():
            try:
                tree = [root] + root.children(recursive=True)
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            done.wait(0.2)

    threading.Thread(target=sample, daemon=True).start()
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    done.set()
    return {"status": proc.returncode, "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": round(peak[0] / 2**20, 1), "stderr": err[-600:] if proc.returncode else ""}


def synth(n: int, out: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "synth_texts.py"), "--lines", str(n), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)


def bench_predict(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="sst2-ray-bench-", dir=args.work))
    try:
        texts = work / f"texts-{args.texts}.txt"
        synth(args.texts, texts)
        sst2 = [sys.executable, "-m", "sst2", "predict", "--model-dir", args.model_dir, "--runtime", args.runtime,
                "--quiet"]
        with open(work / "local.jsonl", "wb") as out:
            local = run_measured(sst2 + ["--input", str(texts), "--workers", "2"], stdout=out)
        with open(work / "local.jsonl", "rb") as f:
            local["rows_out"] = sum(1 for _ in f)
        local["texts_per_s"] = round(args.texts / local["seconds"], 1)
        print(json.dumps({"case": "predict", "engine": "local --workers 2", "rows_in": args.texts, **local}),
              flush=True)
        for n, name in ((args.texts, "ray"), (args.startup_texts, "ray start-up")):
            src = texts if n == args.texts else work / "small.txt"
            if n != args.texts:
                synth(n, src)
            out_dir = work / f"ray-{n}"
            ray = run_measured(sst2 + ["--engine", "ray", "--actors", str(args.actors), "--input", str(src),
                                       "--output", str(out_dir)])
            summary = json.loads((out_dir / "summary.json").read_text()) if (out_dir / "summary.json").exists() else {}
            row = {"case": "predict", "engine": f"{name} --actors {args.actors}", "rows_in": n, **ray,
                   "rows_out": summary.get("predicted", 0) + summary.get("failed", 0),
                   "ray_up_seconds": summary.get("startup_seconds"), "texts_per_s": round(n / ray["seconds"], 1)}
            if n == args.texts:
                row["vs_local"] = round(row["texts_per_s"] / local["texts_per_s"], 3)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _glue_split(limit: int):
    from sst2.data.readers import read_table
    from sst2.data.dataset import from_lists
    from sst2.data.text import normalize_texts

    table = read_table(GLUE)
    n = limit or len(table)
    return from_lists({"train": (normalize_texts(table.texts[:n], "contractions"), table.labels[:n])})["train"]


def bench_encode(args) -> None:
    import functools

    import numpy as np

    from sst2.features.encode import prepare_features
    from sst2.features.ray_encode import encode_splits_ray
    from sst2.modeling.backbone import Backbone
    from sst2.system import set_threads

    set_threads(args.threads)
    split = _glue_split(args.limit)
    backbone = Backbone.load(None, "all")
    work = Path(tempfile.mkdtemp(prefix="sst2-ray-encode-", dir=args.work))
    try:
        times, feats = {}, {}
        for engine in ("local", "ray"):
            encode_all = functools.partial(encode_splits_ray, actors=args.actors) if engine == "ray" else None
            t0 = time.perf_counter()
            f, _ = prepare_features(backbone, {"train": split}, 128, "contractions", cache_dir=work / engine,
                                    encode_all=encode_all)
            times[engine], feats[engine] = time.perf_counter() - t0, f["train"]
        same_key = sorted(p.name for p in (work / "local").iterdir()) == sorted(p.name for p in (work / "ray").iterdir())
        diff, identical, rows = 0.0, 0, 0
        a_states, b_states = feats["local"].states, feats["ray"].states
        for start in range(0, len(a_states), 65536):  # in slices: GLUE's states are several GB
            a, b = a_states[start : start + 65536], b_states[start : start + 65536]
            diff = max(diff, float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max()))
            identical += int((a == b).sum())
            rows += a.size
        print(json.dumps({"case": "encode", "phrases": len(split), "tokens": int(feats["local"].lengths.sum()),
                          "local_seconds": round(times["local"], 1), "ray_seconds": round(times["ray"], 1),
                          "actors": args.actors, "local_threads": args.threads, "same_key": same_key,
                          "max_abs_diff": diff, "identical_fraction": round(identical / rows, 6)}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_ddp(args) -> None:
    train_args = [a for a in args.train_args if a != "--"]
    work = Path(tempfile.mkdtemp(prefix="sst2-ddp-bench-", dir=args.work))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        for name, launcher, threads in (("1 process x 2 threads", [sys.executable], "2"),
                                        ("torchrun 2 processes x 1 thread", torchrun, "1")):
            out = work / name.split()[0]
            argv = launcher + ["-m", "sst2", "train", *train_args, "--threads", threads, "--out", str(out), "--quiet"]
            r = run_measured(argv, env=env)
            metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
            print(json.dumps({"case": "ddp", "run": name, **r,
                              **{k: metrics.get(k) for k in ("model", "processes", "dev_accuracy", "test_accuracy",
                                                             "best_epoch", "train_seconds", "seconds_per_epoch",
                                                             "total_seconds")}}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=None, help="folder for the temporary files (default: the system's)")
    sub = ap.add_subparsers(dest="case", required=True)
    p = sub.add_parser("predict")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--texts", type=int, default=1_000_000)
    p.add_argument("--startup-texts", type=int, default=100, help="a small run, whose time is mostly start-up")
    p.add_argument("--runtime", default="onnx-int8")
    p.add_argument("--actors", type=int, default=2)
    e = sub.add_parser("encode")
    e.add_argument("--limit", type=int, default=0, help="the first N phrases (0: all 67,349)")
    e.add_argument("--actors", type=int, default=2)
    e.add_argument("--threads", type=int, default=2, help="torch threads of the single-process encode")
    d = sub.add_parser("ddp")
    d.add_argument("train_args", nargs=argparse.REMAINDER, help="sst2 train arguments, after --")
    args = ap.parse_args()
    {"predict": bench_predict, "encode": bench_encode, "ddp": bench_ddp}[args.case](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
