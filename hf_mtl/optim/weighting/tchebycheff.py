"""Tchebycheff weighting.

Mao, Yun, Liu & Yin (2020), "Tchebycheff Procedure for Multi-task Text Classification", ACL. The loss is
the weighted Tchebycheff (min-max) scalarization of the task losses,

    W = max_t λ_t L_t,   λ_t = 1 / (l_t · Σ_i 1/l_i)

where l_t is a running estimate of task t's loss (an exponential moving average of its step losses,
rate `beta`; λ_t = 1/M before the first step). Each step trains the task that lags most relative to its
usual loss level; ties go to the first task. Comparing tasks needs every task in every step, so it
requires `sampling_strategy: all_tasks`; the max is not a sum, so under gradient accumulation or DDP
the trainer keeps per-task gradients and takes the max on the losses of the whole step.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import LossWeighting, Progress, register_weighting


@register_weighting
class TchebycheffWeighting(LossWeighting):
    """Option `beta` (default 0.9): l_t <- β l_t + (1 − β) L_t after each step (the first step sets l_t)."""

    name = "tchebycheff"
    option_defaults = {"beta": 0.9}
    linear = False
    needs_all_tasks = True
    uses_step_losses = True

    def __init__(self, tasks: Any, sizes: Any, **options: Any):
        super().__init__(tasks, sizes, **options)
        self.running: list[float | None] = [None] * len(self.task_names)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        beta = options["beta"]
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise self._option_error("beta", beta, "a number in [0, 1)")
        return {"beta": float(beta)}

    def weights(self, progress: Progress) -> dict[str, float]:
        if any(level is None or level <= 0 or not math.isfinite(level) for level in self.running):
            return {name: 1.0 / len(self.task_names) for name in self.task_names}
        inverse_sum = sum(1.0 / level for level in self.running)
        return {name: 1.0 / (level * inverse_sum) for name, level in zip(self.task_names, self.running)}

    def combine(self, task_losses: dict[str, torch.Tensor], progress: Progress) -> torch.Tensor:
        weights = self.weights(progress)
        terms = [weights[name] * loss for name, loss in task_losses.items()]
        worst = int(torch.stack([t.detach().float() for t in terms]).argmax())  # first maximum on ties
        return terms[worst]

    def update(self, step_losses: dict[str, float], progress: Progress) -> None:
        beta = self.options["beta"]
        for i, name in enumerate(self.task_names):
            if name in step_losses:
                old = self.running[i]
                self.running[i] = step_losses[name] if old is None else beta * old + (1 - beta) * step_losses[name]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "running": list(self.running)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.running = [None if x is None else float(x) for x in state["running"]]
