"""`pals`: a projected attention layer per task, in parallel with each layer's self-attention.

Stickland & Murray (2019), "BERT and PALs: Projected Attention Layers for Efficient Adaptation in
Multi-Task Learning" (ICML). For each layer l, with h the layer's input:

    h ← LN(h + SA(h) + V^D · MH_l(V^E · h))

Insertion through the architecture spec, no copied forward code: a forward pre-hook on each layer
records its input h and attention mask; a forward hook on the spec's `attention_output` (the
attention branch just before the residual add and layer norm) adds the task's PAL output to it.

Routing per row: V^E, V^D and each layer's q/k/v of the tasks present in the batch are stacked at
forward time and gathered per row, so a batch mixing tasks runs in one pass. Every task owns its own
`nn.Parameter`s: training task A never moves task B's weights, weight decay included.

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

from ...modeling.arch import config_value, get_spec, layers_of, resolve
from ...store.weights import load_exact
from ...tasks import Task
from ..base import register_method
from ..per_row import PerRowMethod, count, stack_parameters, task_key, task_of_key
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
        self.spec = get_spec(backbone_config)
        self.hidden_size = config_value(backbone_config, self.spec, "hidden_size")
        self.num_layers = config_value(backbone_config, self.spec, "num_layers")
        self.options = PalsConfig.from_options(config, self.hidden_size)
        self.config = self.options.to_dict()  # saved resolved: a store reloads with the same d_s
        self.pals = nn.ModuleDict()  # task_key(task) -> TaskPals
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ lifecycle
    def attach(self, model: nn.Module) -> None:
        """Hook every layer: record its input (pre-hook), add the PAL to its attention branch."""
        backbone = model.backbone
        reference = next(backbone.parameters())
        self._device, self._dtype = reference.device, reference.dtype
        for index, layer in enumerate(layers_of(backbone, self.spec)):
            self.add_hook(layer, self._record_input(index), pre=True)
            self.add_hook(resolve(layer, self.spec.attention_output), self._add_pal(index))

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
        """Stack V^E and V^D of the batch's tasks once per forward (all layers share them)."""
        routing, names = call.routing, call.routing.owners
        pals = [self._task(name) for name in names]
        for part in ("encoder", "decoder"):
            weight = stack_parameters({n: getattr(p, part).weight for n, p in zip(names, pals)}, names)
            bias = stack_parameters({n: getattr(p, part).bias for n, p in zip(names, pals)}, names)
            # per task (T, ...) when each task's rows form one range (see `_add_pal`), else per row
            call.values[part] = (weight, bias) if routing.segments is not None else (routing.per_row(weight), routing.per_row(bias))

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
            routing, names = call.routing, call.routing.owners
            weight = stack_parameters({n: self._task(n).layers[index].weight for n in names}, names)
            bias = stack_parameters({n: self._task(n).layers[index].bias for n in names}, names)
            heads = self.options.pal_heads
            if routing.segments is not None:  # rows grouped by task (CPU): each task's range on its own
                def one_task(h, m, enc_w, enc_b, qkv_w, qkv_b, dec_w, dec_b):
                    return projected_attention(h, (enc_w, enc_b), (qkv_w, qkv_b), (dec_w, dec_b), heads, m)
                pal = routing.segmented(one_task, (hidden, mask),
                                        [*call.values["encoder"], weight, bias, *call.values["decoder"]])
            else:
                qkv = (routing.per_row(weight), routing.per_row(bias))
                pal = projected_attention(hidden, call.values["encoder"], qkv, call.values["decoder"], heads, mask)
            return output + pal
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
        """2·H·d_s + d_s + H (V^E, V^D with biases) + N·3·(d_s² + d_s) (q, k, v per layer)."""
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
