"""A faster LoRA Linear: PEFT's `lora.Linear`, whose plain-LoRA forward runs as one product with W₀ + s·BA.

PEFT computes  y = W₀x + b + s·B(A x)  as four passes over (tokens × features) tensors besides the base
product: A x, B(·), the scaling and the sum, and autograd's backward adds as many (the LoRA term's input
gradient and its sum into the base's). With the update merged into the weight for the step,

    W = W₀ + Σ_a s_a B_a A_a      (out × in, r·in·out multiply-adds: nothing next to the tokens' product)
    y = W x + b,     ∂L/∂x = Wᵀ g            (the product the frozen layer runs anyway)
    ∂L/∂B_a = s_a g (A_a x)ᵀ,   ∂L/∂A_a = s_a (B_aᵀ g) xᵀ

the step's extra work over the frozen layer is A x (forward), g (A x)ᵀ, Bᵀg and (Bᵀg) xᵀ (backward):
thin products of rank r. Measured on the 2-core CPU (one 384 × 384 layer, 4,096 tokens, r = 8,
forward + backward, median of 40): frozen layer 14.8 ms, PEFT's LoRA 24.3 ms, this 20.2 ms. Ordering the
rank-r products of the backward so that the token dimension is never the contracted dimension of a transposed
operand (see `backward`) took a whole MiniLM step (r = 8 on query and value, batch 32 × 128, 2 threads, no
optimizer step, 14 paired rounds) from 1.067× to 1.009× the frozen floor.

The same numbers up to float rounding (the update is added to W₀ before the product, not after it).
Everything else (DoRA and other variants, LoRA dropout while training, `lora_bias`, merged or disabled
adapters, PEFT's mixed-batch `adapter_names`, autocast, a trainable base weight, hooks on the base
layer) takes PEFT's own forward unchanged. Weights, names and saved files are PEFT's: the class only
changes how a forward is computed, so a saved adapter loads into plain PEFT as before.

Rows of different tasks in one batch (`RowStacks`, set by `row_batch`): each row runs through its own adapter
stack, in training as at inference. The stacks' factors are gathered per row and applied as two batched products,

    y_b = W₀x_b + b + B_(b) A_(b) x_b,    A_(b) = A_s (R × in), B_(b) = [s_a B_a]_s (out × R) for row b's stack s

(a stack of several adapters, language + task, is one adapter of rank Σ r_a, its factors concatenated; stacks of
lower rank are padded with zeros, a row without adapter gets zero factors). That is a fixed number of kernels
whatever the number of tasks, where PEFT's mixed batch (`adapter_names`) runs one slice, two products and an
index-add per adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn


class _MergedLoraProduct(torch.autograd.Function):
    """y = x (W₀ + B A)ᵀ + b for a frozen W₀, b; gradients for x, A (R × in) and B (out × R)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
        merged = torch.addmm(weight, lora_b, lora_a)  # (out, in)
        flat = x.reshape(-1, x.shape[-1])
        projected = flat @ lora_a.t()  # (N, R): A x, for ∂L/∂B
        ctx.save_for_backward(flat, projected, lora_a, lora_b, merged)
        ctx.input_shape = x.shape
        return F.linear(x, merged, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        flat, projected, lora_a, lora_b, merged = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1])
        grad_x = (grad @ merged).view(ctx.input_shape) if ctx.needs_input_grad[0] else None
        # The rank-R products are ordered so the long dimension N is the rows of a row-major operand: on the
        # CPU `grad.t() @ projected` and `grad @ lora_b` cost 3.1 and 1.6 ms at N = 4,096, 384 features,
        # R = 8 (2 threads), the forms below 1.0 and 0.9 ms (same values).
        grad_b = (projected.t() @ grad).t() if ctx.needs_input_grad[4] else None  # (out, R)
        grad_a = F.linear(grad, lora_b.t().contiguous()).t() @ flat if ctx.needs_input_grad[3] else None  # (R, in)
        return grad_x, None, None, grad_a, grad_b


class RowStacks:
    """The adapter stack of every row of a batch: `stacks[index[b]]` is row b's stack (() = no adapter)."""

    def __init__(self, stacks: Sequence[tuple[str, ...]], index: torch.Tensor, dropout: float):
        self.stacks = list(stacks)
        self.index = index  # (B,) long, on the batch's device
        self.dropout = dropout  # the one LoRA dropout of every adapter in the batch (see `row_batch_fits`)
        self.factors: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}


