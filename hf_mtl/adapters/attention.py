"""Reaching inside self-attention without copying `forward` code.

transformers 5 routes every attention computation through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`
and builds masks through `ALL_MASK_ATTENTION_FUNCTIONS`. We register one implementation, `hf_mtl`,
that runs the *modifiers* attached to the attention module (prefix key/values, task-conditioned
logit biases, ...) and then the backbone's original implementation (SDPA or eager). Masks are built
as SDPA's (None without padding, else bool with True = attend); a modifier that needs an additive
mask makes one with `full_mask`.

On the CPU in training, attention dropout takes the fast mask of `hf_mtl.modeling.fast_dropout` when
the model asked for it (`route_attention(..., fast_dropout=True)`): SDPA has no CPU kernel with
dropout, so this replaces PyTorch's composite math path with the same computation and a cheaper mask.

A modifier is `fn(module, query, key, value, mask) -> (query, key, value, mask)` with shapes
query (B, h, Lq, d), key/value (B, h, Lk, d) and mask None, bool (B, 1|h, Lq, Lk) (True = attend)
or float additive (0 = attend, a large negative number = masked).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..modeling.fast_dropout import dropped

ATTN_IMPLEMENTATION = "hf_mtl"
_MODIFIERS = "_hf_mtl_attention_modifiers"
_BASE = "_hf_mtl_base_attention"
_ORIGINAL = "_hf_mtl_original_attention"  # on the backbone: its implementation before ours
_FAST_DROPOUT = "_hf_mtl_fast_dropout"

Modifier = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], tuple]


def _eager(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
           fast_dropout: bool = False, **kwargs: Any):
    """softmax(QKᵀ·scaling + M) V with dropout on the probabilities; returns (B, Lq, h, d) and the
    probabilities (None where the fast dropout ran: like SDPA, it keeps no dropped copy of them)."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query * scaling, key.transpose(2, 3))  # (B, h, Lq, Lk)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = weights.softmax(dim=-1)
    fast = dropped(weights, dropout) if fast_dropout else None  # the caller checked: training, dropout > 0
    if fast is not None:
        zeroed, scale = fast
        return (torch.matmul(zeroed, value) * scale).transpose(1, 2).contiguous(), None
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def hf_mtl_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs: Any):
    """The registered attention function: modifiers, then the original implementation (or, on the
    CPU in training with dropout, the same computation with the fast dropout mask)."""
    for modifier in getattr(module, _MODIFIERS, ()):
        query, key, value, attention_mask = modifier(module, query, key, value, attention_mask)
    base = getattr(module, _BASE, "sdpa")
    fast = getattr(module, _FAST_DROPOUT, False) and query.device.type == "cpu" and kwargs.get("dropout", 0.0) > 0
    if base == "eager" or fast:
        return _eager(module, query, key, value, attention_mask, fast_dropout=fast, **kwargs)
    return ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    if ATTN_IMPLEMENTATION not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTN_IMPLEMENTATION, hf_mtl_attention)
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def original_attention(backbone: nn.Module) -> str:
    """The backbone's attention implementation before hf_mtl routed it ("sdpa" when unset)."""
    return getattr(backbone, _ORIGINAL, None) or getattr(backbone.config, "_attn_implementation", None) or "sdpa"


def route_attention(backbone: nn.Module, attention: nn.Module, *, fast_dropout: bool = False) -> bool:
    """Send `attention` (a self-attention module of `backbone`) through hf_mtl's attention function.

    Returns:
        False, changing nothing, when the backbone runs an implementation other than SDPA or eager
        (flash, flex: they take neither modifiers nor our dropout) and `fast_dropout` is all that was asked.
    """
    base = original_attention(backbone)
    if base not in ("sdpa", "eager", ATTN_IMPLEMENTATION):
        if fast_dropout:
            return False
        base = "sdpa"
    _register()
    if not hasattr(backbone, _ORIGINAL):
        object.__setattr__(backbone, _ORIGINAL, base)
    if backbone.config._attn_implementation != ATTN_IMPLEMENTATION:
        backbone.set_attn_implementation(ATTN_IMPLEMENTATION)
    if not hasattr(attention, _BASE):
        object.__setattr__(attention, _BASE, base if base in ("sdpa", "eager") else "sdpa")
        object.__setattr__(attention, _MODIFIERS, [])
    if fast_dropout:
        object.__setattr__(attention, _FAST_DROPOUT, True)
    return True


def add_attention_modifier(backbone: nn.Module, attention: nn.Module, modifier: Modifier) -> None:
    """Run `modifier` inside `attention` (a self-attention module of `backbone`) on every call."""
    route_attention(backbone, attention)
    getattr(attention, _MODIFIERS).append(modifier)


def full_mask(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """A float additive mask of shape (B, 1, Lq, Lk), zeros where `mask` is None."""
    if mask is None:
        return query.new_zeros(query.shape[0], 1, query.shape[2], key.shape[2])
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(~mask, torch.finfo(query.dtype).min)
    return mask.to(query.dtype)
