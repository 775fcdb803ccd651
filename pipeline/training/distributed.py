"""Data-parallel training over several processes (``torchrun`` or ``jpipe train TASK --ddp N``).

torchrun starts N copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set; ``init_from_env`` joins them into one process group
(gloo on CPU, nccl on GPU: each rank on GPU ``LOCAL_RANK``). Without those variables nothing
here does anything, and training is the single-process loop, unchanged.

How a data-parallel epoch matches a single process with the same global batch:

* every rank builds the same global batches (same seed, same data);
* rank ``r`` takes rows ``r, r + N, r + 2N, ...`` of each global batch (``shard``: what
  ``DistributedSampler(shuffle=False)`` does, without its padding, whose repeated rows would
  bias the gradient); a rank left without rows (a last batch smaller than N) runs one row
  with weight 0, so every rank takes part in every gradient all-reduce;
* each rank's loss is its rows' summed loss divided by the global batch's normaliser (its
  size, or the sum of its class weights), times N: DistributedDataParallel averages the
  gradients over the N ranks, which gives exactly the gradient of the global batch's mean loss.

Dropout draws its masks per rank, so runs with dropout agree in distribution, not bit for bit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Rank 0 may run the stale upstream stages (tokenize, vectors) before it joins the group.
RENDEZVOUS_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Dist:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and model directories."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched_world() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when the command was not started by it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def current() -> Dist:
    """The process group this process belongs to now (``Dist()`` when there is none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(*, device: str = "auto") -> Dist:
    """Join the process group torchrun describes: nccl when ``device`` allows CUDA and there is a GPU, else gloo."""
    import torch.distributed as dist

    missing = [key for key in ENV_KEYS if key not in os.environ]
    if missing:
        from pipeline.errors import ConfigError

        raise ConfigError(
            "E143", f"Distributed training needs {', '.join(missing)} in the environment.", hint="Start it with torchrun, or `jpipe train`."
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)  # "cuda" now means this rank's GPU
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=RENDEZVOUS_TIMEOUT)
    found = current()
    logger.debug("rank %d of %d joined (%s)", found.rank, found.world, dist.get_backend())
    return found


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when a process group is active, else ``model`` itself."""
    if not current().active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)


def shard(indices: np.ndarray, dist: Dist) -> tuple[np.ndarray, float]:
    """This rank's rows of a global batch, and their weight (0.0 for the stand-in row of a rank left without rows)."""
    local = indices[dist.rank :: dist.world]
    return (local, 1.0) if len(local) else (indices[:1], 0.0)


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the ranks, in place (no-op without a process group)."""
    if not current().active:
        return
    import torch.distributed as dist

    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast(value):
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not current().active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
