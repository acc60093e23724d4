"""Reaching inside self-attention without copying `forward` code.

transformers 5 routes every attention computation through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`
and builds masks through `ALL_MASK_ATTENTION_FUNCTIONS`. We register one implementation, `hf_mtl`,
that runs the *modifiers* attached to the attention module (prefix key/values, task-conditioned
logit biases, ...) and then the backbone's original implementation (SDPA or eager). Masks are built
as SDPA's (None without padding, else bool with True = attend); a modifier that needs an additive
mask makes one with `full_mask`.

On the CPU in training, attention dropout takes the fast mask of `hf_mtl.ops.fast_dropout` when
the model asked for it (`route_attention(..., fast_dropout=True)`): SDPA has no CPU kernel with
dropout, so this replaces PyTorch's composite math path with the same computation and a cheaper mask,
in one autograd function (`_DroppedAttention`) that makes fewer passes over the (B, h, Lq, Lk) maps.

A modifier is `fn(module, query, key, value, mask) -> (query, key, value, mask)` with shapes
query (B, h, Lq, d), key/value (B, h, Lk, d) and mask None, bool (B, 1|h, Lq, Lk) (True = attend)
or float additive (0 = attend, a large negative number = masked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .fast_dropout import _LEVELS, drop_mask, fast_threshold


ATTN_IMPLEMENTATION = "hf_mtl"
_MODIFIERS = "_hf_mtl_attention_modifiers"
_BASE = "_hf_mtl_base_attention"
_ORIGINAL = "_hf_mtl_original_attention"  # on the backbone: its implementation before ours
_FAST_DROPOUT = "_hf_mtl_fast_dropout"

Modifier = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], tuple]


class _DroppedAttention(torch.autograd.Function):
    """softmax(QKᵀ·scaling + M) V with the fast dropout mask on the probabilities, forward and backward.

    The same values as the composite path in `_eager` (masked_fill, softmax, masked_fill of the dropped
    probabilities, matmul; autograd through each), with fewer passes over the (B, h, Lq, Lk) maps and fewer
    of them allocated: the mask and the softmax work in place on the scores, the dropped probabilities are
    one `where`, and the backward folds the dropout into the softmax gradient. With P the probabilities,
    keep the dropout's keep mask, P̃ = P ⊙ keep, s = 1/(1 − p') and G = s·dO Vᵀ:

        dS = P ⊙ (dP − Σ_k dP ⊙ P)  with dP = G ⊙ keep   =   P̃ ⊙ G − P · Σ_k (P̃ ⊙ G)

    (P ⊙ keep ⊙ G = P̃ ⊙ G), computed in place in G; dQ = dS K·scaling, dK = dSᵀ Q·scaling, dV = P̃ᵀ s·dO.
    Masked positions have P = 0, so dS is 0 there as masked_fill's backward makes it; a row with every key
    masked (uniform P) gets its dS zeroed explicitly. A float mask is added to the scores; one that requires
    grad (CA-MTL's conditional bias) gets dS summed to its shape, as the addition's backward gives it.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                scaling: float, levels: int) -> torch.Tensor:
        scores = torch.matmul(query * scaling, key.transpose(2, 3))  # (B, h, Lq, Lk), ours to overwrite
        all_masked = None
        if mask is not None and mask.dtype == torch.bool:
            scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
            if not bool(mask.any(dim=-1).all()):
                all_masked = mask
        elif mask is not None:
            scores.add_(mask)
        probs = torch.softmax(scores, dim=-1, out=scores)
        kept = torch.where(drop_mask(probs.shape, levels, probs.device), 0.0, probs)
        ctx.scale, ctx.scaling, ctx.all_masked = _LEVELS / (_LEVELS - levels), scaling, all_masked
        ctx.mask_shape = mask.shape if mask is not None else None
        ctx.save_for_backward(query, key, value, probs, kept)
        return torch.matmul(kept, value).mul_(ctx.scale)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        query, key, value, probs, kept = ctx.saved_tensors
        grad = grad * ctx.scale
        dscores = torch.matmul(grad, value.transpose(2, 3)).mul_(kept)  # P̃ ⊙ G
        dscores.addcmul_(probs, dscores.sum(dim=-1, keepdim=True), value=-1)
        if ctx.all_masked is not None:
            dscores.masked_fill_(~ctx.all_masked, 0.0)
        grad_query = torch.matmul(dscores, key).mul_(ctx.scaling) if ctx.needs_input_grad[0] else None
        grad_key = torch.matmul(dscores.transpose(2, 3), query).mul_(ctx.scaling) if ctx.needs_input_grad[1] else None
        grad_value = torch.matmul(kept.transpose(2, 3), grad) if ctx.needs_input_grad[2] else None
        grad_mask = dscores.sum_to_size(ctx.mask_shape) if ctx.needs_input_grad[3] else None
        return grad_query, grad_key, grad_value, grad_mask, None, None


def _eager(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
           fast_dropout: bool = False, position_bias: torch.Tensor | None = None, **kwargs: Any):
    """softmax(QKᵀ·scaling + M) V with dropout on the probabilities; returns (B, Lq, h, d) and the
    probabilities (None where the fast dropout ran: like SDPA, it keeps no dropped copy of them). The caller
    checked that `fast_dropout` means training with dropout > 0; a p the fast mask cannot represent, or
    another device, takes torch's dropout. T5's relative `position_bias` (B|1, h, Lq, Lk) is part of the
    logits, as in transformers' own eager T5 attention."""
    if position_bias is not None:
        attention_mask = position_bias + full_mask(attention_mask, query, key)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    levels = fast_threshold(dropout) if fast_dropout and query.device.type == "cpu" else None
    if levels is not None:
        out = _DroppedAttention.apply(query, key, value, attention_mask, scaling, levels)
        return out.transpose(1, 2).contiguous(), None
    weights = torch.matmul(query * scaling, key.transpose(2, 3))  # (B, h, Lq, Lk)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = weights.softmax(dim=-1)
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
