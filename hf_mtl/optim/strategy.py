"""What every optimization strategy (loss weighting, gradient surgery) shares: a name chosen in the
recipe, validated options, a registry that lists the valid names, and a JSON `state_dict`.

Task schedulers follow the same pattern in `hf_mtl.data.samplers` (`TaskScheduler`, `register_scheduler`).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Generic, TypeVar

from ..errors import TaskConfigError


class Strategy:
    """Base of the loss weightings and gradient surgeries.

    Subclasses set `name` (the recipe string) and `option_defaults` (option -> default); `kind` is the
    recipe field that chooses the family (`loss_weighting`, `gradient_surgery`), used in messages.
    """

    kind: ClassVar[str] = "strategy"
    name: ClassVar[str]
    option_defaults: ClassVar[dict[str, Any]] = {}

    def _check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Fill defaults (None = not given), reject unknown options, then let the subclass check values."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            valid = ", ".join(sorted(self.option_defaults)) or "none"
            raise TaskConfigError(
                f"Invalid option(s) {unknown} for {self.kind} {self.name!r} (field `{self.kind}_options`): "
                f"its options are: {valid}."
            )
        merged = {k: options[k] if options.get(k) is not None else d for k, d in self.option_defaults.items()}
        return self.validate_options(merged)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Check option values (override in subclasses with options).

        Args:
            options: every option, defaults filled in.

        Returns:
            The options to keep in `self.options`.
        """
        return options

    def _option_error(self, option: str, value: Any, expected: str) -> TaskConfigError:
        return TaskConfigError(
            f"Invalid {self.kind}_options.{option} {value!r} for {self.kind} {self.name!r}: it must be {expected}."
        )

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state; strategies that learn add their learned values.

        Returns:
            `{"name", "options"}` plus the subclass's fields.
        """
        return {"name": self.name, "options": dict(self.options)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`: a different strategy is an error, different options only warn.

        Args:
            state: what `state_dict()` returned, possibly through JSON.
        """
        if not isinstance(state, dict) or "name" not in state:
            raise TaskConfigError(f"Invalid {self.kind} state {state!r}: expected the dict of `state_dict()`.")
        if state["name"] != self.name:
            raise TaskConfigError(
                f"{self.kind} state mismatch in field 'name': the checkpoint was trained with {self.kind} "
                f"{state['name']!r}, this run uses {self.name!r}. Fix: resume with the checkpoint's {self.kind}."
            )
        if state.get("options", self.options) != self.options:
            warnings.warn(
                f"{self.kind} {self.name!r}: options {state['options']} in the checkpoint differ from this run's "
                f"{self.options}; the resumed run continues with this run's options.",
                stacklevel=2,
            )


S = TypeVar("S", bound=Strategy)


class Registry(Generic[S]):
    """Name -> strategy class for one family; unknown names fail with the list of valid ones.

    Args:
        field: the recipe field that chooses a member (e.g. `loss_weighting`).
    """

    def __init__(self, field: str):
        self.field = field
        self.classes: dict[str, type[S]] = {}

    def register(self, cls: type[S]) -> type[S]:
        """Class decorator: make `cls` selectable by `cls.name`."""
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__name__} must define a class attribute `name` (the {self.field} string).")
        if name in self.classes and self.classes[name] is not cls:
            raise TypeError(f"{self.field} {name!r} is already registered by {self.classes[name].__name__}.")
        self.classes[name] = cls
        return cls

    def get(self, name: Any) -> type[S]:
        """The class registered under `name` (case and '-' vs '_' do not matter)."""
        key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
        if key not in self.classes:
            raise TaskConfigError(f"Unknown {self.field} {name!r}. Fix: use one of {self.names()}.")
        return self.classes[key]

    def names(self) -> list[str]:
        return sorted(self.classes)

    def __contains__(self, name: object) -> bool:
        return name in self.classes
