"""`prefix_tuning`: trainable key/value prefixes per task and layer (Li & Liang, 2021), routed per row.

PEFT's `PrefixTuning` passes its prefixes as a key/value cache, which transformers 5's encoders no
longer accept ("Model does not support past key values"). Here the prefixes enter through an
attention modifier (`hf_mtl.ops.attention`): inside every self-attention, each row's task
prefixes (B, heads, P, d) are put before its keys and values and the mask gets P open positions.
A batch whose rows belong to different tasks runs in one forward pass (`routes_per_row = True`).

Per task: P·2·L·H parameters (P = `num_virtual_tokens`, L layers, H hidden size); with
`prefix_projection`, P·H + (H·E + E) + (E·2·L·H + 2·L·H) (E = `encoder_hidden_size`). Each task's
prefixes are computed once per batch in which the task appears, then gathered per row.

Saved form: `<task>/adapter_model.safetensors` holds the prefix encoder as trained (`embedding.weight`,
and with projection the MLP `transform.*`), so a loaded task continues training exactly; PEFT instead
stores the computed prefixes only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...errors import StoreError
from ...modeling.arch import config_value, get_spec, layers_of, resolve
from ...ops.attention import add_attention_modifier
from ...tasks import Task
from ..base import AdapterMethod, register_method
from ..routing import RoutedCall, Routing
from .config import PrefixTuningOptions
from .layer import PrefixEncoder, prefixes_by_layer, prepend_prefix


@register_method
class PrefixTuningMethod(AdapterMethod):
    """Key/value prefixes per task and layer; see the module docstring.

    Args:
        backbone_config: the backbone's config.
        config: `adapter_config`: `num_virtual_tokens` (20), `prefix_projection` (False),
            `encoder_hidden_size` (512).
    """

    name = "prefix_tuning"
    routes_per_row = True

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        super().__init__(backbone_config, config)
        self.options = PrefixTuningOptions.from_config(self.config)
        self.spec = get_spec(backbone_config)
        self.num_layers = config_value(backbone_config, self.spec, "num_layers")
        self.hidden_size = config_value(backbone_config, self.spec, "hidden_size")
        self.num_heads = config_value(backbone_config, self.spec, "num_heads")
        self.prefixes = nn.ModuleDict()  # task -> PrefixEncoder
        self._backbone: nn.Module | None = None

    def attach(self, model: nn.Module) -> None:
        """Register one attention modifier per layer (no module of the backbone is replaced)."""
        object.__setattr__(self, "_backbone", model.backbone)  # a reference, not a submodule: not our weights
        for index, layer in enumerate(layers_of(model.backbone, self.spec)):
            attention = resolve(layer, self.spec.attention)
            add_attention_modifier(model.backbone, attention, self._modifier(index))

    def add_task(self, task: Task) -> None:
        if task.name in self.prefixes:
            return
        options = self.options
        encoder = PrefixEncoder(options.num_virtual_tokens, self.num_layers, self.hidden_size,
                                options.prefix_projection, options.encoder_hidden_size)
        weight = next(self._backbone.parameters(), None) if self._backbone is not None else None
        self.prefixes[task.name] = encoder.to(weight.device) if weight is not None else encoder  # after model.to(device) too

    # ------------------------------------------------------------------ routing
    @contextlib.contextmanager
    def route(self, routing: Routing) -> Iterator[None]:
        """Compute the prefixes of the batch's tasks (once per task) and which one each row uses."""
        flat = [self.prefixes[name]() for name in routing.owners]  # each (P, 2·L·H)
        # (T_batch, L, 2, h, P, d); row i uses entry routing.rows[i] (the batch's tasks in routing order)
        prefixes = torch.stack([prefixes_by_layer(f, self.num_layers, self.num_heads) for f in flat])
        with RoutedCall(routing, values={"prefixes": prefixes}).scope(self):
            yield

    def _modifier(self, layer_index: int):
        def modify(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   mask: torch.Tensor | None) -> tuple:
            call = self.current_call()
            if call is None:  # a forward outside `route`: the base model
                return query, key, value, mask
            layer = call.values["prefixes"][:, layer_index]  # (T_batch, 2, h, P, d)
            if call.routing.rows is None:
                per_row = layer.expand(key.shape[0], *layer.shape[1:])  # one task: no copy
            else:
                per_row = layer.index_select(0, call.routing.rows)  # (B, 2, h, P, d)
            key, value, mask = prepend_prefix(key, value, mask, per_row)
            return query, key, value, mask

        return modify

    # ------------------------------------------------------------------ parameters
    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.prefixes[task].parameters()) if task in self.prefixes else []

    def formula_parameter_count(self, task: str) -> int:
        """P·2·L·H; with `prefix_projection`: P·H + (H·E + E) + (E·2·L·H + 2·L·H)."""
        p, e, h = self.options.num_virtual_tokens, self.options.encoder_hidden_size, self.hidden_size
        out = 2 * self.num_layers * h
        if not self.options.prefix_projection:
            return p * out
        return p * h + (h * e + e) + (e * out + out)

    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        return dict(self.prefixes[task].state_dict()) if task in self.prefixes else {}

    def load_task_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        if task not in self.prefixes:
            return super().load_task_state_dict(task, state)
        own = self.prefixes[task].state_dict()
        problems = sorted(set(own) ^ set(state)) or [
            f"{k}: saved {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape
        ]
        if problems:
            raise StoreError(
                f"task {task!r}: the saved prefixes do not fit this model ({problems[:3]}). They were saved with other "
                f"options (num_virtual_tokens, prefix_projection, encoder_hidden_size: now {self.config}) or for another "
                f"base model (now L={self.num_layers}, H={self.hidden_size}). Fix: load them with the options they were trained with."
            )
        self.prefixes[task].load_state_dict(state)

    def task_config(self, task: str) -> dict[str, Any]:
        return {
            "adapter_method": self.name,
            "num_virtual_tokens": self.options.num_virtual_tokens,
            "prefix_projection": self.options.prefix_projection,
            "encoder_hidden_size": self.options.encoder_hidden_size,
            "num_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "token_dim": self.hidden_size,
        }
