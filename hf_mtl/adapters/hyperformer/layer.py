"""Hypernetworks that generate adapters from a task embedding, and the generated adapter itself.

Karimi Mahabadi et al. (2021), section 2:

    I_τ = h(z_τ)                                     task projector: Linear → ReLU → Linear
    D_τ = W^D I_τ,  U_τ = W^U I_τ                     adapter weights (+ biases) generated per task
    γ_τ = L^γ I_τ,  β_τ = L^β I_τ                     the adapter's layer norm, generated per task
    A_τ(x) = LN_τ(U_τ(act(D_τ x))) + x               the adapter (after attention and after the FFN)

Hyperformer++ feeds the projector [z_τ; l_i; p_j] (task, layer-id and position embeddings) and
normalizes its output with a LayerNorm, so one hypernetwork serves every layer and position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..per_row import BatchTasks, row_linear


class TaskProjector(nn.Module):
    """h(·): the MLP from a task (+ layer + position) embedding to the hypernetworks' input I_τ.

    Args:
        in_dim: t' (Hyperformer) or 3·t' (Hyperformer++).
        hidden_dim: the MLP's hidden width.
        out_dim: t.
        layer_norm: normalize the output (Hyperformer++, as the reference's `unique_hyper_net_layer_norm`).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layer_norm: bool = False):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.layer_norm = nn.LayerNorm(out_dim, eps=1e-6) if layer_norm else None

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(T, in_dim) -> (T, out_dim)."""
        out = self.mlp(embeddings)
        return self.layer_norm(out) if self.layer_norm is not None else out


@dataclass
class GeneratedAdapter:
    """Adapter weights generated for the T tasks of a batch (or gathered per row: leading dim B)."""

    down_weight: torch.Tensor  # (T, m, H)
    down_bias: torch.Tensor  # (T, m)
    up_weight: torch.Tensor  # (T, H, m)
    up_bias: torch.Tensor  # (T, H)
    ln_weight: torch.Tensor  # (T, H)
    ln_bias: torch.Tensor  # (T, H)

    def per_row(self, batch: BatchTasks) -> "GeneratedAdapter":
        return GeneratedAdapter(*(batch.per_row(t) for t in vars(self).values()))


class AdapterHyperNet(nn.Module):
    """Generates one adapter (down, up, layer norm) from I_τ.

    Args:
        embedding_dim: t, the size of I_τ.
        hidden_size: H.
        bottleneck: m.
        init_std: std of the normal init of the generators' weights; their biases start at zero.

    Parameters: t·(2·H·m + m + 3·H) + (2·H·m + m + 3·H): one linear map from I_τ to every generated
    number (the down and up matrices, their biases, the layer norm's γ and β).
    """

    def __init__(self, embedding_dim: int, hidden_size: int, bottleneck: int, init_std: float = 1e-2):
        super().__init__()
        self.hidden_size, self.bottleneck = hidden_size, bottleneck
        sizes = {
            "down_weight": bottleneck * hidden_size, "down_bias": bottleneck,
            "up_weight": hidden_size * bottleneck, "up_bias": hidden_size,
            "ln_weight": hidden_size, "ln_bias": hidden_size,
        }
        self.generators = nn.ModuleDict({k: nn.Linear(embedding_dim, n) for k, n in sizes.items()})
        for linear in self.generators.values():
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, task_input: torch.Tensor) -> GeneratedAdapter:
        """(T, t) -> the T tasks' adapters."""
        tasks, hidden, small = task_input.shape[0], self.hidden_size, self.bottleneck
        out = {k: g(task_input) for k, g in self.generators.items()}
        return GeneratedAdapter(
            down_weight=out["down_weight"].view(tasks, small, hidden), down_bias=out["down_bias"],
            up_weight=out["up_weight"].view(tasks, hidden, small), up_bias=out["up_bias"],
            ln_weight=out["ln_weight"], ln_bias=out["ln_bias"],
        )


def hypernet_parameter_count(embedding_dim: int, hidden_size: int, bottleneck: int) -> int:
    """(t + 1)·(2·H·m + m + 3·H): the generators of one adapter position, from the equations."""
    generated = 2 * hidden_size * bottleneck + bottleneck + 3 * hidden_size
    return (embedding_dim + 1) * generated


def apply_adapter(x: torch.Tensor, adapter: GeneratedAdapter, activation) -> torch.Tensor:
    """A_τ(x) = x + LN_τ(U_τ(act(D_τ x))) with per-row (B, ...) or shared (1, ...) generated weights.

    Args:
        x: (B, L, H) the sub-layer's output (attention or FFN branch, before the residual add).
        adapter: generated weights with leading dimension B (per row) or 1 (one task).
        activation: the non-linearity.

    Returns:
        (B, L, H).
    """
    down = activation(row_linear(x, adapter.down_weight, adapter.down_bias))  # (B, L, m)
    up = row_linear(down, adapter.up_weight, adapter.up_bias)  # (B, L, H)
    hidden = x.shape[-1]
    if adapter.ln_weight.shape[0] == 1:
        return x + F.layer_norm(up, (hidden,), adapter.ln_weight[0], adapter.ln_bias[0])
    normed = F.layer_norm(up, (hidden,))
    return x + normed * adapter.ln_weight.unsqueeze(1) + adapter.ln_bias.unsqueeze(1)
