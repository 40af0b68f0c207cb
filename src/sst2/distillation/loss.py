"""The student's loss on soft targets, optionally mixed with hard labels.

Targets are packed as one tensor per text, ``(N, k_out + 1)``: the teacher's ``k_out`` logits (one for
two classes, k for k > 2), then the hard label's class index, or -1 when the text has none (augmented
copies). ``mse`` is the squared error between logits (Tang et al. 2019); ``kl`` is Hinton et al.'s
temperature-scaled KL divergence, times T² so its gradients keep their size as T changes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sst2.training.engine import loss_sum, predicted


def pack_targets(teacher: np.ndarray, hard: list[int]) -> torch.Tensor:
    """The ``(N, k_out + 1)`` target tensor of teacher logits ``(N,)`` or ``(N, k)`` and hard labels."""
    t = torch.as_tensor(teacher, dtype=torch.float32)
    t = t[:, None] if t.ndim == 1 else t
    return torch.cat([t, torch.as_tensor(hard, dtype=torch.float32)[:, None]], dim=1)


class DistillLoss:
    """``loss(logits, targets)``: the summed loss of a batch (``sst2.training.engine.Job.loss``)."""

    def __init__(self, kind: str = "mse", temperature: float = 2.0, hard_weight: float = 0.0):
        if kind not in ("mse", "kl"):
            raise ValueError(f"unknown distillation loss {kind!r}: choose mse or kl")
        self.kind, self.temperature, self.hard_weight = kind, temperature, hard_weight

    def soft(self, logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s = logits[:, None] if logits.ndim == 1 else logits  # (B, k_out)
        if self.kind == "mse":
            return ((s - teacher) ** 2).sum()
        t = self.temperature
        if s.shape[1] == 1:  # two classes: the KL of two Bernoulli distributions, up to the teacher's entropy
            bce = F.binary_cross_entropy_with_logits(s / t, torch.sigmoid(teacher / t), reduction="sum")
            entropy = F.binary_cross_entropy_with_logits(teacher / t, torch.sigmoid(teacher / t), reduction="sum")
            return (bce - entropy) * t * t
        return F.kl_div(F.log_softmax(s / t, -1), F.log_softmax(teacher / t, -1), reduction="sum",
                        log_target=True) * t * t

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        teacher, hard = targets[:, :-1], targets[:, -1]
        loss = self.soft(logits, teacher)
        if self.hard_weight:
            known = hard >= 0
            if known.any():
                y = hard[known] if logits.ndim == 1 else hard[known].long()
                loss = (1 - self.hard_weight) * loss + self.hard_weight * loss_sum(logits[known], y)
            else:
                loss = (1 - self.hard_weight) * loss
        return loss

    @staticmethod
    def classes(targets: torch.Tensor) -> torch.Tensor:
        """The teacher's classes: the running train accuracy is the student's agreement with the teacher."""
        teacher = targets[:, :-1]
        return predicted(teacher[:, 0] if teacher.shape[1] == 1 else teacher)
