"""Options of the `lora` method: every field of PEFT's `LoraConfig`, plus hf_mtl's language adapters.

`adapter_config` of a recipe is split in two:

- hf_mtl's own keys (`LORA_OPTIONS`): `language_adapters`, `languages`, `language_lora`;
- everything else goes to `peft.LoraConfig` unchanged (r, lora_alpha, lora_dropout, target_modules,
  use_dora, use_rslora, init_lora_weights, rank_pattern, alpha_pattern, lora_bias, ...).

A few `LoraConfig` fields clash with a multi-task store (one frozen base, per-task heads) and are
refused with the reason (`UNSUPPORTED`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from peft import LoraConfig

from ...errors import TaskConfigError
from ...modeling.arch import ArchSpec


# hf_mtl's own options of the method, with their defaults.
LORA_OPTIONS: dict[str, Any] = {
    "language_adapters": False,  # one LoRA adapter per language, stacked under each task's adapter
    "languages": [],  # languages that get an adapter besides those named by the tasks
    "language_lora": {},  # LoraConfig fields that differ for language adapters (e.g. a larger r)
}

# LoraConfig fields hf_mtl sets itself or cannot honour, with the reason.
UNSUPPORTED: dict[str, str] = {
    "modules_to_save": "each task's head is an hf_mtl module saved with the task; a shared backbone module cannot be copied per task",
    "trainable_token_indices": "it trains rows of the shared embedding matrix, which every task uses",
    "layer_replication": "it duplicates backbone layers that every task shares",
    "task_type": "hf_mtl's heads replace PEFT's task models",
    "inference_mode": "hf_mtl freezes and unfreezes the adapters itself",
    "peft_type": "it is always LORA",
    "base_model_name_or_path": "hf_mtl writes the store's base model",
    "revision": "hf_mtl writes the store's base model revision",
    "runtime_config": "it is not saved with the adapter",
}

# Types of the scalar LoraConfig fields (PEFT checks few of them before a layer is built).
SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "r": (int,), "lora_alpha": (int, float), "lora_dropout": (int, float), "use_dora": (bool,),
    "use_rslora": (bool,), "lora_bias": (bool,), "fan_in_fan_out": (bool,),
}

# init_lora_weights values that leave the shared base weights untouched and need no data.
SAFE_INITS = (True, False, "gaussian", "orthogonal")


@dataclass
class LoraOptions:
    """The parsed `adapter_config` of the `lora` method.

    Attributes:
        lora: keyword arguments of `peft.LoraConfig` for task adapters.
        language_adapters: add one LoRA adapter per language.
        languages: languages that get an adapter in addition to the tasks' `language` fields.
        language_lora: `LoraConfig` overrides for language adapters.
    """

    lora: dict[str, Any] = field(default_factory=dict)
    language_adapters: bool = False
    languages: list[str] = field(default_factory=list)
    language_lora: dict[str, Any] = field(default_factory=dict)


def lora_config_fields() -> list[str]:
    """The fields of `peft.LoraConfig` a recipe may set."""
    return sorted(f.name for f in dataclasses.fields(LoraConfig) if f.name not in UNSUPPORTED)


def default_target_modules(stacks: Sequence[ArchSpec]) -> list[str]:
    """The attention's query and value projections of every stack (Hu et al., 2021, adapt W_q and W_v), the
    cross-attention's too in an encoder-decoder's decoder: what PEFT's own defaults match for T5 (`["q", "v"]`)
    and BART (`["q_proj", "v_proj"]`), so a task trained here is the adapter PEFT would have trained. A fused
    projection (GPT-2's `c_attn` holds q, k and v) is named once."""
    paths = [p for s in stacks for p in (s.query, s.value, s.cross_query, s.cross_value) if p is not None]
    return list(dict.fromkeys(paths))


def parse_lora_options(config: dict[str, Any], stacks: Sequence[ArchSpec]) -> LoraOptions:
    """Split and validate `adapter_config` (unknown keys -> an error listing the valid ones).

    Args:
        config: the method's `adapter_config`.
        stacks: the backbone's architecture specs, one per stack (an encoder's or a decoder-only LM's one,
            an encoder-decoder's encoder and decoder): they give the default `target_modules`
            (`default_target_modules`), and `fan_in_fan_out` defaults to True where the projections are
            transformers' `Conv1D` (GPT-2 stores their weights (in, out); PEFT's own gpt2 default).

    Returns:
        The parsed options; `lora` always holds `target_modules`.
    """
    valid = lora_config_fields()
    lora = {k: v for k, v in config.items() if k not in LORA_OPTIONS}
    _check_fields(lora, valid, "adapter_config")
    lora.setdefault("target_modules", default_target_modules(stacks))
    if any(s.conv1d for s in stacks):
        lora.setdefault("fan_in_fan_out", True)
    options = LoraOptions(
        lora=lora,
        language_adapters=bool(config.get("language_adapters", False)),
        languages=list(config.get("languages") or []),
        language_lora=dict(config.get("language_lora") or {}),
    )
    _check_fields(options.language_lora, valid, "adapter_config.language_lora")
    if options.languages and not options.language_adapters:
        raise TaskConfigError(
            f"adapter_config.languages={options.languages} is set but language_adapters is false. "
            f"Fix: set adapter_config.language_adapters=true, or remove `languages`."
        )
    return options


def _check_fields(options: dict[str, Any], valid: list[str], where: str) -> None:
    for key in options:
        if key in UNSUPPORTED:
            raise TaskConfigError(f"{where}.{key} is not supported by hf_mtl's `lora` method: {UNSUPPORTED[key]}. Fix: remove it.")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TaskConfigError(
            f"{where}: unknown option(s) {unknown} for adapter_method 'lora'. Valid options: hf_mtl's "
            f"{sorted(LORA_OPTIONS)} and peft.LoraConfig's {valid}. Fix: rename or remove them."
        )
    for key, types in SCALAR_TYPES.items():
        value = options.get(key)
        wrong_bool = isinstance(value, bool) and bool not in types
        if value is not None and (not isinstance(value, types) or wrong_bool):
            raise TaskConfigError(
                f"{where}.{key} must be of type {'/'.join(t.__name__ for t in types)}, got {value!r}. Fix: correct its value."
            )
    init = options.get("init_lora_weights", True)
    if init not in SAFE_INITS:
        raise TaskConfigError(
            f"{where}.init_lora_weights={init!r} is not supported by hf_mtl: PiSSA/OLoRA/CorDA/LoftQ/LoRA-GA rewrite the "
            f"shared base weights, EVA needs data at creation and MiCA freezes part of the adapter. "
            f"Fix: use one of {list(SAFE_INITS)}."
        )


def build_lora_config(kwargs: dict[str, Any], owner: str) -> LoraConfig:
    """`LoraConfig(**kwargs)` with PEFT's own validation errors turned into errors that name the owner.

    Args:
        kwargs: `LoraConfig` fields.
        owner: who the adapter is for (`task 'sst2'`, `language 'de'`), for error messages.
    """
    try:
        return LoraConfig(**kwargs)
    except (TypeError, ValueError) as err:
        raise TaskConfigError(f"{owner}: adapter_config is not a valid peft.LoraConfig ({err}). Fix: correct that option.") from err
