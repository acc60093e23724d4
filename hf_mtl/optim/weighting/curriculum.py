"""Curriculum weighting: task weights that switch on over training.

- Sigmoid schedule (Nishino et al., 2019, "Keeping Consistency of Sentence Generation and Document
  Classification with Multi-Task Learning", EMNLP): for a task listed in `midpoints`,

      λ_t(e) = λ_t^const / (1 + exp((e'_t − e) / α))

  with e the training progress (fractional epochs, or optimizer steps with `unit: "step"`), e'_t the
  task's midpoint and α the slope, in the same unit. λ_t^const is the task's `loss_weight`.
- Linear ramp (as BAM!'s teacher annealing, Clark et al., 2019): for a task listed in `linear`,
  λ_t = λ_t^const · step / max_steps, rising from 0 to λ_t^const over the run.
- Every other task keeps λ_t = λ_t^const.
"""

from __future__ import annotations

import math
from typing import Any

from .base import LossWeighting, Progress, register_weighting


@register_weighting
class CurriculumWeighting(LossWeighting):
    """Options: `midpoints` ({task: e'_t}), `alpha` (α > 0, default 1.0), `linear` ([task, ...]),
    `unit` ("epoch" default, or "step")."""

    name = "curriculum"
    option_defaults = {"midpoints": {}, "alpha": 1.0, "linear": [], "unit": "epoch"}

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        midpoints, linear = options["midpoints"], options["linear"]
        if not isinstance(midpoints, dict):
            raise self._option_error("midpoints", midpoints, "an object {task: midpoint}")
        self._check_task_names("midpoints", midpoints)
        for name, value in midpoints.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise self._option_error(f"midpoints.{name}", value, "a finite number (in `unit`s)")
        self._check_task_names("linear", linear)
        both = sorted(set(midpoints) & set(linear))
        if both:
            raise self._option_error("linear", linear, f"disjoint from `midpoints` (both name {both})")
        alpha = options["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0 or not math.isfinite(alpha):
            raise self._option_error("alpha", alpha, "a finite number > 0")
        if options["unit"] not in ("epoch", "step"):
            raise self._option_error("unit", options["unit"], 'one of ["epoch", "step"]')
        if not midpoints and not linear:
            raise self._option_error("midpoints", midpoints, "non-empty, or `linear` non-empty (else use `static`)")
        return {"midpoints": {k: float(v) for k, v in midpoints.items()}, "alpha": float(alpha),
                "linear": list(linear), "unit": options["unit"]}

    def weights(self, progress: Progress) -> dict[str, float]:
        e = progress.epoch if self.options["unit"] == "epoch" else float(progress.step)
        ramp = min(1.0, progress.step / max(1, progress.max_steps))
        out = {}
        for name, task in self.tasks.items():
            scale = 1.0
            if name in self.options["midpoints"]:
                z = (self.options["midpoints"][name] - e) / self.options["alpha"]
                scale = 1.0 / (1.0 + math.exp(z)) if z < 700 else 0.0  # exp overflows past ~709
            elif name in self.options["linear"]:
                scale = ramp
            out[name] = float(task.loss_weight) * scale
        return out