class FastLoraLinear(PeftLoraLinear):
    """PEFT's `lora.Linear` (same constructor, parameters and state dict) with the merged-product forward
    for plain LoRA adapters and a per-row forward for mixed-task batches; see the module docstring for when PEFT's
    own forward runs instead."""

    _row_stacks: RowStacks | None = None  # set by `row_batch` for one forward

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._row_stacks is not None and not args and not kwargs:
            return self._per_row_forward(x, self._row_stacks)
        adapters = self._plain_active_adapters(x, args, kwargs)
        if adapters is None:
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        if not adapters:
            return base(x)
        lora_a, lora_b = self._stack_of(adapters)
        return _MergedLoraProduct.apply(x, base.weight, base.bias, lora_a, lora_b)

    def _stack_of(self, adapters: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked adapters (language + task) as one adapter of rank R = Σ r_a: A (R x in), scaled B (out x R)."""
        return (torch.cat([self.lora_A[a].weight for a in adapters]),
                torch.cat([self.lora_B[a].weight * self.scaling[a] for a in adapters], dim=1))

    def _per_row_forward(self, x: torch.Tensor, rows: RowStacks) -> torch.Tensor:
        """y_b = base(x_b) + B_(b) A_(b) x_b with row b's stack's factors (module docstring)."""
        out = self.get_base_layer()(x)
        if torch.is_grad_enabled():
            lora_a, lora_b = self._row_factors(rows)
        else:  # generation: one routing for every decoding step, so each layer gathers its rows' factors once
            if id(self) not in rows.factors:
                rows.factors[id(self)] = self._row_factors(rows)
            lora_a, lora_b = rows.factors[id(self)]
        if lora_a is None:
            return out
        size = x.shape[0]
        h = x.reshape(size, -1, x.shape[-1]).to(lora_a.dtype)  # (B, L, in)
        if rows.dropout and self.training:
            h = F.dropout(h, rows.dropout)
        low = torch.bmm(h, lora_a)  # (B, L, R)
        return out + torch.bmm(low, lora_b).view(out.shape).to(out.dtype)

    def _row_factors(self, rows: RowStacks) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Each row's A_(b)ᵀ (B x in x R) and B_(b)ᵀ (B x R x out), or (None, None) when no stack has an adapter here."""
        lora_a, lora_b = self._stack_factors(rows.stacks)  # (S, R, in), (S, out, R)
        if lora_a is None:
            return None, None
        return lora_a[rows.index].transpose(1, 2), lora_b[rows.index].transpose(1, 2)

    def _stack_factors(self, stacks: list[tuple[str, ...]]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Every stack's A (R_s x in) and scaled B (out x R_s), zero-padded to the largest R and stacked; (None,
        None) when no stack has an adapter in this layer."""
        factors = []
        for stack in stacks:
            names = [a for a in stack if a in self.lora_A]
            factors.append(self._stack_of(names) if names else (None, None))
        rank = max((a.shape[0] for a, _ in factors if a is not None), default=0)
        if not rank:
            return None, None
        weight = self.get_base_layer().weight
        like = next(a for a, _ in factors if a is not None)
        a_rows, b_rows = [], []
        for a, b in factors:
            if a is None:
                a, b = like.new_zeros(rank, weight.shape[1]), like.new_zeros(weight.shape[0], rank)
            elif a.shape[0] < rank:
                a, b = F.pad(a, (0, 0, 0, rank - a.shape[0])), F.pad(b, (0, rank - b.shape[1]))
            a_rows.append(a)
            b_rows.append(b)
        return torch.stack(a_rows), torch.stack(b_rows)

    def row_batch_fits(self, adapters: set[str]) -> float | None:
        """The LoRA dropout of `adapters` when the per-row forward computes exactly PEFT's sum for them here (plain
        LoRA on an nn.Linear, no variant, bias or merge, one dropout probability), else None."""
        base = self.get_base_layer()
        if (self.disable_adapters or self.merged or self.fan_in_fan_out or type(base) is not nn.Linear
                or base._forward_hooks or base._forward_pre_hooks):
            return None
        rates = set()
        for a in adapters & set(self.lora_A):
            if a in self.lora_variant or self.lora_bias.get(a, False):
                return None
            dropout = self.lora_dropout[a]
            rates.add(0.0 if isinstance(dropout, nn.Identity) else float(dropout.p))
        return rates.pop() if len(rates) == 1 else 0.0 if not rates else None

    def _plain_active_adapters(self, x: torch.Tensor, args: tuple, kwargs: dict) -> list[str] | None:
        """The active adapters when all of them are plain LoRA and the merged product applies, else None."""
        if args or kwargs or self.disable_adapters or self.merged or self.fan_in_fan_out:
            return None
        if torch.is_autocast_enabled(x.device.type):
            return None
        base = self.get_base_layer()
        if type(base) is not nn.Linear or base._forward_hooks or base._forward_pre_hooks:
            return None
        if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad) or x.dtype != base.weight.dtype:
            return None
        adapters = [a for a in self.active_adapters if a in self.lora_A]
        for a in adapters:
            dropout = self.lora_dropout[a]
            if (a in self.lora_variant or self.lora_bias.get(a, False) or self.lora_A[a].weight.dtype != x.dtype
                    or (dropout.training and not isinstance(dropout, nn.Identity))):
                return None
        return adapters
