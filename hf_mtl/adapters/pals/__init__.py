"""PALs: projected attention layers per task (Stickland & Murray, 2019)."""

from .config import PalsConfig
from .model import PalsMethod


__all__ = ["PalsConfig", "PalsMethod"]
