"""PCGrad: projecting conflicting gradients.

Yu, Kumar, Gupta, Levine, Hausman & Finn (2020), "Gradient Surgery for Multi-Task Learning", NeurIPS.
For each task i, with g_i' starting at g_i and the other tasks j in a random order:

    if g_i' · g_j < 0:   g_i' <- g_i' − (g_i' · g_j / ||g_j||²) g_j

(g_i' is projected onto the normal plane of each conflicting original g_j), and the update is Σ_i g_i'.
With two tasks, g_1'·g_2 ≥ 0 and g_2'·g_1 ≥ 0 afterwards; with more, the last projection of each g_i'
removes its conflict with that task.
"""

from __future__ import annotations

import torch

from .base import GradientSurgery, register_surgery


@register_surgery
class PCGrad(GradientSurgery):
    """No options besides `granularity`; nothing learned (the state is the name and options)."""

    name = "pcgrad"

    def project(self, grads: torch.Tensor, step: int, block: int) -> torch.Tensor:
        g = grads.float()  # (M, P)
        projected = g.clone()
        norms = (g * g).sum(dim=1)  # (M,)
        for i in range(g.shape[0]):
            for j in self.task_order(step, i):
                dot = projected[i] @ g[j]
                if dot < 0:
                    projected[i] -= (dot / norms[j]) * g[j]
        return projected
