"""Homoscedastic-uncertainty weighting.

Kendall, Gal & Cipolla (2018), "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry
and Semantics", CVPR. Each task has a learned observation noise σ_t; with s_t = log σ_t,

    W = Σ_t L_t / (2 σ_t²) + log σ_t = Σ_t ½ exp(-2 s_t) L_t + s_t

so a noisy task is down-weighted, and the log σ_t term keeps σ from growing without bound. s_t is
optimized with the model (its own optimizer parameter group, no weight decay); λ_t = ½ exp(-2 s_t).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import LossWeighting, Progress, register_weighting


@register_weighting
class UncertaintyWeighting(LossWeighting):
    """Learned log σ_t per task. Option `init_log_sigma` (default 0.0: σ = 1, λ = ½)."""

    name = "uncertainty"
    option_defaults = {"init_log_sigma": 0.0}

    def __init__(self, tasks: Any, sizes: Any, **options: Any):
        super().__init__(tasks, sizes, **options)
        self.log_sigma = nn.Parameter(torch.full((len(self.task_names),), self.options["init_log_sigma"]))  # (M,)
        self._index = {name: i for i, name in enumerate(self.task_names)}

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        value = options["init_log_sigma"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._option_error("init_log_sigma", value, "a finite number")
        return {"init_log_sigma": float(value)}

    def weights(self, progress: Progress) -> dict[str, float]:
        lam = 0.5 * torch.exp(-2.0 * self.log_sigma.detach())
        return dict(zip(self.task_names, lam.tolist()))

    def combine(self, task_losses: dict[str, torch.Tensor], progress: Progress) -> torch.Tensor:
        total = None
        for name, loss in task_losses.items():
            s = self.log_sigma[self._index[name]]
            term = 0.5 * torch.exp(-2.0 * s) * loss + s
            total = term if total is None else total + term
        return total

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_sigma]

    def state_dict(self) -> dict[str, Any]:
        # float32 -> Python float -> JSON -> float32 is exact, so a resumed run continues bit for bit.
        return {**super().state_dict(), "log_sigma": self.log_sigma.detach().cpu().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        values = state.get("log_sigma")
        if not isinstance(values, list) or len(values) != len(self.task_names):
            raise self._option_error("log_sigma (checkpoint state)", values, f"a list of {len(self.task_names)} numbers")
        with torch.no_grad():
            self.log_sigma.copy_(torch.tensor(values, dtype=self.log_sigma.dtype))
