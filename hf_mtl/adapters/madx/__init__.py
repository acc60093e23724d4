"""MAD-X: language adapters, task adapters and invertible adapters: `adapter_method: "madx"`."""

from .config import MadXConfig
from .invertible import InvertibleAdapter
from .model import MadXMethod


__all__ = ["InvertibleAdapter", "MadXConfig", "MadXMethod"]
