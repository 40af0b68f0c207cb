"""Long documents built from SST-2 sentences: accuracy with truncation against overlapping windows.

Two seeded sets from the dev and test sentences of ``--data`` (``--split``: one split's sentences only, so
that a window length chosen on documents of dev sentences is then measured on documents of test sentences):

* ``same``: each document joins ``--sentences LO HI`` sentences of one label (its label);
* ``mixed``: each joins an odd number in that range drawn from both labels, the majority label's
  share uniform above one half, labelled by the majority.

Each document is scored by ``SentimentClassifier`` with ``long_texts="truncate"`` (its first
max_length tokens) and ``"windows"`` of each ``--window-lengths`` (default: the model's own window
length); accuracy is reported for all documents and for those over ``--min-tokens`` tokens, with the
time per document, and the log-log slope of time against length (1 = linear) over the windowed
documents.

    python scripts/long_docs.py --model-dir runs/efficient/model --runtime onnx-int8 --docs 300
    python scripts/long_docs.py --model-dir runs/efficient/model --runtime onnx-int8 --split dev \
        --window-lengths 128 64 32
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from sst2 import SentimentClassifier
from sst2.data.splits import read_split, resolve_data_dir


def build(sentences: list[tuple[str, int]], n: int, mixed: bool, seed: int, lo: int, hi: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    by_label = {y: [s for s, l in sentences if l == y] for y in (0, 1)}
    docs = []
    for _ in range(n):
        if not mixed:
            y = rng.randint(0, 1)
            docs.append((" ".join(rng.sample(by_label[y], rng.randint(lo, hi))), y))
            continue
        k = rng.choice([k for k in range(lo, hi + 1) if k % 2])
        major = rng.randint(0, 1)
        n_major = rng.randint(k // 2 + 1, k - 1)
        picked = rng.sample(by_label[major], n_major) + rng.sample(by_label[1 - major], k - n_major)
        rng.shuffle(picked)
        docs.append((" ".join(picked), major))
    return docs


def evaluate(clf: SentimentClassifier, docs, lengths, min_tokens: int) -> dict:
    t0 = time.perf_counter()
    per_doc = []
    preds = []
    for text, _ in docs:  # one call per document: its own cost
        s = time.perf_counter()
        preds.append(int(clf.predict_proba([text])[0].argmax()))
        per_doc.append(time.perf_counter() - s)
    labels = np.array([y for _, y in docs])
    preds = np.array(preds)
    long_ = np.array(lengths) > min_tokens
    out = {"accuracy": float((preds == labels).mean()),
           f"accuracy_over_{min_tokens}": float((preds[long_] == labels[long_]).mean()) if long_.any() else None,
           "ms_per_doc_median": round(1000 * float(np.median(per_doc)), 2), "seconds": round(time.perf_counter() - t0, 1)}
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(per_doc))
    out["time_slope"] = round(float(np.polyfit(x, y, 1)[0]), 3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--runtime", default="torch")
    ap.add_argument("--data", default=None)
    ap.add_argument("--docs", type=int, default=300, help="documents per set")
    ap.add_argument("--min-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=["dev", "test", "both"], default="both",
                    help="build the documents from this split's sentences")
    ap.add_argument("--window-lengths", type=int, nargs="+", default=None, metavar="L",
                    help="window lengths to measure (default: the model's own); overlap a quarter")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sentences", type=int, nargs=2, default=[8, 16], metavar=("LO", "HI"),
                    help="sentences per document")
    args = ap.parse_args()
    data = resolve_data_dir(args.data)
    sentences = []
    for split in (("dev", "test") if args.split == "both" else (args.split,)):
        s = read_split(data / f"{split}.tsv", split)
        sentences += list(zip(s.texts, s.labels))
    load = SentimentClassifier.from_pretrained
    clfs = {"truncate": load(args.model_dir, runtime=args.runtime, threads=args.threads)}
    for length in args.window_lengths or [None]:
        clf = load(args.model_dir, runtime=args.runtime, threads=args.threads, long_texts="windows",
                   window_length=length)
        clfs[f"windows_{clf.window_length}"] = clf
    from tokenizers import Tokenizer

    whole = Tokenizer.from_file(f"{args.model_dir}/encoder/tokenizer.json")  # no truncation: true lengths
    whole.no_truncation()
    for name, mixed in (("same", False), ("mixed", True)):
        docs = build(sentences, args.docs, mixed, args.seed, *args.sentences)
        lengths = [len(e.ids) for e in whole.encode_batch([t for t, _ in docs], add_special_tokens=True)]
        row = {"set": name, "split": args.split, "docs": len(docs), "tokens_median": int(np.median(lengths)),
               "tokens_min": min(lengths), "tokens_max": max(lengths),
               "over_min_tokens": int(sum(n > args.min_tokens for n in lengths))}
        for mode, clf in clfs.items():
            row[mode] = evaluate(clf, docs, lengths, args.min_tokens)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
