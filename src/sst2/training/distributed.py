"""Data-parallel training on several processes: ``torch.distributed`` with the gloo backend (CPU).

``torchrun --nproc-per-node N -m sst2 train ...`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
a rendezvous in their environment; :func:`from_env` joins them into one :class:`Group` (one process
and no torchrun: :data:`SINGLE`, which does nothing). Every process reads the same data, builds the same
model from the same seed and draws the same global batches (``sst2.data.batching.training_batches``);
each takes its share of every global batch, strided like ``DistributedSampler`` (``idx[rank::N]``, so a
length-bucketed batch gives every rank texts of similar length), but never padded with repeated
examples, which would change the gradient.

The gradient of a step is exactly the one-process gradient of the global batch: each rank back-propagates
the *summed* loss of its share divided by the *global* batch size, and one all-reduce adds the ranks'
gradients. That holds for shares of unequal size (a global batch that does not divide by N, the short
last batch) and for an empty share (a last batch smaller than N), where DistributedDataParallel's mean
over ranks would weight the shares wrongly or wait for a backward pass that never comes. Every rank then
holds the same summed gradient, clips it the same way and takes the same optimizer step.

Only rank 0 writes the run directory, logs and shows progress; dev and test are scored on rank 0, and the
dev accuracy that picks the best epoch is broadcast so every rank keeps the same epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sst2.errors import UserError

BACKEND = "gloo"
ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's share of a global batch: every ``world``-th index from ``rank`` on."""
        return idx[self.rank :: self.world] if self.active else idx

    def sum_gradients(self, params, loss: float, correct: int) -> tuple[float, int]:
        """Add every rank's gradients of ``params`` (one all-reduce over a flat buffer) and the step's summed
        loss and correct count; returns the global ``(loss, correct)``. A parameter that got no gradient
        on any rank keeps ``grad = None``, as it would in one process (the optimizer then skips it)."""
        if not self.active:
            return loss, correct
        import torch
        import torch.distributed as dist

        got = [p.grad is not None for p in params]
        stats = torch.tensor([loss, correct, *got], dtype=torch.float64)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat)
        dist.all_reduce(stats)
        offset = 0
        for p, any_grad in zip(params, stats[2:].tolist()):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p) if any_grad else None
            offset += n
        return stats[0].item(), int(round(stats[1].item()))

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (a picklable value)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_parameters(self, params) -> None:
        """Rank 0's values of ``params`` on every rank (the same start whatever each rank's RNG did)."""
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def main_first(self, fn: Callable):
        """``fn()`` on rank 0, then on the other ranks (e.g. rank 0 fills the feature cache, the others
        then read it instead of encoding the same texts at the same time)."""
        if not self.active:
            return fn()
        import torch.distributed as dist

        if self.is_main:
            out = fn()
            dist.barrier()
            return out
        dist.barrier()
        return fn()

    def close(self, finished: bool = False) -> None:
        """Leave the group. ``finished``: every rank got through its work, so they first wait for each
        other (rank 0 still scores, calibrates and writes after the last step): a rank that tore its
        gloo connections down while its peer still held them open was seen to abort (SIGABRT) at exit.
        After a failure there is no waiting (the peer may never come; torchrun stops it)."""
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                if finished:
                    dist.barrier()
                dist.destroy_process_group()


SINGLE = Group()


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def from_env() -> Group:
    """Join the process group that torchrun set up (gloo); :data:`SINGLE` outside torchrun."""
    if not launched():
        return SINGLE
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set: "
                               f"start the processes with torchrun (torchrun --nproc-per-node N -m sst2 train ...)")
    import torch.distributed as dist

    if not dist.is_initialized():
        try:
            dist.init_process_group(BACKEND)
        except (RuntimeError, ValueError) as exc:
            from sst2.errors import one_line

            raise DistributedError(f"cannot join the {os.environ['WORLD_SIZE']} training processes at "
                                   f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({one_line(exc)})") from exc
    return Group(dist.get_rank(), dist.get_world_size())
