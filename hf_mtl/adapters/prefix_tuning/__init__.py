"""`prefix_tuning`: key/value prefixes per task and layer, injected through the attention interface."""

from .config import PrefixTuningOptions
from .model import PrefixTuningMethod


__all__ = ["PrefixTuningMethod", "PrefixTuningOptions"]
