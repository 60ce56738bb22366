"""Training on several processes: torch's DistributedDataParallel under ``torchrun``.

``torchrun`` with K processes per node (``-m robustbench_pp.cli train ...``) starts K processes; each joins
the process group (NCCL on GPUs, gloo on CPU) and takes its GPU from ``LOCAL_RANK``. The
batch size stays the *global* batch: every step, each rank takes a contiguous share of the
same global batch (the order and augmentations are drawn identically on every rank), the
loss of a share is weighted by its size, and DDP's gradient average then equals the
gradient of the global batch's mean loss. BatchNorm is synchronised across ranks (torch's
``SyncBatchNorm`` on GPUs; on CPU, where torch's refuses to run, :class:`RankSyncedBatchNorm`),
so K processes compute what one process with the same global batch computes, up to float
rounding. Only rank 0 evaluates and writes checkpoints; the others wait at a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Ranks:
    """This process's place: ``rank`` of ``world`` (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    joined: bool = False  # this module initialised the process group (and destroys it)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> slice:
        """This rank's contiguous part of ``count`` items (the first ``count % world`` ranks get one more)."""
        base, extra = divmod(count, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


def under_torchrun() -> bool:
    """True when torchrun started this process among several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device) -> Ranks:
    """Join the torchrun process group when there is one; a single process otherwise.

    Raises:
        RuntimeError: torch.distributed is missing, or torchrun's variables are incomplete.
    """
    if not under_torchrun():
        return Ranks()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK"):
        if key not in os.environ:
            raise RuntimeError(f"distributed training needs {key} in the environment: start it with torchrun")
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, joined)


def device_of(requested: str, ranks: Ranks) -> torch.device:
    """The device of this rank: a CUDA request means the GPU of its local rank."""
    device = torch.device(requested)
    if device.type == "cuda" and ranks.world > 1:
        return torch.device("cuda", ranks.local_rank)
    return device


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def leave(ranks: Ranks) -> None:
    """Destroy the process group if :func:`join` created it."""
    if ranks.joined and dist.is_initialized():
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: each rank's statistics feed every rank's loss."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class RankSyncedBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the images of every rank (CPU and gloo too).

    The per-channel sum of x (with the image count), then the sum of squared deviations from the
    global mean, are all-reduced with autograd (:class:`_SumOverRanks`),
    so the gradients also flow through the other ranks' share of the statistics, as in torch's
    ``SyncBatchNorm``. Two passes rather than E[x²] − E[x]²: the one-pass variance cancels
    digits when a channel's mean is large against its spread (measured on an ImageNet-stem
    ResNet-18-PP3 of width 4, 30 images of 224 px on 2 gloo processes: largest gradient
    difference from one process 3.5e-4 with one pass, 1.8e-6 with two; one process on 1 vs 2
    threads differs by 1.7e-6).
    Evaluation and a single process use the plain BatchNorm2d path. Same parameters and
    buffers as BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        channels = x.shape[1]
        sums = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), x.new_tensor([x.numel() / channels])]))
        count = sums[-1]
        mean = sums[:channels] / count
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (count / (count - 1))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def _synced_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a RankSyncedBatchNorm sharing its tensors."""
    if type(module) is nn.BatchNorm2d:
        synced = RankSyncedBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, _synced_batchnorm(child))
    return module


def wrap(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """The model to train: itself for one process, else BatchNorm synchronised and DDP-wrapped."""
    if ranks.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(_synced_batchnorm(model))


def unwrapped(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) else model
