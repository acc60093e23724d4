"""`Registry`: the one name -> class table type behind every choice a recipe makes by name.

Adapter methods (`adapter_method`), task schedulers (`sampling_strategy`), loss weightings
(`loss_weighting`) and gradient surgeries (`gradient_surgery`) are each one `Registry`. Names are
compared after one normalization (`normalize_name`: surrounding spaces dropped, lower case, '-' as '_'),
so `"Round-Robin"`, `"PCGrad"` and `"DWA"` are accepted everywhere or nowhere, and an unknown name fails
with one message that lists the valid ones. A registry may name, per member, the module that registers
it: the module is imported on first use, so listing the names imports nothing.

Names are data, never code: only the modules of the registry's own literal table are ever imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import TaskConfigError


T = TypeVar("T", bound=type)


def normalize_name(name: Any) -> Any:
    """The registry key of a name: stripped, lower case, '-' replaced by '_' (non-strings unchanged)."""
    return name.strip().lower().replace("-", "_") if isinstance(name, str) else name


class Registry(Generic[T]):
    """Name -> class for one recipe field; members register with the class decorator `register`.

    Args:
        field: the recipe field that chooses a member (e.g. `sampling_strategy`), used in messages.
        base: the class every member must subclass (checked at registration), or None.
        modules: {name: module} of the members registered by importing a module (imported on first use).
        off: a name the field accepts that builds nothing (e.g. `"none"` for `gradient_surgery`), or None.
    """

    def __init__(self, field: str, *, base: type | None = None, modules: Mapping[str, str] | None = None,
                 off: str | None = None) -> None:
        self.field = field
        self.base = base
        self.modules = {normalize_name(k): v for k, v in (modules or {}).items()}
        self.off = off
        self.classes: dict[str, T] = {}

    # -- registration

    def register(self, cls: T) -> T:
        """Class decorator: make `cls` selectable by its class attribute `name`.

        Returns:
            `cls`, unchanged.
        """
        if self.base is not None and not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"The {self.field} registry expects a {self.base.__name__} subclass, got {cls!r}.")
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not name or normalize_name(name) != name:
            raise TypeError(
                f"{cls.__name__} must define a class attribute `name` (the {self.field} string, lower case, '_' not '-')."
            )
        if name in self.classes and self.classes[name] is not cls:
            raise TypeError(f"{self.field} {name!r} is already registered by {self.classes[name].__name__}.")
        self.classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove a member registered at run time (tests, plugins)."""
        del self.classes[normalize_name(name)]

    # -- look-up

    def names(self) -> list[str]:
        """The names of the members, sorted (lazy ones included, without importing them)."""
        return sorted({*self.classes, *self.modules})

    def resolve(self, name: Any) -> str:
        """The registry key of `name` as a recipe gives it (the `off` name included).

        Raises:
            TaskConfigError: `name` is not a member, with the list of valid names.
        """
        key = normalize_name(name)
        if self.off is not None and key == self.off:
            return key
        if key not in self.classes and key not in self.modules:
            raise self._unknown(name, ([self.off] if self.off is not None else []) + self.names())
        return key

    def get(self, name: Any) -> T:
        """The class registered under `name`, importing its module on first use.

        Raises:
            TaskConfigError: `name` is not a member (the `off` name is not one), with the list of valid names.
        """
        key = normalize_name(name)
        if key not in self.classes and key in self.modules:
            importlib.import_module(self.modules[key])
            if key not in self.classes:  # a wrong table entry is a bug of the library, not of the recipe
                raise RuntimeError(f"Module {self.modules[key]} did not register {self.field} {key!r}.")
        if key not in self.classes:
            raise self._unknown(name, self.names())
        return self.classes[key]

    def load_all(self) -> None:
        """Import every member's module (e.g. to inspect the classes of all of them)."""
        for name in self.modules:
            self.get(name)

    def _unknown(self, name: Any, valid: list[str]) -> TaskConfigError:
        return TaskConfigError(f"Unknown {self.field} {name!r}. Fix: use one of {valid}.")

    # -- mapping protocol (name -> class)

    def __getitem__(self, name: Any) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        key = normalize_name(name)
        return key in self.classes or key in self.modules

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.field!r}, names={self.names()})"
