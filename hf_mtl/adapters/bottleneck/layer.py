"""One bottleneck adapter, and the routed computation that runs many of them in one batch.

Shapes: B = batch, L = sequence length, D = the adapter's input/output size (usually H), r = bottleneck.

Every owner of an adapter (a task, or a language for MAD-X) keeps its own `nn.Parameter`s, so an
optimizer step for one task never touches another task's tensors: AdamW's weight decay and moments
skip parameters whose `.grad` is None. A batch whose rows belong to several owners stacks only those
owners' weights, for this forward, and gathers one weight matrix per row for a batched matmul:

    single owner:  z = f(h W_down + b_down)               h: (B, L, D), W_down: (D, r)
                   out = z W_up + b_up                     W_up: (r, D)
    mixed rows:    W_down[rows]: (B, D, r), W_up[rows]: (B, r, D), out = bmm(f(bmm(h, W_down) + b), W_up) + b

Two ways run a mixed batch, chosen per call by what they move (measured: forward + backward of one adapter,
B=32, H=384, 4 tasks interleaved row by row, 2 CPU threads, median ms):

    per-row weights (above): gathers B copies of W_down and W_up: cost grows with r;
    grouped rows: each owner's rows through plain matmuls, then back in batch order: gathers the
        activations (B, L, D) instead: cost grows with L.

    L=128:  r=24  single 8.9, per-row 11.6, grouped 21.0    r=96   single 16.7, per-row 29.8, grouped 23.7
            r=192 single 28.5, per-row 56.0, grouped 39.6   L=32, r=192: single 8.3, per-row 29.4, grouped 11.5

So grouping wins once 2r >= L, on the CPU. When the owners' rows already sit in one range each
(`Routing.segments`: `MultiTaskModel` orders a mixed batch's rows by task around the backbone on the
CPU, see `AdapterMethod.groups_rows`), each owner's range runs as a view (a split, whose backward is one
concatenation) and only the outputs are concatenated: neither weights nor activations are gathered.
On a GPU, where a small model's step is bound by kernel launches, the per-row path (a fixed number of
kernels whatever the number of owners) is kept.
(An earlier measurement at r=24: a block-masked concatenation of all owners cost 1.6x the single-owner cost.)

The scaling s multiplies W_up and b_up (r x D values), not the output (B x L x D values): s(zW + b) = z(sW) + sb.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..routing import Routing, segment_sizes


@dataclass
class AdapterTensors:
    """The tensors of one adapter for one forward (the parameters, or detached views of them)."""

    down: torch.Tensor  # (D_in, r)
    down_bias: torch.Tensor  # (r,)
    up: torch.Tensor  # (r, D_out)
    up_bias: torch.Tensor  # (D_out,)
    ln_before: tuple[torch.Tensor, torch.Tensor] | None = None  # (D_in,), (D_in,)
    ln_after: tuple[torch.Tensor, torch.Tensor] | None = None  # (D_out,), (D_out,)

    @classmethod
    def zeros_like(cls, other: AdapterTensors) -> AdapterTensors:
        """An adapter that adds exactly nothing (f(0) = 0 for every supported non-linearity)."""
        return cls(*(torch.zeros_like(t) for t in (other.down, other.down_bias, other.up, other.up_bias)))


class BottleneckAdapter(nn.Module):
    """A bottleneck adapter: h -> f(h W_down + b_down) W_up + b_up (Houlsby et al. 2019).

    Args:
        in_dim: D_in, the size of the adapter's input.
        rank: r, the bottleneck size.
        out_dim: D_out (default: D_in).
        init: `identity` (W_down Kaiming-uniform as `nn.Linear`, W_up = 0, biases 0: the adapter adds
            nothing until trained), `bert` (W_down, W_up ~ N(0, 0.02)) or `houlsby` (truncated N(0, 1e-2)).
        ln_before: a LayerNorm on the input (D_in).
        ln_after: a LayerNorm on the output (D_out), before the caller's residual add.
    """

    def __init__(self, in_dim: int, rank: int, out_dim: int | None = None, init: str = "identity",
                 ln_before: bool = False, ln_after: bool = False):
        super().__init__()
        out_dim = out_dim or in_dim
        self.down = nn.Parameter(torch.empty(in_dim, rank))  # names match the saved keys
        self.down_bias = nn.Parameter(torch.zeros(rank))
        self.up = nn.Parameter(torch.empty(rank, out_dim))
        self.up_bias = nn.Parameter(torch.zeros(out_dim))
        self.ln_before = nn.LayerNorm(in_dim) if ln_before else None
        self.ln_after = nn.LayerNorm(out_dim) if ln_after else None
        self.reset_parameters(init)

    def reset_parameters(self, init: str) -> None:
        with torch.no_grad():
            if init == "identity":  # nn.Linear's default for the down-projection, zeros for the up-projection
                bound = 1.0 / math.sqrt(self.down.shape[0])
                self.down.uniform_(-bound, bound)
                self.up.zero_()
            elif init == "bert":
                self.down.normal_(0.0, 0.02)
                self.up.normal_(0.0, 0.02)
            else:  # houlsby
                nn.init.trunc_normal_(self.down, std=1e-2, a=-2e-2, b=2e-2)
                nn.init.trunc_normal_(self.up, std=1e-2, a=-2e-2, b=2e-2)
            self.down_bias.zero_()
            self.up_bias.zero_()

    def tensors(self, detach: bool = False) -> AdapterTensors:
        """The weights for one forward; `detach=True` uses them frozen (no gradient reaches them)."""
        def get(t: torch.Tensor) -> torch.Tensor:
            return t.detach() if detach else t

        def norm(ln: nn.LayerNorm | None) -> tuple[torch.Tensor, torch.Tensor] | None:
            return (get(ln.weight), get(ln.bias)) if ln is not None else None

        return AdapterTensors(get(self.down), get(self.down_bias), get(self.up), get(self.up_bias),
                              norm(self.ln_before), norm(self.ln_after))

    @staticmethod
    def parameter_count(in_dim: int, rank: int, out_dim: int | None = None, ln_before: bool = False,
                        ln_after: bool = False) -> int:
        """D_in r + r + r D_out + D_out, plus 2 D for each LayerNorm."""
        out_dim = out_dim or in_dim
        return in_dim * rank + rank + rank * out_dim + out_dim + 2 * in_dim * ln_before + 2 * out_dim * ln_after


def routed_adapter(h: torch.Tensor, adapters: Sequence[AdapterTensors], owners: Routing | None,
                   act: Callable[[torch.Tensor], torch.Tensor], scaling: float = 1.0) -> torch.Tensor:
    """The output of each row's adapter: ln_after(s · f(ln_before(h) W_down + b_down) W_up + b_up).

    Args:
        h: (B, L, D_in) the adapters' input.
        adapters: the adapters present in the batch, in the order of `owners.owners`.
        owners: which of `adapters` serves each row; None when `adapters` has one entry.
        act: the non-linearity f.
        scaling: s.

    Returns:
        (B, L, D_out), without the residual (the caller adds it).
    """
    if len(adapters) == 1:
        return _single(h, adapters[0], act, scaling)
    if owners.segments is not None:  # rows grouped by owner (CPU): plain matmuls on views, no gathers
        parts = h.split(segment_sizes(owners.segments))
        return torch.cat([_single(part, a, act, scaling) for a, part in zip(adapters, parts)])
    rank = adapters[0].down.shape[1]
    if h.device.type == "cpu" and 2 * rank >= h.shape[1]:  # see the module docstring
        groups, inverse = owners.groups()
        parts = [_single(h.index_select(0, rows), a, act, scaling) for a, rows in zip(adapters, groups)]
        return torch.cat(parts).index_select(0, inverse)
    return _per_row(h, adapters, owners.rows, act, scaling)


def _single(h: torch.Tensor, a: AdapterTensors, act: Callable, scaling: float) -> torch.Tensor:
    if a.ln_before is not None:
        h = F.layer_norm(h, h.shape[-1:], *a.ln_before)
    z = act(F.linear(h, a.down.t(), a.down_bias))  # (B, L, r); addmm on the stored (D, r) matrix
    up, up_bias = (a.up, a.up_bias) if scaling == 1.0 else (a.up * scaling, a.up_bias * scaling)
    out = F.linear(z, up.t(), up_bias)  # (B, L, D_out)
    if a.ln_after is not None:
        out = F.layer_norm(out, out.shape[-1:], *a.ln_after)
    return out


def _per_row(h: torch.Tensor, adapters: Sequence[AdapterTensors], rows: torch.Tensor, act: Callable,
             scaling: float) -> torch.Tensor:
    def gather(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(tensors).index_select(0, rows)  # (n_owners, ...) -> (B, ...); backward: index_add

    if adapters[0].ln_before is not None:
        h = _row_layer_norm(h, gather([a.ln_before[0] for a in adapters]), gather([a.ln_before[1] for a in adapters]))
    down_bias = gather([a.down_bias for a in adapters]).unsqueeze(1)  # (B, 1, r)
    z = act(torch.baddbmm(down_bias, h, gather([a.down for a in adapters])))  # (B, L, r)
    ups = [(a.up, a.up_bias) if scaling == 1.0 else (a.up * scaling, a.up_bias * scaling) for a in adapters]
    up, up_bias = gather([u for u, _ in ups]), gather([b for _, b in ups]).unsqueeze(1)
    out = torch.baddbmm(up_bias, z, up)  # (B, L, D_out)
    if adapters[0].ln_after is not None:
        out = _row_layer_norm(out, gather([a.ln_after[0] for a in adapters]), gather([a.ln_after[1] for a in adapters]))
    return out


def _row_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm with a (B, D) weight and bias: one affine transform per row."""
    return F.layer_norm(x, x.shape[-1:]) * weight.unsqueeze(1) + bias.unsqueeze(1)
