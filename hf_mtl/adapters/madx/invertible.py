"""Invertible adapters: a NICE additive coupling block per language (Dinh et al. 2015; MAD-X, §2.3).

Split the embedding output e = [e1, e2] (sizes ⌊D/2⌋ and ⌈D/2⌉):

    forward:  y1 = e1 + F(e2),   y2 = e2 + G(y1)           on the embeddings, before the first layer
    inverse:  e2 = y2 - G(y1),   e1 = y1 - F(e2)           before the MLM head's output projection

F and G are bottlenecks without a residual, f(h W_down + b_down) W_up + b_up, with r = input // 2.
MAD-X applies the inverse to the MLM head's transformed states just before the (tied) output
embedding matrix, so input and output embeddings see mirrored transformations of the same
language-specific map (AdapterHub does the same with a pre-hook on the output embeddings). A generative
LM's own LM head serves every row, so there the inverse runs on every row, with the row's language.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..bottleneck.config import bottleneck_size
from ..bottleneck.layer import AdapterTensors, BottleneckAdapter, routed_adapter
from ..routing import Routing


CouplingTensors = tuple[AdapterTensors, AdapterTensors]  # (F, G)


class InvertibleAdapter(nn.Module):
    """One NICE coupling block over D features.

    Args:
        dim: D, the embedding size.
        reduction_factor: F and G map D/2 -> D/2 // reduction_factor -> D/2.
        init: the bottlenecks' init (`identity` makes the block the identity until trained).
    """

    def __init__(self, dim: int, reduction_factor: float, init: str):
        super().__init__()
        self.split = dim // 2
        d1, d2 = self.split, dim - self.split
        self.F = BottleneckAdapter(d2, bottleneck_size(d2, reduction_factor), out_dim=d1, init=init)  # e2 -> e1
        self.G = BottleneckAdapter(d1, bottleneck_size(d1, reduction_factor), out_dim=d2, init=init)  # y1 -> e2

    def tensors(self, detach: bool = False) -> CouplingTensors:
        return self.F.tensors(detach), self.G.tensors(detach)

    @staticmethod
    def parameter_count(dim: int, reduction_factor: float) -> int:
        d1, d2 = dim // 2, dim - dim // 2
        return (BottleneckAdapter.parameter_count(d2, bottleneck_size(d2, reduction_factor), d1)
                + BottleneckAdapter.parameter_count(d1, bottleneck_size(d1, reduction_factor), d2))


def coupling_forward(e: torch.Tensor, blocks: Sequence[CouplingTensors], owners: Routing | None, split: int,
                     act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(B, L, D) -> (B, L, D): each row through its language's block (`owners` as in `routed_adapter`)."""
    e1, e2 = e[..., :split], e[..., split:]
    y1 = e1 + routed_adapter(e2, [b[0] for b in blocks], owners, act)
    y2 = e2 + routed_adapter(y1, [b[1] for b in blocks], owners, act)
    return torch.cat([y1, y2], dim=-1)


def coupling_inverse(y: torch.Tensor, block: CouplingTensors, split: int,
                     act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The exact inverse of `coupling_forward` for one block: (..., D) -> (..., D)."""
    return routed_coupling_inverse(y, [block], None, split, act)


def routed_coupling_inverse(y: torch.Tensor, blocks: Sequence[CouplingTensors], owners: Routing | None, split: int,
                            act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The inverse of `coupling_forward` with each row's block (`owners` as in `routed_adapter`): a generative
    LM's head serves rows of several languages in one batch. (B, L, D) -> (B, L, D)."""
    y1, y2 = y[..., :split], y[..., split:]
    e2 = y2 - routed_adapter(y1, [b[1] for b in blocks], owners, act)
    e1 = y1 - routed_adapter(e2, [b[0] for b in blocks], owners, act)
    return torch.cat([e1, e2], dim=-1)
