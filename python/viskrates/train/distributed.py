"""Data parallelism over ``torch.distributed`` (gloo on CPU): every rank holds the whole model, evaluates a
strided shard of each batch, and the gradients are summed across ranks. Because the loss of each shard is
normalised by the counts of the *global* batch, the summed gradient equals the single-process gradient of
the whole batch (up to summation order)."""
import os
from typing import Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_size(rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[int, int]:
    """(rank, world size) of this process: given values, else the initialised process group, else the
    ``RANK``/``WORLD_SIZE`` variables torchrun sets (initialising a gloo group from them), else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(values: Tensor, world_size: int) -> Tensor:
    """Sum of ``values`` over the ranks (a copy; unchanged with one process)."""
    if world_size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_reduce_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Sum the ``.grad`` of every parameter (all must be set) over the ranks, in one flat buffer (one
    collective)."""
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in parameters:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n
