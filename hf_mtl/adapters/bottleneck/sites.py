"""Where bottleneck adapters sit in a layer, reached through the architecture spec with forward hooks.

A sub-block (attention or feed-forward) computes its branch f from its input x. An adapter *site*
rewrites f with a forward hook on the module whose output is the branch (`attention_output`,
`ffn_output`; the first element when that module returns a tuple, as Llama's and GPT-2's attention do):

    post-LN stacks (BERT, DistilBERT, BART):  the layer then computes LN(f' + x)
    pre-LN stacks (Llama, GPT-2, T5):         the layer then computes x + f'   (x + f(LN(x)) before)

and, for sites that read x, a forward pre-hook on `residual_reader(spec, position)` (the first module of
the layer that reads x: post-LN, the sub-block's first projection; pre-LN, its layer norm) captures x.

A pre-LN layer has no norm after the residual add, so the Pfeiffer adapter's LN(f + x) becomes f + x there:
`Site.layer_norm` is None. That is AdapterHub's computation for pre-LN models, whose layers call the adapter
layer with `layer_norm=None` (`original_ln_before` then adds the residual without a norm).

A model has one stack of layers (an encoder, a decoder-only LM) or two (an encoder-decoder: encoder, then
decoder); sites are numbered over every stack's layers in that order (`stack_specs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import TaskConfigError
from ...modeling.arch import ArchSpec, config_value, get_generative_spec, get_spec, layers_of, residual_reader, resolve
from ...modeling.generative import ENCODER, backbone_layout


# position -> the spec field of its branch output f (a decoder's cross-attention gets no adapter: see BottleneckMethod)
BRANCHES = {"attention": "attention_output", "ffn": "ffn_output"}


def stack_specs(config: Any) -> tuple[ArchSpec, ...]:
    """Every stack of the backbone's layers: an encoder's one, a decoder-only LM's one, or an encoder-decoder's
    encoder then decoder (the root of a generative spec is the model with its LM head, as `MultiTaskModel` builds it)."""
    if backbone_layout(config) == ENCODER:
        return (get_spec(config),)
    return get_generative_spec(config).stacks


def total_layers(config: Any, specs: tuple[ArchSpec, ...]) -> int:
    """The layers of every stack (T5: `num_layers` + `num_decoder_layers`)."""
    return sum(config_value(config, spec, "num_layers") for spec in specs)


@dataclass
class Site:
    """One adapter place: layer `layer` (0-based, over every stack), position `attention` or `ffn`."""

    layer: int
    position: str
    layer_norm: nn.Module | None  # post-LN: the frozen LN of LN(f + x) that follows the sub-block; pre-LN: None

    @property
    def key(self) -> tuple[int, str]:
        return self.layer, self.position

    def norm(self, h: torch.Tensor) -> torch.Tensor:
        """The layer's own LN after the residual add (post-LN), or nothing (pre-LN, which has none there)."""
        return h if self.layer_norm is None else self.layer_norm(h)


SiteFn = Callable[[Site, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Inputs = Callable[[], "dict[Any, torch.Tensor] | None"]  # the current call's captured inputs (None outside a call)


def hook_sites(backbone: nn.Module, specs: tuple[ArchSpec, ...], positions: tuple[str, ...], needs_residual: bool,
               apply: SiteFn, inputs: Inputs) -> tuple[list[Site], list[Any]]:
    """Register the hooks of every (layer, position) site of every stack.

    Args:
        backbone: the encoder, or the LM with its head.
        specs: its stacks' specs (`stack_specs`), encoder first.
        positions: `attention` (self-attention) and/or `ffn`.
        needs_residual: capture x for every site (Pfeiffer's LN(f + x), parallel adapters' input x).
        apply: `apply(site, f, x)` returns f' (x is None when not captured).
        inputs: the current call's store (`RoutedCall.inputs`), where the pre-hooks leave x until the site's
            forward hook takes it: per call, so concurrent forwards never take each other's x.

    Returns:
        The sites, and the hook handles.
    """
    sites, handles = [], []
    index = 0
    for spec in specs:
        for layer in layers_of(backbone, spec):
            for position in positions:
                branch = getattr(spec, BRANCHES[position])
                norm = resolve(layer, getattr(spec, f"{position}_layer_norm")) if spec.post_layer_norm else None
                site = Site(index, position, norm)
                hook = SiteHook(site, apply, inputs)
                sites.append(site)
                if needs_residual:
                    handles.append(resolve(layer, residual_reader(spec, position)).register_forward_pre_hook(hook.capture))
                handles.append(resolve(layer, branch).register_forward_hook(hook.rewrite))
            index += 1
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
        if isinstance(output, tuple):  # attention modules also return weights (and T5's its position bias)
            return (self.apply(self.site, output[0], x), *output[1:])
        return self.apply(self.site, output, x)


def not_routed_error(method: str) -> TaskConfigError:
    return TaskConfigError(
        f"adapter method {method!r}: the backbone ran outside MultiTaskModel.forward, so its adapters do not "
        f"know which task each row belongs to. Fix: call the MultiTaskModel (model(..., task=...)), not "
        f"model.backbone directly; with gradient_checkpointing (which re-runs layers during backward, after the "
        f"forward's routing ended) set gradient_checkpointing=false for this method."
    )
