"""Shared plumbing of the methods that route per row (PALs, Hyperformer, CA-MTL).

A batch may hold rows of several tasks. Each method keeps its per-task values as separate
`nn.Parameter`s (so an optimizer step for task A, weight decay included, never moves task B: B's
parameters get no gradient at all), stacks the values of the tasks *present* in the batch at forward
time, `(T, ...)`, and picks each row's slice by gathering with `Routing.rows` — or, on the CPU where
the rows come grouped by task (`Routing.segments`), runs each task's range of rows with its own values.
One forward pass serves the whole mixed batch; there is no Python loop over rows.

This file also holds what the three methods share besides routing: option parsing with errors that
list the valid options, and strict loading of saved tensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TaskConfigError
from ..modeling.arch import ArchSpec, get_generative_spec, get_spec
from ..modeling.generative import ENCODER, backbone_layout
from .base import AdapterMethod
from .routing import RoutedCall, Routing


def task_key(task: str) -> str:
    """The key of a task in a `ModuleDict`/`ParameterDict`: torch forbids '.', which task names allow."""
    return task.replace(".", ":")


def task_of_key(key: str) -> str:
    """Inverse of `task_key` (':' never occurs in a task name)."""
    return key.replace(":", ".")


def row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x Wᵀ + b with one (W, b) per row.

    Args:
        x: (B, L, in) inputs.
        weight: (B, out, in) per-row weights, or (1, out, in) shared by all rows.
        bias: (B, out) / (1, out) biases, or None.

    Returns:
        (B, L, out). One batched matmul: rows of different tasks are never looped over.
    """
    if weight.shape[0] == 1:
        return F.linear(x, weight[0], None if bias is None else bias[0])
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def routed_linear(routing: Routing, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """y = x Wᵀ + b with each row's task's (W, b), for a mixed batch in one pass.

    Args:
        routing: the batch's routing.
        x: (B, L, in).
        weight: (T, out, in) the stacked weights of the batch's tasks; bias (T, out).

    Returns:
        (B, L, out): each task's range of rows on its own where the rows come grouped (CPU), else per-row weights.
    """
    if routing.segments is not None:
        return routing.segmented(row_linear, (x,), (weight, bias))
    return row_linear(x, routing.per_row(weight), routing.per_row(bias))


def stack_parameters(params: Mapping[str, nn.Parameter], names: list[str]) -> torch.Tensor:
    """(T, ...) stack of the parameters of `names` (a view for a single task: no copy)."""
    if len(names) == 1:
        return params[names[0]].unsqueeze(0)
    return torch.stack([params[n] for n in names])


# ---------------------------------------------------------------------------------------------- architectures
def stack_specs(backbone_config: Any) -> tuple[ArchSpec, ...]:
    """The stacks of layers a method adapts: an encoder's one stack (`ARCH_SPECS`), or a generative LM's stacks
    (`GENERATIVE_SPECS`: a decoder-only LM's decoder; an encoder-decoder's encoder, then its decoder). A family
    without a spec gets the error of the kind of spec it lacks."""
    if backbone_layout(backbone_config) == ENCODER:
        return (get_spec(backbone_config),)
    return get_generative_spec(backbone_config).stacks


def mask_or_causal(mask: torch.Tensor | None, query_length: int, key_length: int, causal: bool,
                   device: torch.device) -> torch.Tensor | None:
    """The mask a self-attention received, cut to its `key_length` keys, or the causal mask it stands for.

    Decoders attend causally; transformers passes them no mask when nothing is padded (SDPA's `is_causal`
    shortcut, a property of the attention module that another attention computed beside it does not get).

    Args:
        mask: None, bool (B|1, 1, Lq, ≥Lk) with True = attend, or float additive.
        query_length, key_length: Lq, Lk; the queries are the last Lq of the Lk positions (a KV cache holds
            the earlier ones).
        causal: the stack is a decoder.

    Returns:
        `mask[..., :Lk]`; for a causal stack without a mask, bool (Lq, Lk) with query i seeing keys up to
        Lk - Lq + i (None for one query, which sees every key); else None.
    """
    if mask is not None:
        return mask[..., :key_length]
    if not causal or query_length == 1:
        return None
    return torch.ones(query_length, key_length, dtype=torch.bool, device=device).tril(key_length - query_length)


# ---------------------------------------------------------------------------------------------- options
def parse_options(config_cls: type, method: str, options: Mapping[str, Any] | None, **resolved: Any) -> Any:
    """Build a config dataclass from the user's `adapter_config`, rejecting unknown options.

    Args:
        config_cls: the method's config dataclass.
        method: the method's name, for error messages.
        options: the `adapter_config` mapping (may be None).
        resolved: values computed from the backbone for options left unset (None).

    Returns:
        An instance of `config_cls`.
    """
    options = dict(options or {})
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TaskConfigError(
            f"adapter_config of method {method!r}: unknown option(s) {unknown}. Fix: use only {valid}."
        )
    for key, value in resolved.items():
        if options.get(key) is None:
            options[key] = value
    return config_cls(**options)


def check_int(method: str, field: str, value: Any, minimum: int = 1) -> int:
    """`value` as an int >= minimum, or an error naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskConfigError(
            f"adapter_config of method {method!r}: `{field}` must be an integer >= {minimum}, got {value!r}."
        )
    return value


def check_choice(method: str, field: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise TaskConfigError(f"adapter_config of method {method!r}: `{field}` must be one of {choices}, got {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------- base class
class PerRowMethod(AdapterMethod):
    """An adapter method whose inserted modules read each row's task from the current call (`current_call()`).

    Subclasses list their tasks in `known_tasks()`, insert forward hooks in `attach()` through
    `add_hook`, and may precompute per-forward values (stacked task parameters, generated weights)
    in `prepare(call)`, kept in `call.values`; `route()` scopes the call to one backbone forward.
    Outside `route()` (the backbone called directly) the hooks leave the backbone unchanged.
    """

    routes_per_row = True

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        super().__init__(backbone_config, config)
        self._handles: list[Any] = []

    def known_tasks(self) -> Iterable[str]:
        """The tasks this method has parameters for."""
        return []

    @contextlib.contextmanager
    def route(self, routing: Routing) -> Iterator[None]:
        routing.check_known(self.known_tasks(), self.name)
        with RoutedCall(routing).scope(self) as call:
            self.prepare(call)
            yield

    def prepare(self, call: RoutedCall) -> None:
        """Compute per-forward values for the batch's tasks into `call.values` (default: nothing)."""

    def add_hook(self, module: nn.Module, hook: Any, *, pre: bool = False, with_kwargs: bool = False) -> None:
        """Register a forward hook (or a forward pre-hook with kwargs) on a backbone module; `with_kwargs`: a
        forward hook that also gets the call's args and kwargs, `hook(module, args, kwargs, output)`."""
        if pre:
            handle = module.register_forward_pre_hook(hook, with_kwargs=True)
        else:
            handle = module.register_forward_hook(hook, with_kwargs=with_kwargs)
        self._handles.append(handle)


def count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
