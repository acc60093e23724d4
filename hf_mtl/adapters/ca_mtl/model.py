"""`ca_mtl`: Conditionally Adaptive Multi-Task Learning on a frozen backbone.

Pilault, Elhattami & Pal (2021), "Conditionally Adaptive Multi-Task Learning: Improving Transfer
Learning in NLP Using Fewer Parameters & Less Data" (ICLR). From a learned task embedding z_i:

- conditional alignment of the input embeddings: e ← FiLM_{z_i}(e) = (1 + γ(z_i)) ⊙ e + β(z_i)
  (a task-conditioned diagonal linear map, as the reference code's FiLM on the embedding output);
- z'_i = W_t z_i + b_t (the reference code's `task_transformation`) conditions the layer modules:
- conditional attention: softmax(QKᵀ/√d + M(z'_i)) V with M block-diagonal over positions
  (`ConditionalAttentionBias`), added to the attention mask through `add_attention_modifier`;
- conditional layer norm on both layer norms of a conditioned layer (`ConditionalLayerNorm`);
- conditional bottleneck adapter on the feed-forward branch of the top layer, or of every
  conditioned layer (`bottleneck_layers`).

`freeze_lower_half` (default, as the paper): the conditional layer modules go into the upper half of
the layers only. Per task: z_i (d_z numbers) under `<task>/`; everything else is shared (`shared/`).
The uncertainty-based task sampling of the paper is a sampler strategy, not part of this method.

Generative LMs (Llama/Qwen2/Mistral, GPT-2, T5, BART), through their specs: every stack is conditioned
(its upper half; the bottleneck in each stack's top layer), one alignment FiLM on each stack's input
embeddings, the conditional layer norms on the norms of the attention and feed-forward sub-blocks (pre-LN:
the norms that feed them; RMSNorm has no bias to shift). The bias M joins the self-attention's logits
through transformers' attention interface: T5's relative bias and unscaled logits stay as they are, M is
added beside them. In a decoder M must follow the token's position in its row, not its index in the batch:
prompts are padded on the left when rows generate together, and with a KV cache a step's query is the
newest position; `_positions` reads both from the layer's mask. A decoder's causal mask, which transformers
leaves implicit when nothing is padded, is made explicit before M is added. A sliding window shorter than
`max_seq_length` (Mistral's option) is refused: its cache drops the keys that give a token its position.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import TaskConfigError
from ...modeling.arch import ArchSpec, config_value, layers_of, resolve
from ...ops.attention import add_attention_modifier, full_mask
from ..base import register_method
from ..per_row import count, mask_or_causal, stack_specs
from ..routing import RoutedCall
from ..task_embedding import TaskEmbeddingMethod
from .config import METHOD, CaMtlConfig
from .layer import CaMtlLayer, ConditionalLayerNorm, FiLM, film


REACHABLE_ATTENTION = (None, "eager", "sdpa", "hf_mtl")


@register_method
class CaMtlMethod(TaskEmbeddingMethod):
    """CA-MTL's conditional modules, driven by one learned embedding per task.

    Args:
        backbone_config: the backbone's config.
        config: `adapter_config` options, see `CaMtlConfig`.
    """

    name = METHOD

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        super().__init__(backbone_config, config)
        self.stacks = _stacks_for_ca_mtl(backbone_config)  # an encoder's stack; a generative LM's (encoder, decoder)
        self.hidden_size = config_value(backbone_config, self.stacks[0], "hidden_size")
        self.stack_sizes = [config_value(backbone_config, spec, "num_layers") for spec in self.stacks]
        self.num_layers = sum(self.stack_sizes)
        self.embedding_dim = int(getattr(backbone_config, "embedding_size", None) or self.hidden_size)
        self.options = CaMtlConfig.from_options(config, self.hidden_size)
        self.config = self.options.to_dict()
        _check_sliding_window(backbone_config, self.options)
        o, hidden = self.options, self.hidden_size
        self.embedding_init_scale = o.task_embedding_dim ** -0.5  # z_i: unit norm on average
        self.alignment = FiLM(o.task_embedding_dim, self.embedding_dim)
        self.task_transform = nn.Linear(o.task_embedding_dim, hidden)
        self.layers = nn.ModuleDict({
            str(i): CaMtlLayer(hidden, hidden, o.max_seq_length, o.num_blocks,
                               o.bottleneck_dim if i in self.bottleneck_layers() else None)
            for i in self.conditioned_layers()
        })

    def conditioned_layers(self) -> list[int]:
        """Layers that get the conditional attention and layer norms: the upper half of each stack by default.
        Layers are numbered across the stacks, encoder first (a T5 with 2 + 2 layers: 0-1 encoder, 2-3 decoder)."""
        layers = []
        for first, size in self._stack_ranges():
            layers += range(first + (size // 2 if self.options.freeze_lower_half else 0), first + size)
        return layers

    def bottleneck_layers(self) -> list[int]:
        """Every conditioned layer, or ("top") the last layer of each stack."""
        if self.options.bottleneck_layers == "top":
            return [first + size - 1 for first, size in self._stack_ranges()]
        return self.conditioned_layers()

    def _stack_ranges(self) -> list[tuple[int, int]]:
        """(number of the stack's first layer, its layer count) for each stack."""
        firsts = [sum(self.stack_sizes[:i]) for i in range(len(self.stack_sizes))]
        return list(zip(firsts, self.stack_sizes))

    # ------------------------------------------------------------------ lifecycle
    def attach(self, model: nn.Module) -> None:
        """Hook the embeddings of each stack (alignment; a module two stacks share, T5's, once), and in each
        conditioned layer the self-attention logits, both layer norms, and (bottleneck layers) the feed-forward
        branch."""
        backbone = model.backbone
        _check_attention_reachable(backbone)
        reference = next(backbone.parameters())
        self._device, self._dtype = reference.device, reference.dtype
        self.to(device=self._device, dtype=self._dtype)
        embeddings = {id(module): module for module in (resolve(backbone, spec.embeddings) for spec in self.stacks)}
        for module in embeddings.values():
            self.add_hook(module, self._alignment_hook)
        conditioned = set(self.conditioned_layers())
        for spec, (first, _) in zip(self.stacks, self._stack_ranges()):
            for position, layer in enumerate(layers_of(backbone, spec)):
                if first + position in conditioned:
                    self._attach_layer(backbone, spec, layer, self.layers[str(first + position)])

    def _attach_layer(self, backbone: nn.Module, spec: ArchSpec, layer: nn.Module, modules: CaMtlLayer) -> None:
        modifier = self._attention_modifier(modules, causal=spec.stack == "decoder")
        add_attention_modifier(backbone, resolve(layer, spec.attention), modifier)
        self.add_hook(resolve(layer, spec.attention_layer_norm), self._norm_hook(modules.attention_norm))
        self.add_hook(resolve(layer, spec.ffn_layer_norm), self._norm_hook(modules.ffn_norm))
        if modules.bottleneck is not None:
            self.add_hook(resolve(layer, spec.ffn_output), self._bottleneck_hook(modules))

    # ------------------------------------------------------------------ forward
    def prepare(self, call: RoutedCall) -> None:
        call.values["z"] = z = self.stack_task_embeddings(call.routing.owners)  # (T, d_z)
        call.values["condition"] = self.task_transform(z)  # z'_i: (T, H)

    @staticmethod
    def _film_per_row(call: RoutedCall, module: FiLM, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gamma, beta = module(condition)  # (T, F) each: once per task present
        return call.routing.per_row(gamma), call.routing.per_row(beta)

    def _alignment_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        call = self.current_call()
        if call is None:
            return None
        return film(output, *self._film_per_row(call, self.alignment, call.values["z"]))

    def _attention_modifier(self, modules: CaMtlLayer, causal: bool):
        """Add M(z'_i) at the queries' and keys' positions to the layer's mask; a decoder's (causal) mask, which
        transformers leaves out when nothing is padded, is made explicit first."""
        def modifier(attention: nn.Module, query, key, value, mask):
            call = self.current_call()
            if call is None:
                return query, key, value, mask
            q_len, k_len = query.shape[2], key.shape[2]
            if k_len > self.options.max_seq_length:
                raise TaskConfigError(
                    f"tasks {call.routing.owners}: a batch of sequence length {k_len} (generating: prompt, padding and "
                    f"new tokens) is longer than the ca_mtl option max_seq_length={self.options.max_seq_length}, which "
                    f"the conditional attention bias covers. Fix: truncate inputs to {self.options.max_seq_length} "
                    f"tokens (the recipe's max_seq_length, less generation.max_new_tokens) or set adapter_config "
                    f"max_seq_length to a larger multiple of num_blocks={self.options.num_blocks} (a new model)."
                )
            query_positions, key_positions = _positions(mask, q_len, k_len, causal, query.device)
            rows = call.routing.per_row(modules.attention.rows(call.values["condition"]))  # (B|1, L, b)
            bias = modules.attention.crop(rows, query_positions, key_positions)  # (B|1, Lq, Lk)
            mask = full_mask(mask_or_causal(mask, q_len, k_len, causal, query.device), query, key)
            return query, key, value, mask + bias.unsqueeze(1).to(query.dtype)
        return modifier

    def _norm_hook(self, conditional: ConditionalLayerNorm):
        def hook(norm: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            call = self.current_call()
            if call is None:
                return None
            return conditional.apply(output, norm, *self._film_per_row(call, conditional.film, call.values["condition"]))
        return hook

    def _bottleneck_hook(self, modules: CaMtlLayer):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            call = self.current_call()
            if call is None:
                return None
            film_values = self._film_per_row(call, modules.bottleneck.film, call.values["condition"])
            return modules.bottleneck(output, *film_values)
        return hook

    # ------------------------------------------------------------------ parameters
    def shared_formula_parameter_count(self) -> int:
        """Shared parts, from the equations of `layer.py`:

        alignment d_z·2E + 2E; task transform d_z·H + H; per conditioned layer the attention bias
        L·b + H·2b + 2b and two conditional layer norms 2·(H·2H + 2H); per bottleneck layer
        H·2H + 2H + H·m + m + m·H + H.
        """
        o, hidden, emb = self.options, self.hidden_size, self.embedding_dim
        d_z, b, m = o.task_embedding_dim, o.block_size, o.bottleneck_dim
        film_h = hidden * 2 * hidden + 2 * hidden
        per_layer = o.max_seq_length * b + hidden * 2 * b + 2 * b + 2 * film_h
        per_bottleneck = film_h + hidden * m + m + m * hidden + hidden
        return (d_z * 2 * emb + 2 * emb + d_z * hidden + hidden + len(self.conditioned_layers()) * per_layer
                + len(self.bottleneck_layers()) * per_bottleneck)

    def parameter_breakdown(self) -> dict[str, Any]:
        """Trainable parameters by part: per task (the task embedding) and each shared part by name."""
        shared = {"alignment": count(self.alignment.parameters()), "task_transform": count(self.task_transform.parameters())}
        for part in ("attention", "attention_norm", "ffn_norm", "bottleneck"):
            shared[f"conditional_{part}"] = sum(
                count(getattr(layer, part).parameters()) for layer in self.layers.values() if getattr(layer, part) is not None
            )
        return {"per_task": self.per_task_breakdown(), "shared": shared, "shared_total": count(self.shared_parameters()),
                "conditioned_layers": self.conditioned_layers()}


def _stacks_for_ca_mtl(backbone_config: Any) -> tuple[ArchSpec, ...]:
    try:
        return stack_specs(backbone_config)
    except TaskConfigError as err:
        raise TaskConfigError(
            f"adapter method 'ca_mtl' cannot reach the self-attention of this backbone: {err}"
        ) from err


def _check_sliding_window(backbone_config: Any, options: CaMtlConfig) -> None:
    """M places each token by its position in the row, which a decoder reads from the keys its KV cache holds; a
    sliding window (Mistral) drops the oldest keys once a row is longer than the window."""
    window = getattr(backbone_config, "sliding_window", None)
    if window and window < options.max_seq_length:
        raise TaskConfigError(
            f"adapter method 'ca_mtl' on this {backbone_config.model_type} backbone: its attention keeps a sliding "
            f"window of {window} positions, shorter than the max_seq_length={options.max_seq_length} the conditional "
            f"attention bias covers; past the window the KV cache no longer holds the positions that place a token "
            f"in the bias's blocks. Fix: set adapter_config max_seq_length to at most {window} (a multiple of "
            f"num_blocks), or use a backbone without a sliding window."
        )


def _positions(mask: torch.Tensor | None, query_length: int, key_length: int, causal: bool,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's and key's position in its row, (B|1, Lq) and (B|1, Lk), for the block structure of M.

    Encoders pad on the right, so a key's index is its position. A decoder may see left padding (generation)
    and a KV cache (the queries are the last Lq keys): a key's position counts the real keys before it, a real
    key being one some query attends to, so a row's tokens get the same positions padded or alone.
    """
    if not causal or mask is None:
        keys = torch.arange(key_length, device=device).unsqueeze(0)
    else:
        seen = mask[:, 0, :, :key_length]  # (B, Lq, Lk)
        seen = seen if seen.dtype == torch.bool else seen > torch.finfo(seen.dtype).min / 2
        keys = (seen.any(dim=1).long().cumsum(dim=-1) - 1).clamp(min=0)
    return keys[:, key_length - query_length:], keys


def _check_attention_reachable(backbone: nn.Module) -> None:
    """CA-MTL adds M(z) to the attention logits through transformers' attention interface, which
    works with eager and SDPA attention; flash and flex kernels take no additive bias."""
    implementation = getattr(backbone.config, "_attn_implementation", None)
    if implementation not in REACHABLE_ATTENTION:
        raise TaskConfigError(
            f"adapter method 'ca_mtl' adds a task-conditioned bias to the attention logits, which the "
            f"{implementation!r} attention implementation of this {backbone.config.model_type} backbone cannot take. "
            f"Fix: load the backbone with attn_implementation='sdpa' (or 'eager')."
        )
