"""The training engine, shared by every recipe: the step, the epoch, dev scoring and best-epoch keeping.

A recipe (``sst2.training.recipes``) builds a :class:`Job`: the model that is saved, the function that
maps a batch to logits, where batches come from, and which parameters train. The engine does the rest
the same way for all of them, and ``sst2 bench`` times this same :func:`train_step`.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from sst2.data.batching import score, training_batches
from sst2.errors import UserError
from sst2.training.config import OptimConfig
from sst2.training.optim import WeightAverage, build_optimizer, warmup_steps


class DivergedError(UserError, ArithmeticError):
    """The training loss became NaN or infinite."""


@dataclass
class Job:
    """Everything the engine needs for one model type."""

    model: nn.Module  # what is saved (a SentimentModel); for fine-tuned models also what trains
    forward: Callable[..., torch.Tensor]  # forward(*inputs[split](idx)) -> logits (B,)
    inputs: dict[str, Callable]  # split -> idx -> batch tuple, with a ``lengths`` array
    params: list[nn.Parameter]  # the trainable parameters
    train_modules: list[nn.Module]  # put in training mode for each epoch (everything else: eval mode)
    cache_seconds: float = 0.0
    cache_hits: dict | None = None
    extra: dict = field(default_factory=dict)  # recipe-specific metrics
    finish: Callable[[], None] | None = None  # called once after training (LoRA: merge the adapters)
    # training targets other than class labels (distillation: a teacher's logits): the summed loss of a
    # batch, and the classes the running train accuracy is counted against
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    target_classes: Callable[[torch.Tensor], torch.Tensor] | None = None


BINARY_LOSS = nn.BCEWithLogitsLoss(reduction="sum")
MULTI_LOSS = nn.CrossEntropyLoss(reduction="sum")


def loss_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed loss: one logit per text (two classes) takes the one sigmoid in BCE, ``(B, k)`` logits
    take softmax cross-entropy against class indexes."""
    return BINARY_LOSS(logits, y) if logits.ndim == 1 else MULTI_LOSS(logits, y)


def predicted(logits: torch.Tensor) -> torch.Tensor:
    """Class indexes: the sign of one logit, or the largest of k."""
    return (logits > 0).long() if logits.ndim == 1 else logits.argmax(-1)


def label_tensor(labels: list[int], num_labels: int) -> torch.Tensor:
    """The targets of :func:`loss_sum`: floats for one logit, class indexes for k."""
    return torch.tensor(labels, dtype=torch.float32 if num_labels == 1 else torch.long)


def train_step(forward, batch: tuple, y: torch.Tensor, optimizer, params: list[nn.Parameter], grad_clip: float,
               scheduler=None, group=None, total: int | None = None, loss_fn=loss_sum,
               classes=None) -> tuple[float, int]:
    """One optimizer step on one batch: ``(summed loss, correct predictions)``; the loss is averaged for the
    gradient. With a process ``group`` (``sst2.training.distributed``), ``batch`` and ``y`` are this rank's
    share of a global batch of ``total`` examples (possibly none of them): the share's summed loss is divided
    by ``total`` and the ranks' gradients added, which is the global batch's averaged gradient exactly.
    ``loss_fn(logits, y)`` gives the summed loss and ``classes(y)`` the classes a prediction is counted
    correct against (default: the labels ``y``; distillation: the teacher's)."""
    optimizer.zero_grad(set_to_none=True)
    loss_value, correct = 0.0, 0
    if len(y):
        logits = forward(*batch)
        loss = loss_fn(logits, y)
        (loss / (total or len(y))).backward()
        target = y.long() if classes is None else classes(y)
        loss_value, correct = loss.item(), int((predicted(logits.detach()) == target).sum().item())
    if group is not None:
        loss_value, correct = group.sum_gradients(params, loss_value, correct)
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss_value, correct


def train_one_epoch(job: Job, labels: torch.Tensor, batches, optimizer, grad_clip: float, epoch: int, step: int,
                    scheduler=None, progress=None, group=None, average=None) -> tuple[dict, list[dict]]:
    """One pass over ``batches``; returns the epoch's running loss and accuracy and one row per step.
    With a process ``group`` each rank runs its share of every batch (:func:`train_step`); an ``average``
    (:class:`~sst2.training.optim.WeightAverage`) is updated after every step."""
    inputs = job.inputs["train"]
    loss_fn = job.loss or loss_sum
    total_loss = correct = seen = 0.0
    rows = []
    for idx in batches:
        share = idx if group is None else group.shard(idx)
        y = labels[share]
        loss, right = train_step(job.forward, inputs(share) if len(share) else (), y, optimizer, job.params,
                                 grad_clip, scheduler, group=group, total=len(idx), loss_fn=loss_fn,
                                 classes=job.target_classes)
        if not math.isfinite(loss):
            raise DivergedError(f"the training loss became {loss} at epoch {epoch}, step {step + 1}; no model was "
                                f"saved (lower optim.lr or check the data)")
        step += 1
        if average is not None:
            average.update(step)
        batch_loss = loss / len(idx)
        rows.append({"epoch": epoch, "step": step, "loss": round(batch_loss, 6)})
        total_loss += loss
        correct += right
        seen += len(idx)  # count examples: the last batch may be short
        if progress is not None:
            progress.set_postfix(loss=f"{batch_loss:.4f}", refresh=False)  # drawn by the update, when one is due
            progress.update(1)
    return {"train_loss": total_loss / seen, "train_accuracy": correct / seen}, rows


