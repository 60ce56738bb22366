"""Sharding images over processes (torchrun) and reducing their counts exactly.

Rank r of K evaluates positions r, r+K, r+2K, ... of the cell's image list, so every image
is seen by exactly one rank whatever N mod K. Counts, top-5 hits and calibration bins are
summed with ``all_reduce``; per-image correctness is gathered to rank 0 and put back in the
original order (needed for bootstrap intervals and exact merges). NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from robustbench_pp import arguments
from robustbench_pp.evaluate.engine import CellOutcome


@dataclass(frozen=True)
class Partition:
    """This process's share: ``rank`` of ``world`` (1 process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    def take(self, positions: np.ndarray) -> np.ndarray:
        return positions[self.rank :: self.world]

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def parse_shard(text: str | None) -> Partition:
    """'i/n' (0-based i) -> Partition(i, n); None -> the whole set.

    Raises:
        ValueError: for anything but 0 <= i < n.
    """
    if text is None:
        return Partition()
    return Partition(*arguments.shard(text))


def wants_distributed(flag: bool) -> bool:
    """True under torchrun (WORLD_SIZE > 1) or when asked for (``flag``)."""
    return flag or int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group(device: torch.device) -> Partition:
    """Join the torchrun process group (env:// rendezvous) and pin this rank's GPU."""
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
            if key not in os.environ:
                raise RuntimeError(
                    f"distributed evaluation needs {key} in the environment: start its processes with torchrun"
                )
        dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Partition(dist.get_rank(), dist.get_world_size())


def local_device(device: torch.device) -> torch.device:
    """Each torchrun rank uses the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def reduce_outcome(outcome: CellOutcome, partition: Partition, reduce_device: torch.device) -> CellOutcome | None:
    """Combine every rank's outcome on rank 0 (others get None).

    Per-image correctness returns to the global order: rank r's k-th image is position r + kK.
    """
    if partition.world == 1:
        return outcome
    counts = torch.tensor(
        np.concatenate([[outcome.n_correct_top5, outcome.seconds], outcome.calibration.reshape(-1)]),
        dtype=torch.float64, device=reduce_device,
    )
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    gathered: list = [None] * partition.world if partition.is_writer else None
    dist.gather_object(np.packbits(outcome.correct).tobytes() + outcome.n_total.to_bytes(8, "little"),
                       gathered, dst=0)
    if not partition.is_writer:
        return None
    parts = []
    for blob in gathered:
        size = int.from_bytes(blob[-8:], "little")
        parts.append(np.unpackbits(np.frombuffer(blob[:-8], dtype=np.uint8), count=size).astype(bool))
    correct = np.empty(sum(p.size for p in parts), dtype=bool)
    for rank, part in enumerate(parts):
        correct[rank :: partition.world] = part
    values = counts.cpu().numpy()
    return CellOutcome(
        correct=correct,
        n_correct_top5=int(round(values[0])),
        calibration=values[2:].reshape(outcome.calibration.shape),
        seconds=float(values[1]) / partition.world,
    )


def barrier(partition: Partition) -> None:
    if partition.world > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
