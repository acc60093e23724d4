"""`pals`: a projected attention layer per task, in parallel with each layer's self-attention.

Stickland & Murray (2019), "BERT and PALs: Projected Attention Layers for Efficient Adaptation in
Multi-Task Learning" (ICML). For each layer l, with h the input of its self-attention:

    h ← LN(h + SA(h) + V^D · MH_l(V^E · h))

Insertion through the architecture spec, no copied forward code:
- encoders (BERT family): a forward pre-hook on each layer records its input h and attention mask; a forward
  hook on the spec's `attention_output` (the attention branch just before the residual add and layer norm)
  adds the task's PAL output to it;
- generative LMs (Llama/Qwen2/Mistral, GPT-2, T5, BART), whose self-attention module returns the branch
  itself: one forward hook on it reads its input (LN(x) in a pre-LN stack, x in BART's post-LN one) and its
  mask, and adds the PAL to its output, x + SA(LN(x)) + TS(LN(x)). Every stack gets PALs (T5/BART: encoder
  and decoder layers), V^E and V^D shared by all of a task's layers as in the paper. In a decoder the PAL
  attends causally like the layer (its mask, or the causal one where transformers passes none), and while
  generating with a KV cache its projected keys/values of the earlier positions live in that same cache, as
  extra layers after the model's own (`_pal_cache`): beam search reorders them with the model's, so a
  one-token step sees every earlier position of its own beam.

Routing per row: V^E, V^D and each layer's q/k/v of the tasks present in the batch are stacked at
forward time and applied per row (per task range where rows come grouped), so a batch mixing tasks runs
in one pass. Every task owns its own `nn.Parameter`s: training task A never moves task B's weights,
weight decay included.

Differences from the reference code (github.com/AsaCooperStickland/Bert-n-Pals), all documented
choices: V^D starts at zero (a new task starts as the frozen backbone); no GELU after V^D and no
dropout on the PAL attention probabilities (the paper's equation has neither; the reference code
applies both).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from ...modeling.arch import ArchSpec, config_value, layers_of, resolve
from ...store.weights import load_exact
from ...tasks import Task
from ..base import register_method
from ..per_row import PerRowMethod, count, stack_parameters, stack_specs, task_key, task_of_key
from ..routing import RoutedCall
from .config import PalsConfig
from .layer import TaskPals, projected_attention


@register_method
class PalsMethod(PerRowMethod):
    """Projected attention layers (PALs), one set per task.

    Args:
        backbone_config: the backbone's config (hidden size, layers, `initializer_range`).
        config: `adapter_config` options, see `PalsConfig` (`pal_size`, `pal_heads`).
    """

    name = "pals"
    groups_rows = True

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        super().__init__(backbone_config, config)
        self.stacks = stack_specs(backbone_config)  # an encoder's stack; a generative LM's (encoder, then decoder)
        self.hidden_size = config_value(backbone_config, self.stacks[0], "hidden_size")
        self.num_layers = sum(config_value(backbone_config, spec, "num_layers") for spec in self.stacks)
        self.options = PalsConfig.from_options(config, self.hidden_size)
        self.config = self.options.to_dict()  # saved resolved: a store reloads with the same d_s
        self.pals = nn.ModuleDict()  # task_key(task) -> TaskPals
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ lifecycle
    def attach(self, model: nn.Module) -> None:
        """Hook every layer of every stack; its PAL is numbered across the stacks (encoder first)."""
        backbone = model.backbone
        reference = next(backbone.parameters())
        self._device, self._dtype = reference.device, reference.dtype
        index = 0
        for spec in self.stacks:
            layers, first = layers_of(backbone, spec), index
            for position, layer in enumerate(layers):
                if spec.attention_output == spec.attention:  # the attention module returns the branch
                    cache_slot = len(layers) + position if spec.stack == "decoder" else None
                    self.add_hook(resolve(layer, spec.attention), self._pal_beside(index, first, spec, cache_slot),
                                  with_kwargs=True)
                else:
                    self.add_hook(layer, self._record_input(index), pre=True)
                    self.add_hook(resolve(layer, spec.attention_output), self._add_pal(index))
                index += 1

    def add_task(self, task: Task) -> None:
        if task_key(task.name) in self.pals:
            return
        init_std = float(getattr(self.backbone_config, "initializer_range", 0.02))
        pals = TaskPals(self.hidden_size, self.options.pal_size, self.num_layers, init_std)
        self.pals[task_key(task.name)] = pals.to(device=self._device, dtype=self._dtype)

    def known_tasks(self) -> Iterable[str]:
        return [task_of_key(key) for key in self.pals]

    def _task(self, task: str) -> TaskPals:
        return self.pals[task_key(task)]

    # ------------------------------------------------------------------ forward
    def prepare(self, call: RoutedCall) -> None:
        """Stack V^E and V^D of the batch's tasks once per forward (all layers share them): (T, ...)."""
        names = call.routing.owners
        pals = [self._task(name) for name in names]
        for part in ("encoder", "decoder"):
            weight = stack_parameters({n: getattr(p, part).weight for n, p in zip(names, pals)}, names)
            bias = stack_parameters({n: getattr(p, part).bias for n, p in zip(names, pals)}, names)
            call.values[part] = (weight, bias)

    def _pal(self, call: RoutedCall, index: int, hidden: torch.Tensor, mask: torch.Tensor | None,
             **attention: Any) -> torch.Tensor:
        """TS(h) of layer `index` for every row of the batch (B, L, H)."""
        names = call.routing.owners
        weight = stack_parameters({n: self._task(n).layers[index].weight for n in names}, names)
        bias = stack_parameters({n: self._task(n).layers[index].bias for n in names}, names)
        return projected_attention(call.routing, hidden, call.values["encoder"], (weight, bias), call.values["decoder"],
                                   self.options.pal_heads, mask, **attention)

    def _record_input(self, index: int):
        def hook(layer: nn.Module, args: tuple, kwargs: dict) -> None:
            call = self.current_call()
            if call is not None:
                hidden = args[0] if args else kwargs["hidden_states"]
                mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
                call.inputs[index] = (hidden, mask)
        return hook

    def _add_pal(self, index: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            call = self.current_call()
            if call is None or index not in call.inputs:
                return None
            hidden, mask = call.inputs.pop(index)
            return output + self._pal(call, index, hidden, mask)
        return hook

    def _pal_beside(self, index: int, first: int, spec: ArchSpec, cache_slot: int | None):
        """A generative layer's hook on its self-attention: (branch, ...) -> (branch + TS(input), ...).

        transformers calls these modules with the input first (or as `hidden_states`), the mask as
        `attention_mask` (T5: `mask`) and the KV cache as `cache`. `first`: the number of the stack's first
        layer (`index - first`: the layer's place in its stack)."""
        causal = spec.stack == "decoder"

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: tuple) -> tuple | None:
            call = self.current_call()
            if call is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            mask = kwargs.get("attention_mask", kwargs.get("mask"))
            past = _pal_cache(kwargs.get("cache"), cache_slot, index - first) if causal else None
            pal = self._pal(call, index, hidden, mask, causal=causal, past=past)
            return (output[0] + pal, *output[1:])
        return hook

    # ------------------------------------------------------------------ parameters
    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self._task(task).parameters()) if task_key(task) in self.pals else []

    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self._task(task).state_dict().items()}

    def load_task_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        if task_key(task) not in self.pals:
            self.add_task(Task(task))
        load_exact(dict(self._task(task).named_parameters()), state, f"task {task!r} (adapter method 'pals')")

    def formula_parameter_count(self, task: str) -> int:
        """2·H·d_s + d_s + H (V^E, V^D with biases) + N·3·(d_s² + d_s) (q, k, v per layer, N over every stack)."""
        hidden, small, layers = self.hidden_size, self.options.pal_size, self.num_layers
        return 2 * hidden * small + small + hidden + layers * 3 * (small * small + small)

    def parameter_breakdown(self) -> dict[str, Any]:
        """Trainable parameters by part: per task (V^E + V^D, per-layer attention), nothing shared."""
        per_task = {}
        for key, pals in self.pals.items():
            per_task[task_of_key(key)] = {
                "projections": count(pals.encoder.parameters()) + count(pals.decoder.parameters()),
                "attention": count(pals.layers.parameters()),
            }
        return {"per_task": per_task, "shared": {}}

    def task_config(self, task: str) -> dict[str, Any]:
        return {"adapter_method": self.name, **self.config, "parameters": self.formula_parameter_count(task)}


def _pal_cache(cache: Any, slot: int | None, mirror: int):
    """The `update` of a PAL's place in the model's own KV cache (None without a cache: training, a forward
    without `use_cache`).

    The PAL of decoder layer i (`mirror`) keeps its projected keys/values in layer `N + i` of the cache (N: the
    decoder's layers; an encoder-decoder's self-attention cache), appended the first time as the same kind of
    layer as layer i's (a sliding window keeps as many keys as the layer's, which its mask covers). What
    generation does to the model's cache (beam reordering, cropping, batch selection) loops over every layer of
    the cache, so it does the same to the PALs'.
    """
    if cache is None or slot is None:
        return None
    cache = getattr(cache, "self_attention_cache", cache)
    while len(cache.layers) <= slot:
        model_layer = len(cache.layers) - (slot - mirror)  # the layer of the model this new cache layer mirrors
        window = getattr(cache.layers[model_layer], "sliding_window", None) if model_layer >= 0 else None
        cache.layers.append(DynamicSlidingWindowLayer(sliding_window=window) if window else DynamicLayer())
    return lambda key, value: cache.update(key, value, slot)
