"""`GradientSurgery`: one update direction from the per-task gradients of the shared parameters.

The trainer gives the surgery a (M, P) matrix G, row t = ∇_θ λ_t L_t restricted to the parameters
shared between tasks (the backbone when it is trained, an adapter method's shared parts such as a
hypernetwork); task-specific parameters (heads, per-task adapters) keep their own gradients. With
`granularity: "parameter"` the operation runs on each shared tensor separately (GradVac's layer-wise
variant), otherwise on the whole shared vector.

Random task orders are drawn from `default_rng([seed, step, i])`: identical on every rank, and a
resumed run continues with the same orders, with no RNG state to save.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import torch

from ...registry import Registry
from ..strategy import Strategy


NO_SURGERY = "none"  # the recipe value that turns surgery off
GRANULARITIES = ("all", "parameter")


class GradientSurgery(Strategy, abc.ABC):
    """Base class. Subclasses implement `combine_block`.

    Args:
        num_tasks: M.
        seed: the run's seed (task orders).
        options: the surgery's options (`gradient_surgery_options`).
    """

    kind: ClassVar[str] = "gradient_surgery"
    options_field: ClassVar[str] = "gradient_surgery_options"
    option_defaults: ClassVar[dict[str, Any]] = {"granularity": "all"}

    def __init__(self, num_tasks: int, seed: int = 0, **options: Any):
        self.num_tasks = num_tasks
        self.seed = seed
        self.options = self._check_options(options)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["granularity"] not in GRANULARITIES:
            raise self._option_error("granularity", options["granularity"], f"one of {list(GRANULARITIES)}")
        return options

    def combine(self, grads: torch.Tensor, step: int, block_sizes: list[int]) -> torch.Tensor:
        """The update direction of the shared parameters.

        Args:
            grads: (M, P) per-task gradients (already weighted by λ_t) of the shared parameters.
            step: the optimizer step (0-based), for the random task orders.
            block_sizes: the numel of each shared tensor, in the column order of `grads`.

        Returns:
            (P,) the combined gradient.
        """
        if self.options["granularity"] == "all":
            return self.combine_block(grads, step, 0)
        pieces = torch.split(grads, block_sizes, dim=1)
        return torch.cat([self.combine_block(piece, step, b) for b, piece in enumerate(pieces)])

    def combine_block(self, grads: torch.Tensor, step: int, block: int) -> torch.Tensor:
        """(P_b,) the block's combined gradient: Σ_i of the operated per-task gradients."""
        return self.project(grads, step, block).sum(dim=0).to(grads.dtype)

    @abc.abstractmethod
    def project(self, grads: torch.Tensor, step: int, block: int) -> torch.Tensor:
        """The operated per-task gradients g_i' of one block of columns.

        Args:
            grads: (M, P_b) per-task gradients of the block.
            step: the optimizer step.
            block: the block's index (for per-block state).

        Returns:
            (M, P_b) float32.
        """

    def task_order(self, step: int, i: int) -> list[int]:
        """The other tasks j ≠ i in the random order used for task i at `step`."""
        others = np.array([j for j in range(self.num_tasks) if j != i])
        return np.random.default_rng([self.seed, step, i]).permutation(others).tolist()


GRADIENT_SURGERIES: Registry[type[GradientSurgery]] = Registry("gradient_surgery", base=GradientSurgery,
                                                             off=NO_SURGERY)


def register_surgery(cls: type[GradientSurgery]) -> type[GradientSurgery]:
    """Class decorator adding a surgery to `GRADIENT_SURGERIES` under `cls.name`."""
    return GRADIENT_SURGERIES.register(cls)


def build_gradient_surgery(name: str, num_tasks: int, seed: int = 0,
                           options: dict[str, Any] | None = None) -> GradientSurgery:
    """Build the surgery registered under `name` (see `GRADIENT_SURGERIES`)."""
    return GRADIENT_SURGERIES.get(name)(num_tasks, seed, **(options or {}))
