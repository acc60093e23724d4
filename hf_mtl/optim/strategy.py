"""What every optimization strategy (loss weighting, gradient surgery, task scheduler) shares: a name
chosen in the recipe, validated options and a JSON `state_dict`; each family's names live in an
`hf_mtl.registry.Registry`.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from ..errors import TaskConfigError


REQUIRED = object()  # an `option_defaults` value: the option has no default


class Strategy:
    """Base of the loss weightings, gradient surgeries and task schedulers.

    Subclasses set `name` (the recipe string) and `option_defaults` (option -> default, or `REQUIRED`);
    `kind` is the recipe field that chooses the family (`loss_weighting`, `gradient_surgery`,
    `sampling_strategy`) and `options_field` the one that holds the options, both used in messages.
    """

    kind: ClassVar[str] = "strategy"
    options_field: ClassVar[str] = "strategy_options"
    name: ClassVar[str]
    option_defaults: ClassVar[dict[str, Any]] = {}

    def _check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Fill defaults (None = not given), reject unknown or missing options, then let the subclass check values."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            valid = ", ".join(sorted(self.option_defaults)) or "none"
            raise TaskConfigError(
                f"Invalid option(s) {unknown} for {self.kind} {self.name!r} (field `{self.options_field}`): "
                f"its options are: {valid}."
            )
        # None means "not given", so a recipe may carry every field of every strategy.
        merged = {k: options[k] if options.get(k) is not None else d for k, d in self.option_defaults.items()}
        missing = sorted(k for k, v in merged.items() if v is REQUIRED)
        if missing:
            raise TaskConfigError(
                f"{self.kind} {self.name!r} requires the option(s) {missing} (field `{self.options_field}`); none given."
            )
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
            f"Invalid {self.options_field}.{option} {value!r} for {self.kind} {self.name!r}: it must be {expected}."
        )

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state; strategies that learn add their learned values.

        Returns:
            `{"name", "options"}` plus the subclass's fields.
        """
        return {"name": self.name, "options": dict(self.options)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`: a different strategy is an error, different options only warn (the
        run's options win, e.g. a resumed run that trains more epochs).

        Args:
            state: what `state_dict()` returned, possibly through JSON.
        """
        self.check_state(state)
        if state.get("options", self.options) != self.options:
            warnings.warn(
                f"{self.kind} {self.name!r}: options {state['options']} in the checkpoint differ from this run's "
                f"{self.options}; the resumed run continues with this run's options.",
                stacklevel=2,
            )

    def check_state(self, state: Any) -> None:
        """Raise `TaskConfigError` naming the field when this run cannot resume from `state`."""
        if not isinstance(state, dict) or "name" not in state:
            raise TaskConfigError(f"Invalid {self.kind} state {state!r}: expected the dict of `state_dict()`.")
        if state["name"] != self.name:
            raise TaskConfigError(
                f"{self.kind} state mismatch in field 'name': the checkpoint was trained with {self.kind} "
                f"{state['name']!r}, this run uses {self.name!r}. Fix: resume with the checkpoint's {self.kind}."
            )
