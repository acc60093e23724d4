"""Loss weightings, chosen by `loss_weighting` in the recipe (one file each)."""

from . import curriculum, dwa, fixed, tchebycheff, uncertainty  # noqa: F401  (register the built-ins)
from .base import LOSS_WEIGHTINGS, LossWeighting, Progress, build_loss_weighting, register_weighting


__all__ = ["LOSS_WEIGHTINGS", "LossWeighting", "Progress", "build_loss_weighting", "register_weighting"]
