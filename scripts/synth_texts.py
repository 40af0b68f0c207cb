"""Write N texts, one per line, cycling through GLUE SST-2's 67,349 training phrases in file order.

    python scripts/synth_texts.py --lines 1000000 --out /tmp/1m.txt

For throughput and memory measurements of ``sst2 predict`` on large inputs (``scripts/predict_stream.py``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--glue", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue-sst2/train.tsv"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.glue, newline="", encoding="utf-8") as f:
        phrases = [r["sentence"].strip() for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    phrases = [p for p in phrases if p]
    with open(args.out, "x", encoding="utf-8") as out:  # never over an existing file
        for i in range(args.lines):
            out.write(phrases[i % len(phrases)] + "\n")
    print(f"wrote {args.lines:,} lines to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
