"""GradVac: gradient vaccine.

Wang, Tsvetkov, Firat & Cao (2021), "Gradient Vaccine: Investigating and Improving Multi-task
Optimization in Massively Multilingual Models", ICLR. PCGrad only acts when two gradients conflict
(cos < 0); GradVac pulls every pair towards a target similarity φ̂_ij, an exponential moving average of
the cosines observed so far. For each task i, with g_i' starting at g_i and the other tasks j in a
random order, φ_ij = cos(g_i', g_j):

    if φ_ij < φ̂_ij:  g_i' <- g_i' + ||g_i'|| (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (||g_j|| √(1−φ̂_ij²)) · g_j
    φ̂_ij <- (1 − β) φ̂_ij + β φ_ij

and the update is Σ_i g_i'. With φ̂ = 0 the step is exactly PCGrad's projection; φ̂ starts at 0, and
`beta: 0` keeps it there (GradVac = PCGrad). φ̂ (one M x M matrix per block) is the saved state.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import GradientSurgery, register_surgery


@register_surgery
class GradVac(GradientSurgery):
    """Options: `beta` (EMA rate of the targets, default 0.01 as in the paper), `granularity`."""

    name = "gradvac"
    option_defaults = {"beta": 0.01, "granularity": "all"}

    def __init__(self, num_tasks: int, seed: int = 0, **options: Any):
        super().__init__(num_tasks, seed, **options)
        self.targets: dict[int, torch.Tensor] = {}  # block -> (M, M) φ̂, float64

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        options = super().validate_options(options)
        beta = options["beta"]
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
            raise self._option_error("beta", beta, "a number in [0, 1]")
        return {**options, "beta": float(beta)}

    def project(self, grads: torch.Tensor, step: int, block: int) -> torch.Tensor:
        m = grads.shape[0]
        target = self.targets.setdefault(block, torch.zeros(m, m, dtype=torch.float64))
        g = grads.float()  # (M, P)
        projected = g.clone()
        norms = g.norm(dim=1)  # (M,)
        beta = self.options["beta"]
        for i in range(m):
            for j in self.task_order(step, i):
                norm_i = projected[i].norm()
                if norm_i == 0 or norms[j] == 0:
                    continue  # no direction to compare
                phi = float(projected[i] @ g[j] / (norm_i * norms[j]))
                phi_hat = float(target[i, j])
                if phi < phi_hat:
                    root_hat = math.sqrt(max(1.0 - phi_hat**2, 1e-12))
                    coeff = norm_i * (phi_hat * math.sqrt(max(1.0 - phi**2, 0.0)) - phi * root_hat) / (norms[j] * root_hat)
                    projected[i] += coeff * g[j]
                target[i, j] = (1 - beta) * phi_hat + beta * phi
        return projected

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "targets": {str(b): t.tolist() for b, t in sorted(self.targets.items())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        targets = state.get("targets", {})
        if not isinstance(targets, dict):
            raise self._option_error("targets (checkpoint state)", targets, "an object {block: M x M matrix}")
        self.targets = {int(b): torch.tensor(t, dtype=torch.float64) for b, t in targets.items()}
        for b, t in self.targets.items():
            if t.shape != (self.num_tasks, self.num_tasks):
                raise self._option_error(f"targets.{b} (checkpoint state)", list(t.shape),
                                         f"a {self.num_tasks} x {self.num_tasks} matrix (the run's task count)")
