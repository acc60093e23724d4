"""The generative backbone: a decoder-only or encoder-decoder LM loaded with its own LM head.

Generative tasks (`causal_lm`, `seq2seq`) train per-task adapters on the backbone and use its LM head
as it is, so the backbone is built with `AutoModelForCausalLM` / `AutoModelForSeq2SeqLM` rather than
the bare `AutoModel` of encoder tasks. Which kinds a backbone can serve follows from its layout:

    encoder          BERT family: classification, regression, token_classification, masked_lm
    decoder-only     Llama, Qwen2, Mistral, SmolLM2, GPT-2: causal_lm
    encoder-decoder  T5, mT5, BART: seq2seq
"""

from __future__ import annotations

from typing import Any

from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from ..errors import TaskConfigError
from .backbone import resolve_model_path


# task kind -> the backbone layout it needs
GENERATIVE_KINDS = {"causal_lm": "decoder-only", "seq2seq": "encoder-decoder"}
ENCODER, DECODER_ONLY, ENCODER_DECODER = "encoder", "decoder-only", "encoder-decoder"


def backbone_layout(config: PretrainedConfig) -> str:
    """`encoder-decoder`, `decoder-only` or `encoder`, from the config alone (no weights are read).

    BERT-like encoders also have a `*ForCausalLM` class (BERT as a decoder), so "has a causal LM class"
    is not enough: a decoder-only family is one with a causal LM class and no masked-LM class.
    """
    if getattr(config, "is_encoder_decoder", False):
        return ENCODER_DECODER
    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return DECODER_ONLY
    return ENCODER


def check_backbone_kind(config: PretrainedConfig, kind: str, task: str) -> None:
    """Refuse a task whose kind the backbone cannot serve (a generative kind on an encoder, an encoder kind
    on an LM, `causal_lm` on an encoder-decoder, `seq2seq` on a decoder-only LM).

    Args:
        config: the backbone's config.
        kind: the task's `kind`.
        task: the task's name (named in the error).

    Raises:
        TaskConfigError: naming the task, its `kind`, the backbone's layout and the fix.
    """
    need = GENERATIVE_KINDS.get(kind, ENCODER)
    have = backbone_layout(config)
    if need == have:
        return
    model = f"the backbone ({getattr(config, 'model_type', None)!r}, {getattr(config, 'name_or_path', '') or 'from a config'})"
    where = f"task {task!r}: kind={kind!r} needs a backbone of layout {need!r}, but {model} has layout {have!r}"
    if have == ENCODER:
        fix = ("Fix: set model_name_or_path to a decoder-only LM (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) for "
               "kind 'causal_lm' or an encoder-decoder (T5, BART) for kind 'seq2seq', or give the task an encoder "
               "kind (classification, regression, token_classification, masked_lm).")
    elif need == ENCODER:
        generative = next(k for k, v in GENERATIVE_KINDS.items() if v == have)
        fix = (f"Fix: set the task's kind to {generative!r} (a classification task becomes generation with "
               f"label_column + label_words), or use an encoder backbone (BERT family) for kind {kind!r}.")
    else:
        generative = next(k for k, v in GENERATIVE_KINDS.items() if v == have)
        fix = f"Fix: set the task's kind to {generative!r}, which this backbone generates with."
    raise TaskConfigError(f"{where}. {fix}")


def build_generative_backbone(config: PretrainedConfig, kind: str, task: str, name_or_path: str | None = None,
                              **kwargs: Any) -> tuple[PreTrainedModel, bool]:
    """The LM with its head for a generative task: random weights from `config`, or pretrained ones.

    Args:
        config: the backbone's config (e.g. from `load_backbone_config`, with the recipe's dropout).
        kind: the task's kind, `causal_lm` or `seq2seq`; checked against the config before any weight is read.
        task: the task's name (named in errors).
        name_or_path: a Hub id or folder to load weights from (a packaged id such as
            HuggingFaceTB/SmolLM2-135M-Instruct resolves to its offline copy); None: random weights.
        kwargs: passed to `from_pretrained` / `from_config` (e.g. `dtype`).

    Returns:
        The model (`*ForCausalLM` or `*ForConditionalGeneration`), and whether it is an encoder-decoder.
    """
    check_backbone_kind(config, kind, task)
    return build_lm(config, name_or_path, **kwargs), backbone_layout(config) == ENCODER_DECODER


def build_lm(config: PretrainedConfig, name_or_path: str | None = None, trust_remote_code: bool = False,
             **kwargs: Any) -> PreTrainedModel:
    """`AutoModelForCausalLM` / `AutoModelForSeq2SeqLM` of a decoder-only / encoder-decoder config: random weights,
    or pretrained ones from `name_or_path` (safetensors only: a pickled checkpoint is never unpickled)."""
    auto = AutoModelForSeq2SeqLM if backbone_layout(config) == ENCODER_DECODER else AutoModelForCausalLM
    if name_or_path is None:
        return auto.from_config(config, trust_remote_code=trust_remote_code, **kwargs)
    return auto.from_pretrained(resolve_model_path(name_or_path), config=config, trust_remote_code=trust_remote_code,
                                use_safetensors=True, **kwargs)
