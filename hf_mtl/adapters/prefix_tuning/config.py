"""Options of the `prefix_tuning` method (names as in PEFT's `PrefixTuningConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ...errors import TaskConfigError


@dataclass(frozen=True)
class PrefixTuningOptions:
    """`adapter_config` of `prefix_tuning`.

    Attributes:
        num_virtual_tokens: P, the number of key/value prefix vectors per layer. Default 20, the middle of
            the lengths P-Tuning v2 (Liu et al., 2022) uses for NLU tasks; Li & Liang (2021) use 10 for
            table-to-text and 200 for summarization. (PEFT has no default.)
        prefix_projection: reparameterize the prefixes through an MLP (Li & Liang, 2021, §4.3: training
            the prefixes directly is unstable): P' (P × H) -> Linear(H, E) -> tanh -> Linear(E, 2·L·H).
            Default False, as in PEFT.
        encoder_hidden_size: E, the MLP's hidden size. Default 512 (Li & Liang's value for table-to-text).
    """

    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int = 512

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PrefixTuningOptions:
        """Validate `adapter_config`: unknown keys and bad values raise errors naming the field and the fix."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise TaskConfigError(
                f"adapter_config: unknown option(s) {unknown} for adapter_method 'prefix_tuning'. Valid options: {valid}. "
                f"Fix: rename or remove them."
            )
        options = cls(**config)
        for name in ("num_virtual_tokens", "encoder_hidden_size"):
            value = getattr(options, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TaskConfigError(f"adapter_config.{name} must be a positive integer, got {value!r}. Fix: e.g. {getattr(cls, name)}.")
        if not isinstance(options.prefix_projection, bool):
            raise TaskConfigError(
                f"adapter_config.prefix_projection must be true or false, got {options.prefix_projection!r}."
            )
        return options
