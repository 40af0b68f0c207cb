"""``sst2 predict``: classify texts given as arguments, one per line in a file, or on standard input.

Writes one JSON object per line: ``{"text": ..., "label": "negative"|"positive", "positive_prob": ...,
"truncated": ...}``, in input order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sst2.config import PredictConfig
from sst2.errors import UserError

# Below this many texts a progress bar is noise: a batch or two finishes at once.
PROGRESS_MIN_TEXTS = 256


class InputError(UserError, ValueError):
    pass


def read_texts(cfg: PredictConfig) -> list[str]:
    """The texts to classify: arguments, else ``--input`` (``-`` = stdin), else stdin; blank lines skipped."""
    if cfg.texts:
        return list(cfg.texts)
    if cfg.input is None or cfg.input == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(cfg.input)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return [line for line in lines if line.strip()]


def predict(cfg: PredictConfig) -> list[dict]:
    from tqdm.auto import tqdm

    from sst2.inference.classifier import SentimentClassifier
    from sst2.system import progress_enabled

    texts = read_texts(cfg)
    if not texts:
        raise InputError("no texts to classify (give them as arguments, with --input FILE, or on standard input)")
    clf = SentimentClassifier.from_pretrained(cfg.model_dir, runtime=cfg.runtime, threads=cfg.threads,
                                              batch_size=cfg.batch_size,
                                              workers=cfg.workers)
    show = progress_enabled(cfg.quiet) and len(texts) >= PROGRESS_MIN_TEXTS
    with tqdm(total=len(texts), disable=not show, unit="text", desc="predict", leave=False,
              dynamic_ncols=True) as bar:
        preds = clf.predict_details(texts, progress=bar.update)
    rows = [{"text": t, **p.to_dict()} for t, p in zip(texts, preds)]
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    return rows
