"""How much a runtime's output for one text depends on the texts that share its batch.

Scores every dev sentence alone (batch 1), then all of them at each ``--batch-sizes`` (batches formed
as ``predict_proba`` forms them: sorted by length, split where padding costs more than a call), and
reports per runtime and batch size the labels that differ from batch 1, the largest |difference of a
probability|, and dev accuracy. ONNX int8 uses dynamic quantization: the scale of each quantized
activation is computed over the whole batch, so the same text can get another probability. Needs
``sst2 export --model-dir DIR --int8`` first.

    python scripts/int8_batches.py --model-dir runs/efficient/model --out runs/int8_batches.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sst2.data.dataset import load_splits
from sst2.data.splits import resolve_data_dir
from sst2.inference.classifier import SentimentClassifier


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default="runs/efficient/model")
    ap.add_argument("--data", default=None, help="data folder (default: as sst2 train)")
    ap.add_argument("--runtimes", nargs="+", default=["onnx", "onnx-int8"])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 64, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    dev = load_splits(resolve_data_dir(args.data))["dev"]
    truth = np.array(dev.labels)
    rows = []
    for runtime in args.runtimes:
        clf = SentimentClassifier.from_pretrained(args.model_dir, runtime=runtime, threads=args.threads)
        alone = np.concatenate([clf.predict_proba([t]) for t in dev.texts])
        rows.append({"runtime": runtime, "batch_size": 1, "labels_changed": 0, "max_abs_prob_diff": 0.0,
                     "dev_accuracy": round(float((alone.argmax(1) == truth).mean()), 4)})
        for b in args.batch_sizes:
            p = clf.predict_proba(dev.texts, batch_size=b)
            rows.append({"runtime": runtime, "batch_size": b,
                         "labels_changed": int((p.argmax(1) != alone.argmax(1)).sum()),
                         "max_abs_prob_diff": float(np.abs(p - alone).max()),
                         "dev_accuracy": round(float((p.argmax(1) == truth).mean()), 4)})
        for row in rows[-len(args.batch_sizes) - 1:]:
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"model_dir": args.model_dir, "dev_sentences": len(dev),
                                              "threads": args.threads, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
