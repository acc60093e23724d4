"""Options of the `bottleneck` method, with each variant's defaults (AdapterHub's configs).

| variant | where | reduction_factor | non_linearity | scaling | paper |
| --- | --- | --- | --- | --- | --- |
| `pfeiffer` (default) | after the feed-forward block, input LN(f + x) | 16 | relu | 1.0 | Pfeiffer et al. 2020 (AdapterFusion) |
| `houlsby` | after self-attention and after the feed-forward block | 16 | swish | 1.0 | Houlsby et al. 2019 |
| `parallel` | beside the feed-forward block, input x | 2 | relu | 4.0 | He et al. 2022 |

The defaults are AdapterHub's `SeqBnConfig`, `DoubleSeqBnConfig` and `ParBnConfig`. Houlsby's
`swish` is AdapterHub's choice too; set `non_linearity` to change it. Generative LMs get adapters in every
layer of every stack (T5/BART: encoder and decoder); a decoder's cross-attention gets none, as AdapterHub's
`cross_adapter=False`. In pre-LN layers (Llama, GPT-2, T5) `pfeiffer`'s input is f + x (no norm follows the
residual there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import TaskConfigError


VARIANTS = ("pfeiffer", "houlsby", "parallel")
INITS = ("identity", "bert", "houlsby")

# name -> f with f(0) = 0 (a zero-weight adapter slot then adds exactly nothing)
NON_LINEARITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "swish": F.silu,
    "silu": F.silu,
    "tanh": torch.tanh,
}

VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "pfeiffer": {"reduction_factor": 16, "non_linearity": "relu", "scaling": 1.0},
    "houlsby": {"reduction_factor": 16, "non_linearity": "swish", "scaling": 1.0},
    "parallel": {"reduction_factor": 2, "non_linearity": "relu", "scaling": 4.0},
}


@dataclass(frozen=True)
class BottleneckConfig:
    """The parsed `adapter_config` of the `bottleneck` method.

    Attributes:
        variant: `pfeiffer`, `houlsby` or `parallel` (see the module docstring).
        reduction_factor: bottleneck size r = H // reduction_factor (at least 1).
        non_linearity: `relu`, `gelu`, `swish` (= `silu`) or `tanh`.
        residual_before_ln: `pfeiffer` only: the adapter's residual is the block's output f (True,
            AdapterHub's default) or the layer-normed LN(f + x) that is also the adapter's input (False).
        scaling: the adapter's output is multiplied by this number (He et al. 2022 use 4.0 for `parallel`).
        init: `identity` (down: Kaiming-uniform, up: zeros, biases zero; an untrained adapter is the
            identity, as He et al.'s `mam_adapter` init), `bert` (both N(0, 0.02), AdapterHub's default)
            or `houlsby` (both truncated N(0, 1e-2): close to the identity, Houlsby et al. 2019).
        ln_before: a per-task LayerNorm on the adapter's input.
        ln_after: a per-task LayerNorm on the adapter's output, before its residual add.
    """

    variant: str = "pfeiffer"
    reduction_factor: float = 16
    non_linearity: str = "relu"
    residual_before_ln: bool = True
    scaling: float = 1.0
    init: str = "identity"
    ln_before: bool = False
    ln_after: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any] | None, method: str = "bottleneck") -> BottleneckConfig:
        """Validate `adapter_config` and fill the variant's defaults.

        Args:
            options: the recipe's `adapter_config` (unknown keys are refused).
            method: the method's name, for error messages.

        Returns:
            The complete configuration.
        """
        options = dict(options or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TaskConfigError(
                f"adapter_config of method {method!r}: unknown option(s) {unknown}. Fix: use only {valid}."
            )
        variant = options.get("variant", "pfeiffer")
        if variant not in VARIANTS:
            raise TaskConfigError(
                f"adapter_config of method {method!r}: `variant` is {variant!r}. Fix: use one of {list(VARIANTS)}."
            )
        config = cls(**{**VARIANT_DEFAULTS[variant], **options})
        config.check(method)
        return config

    def check(self, method: str = "bottleneck") -> None:
        where = f"adapter_config of method {method!r}"
        check_reduction_factor(self.reduction_factor, "reduction_factor", where)
        check_choice(self.non_linearity, "non_linearity", list(NON_LINEARITIES), where)
        check_choice(self.init, "init", list(INITS), where)
        for name in ("residual_before_ln", "ln_before", "ln_after"):
            if not isinstance(getattr(self, name), bool):
                raise TaskConfigError(f"{where}: `{name}` must be true or false, got {getattr(self, name)!r}. "
                                      f"Fix: write true or false (JSON booleans, not strings).")
        if isinstance(self.scaling, bool) or not isinstance(self.scaling, (int, float)):
            raise TaskConfigError(f"{where}: `scaling` must be a number, got {self.scaling!r}. Fix: e.g. 1.0 or 4.0.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def positions(self) -> tuple[str, ...]:
        """Where adapters sit in each layer: `attention` (self-attention) and/or `ffn`."""
        return ("attention", "ffn") if self.variant == "houlsby" else ("ffn",)


def bottleneck_size(hidden_size: int, reduction_factor: float) -> int:
    """r = H // reduction_factor, at least 1 (as AdapterHub)."""
    return max(1, int(hidden_size // reduction_factor))


def check_reduction_factor(value: Any, name: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise TaskConfigError(f"{where}: `{name}` must be a number > 0, got {value!r}. Fix: e.g. 16 (r = H // 16).")


def check_choice(value: Any, name: str, choices: list[str], where: str) -> None:
    if value not in choices:
        raise TaskConfigError(f"{where}: `{name}` is {value!r}. Fix: use one of {choices}.")