@torch.no_grad()
def evaluate(forward, inputs, labels: torch.Tensor | None, batch_size: int = 256) -> dict:
    """Logits of a whole split in input order, and its loss and accuracy when labelled."""
    if isinstance(forward, nn.Module):
        forward.eval()
    logits = torch.from_numpy(score(inputs.lengths, batch_size, lambda idx: forward(*inputs(idx)).float().numpy()))
    out = {"n": len(logits), "logits": logits}
    if labels is not None:
        out["loss"] = loss_sum(logits, labels).item() / len(labels)
        out["accuracy"] = (predicted(logits) == labels.long()).float().mean().item()
    return out


def _dev_scores(job: Job, labels: torch.Tensor, group) -> dict:
    """Dev loss and accuracy; with several ranks scored on rank 0 only and broadcast to the others."""
    main = group is None or group.is_main
    dev = evaluate(job.forward, job.inputs["dev"], labels) if main else None
    scores = None if dev is None else {"loss": dev["loss"], "accuracy": dev["accuracy"]}
    return scores if group is None else group.broadcast(scores)


def _set_modes(job: Job, training: bool) -> None:
    job.model.eval()
    for m in job.train_modules:
        m.train(training)


@dataclass
class Fitted:
    history: list[dict]  # one row per step
    epochs: list[dict]  # one row per epoch
    best_epoch: int
    train_seconds: float


def fit(job: Job, optim: OptimConfig, labels: dict[str, torch.Tensor | None], seed: int, bar=None,
        log: Callable[[str], None] = lambda msg: None, group=None) -> Fitted:
    """Train for ``optim.epochs``, score dev after each epoch, and leave the model with the weights of the
    epoch with the best dev accuracy (the last epoch when there is no labelled dev split). With ``optim.ema``
    those weights are the moving average's (:class:`~sst2.training.optim.WeightAverage`); the live
    weights' dev accuracy is recorded beside it as ``raw_dev_accuracy``.

    ``bar(total, desc)`` makes an epoch's progress bar. With a process ``group`` of several ranks, every
    rank trains its share of the same global batches; dev is scored on rank 0 and its result broadcast,
    so every rank keeps the same epoch."""
    torch.manual_seed(seed)  # the same dropout stream whatever happened before
    if group is not None:
        group.broadcast_parameters(job.params)
    rng = np.random.default_rng(seed)
    lengths = job.inputs["train"].lengths
    steps_per_epoch = -(-len(lengths) // optim.batch_size)
    total_steps = steps_per_epoch * optim.epochs
    optimizer, scheduler = build_optimizer(job.model, job.params, optim, total_steps)
    average = WeightAverage(job.params, optim.ema, warmup_steps(optim, total_steps)) if optim.ema else None
    trainable = [n for n, q in job.model.named_parameters() if q.requires_grad]
    has_dev = "dev" in job.inputs and labels.get("dev") is not None
    history, epochs = [], []
    best_acc, best_epoch, best_state = -1.0, 0, None
    t_train = time.perf_counter()
    for epoch in range(1, optim.epochs + 1):
        t_ep = time.perf_counter()
        batches = training_batches(lengths, optim.batch_size, rng, optim.bucket)
        _set_modes(job, True)
        with (bar(len(batches), f"epoch {epoch}/{optim.epochs}") if bar else nullcontext()) as progress:
            tr, rows = train_one_epoch(job, labels["train"], batches, optimizer, optim.grad_clip,
                                       epoch, len(history), scheduler, progress, group, average)
        history += rows
        _set_modes(job, False)
        row = {"epoch": epoch, **tr, "dev_loss": None, "dev_accuracy": None}
        if has_dev and average is not None:
            row["raw_dev_accuracy"] = _dev_scores(job, labels["dev"], group)["accuracy"]
        with average.swapped() if average is not None else nullcontext():
            if has_dev:
                dev = _dev_scores(job, labels["dev"], group)
                row.update(dev_loss=dev["loss"], dev_accuracy=dev["accuracy"])
            row["seconds"] = time.perf_counter() - t_ep
            epochs.append(row)
            score_ = row["dev_accuracy"] if has_dev else epoch  # without dev: the last epoch
            if score_ > best_acc:
                best_acc, best_epoch = score_, epoch
                params = dict(job.model.named_parameters())
                best_state = {n: params[n].detach().clone() for n in trainable}
        dev_text = f"dev loss {row['dev_loss']:.4f} acc {row['dev_accuracy']:.4f}" if has_dev else "no dev split"
        log(f"epoch {epoch:>2}: train loss {tr['train_loss']:.4f} acc {tr['train_accuracy']:.4f} | "
            f"{dev_text} | {row['seconds']:.1f} s")
    train_seconds = time.perf_counter() - t_train
    with torch.no_grad():
        params = dict(job.model.named_parameters())
        for n, v in best_state.items():
            params[n].copy_(v)
    return Fitted(history, epochs, best_epoch, train_seconds)
