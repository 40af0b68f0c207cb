"""K-fold cross-validation on the training split: compare ``sst2 train`` options without the dev or test set.

SST-2's dev set has 872 sentences (one sentence = 0.11 points) and already picks each run's best
epoch, so small differences between head options are hard to read on it, and the test set must not
choose anything. This script splits ``train.tsv`` into K folds (stratified by label, fixed shuffle),
and for every variant and fold trains on the other K-1 folds and scores the held-out fold, which plays
the role of the dev set (best epoch) and of the test set. Over K folds every training sentence is
held out once, so each variant is judged on all 6,920 training sentences. It reports the held-out
accuracy of the last epoch (not selected on the fold itself, so unbiased) and of the best epoch.

Fold files are written to a temporary folder outside the repository; feature-cache entries for them
go to ``--cache-dir`` (default: a temporary folder removed at the end, several GB for 5 folds).

    python scripts/cv.py --folds 5 --variants "" "optim.mix_lr_scale=1" --out runs/cv

A variant is a space-separated list of training settings, as ``sst2 train --set`` takes them
(``model.combine=mix optim.epochs=10``), on top of ``--preset`` (default: improved). The rows of
docs/selection/cv.jsonl were run with sst2 0.1.0, whose variants were command-line flags.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from sst2.data.splits import read_split, resolve_data_dir
from sst2.training.api import train
from sst2.training.config import TrainConfig, resolve


def write_folds(train_tsv: Path, k: int, root: Path, seed: int = 0) -> list[Path]:
    """Stratified K folds of ``train_tsv``; fold i's folder holds train = the rest, dev = test = fold i."""
    split = read_split(train_tsv, "train")
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(split.labels):
        by_label.setdefault(int(y), []).append(i)
    rng = random.Random(seed)
    fold_of = [0] * len(split.texts)
    for idx in by_label.values():
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold_of[i] = j % k
    dirs = []
    for f in range(k):
        d = root / f"fold-{f}"
        d.mkdir(parents=True)
        rows = {"train": [], "held": []}
        for i, (t, y) in enumerate(zip(split.texts, split.labels)):
            rows["held" if fold_of[i] == f else "train"].append((t, int(y)))
        for name, part in (("train", "train"), ("dev", "held"), ("test", "held")):
            with open(d / f"{name}.tsv", "w", encoding="utf-8", newline="") as fh:
                fh.write("sentence\tlabel\n")
                fh.writelines(f"{t}\t{y}\n" for t, y in rows[part])
        dirs.append(d)
    return dirs


def variant_config(options: str, preset: str | None = None, **fixed) -> TrainConfig:
    """The config of a variant: ``preset``, then the variant's ``group.field=value`` settings, then
    ``fixed`` (``{"data.path": ...}``), resolved exactly as ``sst2 train --set`` resolves them."""
    return resolve(preset=preset, overrides=fixed, sets=shlex.split(options))


def last_epoch_accuracy(run_dir: Path) -> float:
    with open(run_dir / "epochs.csv", encoding="utf-8") as fh:
        return float(list(csv.DictReader(fh))[-1]["dev_accuracy"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=[""],
                    help="each a string of group.field=value settings ('' = the preset as it is)")
    ap.add_argument("--preset", default=None, help="the preset the variants change (default: improved)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--data", default=None, help="data folder whose train.tsv is split (default: as sst2 train)")
    ap.add_argument("--cache-dir", default=None, help="feature cache for the fold files (default: temporary)")
    ap.add_argument("--out", default="runs/cv", help="run directories go to OUT/vVARIANT-fFOLD")
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    data = resolve_data_dir(args.data)
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="sst2-cv-") as tmp:
        folds = write_folds(data / "train.tsv", args.folds, Path(tmp) / "folds")
        cache = args.cache_dir or str(Path(tmp) / "cache")
        for vi, options in enumerate(args.variants):
            for f, fold_dir in enumerate(folds):
                out = Path(args.out) / f"v{vi}-f{f}"
                cfg = variant_config(options, args.preset, **{
                    "data.path": str(fold_dir), "run.out": str(out), "run.overwrite": True, "run.quiet": True,
                    "run.cache_dir": cache, "run.seed": f})
                m = train(cfg)
                row = {"variant": options, "fold": f, "seed": f, "held_out": m["dev_size"],
                       "last_epoch_accuracy": last_epoch_accuracy(out), "best_epoch_accuracy": m["dev_accuracy"],
                       "best_epoch": m["best_epoch"], "train_seconds": m["train_seconds"]}
                results.setdefault(options, []).append((row["last_epoch_accuracy"], row["best_epoch_accuracy"]))
                print(json.dumps(row), flush=True)
    print("\n| variant (settings) | folds | held-out accuracy, last epoch | held-out accuracy, best epoch |",
          file=sys.stderr)
    print("| --- | ---: | ---: | ---: |", file=sys.stderr)
    def cell(xs: list[float]) -> str:
        return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"

    for options, rows in results.items():
        print(f"| `{options or '(defaults)'}` | {len(rows)} | {cell([r[0] for r in rows])} | {cell([r[1] for r in rows])} |",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
