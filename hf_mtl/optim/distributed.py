"""The few collectives the optimization strategies need, as no-ops in a single process.

Everything a strategy decides from data (a running loss, a reward, an entropy normalizer, a gradient)
is reduced over the ranks first, so every rank takes the same decision and keeps the same state.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` over the ranks in place: "sum", "mean" or "max".

    Args:
        tensor: the same shape and dtype on every rank.
        op: the reduction.

    Returns:
        `tensor`, reduced.
    """
    if world_size() == 1:
        return tensor
    reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
    if dist.get_backend() == "nccl" and not tensor.is_cuda:  # NCCL reduces device tensors only
        moved = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(moved, op=reduce_op)
        tensor.copy_(moved)
    else:
        dist.all_reduce(tensor, op=reduce_op)
    if op == "mean":
        tensor.div_(world_size())
    return tensor
