"""Adapter methods: one folder per method, all behind one registry (`ADAPTER_METHODS`).

`ADAPTER_METHODS` lists every method by name (`METHOD_MODULES`, in `base.py`) and imports a method's
module the first time its name is looked up.
"""

from __future__ import annotations

from .base import ADAPTER_METHODS, METHOD_MODULES, AdapterMethod, build_adapter_method, register_method
from .routing import RoutedCall, Routing


def load_builtin_methods() -> None:
    """Import every built-in method's module (to inspect all the classes at once, e.g. in tests)."""
    ADAPTER_METHODS.load_all()


__all__ = [
    "ADAPTER_METHODS",
    "METHOD_MODULES",
    "AdapterMethod",
    "RoutedCall",
    "Routing",
    "build_adapter_method",
    "load_builtin_methods",
    "register_method",
]
