"""Optimizer groups and learning-rate schedules, the same for every recipe and for ``sst2 bench``."""

from __future__ import annotations

import torch
from torch import nn

from sst2.training.config import OptimConfig


def param_groups(model: nn.Module, params: list[nn.Parameter], optim: OptimConfig) -> list[dict]:
    """One group per (learning rate, weight decay).

    No weight decay on biases, LayerNorm weights or the layer mix. The layer-mix weights get
    ``mix_lr_scale`` times the learning rate: they start at a uniform mix, and at the head's rate they
    barely leave it in a few hundred steps (softmax weights within 0.13-0.15 after 8 epochs), so the
    "learned" mix would be a plain average."""
    names = {id(q): n for n, q in model.named_parameters()}
    grouped: dict[tuple[float, float], list[nn.Parameter]] = {}
    for q in params:
        name = names.get(id(q), "")
        mix = name.rpartition(".")[0].endswith("mix")
        lr = optim.lr * (optim.mix_lr_scale if mix else 1.0)
        decay = 0.0 if (mix or q.ndim < 2 or "LayerNorm" in name) else optim.weight_decay
        grouped.setdefault((lr, decay), []).append(q)
    return [{"params": qs, "lr": lr, "weight_decay": decay} for (lr, decay), qs in grouped.items()]


def build_optimizer(model: nn.Module, params: list[nn.Parameter], optim: OptimConfig, total_steps: int):
    """Adam (AdamW when there is weight decay) with fused kernels, and with the linear schedule a warm-up
    then a linear decay to 0; the ``seed`` preset is the reference protocol, Adam at a constant rate.
    Fused: on CPU an AdamW step over MiniLM's 22.6M parameters takes 11 ms against 82 ms per tensor."""
    adam = torch.optim.AdamW if optim.weight_decay else torch.optim.Adam
    opt = adam(param_groups(model, params, optim), lr=optim.lr, fused=True)
    if optim.schedule == "constant":
        return opt, None
    from transformers import get_linear_schedule_with_warmup

    return opt, get_linear_schedule_with_warmup(opt, int(optim.warmup_ratio * total_steps), total_steps)
