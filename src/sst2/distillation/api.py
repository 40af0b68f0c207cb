"""``sst2 distill``: train a student on a teacher's soft targets over a transfer set.

The student is any training recipe (``model.recipe``; the ``distill`` preset: the efficient head on
the frozen encoder). The run is an ordinary training run (``sst2.training.api.train``) whose training
split is the transfer set (``sst2.distillation.transfer``) and whose targets are the teacher's logits
(``sst2.distillation.teacher``, cached; several teachers make an ensemble, whose mean raw logits are the
targets); dev and test are scored against their own labels as always, and the run directory records
the transfer set's sizes, the teacher's own dev/test accuracy (and each ensemble member's) and the
time of each stage.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sst2.data.splits import LABEL_NAMES
from sst2.distillation.loss import DistillLoss, pack_targets
from sst2.distillation.teacher import teacher_logits
from sst2.distillation.transfer import build_transfer
from sst2.errors import UserError
from sst2.inference.classifier import SentimentClassifier
from sst2.modeling.modeldir import read_spec
from sst2.training.api import SoftTargets, train
from sst2.training.config import ConfigError, TrainConfig
from sst2.training.engine import predicted


def _encoder_vocab(cfg: TrainConfig):
    """The student encoder's vocabulary, input embeddings and mask token (for word replacement)."""
    from sst2.modeling.backbone import load_backbone_parts

    encoder, tokenizer, _ = load_backbone_parts(cfg.model.backbone)
    embeddings = encoder.get_input_embeddings().weight.detach().float().numpy()
    return tokenizer.get_vocab(), embeddings, tokenizer.mask_token or "[MASK]"


def _teacher(cfg: TrainConfig, model_dir: str) -> SentimentClassifier:
    teacher = SentimentClassifier.from_pretrained(model_dir, runtime=cfg.distill.teacher_runtime,
                                                  threads=cfg.run.threads, batch_size=128)
    return teacher


def _accuracy(logits: np.ndarray | None, split) -> float | None:
    if logits is None:
        return None
    return float((predicted(torch.from_numpy(logits)).numpy() == np.asarray(split.labels)).mean())


def _label(cfg: TrainConfig, splits: dict, transfer, ctx) -> tuple[np.ndarray, dict, dict]:
    """The teacher's logits over the transfer set (an ensemble: the mean of its members' raw logits, each
    cached on its own), its dev/test logits, and the labelling report. One member is loaded at a time.
    ``splits`` are as read: the teacher applies its own normalizer (``sst2.distillation.transfer``)."""
    scored = [k for k in ("dev", "test") if k in splits and splits[k].labelled]
    transfer_logits, held_out, members, reports = [], {k: [] for k in scored}, [], []
    for model_dir in cfg.distill.teacher_dirs():
        teacher = _teacher(cfg, model_dir)
        logits, report = teacher_logits(teacher, transfer.teacher_texts, transfer.teacher_sha256, cfg.run.cache_dir,
                                        ctx.bar, ctx.log)
        transfer_logits.append(logits)
        reports.append(report)
        for k in scored:
            held_out[k].append(teacher.predict_logits(splits[k].texts))
        accuracy = {f"{k}_accuracy": _accuracy(held_out[k][-1], splits[k]) for k in scored}
        members.append({"teacher": model_dir, **accuracy})
        del teacher  # its weights are not needed while the next member labels or the student trains
    report = {"teacher_seconds": round(sum(r["seconds"] for r in reports), 3),
              "teacher_cache_hit": all(r["cache_hit"] for r in reports)}
    if len(members) > 1:
        report["ensemble"] = members
    held_out = {k: np.mean(v, axis=0).astype(np.float32) for k, v in held_out.items()}
    return np.mean(transfer_logits, axis=0).astype(np.float32), held_out, report


def soft_targets(cfg: TrainConfig, splits: dict, ctx, raw: dict | None = None) -> tuple[dict, SoftTargets]:
    """The transfer set as the training split, and the teacher's logits over it as its targets. ``splits``
    are normalized for the student, ``raw`` the same splits as read (None: the same), which the teacher
    is given."""
    raw = splits if raw is None else raw
    t = cfg.distill
    train_split = splits["train"]
    for model_dir in t.teacher_dirs():  # before the transfer set is built: a wrong teacher fails at once
        labels = read_spec(model_dir).get("labels", list(LABEL_NAMES))
        if list(labels) != list(train_split.label_names):
            hint = (f" (the same labels in another order: give the student the teacher's, --labels "
                    f"{','.join(labels)}, in Python labels={list(labels)!r})"
                    if sorted(labels) == sorted(train_split.label_names) else "")
            raise UserError(f"distill.teacher: {model_dir} predicts the labels {', '.join(labels)}, "
                            f"but the training data has {', '.join(train_split.label_names)}{hint}")
    t0 = time.perf_counter()
    vocab, embeddings, mask = _encoder_vocab(cfg)
    held_out = [text for k in ("dev", "test") if k in splits for text in splits[k].texts]
    transfer = build_transfer(cfg, train_split, vocab, embeddings, mask, ctx.log, held_out, raw["train"].texts)
    build_seconds = time.perf_counter() - t0
    logits, held_out, report = _label(cfg, raw, transfer, ctx)
    classes = predicted(torch.from_numpy(logits)).tolist()
    scores = {f"teacher_{k}_accuracy": _accuracy(held_out.get(k), s) for k, s in splits.items() if k in ("dev", "test")}
    ctx.log("teacher: " + ", ".join(f"{k.split('_')[1]} accuracy {v:.4f}" for k, v in scores.items() if v is not None))
    info = {"teacher": t.teacher, "loss": t.loss, "temperature": t.temperature if t.loss == "kl" else None,
            "hard_weight": t.hard_weight, "transfer": transfer.sizes, "transfer_seconds": round(build_seconds, 3),
            **report, **scores}
    loss = DistillLoss(t.loss, t.temperature, t.hard_weight)
    splits = {**splits, "train": transfer.as_split(classes, train_split.label_names)}
    return splits, SoftTargets(pack_targets(logits, transfer.hard), loss, DistillLoss.classes, info)


def distill(cfg: TrainConfig, command: str | None = None) -> dict:
    """Train the student ``cfg`` describes on the soft targets of ``cfg.distill.teacher``; writes the run
    directory ``cfg.run.out`` and returns its metrics, as :func:`sst2.training.api.train` does."""
    if cfg.distill.teacher is None:
        raise ConfigError("distill.teacher: give the teacher's model directory (--teacher DIR, e.g. RUN/model)")
    return train(cfg, command, targets=soft_targets)
