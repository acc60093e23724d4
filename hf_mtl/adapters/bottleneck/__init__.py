"""Bottleneck adapters (Houlsby, Pfeiffer, parallel): `adapter_method: "bottleneck"`."""

from .config import BottleneckConfig
from .layer import BottleneckAdapter, routed_adapter
from .model import BottleneckMethod


__all__ = ["BottleneckAdapter", "BottleneckConfig", "BottleneckMethod", "routed_adapter"]
