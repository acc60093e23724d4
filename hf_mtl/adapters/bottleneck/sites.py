"""Where bottleneck adapters sit in a layer, reached through the architecture spec with forward hooks.

Every encoder of `hf_mtl.modeling.arch` is post-LN: a sub-block (attention or feed-forward) computes
its branch f from its input x, then the layer computes LN(f + x). An adapter *site* rewrites f:

    forward hook on `attention_output` / `ffn_output`:   f -> f'   (the layer then computes LN(f' + x))
    forward pre-hook on `query` / `ffn_input`:           captures x (only for sites that read it)

`query` and `ffn_input` are the first modules that read x (the layer input, and the attention
block's output), so their input is x for every family of the spec table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import TaskConfigError
from ...modeling.arch import ArchSpec, layers_of, resolve


POSITIONS = {
    # position: (branch output f, first reader of the residual input x, layer norm of LN(f + x))
    "attention": ("attention_output", "query", "attention_layer_norm"),
    "ffn": ("ffn_output", "ffn_input", "ffn_layer_norm"),
}


@dataclass
class Site:
    """One adapter place: layer `layer` (0-based), position `attention` or `ffn`."""

    layer: int
    position: str
    layer_norm: nn.Module  # the frozen LN of the layer that follows this sub-block

    @property
    def key(self) -> tuple[int, str]:
        return self.layer, self.position


SiteFn = Callable[[Site, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Inputs = Callable[[], "dict[Any, torch.Tensor] | None"]  # the current call's captured inputs (None outside a call)


def hook_sites(backbone: nn.Module, spec: ArchSpec, positions: tuple[str, ...], needs_residual: bool,
               apply: SiteFn, inputs: Inputs) -> tuple[list[Site], list[Any]]:
    """Register the hooks of every (layer, position) site.

    Args:
        backbone: the encoder.
        spec: its architecture spec.
        positions: `attention` and/or `ffn`.
        needs_residual: capture x for every site (Pfeiffer's LN(f + x), parallel adapters' input x).
        apply: `apply(site, f, x)` returns f' (x is None when not captured).
        inputs: the current call's store (`RoutedCall.inputs`), where the pre-hooks leave x until the site's
            forward hook takes it: per call, so concurrent forwards never take each other's x.

    Returns:
        The sites, and the hook handles.
    """
    sites, handles = [], []
    for index, layer in enumerate(layers_of(backbone, spec)):
        for position in positions:
            branch, reader, norm = (getattr(spec, name) for name in POSITIONS[position])
            site = Site(index, position, resolve(layer, norm))
            hook = SiteHook(site, apply, inputs)
            sites.append(site)
            if needs_residual:
                handles.append(resolve(layer, reader).register_forward_pre_hook(hook.capture))
            handles.append(resolve(layer, branch).register_forward_hook(hook.rewrite))
    return sites, handles


class SiteHook:
    """The hooks of one site. An object rather than a closure: `copy.deepcopy(model)` copies bound
    methods with their object, so a copied model's hooks call the copied adapter method."""

    def __init__(self, site: Site, apply: SiteFn, inputs: Inputs):
        self.site = site
        self.apply = apply
        self.inputs = inputs

    def capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        store = self.inputs()
        if store is not None:  # outside a routed call `apply` raises the not-routed error
            store[self.site.key] = args[0]  # x: (B, L, H)

    def rewrite(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        store = self.inputs()
        x = store.pop(self.site.key, None) if store is not None else None
        if isinstance(output, tuple):  # a module that also returns attention weights
            return (self.apply(self.site, output[0], x), *output[1:])
        return self.apply(self.site, output, x)


def not_routed_error(method: str) -> TaskConfigError:
    return TaskConfigError(
        f"adapter method {method!r}: the backbone ran outside MultiTaskModel.forward, so its adapters do not "
        f"know which task each row belongs to. Fix: call the MultiTaskModel (model(..., task=...)), not "
        f"model.backbone directly; with gradient_checkpointing (which re-runs layers during backward, after the "
        f"forward's routing ended) set gradient_checkpointing=false for this method."
    )
