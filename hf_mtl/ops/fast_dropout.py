"""Dropout whose masks cost a quarter of torch's on the CPU, for the backbone's dropout in training.

On the CPU, `torch.nn.functional.dropout` draws one Bernoulli number per element (`bernoulli_`, then a
division and a product, and it keeps a float mask for the backward): about 13 ns an element on the
2-core benchmark machine. A frozen encoder's train step drops ~58M elements (MiniLM, 32 x 128: the
attention probabilities of 6 layers are 38M of them), so dropout alone is a fifth of the step. And
because SDPA has no CPU kernel with dropout, a train-mode attention falls back to PyTorch's
composite "math" path anyway.

Here a drop mask takes 16 random bits an element, four from each 64-bit word of the default CPU
generator (`random_`), compared with a threshold, and the mask is kept as bool (`masked_fill`'s
backward needs only that): about 3.3 ns an element. Semantics:

    y = x ⊙ keep / (1 − p'),   keep ~ Bernoulli(1 − p') i.i.d.,   p' = round(p · 2¹⁶) / 2¹⁶

so E[y] = x exactly and the drop rate differs from p by at most 2⁻¹⁷ (7.6e-6; p' = p for every
multiple of 2⁻¹⁶). Where that rounding moves p by more than 1% of p (p < 7.6e-4) or p ≥ 1, torch's
dropout runs instead. The random numbers come from torch's default generator, so `torch.manual_seed`
fixes the masks and the Trainer's saved RNG states resume them exactly; the stream differs from
torch's own dropout, so a seeded run is not bitwise the same as with `fast_dropout=False`.

The attention probabilities are dropped inside hf_mtl's attention function (`hf_mtl.ops.attention`),
which computes softmax(QKᵀ/√d + M) on the CPU as SDPA's math path does and applies the scale
1/(1 − p') to the (B, h, L, d) output instead of the (B, h, L, L) probabilities. On GPUs nothing
changes: torch's fused dropout and SDPA's kernels run as before.
"""

from __future__ import annotations

import math

import torch
from torch import nn


_BITS = 16
_LEVELS = 1 << _BITS


def fast_threshold(p: float) -> int | None:
    """round(p · 2¹⁶), or None where the fast mask would not be faithful to p (then use torch's)."""
    if not 0.0 < p < 1.0:
        return None
    levels = round(p * _LEVELS)
    if levels == 0 or levels >= _LEVELS or abs(levels / _LEVELS - p) > 0.01 * p:
        return None
    return levels


def drop_mask(shape: torch.Size | tuple[int, ...], levels: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of `shape`, True (drop) with probability levels / 2¹⁶, i.i.d.

    Draws ceil(n / 4) 64-bit words from the default generator and reads each as four 16-bit numbers.
    """
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    return (words.view(torch.int16)[:numel] < levels - _LEVELS // 2).view(shape)


def dropped(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float] | None:
    """x with the dropped elements zeroed and the scale 1/(1 − p') still to apply, or None when the
    fast path does not apply (not on the CPU, or p not representable; see `fast_threshold`)."""
    levels = fast_threshold(p)
    if levels is None or x.device.type != "cpu":
        return None
    return x.masked_fill(drop_mask(x.shape, levels, x.device), 0.0), _LEVELS / (_LEVELS - levels)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`torch.nn.functional.dropout(x, p, training)` with the fast CPU mask (see the module docstring)."""
    if not training or p == 0.0:
        return x
    result = dropped(x, p)
    if result is None:
        return nn.functional.dropout(x, p, training)
    zeroed, scale = result
    return zeroed * scale


class FastDropout(nn.Dropout):
    """`nn.Dropout` with the fast CPU mask in training; identical to `nn.Dropout` in eval and on GPUs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return fast_dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> int:
    """Replace every plain `nn.Dropout` under `module` by a `FastDropout` of the same p, in place.

    Returns:
        how many were replaced. Run it before hooks are registered on the dropout modules (adapters
        hook the attention's output dropout): hooks stay with the module they were registered on.
    """
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p, child.inplace)
                fast.train(child.training)
                setattr(parent, name, fast)
                replaced += 1
    return replaced
