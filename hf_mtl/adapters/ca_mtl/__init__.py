"""CA-MTL: task-conditioned attention, layer norms, bottleneck and alignment (Pilault et al., 2021)."""

from .config import CaMtlConfig
from .model import CaMtlMethod


__all__ = ["CaMtlConfig", "CaMtlMethod"]
