"""Routing a batch through PEFT's LoRA layers: which named adapters each row runs through.

PEFT's `lora.Linear` computes  h = W₀x + Σ_{a ∈ active} (α_a / r_a) · B_a A_a x  (Hu et al., 2021; DoRA
and other variants replace the term of their adapter). hf_mtl keeps one named adapter per task (and
one per language) in every targeted layer and chooses the *active* ones around each backbone forward:

- a batch whose rows share one adapter stack (one task, one language): that stack is made active;
  PEFT sums the stacked adapters (language + task);
- a batch whose rows need different stacks: each row runs through its own stack (`row_batch`, in training as at
  inference) where every adapter of the batch is plain LoRA; otherwise (DoRA, other variants, `lora_bias`), at
  inference only, through PEFT's own mixed-batch code (`mixed_batch`).

The active adapters are state of PEFT's layers (`_active_adapter`, and `mixed_batch`'s temporary hooks),
shared by every thread that calls the model; PEFT has no per-call way that covers training, stacked
language adapters and DoRA. So `LoraMethod.route` holds a `CallLock` for the whole routed forward: threads
serving different tasks from one LoRA model run their forwards one at a time (each gets exactly its own
answer; per-row methods, whose routing is per call, run concurrently).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from .fast import FastLoraLinear, RowStacks


BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class CallLock:
    """A re-entrant lock around the routed forwards of one model; a copy (`copy.deepcopy`, pickling) gets a
    lock of its own instead of failing on the thread lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> CallLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._lock = threading.RLock()


def lora_layers(backbone: nn.Module) -> list[tuple[str, LoraLayer]]:
    """Every PEFT LoRA layer of `backbone`, with its module path."""
    return [(name, module) for name, module in backbone.named_modules() if isinstance(module, LoraLayer)]


def activate(layers: Sequence[LoraLayer], adapters: Sequence[str]) -> None:
    """Make `adapters` the active adapters of every layer ([] = the frozen base model alone).

    PEFT's own `set_adapter` also sets `requires_grad` (True for active, False for the others), which
    would drop the inactive tasks' adapters from an optimizer built afterwards and make parameter
    counts depend on the last batch. Trainability is hf_mtl's decision (see `LoraMethod`), so only the
    active list is set here. Inactive adapters take no part in the forward, so their `.grad` stays None
    and optimizers (AdamW's weight decay included) skip them.
    """
    for layer in layers:
        layer._active_adapter = list(adapters)


def adapter_parameters(layers: Sequence[LoraLayer], adapter: str) -> list[nn.Parameter]:
    """The parameters of one named adapter in every layer (A, B, DoRA magnitudes, embedding factors)."""
    params: dict[int, nn.Parameter] = {}  # by identity: DoRA can list its container twice in adapter_layer_names
    for layer in layers:
        for attr in layer.adapter_layer_names:
            container = getattr(layer, attr)
            if adapter not in container:
                continue
            item = container[adapter]
            for p in [item] if isinstance(item, nn.Parameter) else item.parameters():
                params.setdefault(id(p), p)
    return list(params.values())


def uses_dora(layers: Sequence[LoraLayer], adapters: set[str]) -> bool:
    return any(layer.use_dora.get(name, False) for layer in layers for name in adapters)


@contextlib.contextmanager
def mixed_batch(layers: Sequence[LoraLayer], stacks: list[tuple[str, ...]], rows: list[torch.Tensor]) -> Iterator[None]:
    """Run rows with different adapter stacks in one forward (inference).

    Args:
        layers: the LoRA layers.
        stacks: the distinct adapter stacks of the batch (() = base model only).
        rows: for each stack, the (n_s,) indices of its rows.

    Two paths, both PEFT's own layer code:

    - every row has at most one adapter and none uses DoRA: PEFT's mixed-batch path, `adapter_names=`
      (one name per row, `"__base__"` for rows without adapter), passed to each layer by a forward
      pre-hook as `PeftModel` does it;
    - otherwise (a language adapter stacked under a task adapter, or DoRA, which PEFT's path refuses):
      the pass runs with no active adapter, and a forward hook on each layer recomputes the layer on
      each group of rows with that group's stack active. The targeted layers' base products are
      computed twice; the rest of the backbone runs once for the whole batch.
    """
    single = all(len(stack) <= 1 for stack in stacks) and not uses_dora(layers, {a for s in stacks for a in s})
    hook = _adapter_names_hook(stacks, rows) if single else _grouped_hook(stacks, rows)
    activate(layers, [])
    handles = [
        layer.register_forward_pre_hook(hook, with_kwargs=True) if single else layer.register_forward_hook(hook)
        for layer in layers
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def row_batch_dropout(layers: Sequence[LoraLayer], stacks: list[tuple[str, ...]], training: bool) -> float | None:
    """The LoRA dropout under which `row_batch` computes exactly what PEFT would for each row, or None when it
    cannot: a layer that is not a FastLoraLinear, an adapter that is not plain LoRA, adapters with different
    dropouts, or dropout in training on a stack of several adapters (PEFT draws one mask per adapter)."""
    adapters = {a for stack in stacks for a in stack}
    rates = set()
    for layer in layers:
        rate = layer.row_batch_fits(adapters) if isinstance(layer, FastLoraLinear) else None
        if rate is None:
            return None
        rates.add(rate)
    if len(rates) > 1:
        return None
    rate = rates.pop() if rates else 0.0
    if rate and training and any(len(stack) > 1 for stack in stacks):
        return None
    return rate


@contextlib.contextmanager
def row_batch(layers: Sequence[LoraLayer], stacks: list[tuple[str, ...]], rows: list[torch.Tensor],
              dropout: float) -> Iterator[None]:
    """Run each row through its own adapter stack in one forward (`fast.FastLoraLinear._per_row_forward`).

    Args:
        layers: the LoRA layers (all FastLoraLinear: see `row_batch_dropout`).
        stacks: the distinct adapter stacks of the batch (() = base model only).
        rows: for each stack, the (n_s,) indices of its rows.
        dropout: the adapters' LoRA dropout (`row_batch_dropout`).
    """
    size = sum(int(r.numel()) for r in rows)
    index = torch.empty(size, dtype=torch.long, device=rows[0].device)
    for position, idx in enumerate(rows):
        index[idx] = position
    state = RowStacks(stacks, index, dropout)
    activate(layers, [])
    for layer in layers:
        layer._row_stacks = state
    try:
        yield
    finally:
        for layer in layers:
            layer._row_stacks = None


def _adapter_names_hook(stacks: list[tuple[str, ...]], rows: list[torch.Tensor]):
    size = sum(int(r.numel()) for r in rows)
    names = [BASE] * size
    for stack, idx in zip(stacks, rows):
        for i in idx.tolist():
            names[i] = stack[0] if stack else BASE

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "adapter_names": names}

    return hook


def _grouped_hook(stacks: list[tuple[str, ...]], rows: list[torch.Tensor]):
    def hook(module: LoraLayer, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]  # (B, L, in)
        result = output.clone()  # (B, L, out): the base layer's output for every row
        for stack, idx in zip(stacks, rows):
            if not stack:
                continue
            module._active_adapter = list(stack)
            try:
                result[idx] = module.forward(x[idx])  # `.forward`, not `__call__`: no hook recursion
            finally:
                module._active_adapter = []
        return result

    return hook
