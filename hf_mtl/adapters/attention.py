"""Reaching inside self-attention without copying `forward` code.

transformers 5 routes every attention computation through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`
and builds masks through `ALL_MASK_ATTENTION_FUNCTIONS`. We register one implementation, `hf_mtl`,
that runs the *modifiers* attached to the attention module (prefix key/values, task-conditioned
logit biases, ...) and then the backbone's original implementation (SDPA or eager). Masks are built
as eager's float additive masks so modifiers can extend or add to them.

A modifier is `fn(module, query, key, value, mask) -> (query, key, value, mask)` with shapes
query (B, h, Lq, d), key/value (B, h, Lk, d) and mask None or float (B, 1|h, Lq, Lk), 0 = attend,
a large negative number = masked.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ATTN_IMPLEMENTATION = "hf_mtl"
_MODIFIERS = "_hf_mtl_attention_modifiers"
_BASE = "_hf_mtl_base_attention"

Modifier = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], tuple]


def _eager(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any):
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, h, Lq, Lk)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.dropout(weights.softmax(dim=-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights  # (B, Lq, h, d)


def hf_mtl_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs: Any):
    """The registered attention function: modifiers, then the original implementation."""
    for modifier in getattr(module, _MODIFIERS, ()):
        query, key, value, attention_mask = modifier(module, query, key, value, attention_mask)
    base = getattr(module, _BASE, "sdpa")
    if base == "eager":
        return _eager(module, query, key, value, attention_mask, **kwargs)
    return ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    if ATTN_IMPLEMENTATION not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTN_IMPLEMENTATION, hf_mtl_attention)
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def add_attention_modifier(backbone: nn.Module, attention: nn.Module, modifier: Modifier) -> None:
    """Run `modifier` inside `attention` (a self-attention module of `backbone`) on every call."""
    _register()
    base = getattr(backbone.config, "_attn_implementation", None) or "sdpa"
    if base != ATTN_IMPLEMENTATION:
        backbone.set_attn_implementation(ATTN_IMPLEMENTATION)
    if not hasattr(attention, _BASE):
        object.__setattr__(attention, _BASE, base if base in ("sdpa", "eager") else "sdpa")
        object.__setattr__(attention, _MODIFIERS, [])
    getattr(attention, _MODIFIERS).append(modifier)


def full_mask(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """A float additive mask of shape (B, 1, Lq, Lk), zeros where `mask` is None."""
    if mask is None:
        return query.new_zeros(query.shape[0], 1, query.shape[2], key.shape[2])
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(~mask, torch.finfo(query.dtype).min)
    return mask.to(query.dtype)
