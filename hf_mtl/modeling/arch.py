"""Architecture specs: where a model keeps its layers, attention, feed-forward blocks and norms.

Adapter methods attach through these paths (forward hooks and small inserted modules), never
through copied `forward` code or `__class__` swaps. Supporting one more family is a new entry in
`ARCH_SPECS` (encoders) or `GENERATIVE_SPECS` (decoder-only and encoder-decoder LMs), data only.

Paths of `ArchSpec` are dotted attribute paths: `embeddings`, `word_embeddings`, `layers` and
`final_layer_norm` from the model's root, the others from one layer module (e.g. `encoder.layer.3` +
`attention.self.query`). The root of an encoder spec is the `AutoModel` backbone; the root of a
generative spec is the model *with its LM head* (`AutoModelForCausalLM` / `AutoModelForSeq2SeqLM`),
so every path reads like the checkpoint's keys (`model.layers.0.self_attn.q_proj`).

One `ArchSpec` describes one stack of layers. An encoder or a decoder-only LM has one stack; an
encoder-decoder has two (`GenerativeSpec.stacks`: encoder, then decoder), each with its own paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import TaskConfigError


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of one stack of layers (an encoder, or a decoder) of one family live.

    Attributes:
        embeddings: the embedding module (its output is the first layer's input).
        word_embeddings: the token embedding table.
        layers: the `ModuleList` of transformer layers.
        attention: the self-attention module that computes softmax(QKᵀ/√d)V.
        query, key, value: the attention's input projections (H -> H).
        attention_output: the module whose output is the attention branch just before
            the residual add and layer norm (adapters after attention hook here).
        attention_layer_norm: the attention sub-block's layer norm. Post-LN (`post_layer_norm`): the norm
            of LN(f + x) that follows the attention residual. Pre-LN: the norm that reads the block's
            input x and feeds the attention, x + f(LN(x)) (Llama's `input_layernorm`, GPT-2's `ln_1`).
        ffn_input: the feed-forward's first projection (H -> I); the "up" projection of a gated FFN.
        ffn_output: the module whose output is the feed-forward branch just before the residual
            add (and, post-LN, the layer norm): adapters after the feed-forward hook here.
        ffn_layer_norm: the feed-forward sub-block's layer norm: post-LN, the norm that closes the layer;
            pre-LN, the norm on the feed-forward's input.
        num_heads_attr, hidden_size_attr, num_layers_attr: config attribute names.
        post_layer_norm: True when the layer norms follow the residual (BERT, DistilBERT, BART);
            False for pre-LN stacks (Llama, GPT-2, T5), whose residual stream is normalised only by
            `final_layer_norm` at the end of the stack.
        stack: `encoder` or `decoder` (the stack's role; decoders attend causally and use a KV cache).
        final_layer_norm: pre-LN stacks: the norm after the last layer (a path from the root).
        ffn_gate: gated feed-forward blocks (Llama's SwiGLU, T5 v1.1's gated GELU): the projection that goes
            through the activation and multiplies `ffn_input`'s output.
        fused_qkv: `query`, `key` and `value` name one fused projection (H -> 3H, GPT-2's `c_attn`):
            a method that adapts only some of q/k/v must split its output.
        conv1d: the projections are transformers' `Conv1D` (GPT-2), whose weight is stored (in, out):
            PEFT's LoRA needs `fan_in_fan_out=True` there and module types differ from `nn.Linear`.
        cross_attention, cross_query, cross_key, cross_value, cross_attention_output,
            cross_attention_layer_norm: a decoder stack of an encoder-decoder: its attention over the
            encoder's output (queries from the decoder, keys and values from the encoder), with the same
            meaning as the self-attention's fields. None elsewhere.
        relative_attention_bias: T5: the learned position bias, held by the *first* layer's self-attention
            (a path from that layer) and reused by every other layer of the stack; it is added to
            unscaled logits (T5 has no 1/sqrt(d) scaling), so an added bias must not assume scaling.
        num_kv_heads_attr: config attribute of the key/value heads (grouped-query attention: Llama's
            `num_key_value_heads`); None: as many as the query heads.
        head_dim_attr: config attribute of the per-head size (T5's `d_kv`, where heads x d_kv may differ
            from the hidden size); None or unset in the config: hidden size / heads.
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
    stack: str = "encoder"
    final_layer_norm: str | None = None
    ffn_gate: str | None = None
    fused_qkv: bool = False
    conv1d: bool = False
    cross_attention: str | None = None
    cross_query: str | None = None
    cross_key: str | None = None
    cross_value: str | None = None
    cross_attention_output: str | None = None
    cross_attention_layer_norm: str | None = None
    relative_attention_bias: str | None = None
    num_kv_heads_attr: str | None = None
    head_dim_attr: str | None = None


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



@dataclass(frozen=True)
class GenerativeSpec:
    """Where the parts of one generative family live: its stacks and its LM head.

    Attributes:
        decoder: the decoder stack (a decoder-only LM's only stack).
        encoder: an encoder-decoder's encoder stack; None for decoder-only LMs.
        lm_head: the output projection to the vocabulary (a path from the root). The LM head is the
            backbone's own and stays frozen: per task there is only the adapter.
    """

    decoder: ArchSpec
    encoder: ArchSpec | None = None
    lm_head: str = "lm_head"

    @property
    def is_encoder_decoder(self) -> bool:
        return self.encoder is not None

    @property
    def stacks(self) -> tuple[ArchSpec, ...]:
        """Every stack, encoder first: what a method that adapts "every layer" walks."""
        return (self.decoder,) if self.encoder is None else (self.encoder, self.decoder)


# Llama, Mistral, Qwen2 and SmolLM2 (a Llama): pre-RMSNorm decoder layers, separate q/k/v projections
# (grouped-query attention: fewer key/value heads), rotary positions inside the attention, SwiGLU MLP.
# The branches are the sub-block modules' outputs (`self_attn` returns (output, weights)), not
# `o_proj`/`down_proj`, which LoRA may wrap.
_LLAMA_LIKE = GenerativeSpec(decoder=ArchSpec(
    embeddings="model.embed_tokens",
    word_embeddings="model.embed_tokens",
    layers="model.layers",
    attention="self_attn",
    query="self_attn.q_proj",
    key="self_attn.k_proj",
    value="self_attn.v_proj",
    attention_output="self_attn",
    attention_layer_norm="input_layernorm",
    ffn_input="mlp.up_proj",
    ffn_gate="mlp.gate_proj",
    ffn_output="mlp",
    ffn_layer_norm="post_attention_layernorm",
    post_layer_norm=False,
    stack="decoder",
    final_layer_norm="model.norm",
    num_kv_heads_attr="num_key_value_heads",
    head_dim_attr="head_dim",
))

# GPT-2: pre-LN blocks; one fused Conv1D projection for q, k and v (`c_attn`, H -> 3H), Conv1D everywhere
# (LoRA targets `c_attn` with fan_in_fan_out=True, as PEFT's own default for gpt2); learned absolute
# positions added before `transformer.drop`, whose output is the first block's input.
_GPT2 = GenerativeSpec(decoder=ArchSpec(
    embeddings="transformer.drop",
    word_embeddings="transformer.wte",
    layers="transformer.h",
    attention="attn",
    query="attn.c_attn",
    key="attn.c_attn",
    value="attn.c_attn",
    attention_output="attn",
    attention_layer_norm="ln_1",
    ffn_input="mlp.c_fc",
    ffn_output="mlp",
    ffn_layer_norm="ln_2",
    num_heads_attr="n_head",
    hidden_size_attr="n_embd",
    num_layers_attr="n_layer",
    post_layer_norm=False,
    stack="decoder",
    final_layer_norm="transformer.ln_f",
    fused_qkv=True,
    conv1d=True,
))


def _cross_attention(attention: str, query: str, key: str, value: str, layer_norm: str) -> dict[str, str]:
    """The cross-attention fields of a decoder stack: the attention module (its output is the branch),
    its projections (names inside it) and its layer norm."""
    return {"cross_attention": attention, "cross_query": f"{attention}.{query}", "cross_key": f"{attention}.{key}",
            "cross_value": f"{attention}.{value}", "cross_attention_output": attention,
            "cross_attention_layer_norm": layer_norm}


def _t5_stack(stack: str, gated: bool) -> ArchSpec:
    """One T5 stack. A T5 block is a list of sub-layers: self-attention (0), the decoder's cross-attention
    (1), feed-forward (last), each pre-RMSNorm: x + dropout(f(LN(x))). `DenseReluDense` is `wi -> act -> wo`,
    or with a gated activation (T5 v1.1, mT5, Flan-T5) `act(wi_0) * wi_1 -> wo`."""
    ffn = "layer.2" if stack == "decoder" else "layer.1"
    cross = stack == "decoder"
    return ArchSpec(
        embeddings=f"{stack}.embed_tokens",
        word_embeddings="shared",
        layers=f"{stack}.block",
        attention="layer.0.SelfAttention",
        query="layer.0.SelfAttention.q",
        key="layer.0.SelfAttention.k",
        value="layer.0.SelfAttention.v",
        attention_output="layer.0.SelfAttention",
        attention_layer_norm="layer.0.layer_norm",
        ffn_input=f"{ffn}.DenseReluDense.wi_1" if gated else f"{ffn}.DenseReluDense.wi",
        ffn_gate=f"{ffn}.DenseReluDense.wi_0" if gated else None,
        ffn_output=f"{ffn}.DenseReluDense",
        ffn_layer_norm=f"{ffn}.layer_norm",
        num_heads_attr="num_heads",
        hidden_size_attr="d_model",
        num_layers_attr="num_decoder_layers" if stack == "decoder" else "num_layers",
        post_layer_norm=False,
        stack=stack,
        final_layer_norm=f"{stack}.final_layer_norm",
        **(_cross_attention("layer.1.EncDecAttention", "q", "k", "v", "layer.1.layer_norm") if cross else {}),
        relative_attention_bias="layer.0.SelfAttention.relative_attention_bias",
        head_dim_attr="d_kv",
    )


_T5 = GenerativeSpec(encoder=_t5_stack("encoder", gated=False), decoder=_t5_stack("decoder", gated=False))
_T5_GATED = GenerativeSpec(encoder=_t5_stack("encoder", gated=True), decoder=_t5_stack("decoder", gated=True))


def _bart_stack(stack: str) -> ArchSpec:
    """One BART stack: post-LN layers like BERT's, LN(x + f(x)); the FFN has no module of its own
    (`fc1 -> act -> fc2`), so its branch is `fc2`'s output (resolve it after LoRA wraps `fc2`)."""
    cross = stack == "decoder"
    return ArchSpec(
        embeddings=f"model.{stack}.layernorm_embedding",
        word_embeddings="model.shared",
        layers=f"model.{stack}.layers",
        attention="self_attn",
        query="self_attn.q_proj",
        key="self_attn.k_proj",
        value="self_attn.v_proj",
        attention_output="self_attn",
        attention_layer_norm="self_attn_layer_norm",
        ffn_input="fc1",
        ffn_output="fc2",
        ffn_layer_norm="final_layer_norm",
        num_heads_attr=f"{stack}_attention_heads",
        hidden_size_attr="d_model",
        num_layers_attr=f"{stack}_layers",
        stack=stack,
        **(_cross_attention("encoder_attn", "q_proj", "k_proj", "v_proj", "encoder_attn_layer_norm") if cross else {}),
    )


_BART = GenerativeSpec(encoder=_bart_stack("encoder"), decoder=_bart_stack("decoder"))

# model_type -> spec of a generative family (with its LM head); `_GATED_FFN_SPECS` replaces the entry when
# the config's feed-forward is gated (`config.is_gated_act`: T5 v1.1, Flan-T5, mT5's default).
GENERATIVE_SPECS: dict[str, GenerativeSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gpt2": _GPT2,
    "t5": _T5,
    "mt5": _T5,
    "bart": _BART,
}
_GATED_FFN_SPECS: dict[str, GenerativeSpec] = {"t5": _T5_GATED, "mt5": _T5_GATED}


def get_generative_spec(config: Any) -> GenerativeSpec:
    """The spec of a generative backbone's config; a clear error for families without one."""
    model_type = getattr(config, "model_type", None)
    if model_type not in GENERATIVE_SPECS:
        raise TaskConfigError(
            f"Model type {model_type!r} has no generative architecture spec, so adapter methods cannot find its "
            f"layers. Supported: {sorted(GENERATIVE_SPECS)}. Fix: add a GenerativeSpec entry for {model_type!r} to "
            f"hf_mtl.modeling.arch.GENERATIVE_SPECS (data only), or use adapter_method='none'."
        )
    if getattr(config, "is_gated_act", False) and model_type in _GATED_FFN_SPECS:
        return _GATED_FFN_SPECS[model_type]
    return GENERATIVE_SPECS[model_type]


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


def head_dim(config: Any, spec: ArchSpec) -> int:
    """The per-head size of the attention (T5's `d_kv`; else hidden size / heads)."""
    value = getattr(config, spec.head_dim_attr, None) if spec.head_dim_attr else None
    return int(value) if value else config_value(config, spec, "hidden_size") // config_value(config, spec, "num_heads")


def num_kv_heads(config: Any, spec: ArchSpec) -> int:
    """Key/value heads: fewer than the query heads under grouped-query attention (SmolLM2: 3 of 9)."""
    value = getattr(config, spec.num_kv_heads_attr, None) if spec.num_kv_heads_attr else None
    return int(value) if value else config_value(config, spec, "num_heads")


SUB_BLOCKS = ("attention", "cross_attention", "ffn")


def residual_reader(spec: ArchSpec, position: str) -> str:
    """The first module of a layer that reads a sub-block's input x (the residual stream): a forward
    pre-hook there captures x. Post-LN: the block's first projection (query, cross query, ffn_input);
    pre-LN: the block's layer norm, which reads x before anything else does.

    Args:
        spec: one stack's spec.
        position: `attention`, `cross_attention` (decoder stacks of encoder-decoders) or `ffn`.
    """
    if position not in SUB_BLOCKS:
        raise TaskConfigError(f"Unknown sub-block {position!r}. Fix: use one of {list(SUB_BLOCKS)}.")
    first = {"attention": spec.query, "cross_attention": spec.cross_query, "ffn": spec.ffn_input}[position]
    path = first if spec.post_layer_norm else getattr(spec, f"{position}_layer_norm")
    if path is None:
        raise TaskConfigError(f"This {spec.stack} stack has no {position} sub-block (only decoders of "
                              f"encoder-decoder models have cross-attention). Fix: adapt `attention` or `ffn`.")
    return path
