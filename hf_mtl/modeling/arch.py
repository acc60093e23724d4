"""Architecture specs: where an encoder keeps its layers, attention, feed-forward blocks and norms.

Adapter methods attach through these paths (forward hooks and small inserted modules), never
through copied `forward` code or `__class__` swaps. Supporting one more encoder family is a new
entry in `ARCH_SPECS`, data only.

Paths of `ArchSpec` are dotted attribute paths: `layers` from the backbone, the others from one
layer module (e.g. `encoder.layer.3` + `attention.self.query`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import TaskConfigError


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of one encoder family live.

    Attributes:
        embeddings: the embedding module (its output is the first layer's input).
        word_embeddings: the token embedding table.
        layers: the `ModuleList` of transformer layers.
        attention: the self-attention module that computes softmax(QKᵀ/√d)V.
        query, key, value: the attention's input projections (H -> H).
        attention_output: the module whose output is the attention branch just before
            the residual add and layer norm (adapters after attention hook here).
        attention_layer_norm: the layer norm that follows the attention residual.
        ffn_input: the feed-forward's first projection (H -> I).
        ffn_output: the module whose output is the feed-forward branch just before the residual
            add and layer norm (adapters after the feed-forward hook here).
        ffn_layer_norm: the layer norm that closes the layer.
        num_heads_attr, hidden_size_attr, num_layers_attr: config attribute names.
        post_layer_norm: True when the layer norms follow the residual (BERT, DistilBERT).
    """

    embeddings: str
    word_embeddings: str
    layers: str
    attention: str
    query: str
    key: str
    value: str
    attention_output: str
    attention_layer_norm: str
    ffn_input: str
    ffn_output: str
    ffn_layer_norm: str
    num_heads_attr: str = "num_attention_heads"
    hidden_size_attr: str = "hidden_size"
    num_layers_attr: str = "num_hidden_layers"
    post_layer_norm: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


_BERT_LIKE = ArchSpec(
    embeddings="embeddings",
    word_embeddings="embeddings.word_embeddings",
    layers="encoder.layer",
    attention="attention.self",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attention_output="attention.output.dropout",
    attention_layer_norm="attention.output.LayerNorm",
    ffn_input="intermediate.dense",
    ffn_output="output.dropout",
    ffn_layer_norm="output.LayerNorm",
)

_DISTILBERT = ArchSpec(
    embeddings="embeddings",
    word_embeddings="embeddings.word_embeddings",
    layers="transformer.layer",
    attention="attention",
    query="attention.q_lin",
    key="attention.k_lin",
    value="attention.v_lin",
    attention_output="attention.out_lin",
    attention_layer_norm="sa_layer_norm",
    ffn_input="ffn.lin1",
    ffn_output="ffn",
    ffn_layer_norm="output_layer_norm",
    num_heads_attr="n_heads",
    hidden_size_attr="dim",
    num_layers_attr="n_layers",
)

# model_type (config.model_type) -> spec
ARCH_SPECS: dict[str, ArchSpec] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "distilbert": _DISTILBERT,
}


def get_spec(config: Any) -> ArchSpec:
    """The spec of a backbone config; a clear error for families without one."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCH_SPECS:
        raise TaskConfigError(
            f"Model type {model_type!r} has no architecture spec, so adapter methods cannot find its layers. "
            f"Supported: {sorted(ARCH_SPECS)}. Fix: add an ArchSpec entry for {model_type!r} to "
            f"hf_mtl.modeling.arch.ARCH_SPECS (data only), or use adapter_method='none'."
        )
    return ARCH_SPECS[model_type]


def resolve(root: nn.Module, path: str) -> nn.Module:
    """`root.a.b.0.c` for the path "a.b.0.c", with an error naming the missing part."""
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise TaskConfigError(
                f"Architecture spec path {path!r} does not exist on {type(root).__name__} (missing {part!r}). "
                f"Fix: correct the ArchSpec entry for this model type."
            )
        module = getattr(module, part)
    return module


def layers_of(backbone: nn.Module, spec: ArchSpec) -> list[nn.Module]:
    return list(resolve(backbone, spec.layers))


def config_value(config: Any, spec: ArchSpec, what: str) -> int:
    """hidden size, number of heads or number of layers, whatever the config calls it."""
    return int(getattr(config, getattr(spec, f"{what}_attr")))
