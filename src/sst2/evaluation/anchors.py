"""External anchors for ``sst2 compare``: fastText, trained and timed in the same process as the models.

fastText (Joulin et al. 2017) is what users who score millions of texts pick; the row it adds says how
the sst2 tiers compare with it on the same data, machine and load. It is a benchmark-only dependency:
``pip install 'sst2[bench]'``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from sst2.errors import UserError

# Bigram features and 25 epochs, as fastText's supervised tutorial does for a small data set; the choice
# against a small grid is in docs/experiments/distillation.md.
FASTTEXT_ARGS = {"epoch": 25, "lr": 0.5, "wordNgrams": 2, "dim": 100, "minCount": 1, "loss": "softmax"}


def _line(text: str) -> str:
    return " ".join(text.split())  # fastText reads one text per line: no newline inside


def fasttext_row(splits: dict, texts: list[str], calls: int, warmup: int, batch_size: int, repeats: int,
                 threads: int | None, seed: int = 0) -> dict:
    """Train fastText on ``splits["train"]``, score dev/test, and time it like the models (``texts``)."""
    try:
        import fasttext
    except ImportError as exc:
        raise UserError("--fasttext needs the fasttext package: pip install 'sst2[bench]'") from exc
    train = splits["train"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text("".join(f"__label__{y} {_line(t)}\n" for t, y in zip(train.texts, train.labels)))
        t0 = time.perf_counter()
        model = fasttext.train_supervised(str(path), verbose=0, seed=seed, thread=threads or 1, **FASTTEXT_ARGS)
        train_seconds = time.perf_counter() - t0

    def labels_of(batch: list[str]) -> list[int]:
        return [int(lab[0].removeprefix("__label__")) for lab in model.predict([_line(t) for t in batch])[0]]

    params = int(model.get_input_matrix().size + model.get_output_matrix().size)  # all of them train
    row = {"label": "fastText (external anchor)", "model": "fasttext", "n_seeds": 1, "trainable_params": params,
           "total_params": params,
           "train_seconds_mean": round(train_seconds, 3), "train_seconds_std": 0.0, "fasttext_args": FASTTEXT_ARGS}
    for name in ("dev", "test"):
        s = splits.get(name)
        ok = s is not None and s.labelled
        acc = sum(p == y for p, y in zip(labels_of(s.texts), s.labels)) / len(s) if ok else None
        row[f"{name}_accuracy_mean"], row[f"{name}_accuracy_std"] = acc, 0.0 if ok else None
    if not texts:  # --no-latency: the models are not timed either
        return row
    single = texts[:calls]
    for t in single[:warmup]:
        labels_of([t])
    times = []
    for t in single:
        t0 = time.perf_counter()
        labels_of([t])
        times.append((time.perf_counter() - t0) * 1000)
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            labels_of(texts[i : i + batch_size])
        per.append((time.perf_counter() - t0) * 1000 / len(texts))
    import numpy as np

    row.update({"b1_ms_p50": round(statistics.median(times), 4), "b1_ms_p90": round(float(np.percentile(times, 90)), 4),
                "b1_calls": len(times), f"b{batch_size}_ms_per_sentence_p50": round(statistics.median(per), 5),
                f"b{batch_size}_sentences_per_s": round(1000 / statistics.median(per), 1)})
    return row
