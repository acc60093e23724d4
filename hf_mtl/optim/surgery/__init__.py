"""Gradient surgeries, chosen by `gradient_surgery` in the recipe (one file each)."""

from . import gradvac, pcgrad  # noqa: F401  (register the built-ins)
from .base import GRADIENT_SURGERIES, NO_SURGERY, GradientSurgery, build_gradient_surgery, register_surgery


__all__ = ["GRADIENT_SURGERIES", "NO_SURGERY", "GradientSurgery", "build_gradient_surgery", "register_surgery"]
