"""Adapter methods: one folder per method, all behind one registry (`ADAPTER_METHODS`)."""

from __future__ import annotations

import importlib

from .base import ADAPTER_METHODS, AdapterMethod, build_adapter_method, register_method
from .routing import RoutedCall, Routing

# Modules that register a method when imported; a method's folder adds itself here.
BUILTIN_METHOD_MODULES: list[str] = [
    "hf_mtl.adapters.pals",
    "hf_mtl.adapters.hyperformer",
    "hf_mtl.adapters.ca_mtl",
    "hf_mtl.adapters.bottleneck",
    "hf_mtl.adapters.madx",
    "hf_mtl.adapters.lora",
    "hf_mtl.adapters.prefix_tuning",
]


def load_builtin_methods() -> None:
    for module in BUILTIN_METHOD_MODULES:
        importlib.import_module(module)


__all__ = ["ADAPTER_METHODS", "AdapterMethod", "RoutedCall", "Routing", "build_adapter_method", "register_method"]
