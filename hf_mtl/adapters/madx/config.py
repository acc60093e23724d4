"""Options of the `madx` method (MAD-X, Pfeiffer et al. 2020), with the paper's defaults."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ...errors import TaskConfigError
from ..bottleneck.config import INITS, NON_LINEARITIES, check_choice, check_reduction_factor


_LANGUAGE_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class MadXConfig:
    """The parsed `adapter_config` of the `madx` method.

    Attributes:
        languages: the language codes that get a language adapter (e.g. ["en", "pt"]); the first is
            the language of tasks that name none. A code becomes the folder `languages/<code>/`.
        language_reduction_factor: language adapters' bottleneck r = H // 2 (the paper's 2).
        task_reduction_factor: task adapters' bottleneck r = H // 16 (the paper's 16).
        invertible: add an invertible adapter (NICE coupling block) per language on the embeddings.
        invertible_reduction_factor: the coupling block's subnetworks map H/2 -> H/2 // 2 -> H/2.
        train_language_adapters: language tasks (`masked_lm`, or on a generative LM a task with an empty
            `prompt_template`: plain LM loss on its text) train the language adapter (and invertible
            adapter) of their language; other tasks never do.
        non_linearity: `relu` (the paper's), `gelu`, `swish`/`silu` or `tanh`.
        init: `identity` (up-projections zero: an untrained adapter is the identity), `bert` or `houlsby`.
    """

    languages: list[str] = field(default_factory=list)
    language_reduction_factor: float = 2
    task_reduction_factor: float = 16
    invertible: bool = True
    invertible_reduction_factor: float = 2
    train_language_adapters: bool = True
    non_linearity: str = "relu"
    init: str = "identity"

    @classmethod
    def from_options(cls, options: dict[str, Any] | None, method: str = "madx") -> MadXConfig:
        """Validate `adapter_config` (unknown keys are refused) and fill the defaults."""
        options = dict(options or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TaskConfigError(f"adapter_config of method {method!r}: unknown option(s) {unknown}. Fix: use only {valid}.")
        config = cls(**options)
        config.check(f"adapter_config of method {method!r}")
        return config

    def check(self, where: str) -> None:
        languages = self.languages
        if not isinstance(languages, (list, tuple)) or not languages:
            raise TaskConfigError(
                f"{where}: `languages` must list the language codes that get a language adapter, got {languages!r}. "
                f"Fix: e.g. \"languages\": [\"en\", \"pt\"] (the first is the default language)."
            )
        for code in languages:
            if not isinstance(code, str) or not _LANGUAGE_RE.match(code) or code in ("shared", "languages"):
                raise TaskConfigError(
                    f"{where}: language code {code!r} in `languages` is not usable as a folder name. "
                    f"Fix: use letters, digits, '_' or '-' (e.g. 'pt' or 'pt-BR')."
                )
        if len(set(languages)) != len(languages):
            raise TaskConfigError(f"{where}: `languages` has duplicates: {list(languages)}. Fix: list each code once.")
        for name in ("language_reduction_factor", "task_reduction_factor", "invertible_reduction_factor"):
            check_reduction_factor(getattr(self, name), name, where)
        for name in ("invertible", "train_language_adapters"):
            if not isinstance(getattr(self, name), bool):
                raise TaskConfigError(f"{where}: `{name}` must be true or false, got {getattr(self, name)!r}. "
                                      f"Fix: write true or false (JSON booleans, not strings).")
        check_choice(self.non_linearity, "non_linearity", list(NON_LINEARITIES), where)
        check_choice(self.init, "init", list(INITS), where)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "languages": list(self.languages)}
