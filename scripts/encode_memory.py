"""Time and resident memory of encoding one split with the frozen encoder, for a choice of batching.

Runs the same ``encode_texts`` that fills the feature cache (all hidden states, fp16, written to a
temporary ``.npy`` that is deleted afterwards) and samples the process's resident set every
``--every`` batches. ``--batch-size 64 --batch-tokens 0`` reproduces the earlier fixed batches of 64
sentences; the defaults are those of ``sst2 train``.

    python scripts/encode_memory.py --data ../shared/data/glue-sst2 --split train
    python scripts/encode_memory.py --data ../shared/data/glue-sst2 --split train --batch-size 64 --batch-tokens 0
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

from sst2.modeling.backbone import Backbone
from sst2.features.encode import encode_texts
from sst2.training.config import resolve
from sst2.data.splits import read_split, resolve_data_dir
from sst2.system import current_rss_mb, environment, peak_rss_mb, set_threads

DEFAULTS = inspect.signature(encode_texts).parameters


class Sampler:
    """A progress callback that records (batches, sentences, rss_mb) every ``every`` batches."""

    def __init__(self, every: int):
        self.every, self.batches, self.sentences, self.samples = every, 0, 0, []

    def update(self, n: int) -> None:
        self.batches += 1
        self.sentences += n
        if self.batches % self.every == 0:
            self.samples.append((self.batches, self.sentences, current_rss_mb()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="data folder (default: as sst2 train)")
    ap.add_argument("--split", default="train", choices=["train", "dev", "test"])
    ap.add_argument("--backbone", default=None, help="encoder (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--max-length", type=int, default=resolve().data.max_length)
    ap.add_argument("--batch-tokens", type=int, default=DEFAULTS["batch_tokens"].default,
                    help="padded tokens per encoder call (0: no token limit)")
    ap.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"].default,
                    help="sentences per encoder call at most")
    ap.add_argument("--every", type=int, default=50, help="sample the resident set every N batches")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    set_threads(args.threads)

    split = read_split(resolve_data_dir(args.data) / f"{args.split}.tsv", args.split, require_labels=False)
    backbone = Backbone.load(args.backbone, "all")
    rss_start = current_rss_mb()
    sampler = Sampler(args.every)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        feats = encode_texts(backbone, split.texts, args.max_length, batch_tokens=args.batch_tokens or 10**12,
                             batch_size=args.batch_size, progress=sampler, out=Path(tmp) / "states.npy")
        seconds = time.perf_counter() - t0
        states_mb = feats.nbytes / 2**20
        feats.states.close()
    result = {
        "file": str(split.path), "sentences": len(split), "tokens": int(feats.lengths.sum()),
        "batch_tokens": args.batch_tokens, "batch_size": args.batch_size, "batches": sampler.batches,
        "encode_seconds": round(seconds, 1), "states_mb": round(states_mb, 1),
        "rss_start_mb": rss_start, "rss_end_mb": current_rss_mb(), "peak_rss_mb": peak_rss_mb(),
        "rss_samples": sampler.samples, "environment": environment(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
