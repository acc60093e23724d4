"""`prefix_tuning`: trainable key/value prefixes per task and attention (Li & Liang, 2021), routed per row.

PEFT's `PrefixTuning` passes its prefixes as a key/value cache, which transformers 5's encoders no
longer accept ("Model does not support past key values"). Here the prefixes enter through an
attention modifier (`hf_mtl.ops.attention`): inside every attention that gets one (`prefix_sites`),
each row's task prefixes (B, heads, P, d) are put before its keys and values and the mask gets P open
positions. A batch whose rows belong to different tasks runs in one forward pass (`routes_per_row = True`).

Which attentions get prefixes (the sites, in this order):

- encoders (BERT family): each layer's self-attention;
- decoder-only LMs (Llama, Qwen2, Mistral, GPT-2): each layer's self-attention, with `num_key_value_heads`
  heads under grouped-query attention, joined after the rotary embedding (prefix keys carry no position);
- encoder-decoders (T5, BART): the encoder's self-attentions, the decoder's self-attentions, then the
  decoder's cross-attentions. T5's relative position bias is 0 on the prefix columns.

Generation: where a layer's KV cache is a plain `DynamicLayer`, the first forward of `generate` writes each
row's prefix into it (`PrefixCacheLayer`), before the prompt's keys: the prefix lives in the cache, follows
its row through beam reordering, and later steps only add its columns to the mask. Elsewhere (no cache, as
in training; sliding-window layers; T5's decoder self-attention, whose relative bias is computed over the
cached keys) the prefix joins the keys in every forward. Both give the same attention.

Per task: P·O parameters (P = `num_virtual_tokens`, O = Σ over sites of 2·heads·head_dim, which is 2·L·H
for an encoder of L layers of hidden size H); with `prefix_projection`, P·H + (H·E + E) + (E·O + O)
(E = `encoder_hidden_size`). Each task's prefixes are computed once per batch in which the task appears,
then gathered per row.

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
from transformers.cache_utils import DynamicLayer, EncoderDecoderCache

from ...errors import StoreError
from ...modeling.arch import (
    config_value,
    get_generative_spec,
    get_spec,
    head_dim,
    num_kv_heads,
    resolve,
)
from ...modeling.generative import ENCODER, backbone_layout
from ...ops.attention import add_attention_modifier
from ...tasks import Task
from ..base import AdapterMethod, register_method
from ..routing import RoutedCall, Routing
from .config import PrefixTuningOptions
from .layer import PrefixCacheLayer, PrefixEncoder, PrefixSite, open_prefix, prefixes_by_site, prepend_prefix


def prefix_sites(config: Any) -> list[PrefixSite]:
    """The attentions of a backbone that get prefixes, in the order of the prefix encoder's output (see the module
    docstring); paths from the backbone's root (the LM with its head for generative backbones).

    Raises:
        TaskConfigError: a family without an architecture spec.
    """
    if backbone_layout(config) == ENCODER:
        spec = get_spec(config)
        heads = config_value(config, spec, "num_heads")
        size = config_value(config, spec, "hidden_size") // heads
        return [PrefixSite(f"{spec.layers}.{i}.{spec.attention}", heads, size)
                for i in range(config_value(config, spec, "num_layers"))]
    sites: list[PrefixSite] = []
    for stack in get_generative_spec(config).stacks:
        heads, size = num_kv_heads(config, stack), head_dim(config, stack)
        decoder = stack.stack == "decoder"
        layers = range(config_value(config, stack, "num_layers"))
        # T5's relative bias spans every key the cache holds: a prefix kept there would shift the sequence's positions
        cacheable = decoder and stack.relative_attention_bias is None
        sites += [PrefixSite(f"{stack.layers}.{i}.{stack.attention}", heads, size, causal=decoder, cacheable=cacheable)
                  for i in layers]
        if stack.cross_attention is not None:
            sites += [PrefixSite(f"{stack.layers}.{i}.{stack.cross_attention}", heads, size, cacheable=True, cross=True)
                      for i in layers]
    return sites


@register_method
class PrefixTuningMethod(AdapterMethod):
    """Key/value prefixes per task and attention; see the module docstring.

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
        self.sites = prefix_sites(backbone_config)
        generative = backbone_layout(backbone_config) != ENCODER
        spec = get_generative_spec(backbone_config).decoder if generative else get_spec(backbone_config)
        self.num_layers = len(self.sites)
        self.hidden_size = config_value(backbone_config, spec, "hidden_size")
        self.num_heads = self.sites[0].heads
        self.out_size = sum(site.size for site in self.sites)
        self.prefixes = nn.ModuleDict()  # task -> PrefixEncoder
        self._backbone: nn.Module | None = None

    def attach(self, model: nn.Module) -> None:
        """Register an attention modifier on every site, and where the prefix may live in the KV cache a pre-hook
        that writes it there (no module of the backbone is replaced)."""
        object.__setattr__(self, "_backbone", model.backbone)  # a reference, not a submodule: not our weights
        for index, site in enumerate(self.sites):
            attention = resolve(model.backbone, site.path)
            add_attention_modifier(model.backbone, attention, self._modifier(index))
            if site.cacheable:
                attention.register_forward_pre_hook(self._cache_hook(index), with_kwargs=True)

    def add_task(self, task: Task) -> None:
        if task.name in self.prefixes:
            return
        options = self.options
        encoder = PrefixEncoder(options.num_virtual_tokens, self.out_size, self.hidden_size,
                                options.prefix_projection, options.encoder_hidden_size)
        weight = next(self._backbone.parameters(), None) if self._backbone is not None else None
        self.prefixes[task.name] = encoder.to(weight.device) if weight is not None else encoder  # after model.to(device) too

    # ------------------------------------------------------------------ routing
    @contextlib.contextmanager
    def route(self, routing: Routing) -> Iterator[None]:
        """Compute the prefixes of the batch's tasks (once per task) and which one each row uses."""
        routing.check_known(self.prefixes, self.name)
        by_task = [prefixes_by_site(self.prefixes[name](), self.sites) for name in routing.owners]
        # per site (T_batch, 2, h, P, d); row i uses entry routing.rows[i] (the batch's tasks in routing order)
        if len(by_task) == 1:  # one task: a view, no copy
            prefixes = [site.unsqueeze(0) for site in by_task[0]]
        else:
            prefixes = [torch.stack([task[site] for task in by_task]) for site in range(len(self.sites))]
        with RoutedCall(routing, values={"prefixes": prefixes}).scope(self):
            yield

    def _row_prefixes(self, call: RoutedCall, site: int, batch: int) -> torch.Tensor:
        """(batch, 2, h, P, d): each row's prefix at `site`."""
        per_row = call.routing.per_row(call.values["prefixes"][site])
        return per_row.expand(batch, *per_row.shape[1:])  # one task: no copy

    def _modifier(self, index: int):
        site = self.sites[index]
        length = self.options.num_virtual_tokens

        def modify(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   mask: torch.Tensor | None) -> tuple:
            call = self.current_call()
            if call is None:  # a forward outside `route`: the base model
                return query, key, value, mask
            if call.inputs.pop(("cached", index), False):  # the KV cache starts with the prefix already
                return query, key, value, open_prefix(mask, query, key.shape[2] - length, length, site.causal)
            num_keys = key.shape[2]
            key, value = prepend_prefix(key, value, self._row_prefixes(call, index, key.shape[0]))
            return query, key, value, open_prefix(mask, query, num_keys, length, site.causal)

        return modify

    def _cache_hook(self, index: int):
        """A pre-hook of a cacheable site's attention: on the first forward of a generation (the layer's cache still
        empty and a plain `DynamicLayer`), put each row's prefix into the cache; tell the modifier that the keys it
        will see start with the prefix."""
        site = self.sites[index]

        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            call = self.current_call()
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            if call is None:
                return
            call.inputs.pop(("cached", index), None)  # decided anew for every forward
            if cache is None:
                return
            if isinstance(cache, EncoderDecoderCache):
                cache = cache.cross_attention_cache if site.cross else cache.self_attention_cache
            layer_index = getattr(module, "layer_idx", None)
            layers = getattr(cache, "layers", None)
            if layer_index is None or layers is None or layer_index >= len(layers):
                return
            layer = layers[layer_index]
            if type(layer) is DynamicLayer and layer.get_seq_length() == 0:  # sliding windows would evict it
                hidden = kwargs.get("hidden_states", args[0] if args else None)
                prefix = self._row_prefixes(call, index, hidden.shape[0]).to(_compute_dtype(hidden))
                layer = layers[layer_index] = PrefixCacheLayer(prefix[:, 0].contiguous(), prefix[:, 1].contiguous())
            if isinstance(layer, PrefixCacheLayer):
                call.inputs[("cached", index)] = True

        return hook

    # ------------------------------------------------------------------ parameters
    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.prefixes[task].parameters()) if task in self.prefixes else []

    def formula_parameter_count(self, task: str) -> int:
        """P·O (O = Σ_sites 2·heads·head_dim; 2·L·H on encoders); with `prefix_projection`:
        P·H + (H·E + E) + (E·O + O)."""
        p, e, h, out = self.options.num_virtual_tokens, self.options.encoder_hidden_size, self.hidden_size, self.out_size
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
                f"base model (now {self.num_layers} attention layers with prefixes, H={self.hidden_size}). "
                f"Fix: load them with the options they were trained with."
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


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the attention's keys come in: autocast's where it is on, else the hidden states'."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
