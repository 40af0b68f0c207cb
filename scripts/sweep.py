"""Train several efficient-head variants over several seeds and print one JSON line per run.

This is how the default ``improved`` preset was chosen (README, "Choosing the default head"). Each
variant is a set of ``sst2 train`` options on top of the ``improved`` preset as it was before the choice
(projection 256, bidirectional LSTM 128, 10 epochs, constant lr 1e-3); every run is an ordinary
``sst2.train.train`` call in this process, so later runs find the feature cache warm. ``seconds`` is
the whole run in-process (no interpreter start-up or imports).

    python scripts/sweep.py --seeds 0 1 2 --variants lin_p128l128_ep8 lin_p128l64 --out runs/sweep
"""

from __future__ import annotations

import argparse
import json
import time

from sst2.training.api import train
from sst2.training.config import config_for

BASE = dict(proj_size=256, lstm_size=128, epochs=10, schedule="constant", warmup_ratio=0.0)
LINEAR = dict(schedule="linear", warmup_ratio=0.1)
VARIANTS: dict[str, dict] = {
    "base": {},
    "lin": LINEAR,
    "lin_ep6": dict(LINEAR, epochs=6),
    "lin_drop3": dict(LINEAR, dropout=0.3),
    "lin_wd": dict(LINEAR, weight_decay=0.01),
    "lin_lr2e3_ep6": dict(LINEAR, lr=2e-3, epochs=6),
    "lin_p128l64": dict(LINEAR, proj_size=128, lstm_size=64),
    "lin_p128l64_ep6": dict(LINEAR, proj_size=128, lstm_size=64, epochs=6),
    "lin_p128l128": dict(LINEAR, proj_size=128, lstm_size=128),
    "lin_p128l128_ep8": dict(LINEAR, proj_size=128, lstm_size=128, epochs=8),  # = the improved preset now
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data", default=None, help="data folder (default: as sst2 train)")
    ap.add_argument("--out", default="runs/sweep", help="run directories go to OUT/VARIANT-sSEED")
    args = ap.parse_args(argv)
    for seed in args.seeds:
        for name in args.variants:
            opts = dict(BASE, **VARIANTS[name])
            t0 = time.perf_counter()
            data = {"path": args.data} if args.data else {}
            m = train(config_for("efficient", out=f"{args.out}/{name}-s{seed}", overwrite=True, quiet=True,
                                 seed=seed, **data, **opts))
            print(json.dumps({"variant": name, "seed": seed, "options": opts, "dev_accuracy": m["dev_accuracy"],
                              "test_accuracy": m["test_accuracy"], "best_epoch": m["best_epoch"],
                              "seconds_per_epoch": m["seconds_per_epoch"],
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
