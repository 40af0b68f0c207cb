"""Time to first output, total time and peak memory of ``sst2 predict --input FILE`` in a child process.

    python scripts/predict_stream.py --model-dir runs/efficient/model --input texts.txt --runtime onnx-int8

The child's resident set is sampled every 20 ms (psutil); the first output line's arrival and the end
are timed from the start of the child. Output lines are counted (they must equal the input lines).
Prints one JSON line per runtime.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import psutil


def measure(argv: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child = psutil.Process(proc.pid)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], child.memory_info().rss)
            except psutil.Error:
                return
            done.wait(0.02)

    threading.Thread(target=sample, daemon=True).start()
    first, lines = None, 0
    for _ in proc.stdout:
        if first is None:
            first = time.perf_counter() - t0
        lines += 1
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    done.set()
    total = time.perf_counter() - t0
    return {"status": proc.returncode, "lines": lines, "first_output_s": round(first or total, 2),
            "total_s": round(total, 2), "texts_per_s": round(lines / total, 1),
            "peak_rss_mb": round(peak[0] / 2**20, 1), "stderr": err[-300:] if proc.returncode else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--runtime", nargs="+", default=["torch", "onnx-int8"])
    ap.add_argument("--extra", default="", help="more sst2 predict options, as one string")
    args = ap.parse_args()
    with open(args.input, "rb") as f:
        n_in = sum(1 for _ in f)
    for runtime in args.runtime:
        argv = [sys.executable, "-m", "sst2.cli", "predict", "--model-dir", args.model_dir, "--input", args.input,
                "--runtime", runtime, "--quiet", *args.extra.split()]
        row = {"runtime": runtime, "input_lines": n_in, **measure(argv)}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
