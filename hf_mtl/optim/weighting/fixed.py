"""Fixed weightings: λ_t does not change during training.

- `equal`:  λ_t = 1/M.
- `static`: λ_t = the task's `loss_weight` (default 1; the library's default weighting).
- `size`:   λ_t = (1/|D_t|) / Σ_i 1/|D_i|, so small datasets weigh as much in total as large ones
            under examples-proportional sampling.
"""

from __future__ import annotations

from .base import LossWeighting, Progress, register_weighting


@register_weighting
class EqualWeighting(LossWeighting):
    """λ_t = 1/M for the M tasks of the run."""

    name = "equal"

    def weights(self, progress: Progress) -> dict[str, float]:
        return {name: 1.0 / len(self.task_names) for name in self.task_names}


@register_weighting
class StaticWeighting(LossWeighting):
    """λ_t = `Task.loss_weight`."""

    name = "static"

    def weights(self, progress: Progress) -> dict[str, float]:
        return {name: float(task.loss_weight) for name, task in self.tasks.items()}


@register_weighting
class SizeWeighting(LossWeighting):
    """λ_t ∝ 1/|D_t|, normalized to sum to 1."""

    name = "size"

    def weights(self, progress: Progress) -> dict[str, float]:
        # tasks without training data (an evaluation-only trainer) are never combined: λ = 0
        inverse = {name: 1.0 / self.sizes[name] if self.sizes.get(name) else 0.0 for name in self.task_names}
        total = sum(inverse.values()) or 1.0
        return {name: value / total for name, value in inverse.items()}
