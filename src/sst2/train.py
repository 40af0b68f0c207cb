"""``sst2 train``: fit a model and write a complete run directory.

The efficient model trains only its head; the frozen encoder's token states come from the feature
cache (computed once per key) or, with ``--no-cache``, from running the encoder on every batch as the
reference implementation did.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbone import Backbone
from .cache import FeatureCache, Features, cache_key, encode_texts
from .config import TrainConfig, to_dict
from .data import Split, load_splits, resolve_data_dir
from .errors import UserError
from .heads import HeadConfig, build_head, count_parameters
from .model import SentimentModel, pad_batch
from .runtime import environment, peak_rss_mb, progress_enabled, seed_everything, set_threads

RUN_FILES = ("config.json", "history.csv", "epochs.csv", "metrics.json", "plot.png", "model")
EPOCH_FIELDS = ("epoch", "train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "seconds")
HISTORY_FIELDS = ("epoch", "step", "loss")


def log(cfg, msg: str) -> None:
    if not cfg.quiet:
        print(msg, file=sys.stderr, flush=True)


def _tqdm(cfg, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=not progress_enabled(cfg.quiet), leave=False, dynamic_ncols=True, **kw)


# --- where token states come from -----------------------------------------------------------------
class CachedStates:
    """Token states read from precomputed :class:`Features`."""

    def __init__(self, features: Features):
        self.features = features
        self.lengths = features.lengths

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features.batch(idx)


class EncoderStates:
    """Token states from running the frozen encoder on each batch (the reference behaviour)."""

    def __init__(self, backbone: Backbone, texts: list[str], max_length: int):
        self.backbone = backbone
        self.ids = backbone.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        self.lengths = np.array([len(x) for x in self.ids], dtype=np.int64)
        self.pad_id = backbone.tokenizer.pad_token_id or 0

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = pad_batch([self.ids[i] for i in idx], self.pad_id)
        with torch.no_grad():
            states = self.backbone(input_ids, mask)
        return states, mask.sum(1)


def make_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool) -> list[np.ndarray]:
    """Shuffled batches. With ``bucket``, each run of 20 batches is sorted by length before being cut,
    so a batch holds sentences of similar length; the order of batches is then shuffled again."""
    perm = rng.permutation(len(lengths))
    if not bucket:
        return [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    span = batch_size * 20
    batches = []
    for start in range(0, len(perm), span):
        chunk = perm[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# --- the loops -------------------------------------------------------------------------------------
def train_one_epoch(head: nn.Module, states, labels: torch.Tensor, batches, optimizer, grad_clip: float,
                    epoch: int, step: int, progress=None) -> tuple[dict, list[dict]]:
    head.train()
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    total_loss = correct = seen = 0.0
    rows = []
    for idx in batches:
        x, lengths = states(idx)
        y = labels[idx]
        logits = head(x, lengths)  # (B,) logits: the loss applies the one sigmoid
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        (loss / len(idx)).backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(head.parameters(), grad_clip)
        optimizer.step()
        step += 1
        batch_loss = loss.item() / len(idx)
        rows.append({"epoch": epoch, "step": step, "loss": round(batch_loss, 6)})
        total_loss += loss.item()
        correct += ((logits.detach() > 0).float() == y).sum().item()
        seen += len(idx)  # count examples: the last batch may be short
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{batch_loss:.4f}")
    return {"train_loss": total_loss / seen, "train_accuracy": correct / seen}, rows


@torch.no_grad()
def evaluate_states(head: nn.Module, states, labels: torch.Tensor | None, batch_size: int = 256) -> dict:
    """Loss and accuracy over a whole split (length-sorted batches; examples counted exactly)."""
    head.eval()
    order = np.argsort(states.lengths, kind="stable")
    logits = torch.empty(len(order))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, lengths = states(idx)
        logits[idx] = head(x, lengths)
    out = {"n": len(order), "logits": logits}
    if labels is not None:
        out["loss"] = nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
        out["accuracy"] = ((logits > 0).float() == labels).float().mean().item()
    return out


# --- features --------------------------------------------------------------------------------------
@dataclass
class FeatureReport:
    seconds: float
    hits: dict[str, bool]
    nbytes: int


def prepare_features(cfg: TrainConfig, backbone: Backbone, splits: dict[str, Split],
                     dtype: str = "float16") -> tuple[dict[str, Features], FeatureReport]:
    cache = FeatureCache(cfg.cache_dir, log=lambda m: log(cfg, m))
    t0 = time.perf_counter()
    base = {
        "backbone_weights": backbone.weights_fingerprint(),
        "tokenizer": backbone.tokenizer_fingerprint(),
        "max_length": cfg.max_length,
        "layers": list(backbone.layers),
        "dtype": dtype,
    }
    feats, hits = {}, {}
    for name, split in splits.items():
        fields = {**base, "data_sha256": split.sha256}
        key = cache_key(**fields)
        f = cache.load(key)
        hits[name] = f is not None
        if f is None:
            with _tqdm(cfg, total=len(split), desc=f"encode {name}", unit="sent") as bar:
                f = cache.build(key, {**fields, "source": backbone.source, "file": str(split.path)},
                                lambda path: encode_texts(backbone, split.texts, cfg.max_length, dtype=dtype,
                                                          progress=bar, out=path))
        feats[name] = f
    report = FeatureReport(time.perf_counter() - t0, hits, sum(f.nbytes for f in feats.values()))
    states = ", ".join(f"{k}={'hit' if v else 'miss'}" for k, v in hits.items())
    log(cfg, f"features: {'cache hit' if all(hits.values()) else 'encoded'} ({states}), "
             f"{report.nbytes / 2**20:.0f} MiB in {report.seconds:.1f} s, cache {cache.root}")
    return feats, report


# --- the command -----------------------------------------------------------------------------------
def _prepare_out(cfg: TrainConfig) -> tuple[Path, Path]:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise UserError(f"run directory {out} already exists and is not empty (pass --overwrite to replace it)")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return out, partial


def _finish_out(out: Path, partial: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)


def write_csv(path: Path, fields, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows(rows)


def train(cfg: TrainConfig) -> dict:
    """Train, evaluate and write the run directory; returns the metrics dict."""
    t_start = time.perf_counter()
    threads = set_threads(cfg.threads)
    seed_everything(cfg.seed)
    p = cfg.resolved()
    data_dir = resolve_data_dir(cfg.data)
    splits = load_splits(data_dir)
    out, partial = _prepare_out(cfg)
    try:
        metrics = _train_efficient(cfg, p, splits, partial, threads, t_start, data_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # never leave a half-written run behind
        raise
    _finish_out(out, partial)
    log(cfg, f"wrote {out}/ ({', '.join(RUN_FILES)})")
    return metrics


def _train_efficient(cfg, p, splits, run_dir: Path, threads: int, t_start: float, data_dir: Path) -> dict:
    backbone = Backbone.load(cfg.backbone, p["layers"] if p["layers"] == "all" else tuple(p["layers"]))
    backbone.requires_grad_(False)
    backbone.eval()
    head_cfg = HeadConfig(
        kind="lstm", hidden_size=backbone.hidden_size, num_states=len(backbone.layers), proj_size=p["proj_size"],
        dropout=p["dropout"], lstm_size=p["lstm_size"], bidirectional=p["bidirectional"], pooling=p["pooling"],
    )
    head = build_head(head_cfg)
    spec = {
        "model": "efficient", "preset": cfg.preset, "backbone": cfg.backbone, "layers": list(backbone.layers),
        "max_length": cfg.max_length, "head": head_cfg.to_dict(), "labels": ["negative", "positive"],
    }
    model = SentimentModel(backbone, head, spec)
    trainable, total = count_parameters(model)
    log(cfg, f"model: efficient/{cfg.preset} on {cfg.backbone} (hidden {backbone.hidden_size}, "
             f"layers {list(backbone.layers)} of {backbone.num_states - 1})")
    log(cfg, f"trainable params: {trainable:,} | total params: {total:,} | threads: {threads}")

    labels = {k: torch.tensor(s.labels, dtype=torch.float32) if s.labelled else None for k, s in splits.items()}
    truncated = {k: 0 for k in splits}
    if cfg.cache:
        feats, frep = prepare_features(cfg, backbone, splits)
        sources = {k: CachedStates(f) for k, f in feats.items()}
        cache_seconds = frep.seconds
        cache_hits = frep.hits
    else:
        sources = {k: EncoderStates(backbone, s.texts, cfg.max_length) for k, s in splits.items()}
        cache_seconds, cache_hits = 0.0, None
    for k, src in sources.items():
        truncated[k] = int((src.lengths >= cfg.max_length).sum())

    torch.manual_seed(cfg.seed)  # same head init and dropout stream whatever happened above
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=p["lr"])
    history, epochs = [], []
    best_acc, best_epoch, best_state = -1.0, 0, None
    step = 0
    t_train = time.perf_counter()
    for epoch in range(1, p["epochs"] + 1):
        t_ep = time.perf_counter()
        batches = make_batches(sources["train"].lengths, p["batch_size"], rng, cfg.bucket)
        with _tqdm(cfg, total=len(batches), desc=f"epoch {epoch}/{p['epochs']}", unit="batch") as bar:
            tr, rows = train_one_epoch(head, sources["train"], labels["train"], batches, optimizer,
                                       cfg.grad_clip, epoch, step, bar)
        step += len(rows)
        history += rows
        dev = evaluate_states(head, sources["dev"], labels["dev"])
        row = {"epoch": epoch, **tr, "dev_loss": dev["loss"], "dev_accuracy": dev["accuracy"],
               "seconds": time.perf_counter() - t_ep}
        epochs.append(row)
        if dev["accuracy"] > best_acc:
            best_acc, best_epoch = dev["accuracy"], epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        log(cfg, f"epoch {epoch:>2}: train loss {tr['train_loss']:.4f} acc {tr['train_accuracy']:.4f} | "
                 f"dev loss {dev['loss']:.4f} acc {dev['accuracy']:.4f} | {row['seconds']:.1f} s")
    train_seconds = time.perf_counter() - t_train
    head.load_state_dict(best_state)
    dev = evaluate_states(head, sources["dev"], labels["dev"])
    test = evaluate_states(head, sources["test"], labels["test"])
    test_acc = test.get("accuracy")
    log(cfg, f"best epoch {best_epoch}: dev accuracy {dev['accuracy']:.4f} | test accuracy "
             f"{'n/a (unlabelled)' if test_acc is None else f'{test_acc:.4f}'}")

    model.save(run_dir / "model")
    total_seconds = time.perf_counter() - t_start
    metrics = {
        "model": "efficient",
        "preset": cfg.preset,
        "backbone": cfg.backbone,
        "data": str(data_dir),
        "trainable_params": trainable,
        "total_params": total,
        "epochs": p["epochs"],
        "best_epoch": best_epoch,
        "dev_accuracy": dev["accuracy"],
        "test_accuracy": test_acc,
        "dev_loss": dev["loss"],
        "test_loss": test.get("loss"),
        "train_size": len(splits["train"]),
        "dev_size": len(splits["dev"]),
        "test_size": len(splits["test"]),
        "truncated_sentences": truncated,
        "cache": cfg.cache,
        "cache_hits": cache_hits,
        "cache_seconds": round(cache_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(train_seconds / p["epochs"], 3),
        "total_seconds": round(total_seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads,
        "seed": cfg.seed,
    }
    config = {"command": "train", "config": to_dict(cfg), "resolved": p, "model_spec": spec,
              "data_files": {k: {"path": str(s.path), "sha256": s.sha256, "rows": len(s)} for k, s in splits.items()},
              "environment": environment()}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_csv(run_dir / "history.csv", HISTORY_FIELDS, history)
    write_csv(run_dir / "epochs.csv", EPOCH_FIELDS, [{k: round(v, 6) if isinstance(v, float) else v
                                                       for k, v in r.items()} for r in epochs])
    from .report import plot_run

    plot_run(run_dir)
    # metrics.json last: its presence marks a complete run directory
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if cfg.quiet:
        print(json.dumps({k: metrics[k] for k in ("model", "dev_accuracy", "test_accuracy", "total_seconds")}))
    return metrics
