"""Shared-private adversarial training: a task discriminator behind a gradient-reversal layer.

Liu, Qiu & Huang (2017), "Adversarial Multi-task Learning for Text Classification", ACL: a discriminator
D tries to tell which task a sentence comes from by reading the shared representation h; the shared
encoder is trained to fool it, so h keeps what the tasks have in common. The min-max game is a single
backward pass with the gradient-reversal layer R of Ganin & Lempitsky (2015): R(h) = h forward,
dR/dh = -I backward. Task `t` takes part with weight w_t = `Task.adversarial_weight`:

    L_adv = (1/B) Σ_rows w_{t(x)} · CE(D(R(pool(h(x)))), t(x))

D descends L_adv (it learns to discriminate); everything below R ascends it (features become
task-invariant). The task heads (and a head's hidden layer) are the private part.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .heads import pool


class GradientReversal(torch.autograd.Function):
    """Identity forward, negated gradient backward (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class TaskDiscriminator(nn.Module):
    """D: a linear classifier over the adversarial tasks, reading the mask-mean-pooled last hidden state.

    Args:
        hidden_size: H of the backbone.
        task_names: the tasks with `adversarial_weight > 0`, in the model's task order (D's classes).
        weights: their `adversarial_weight`s.
    """

    def __init__(self, hidden_size: int, task_names: list[str], weights: list[float]):
        super().__init__()
        self.task_names = list(task_names)
        self.weights = [float(w) for w in weights]
        self.classifier = nn.Linear(hidden_size, len(self.task_names))

    def loss(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, row_tasks: list[str]) -> torch.Tensor:
        """L_adv of one batch.

        Args:
            hidden: (B, L, H) shared hidden states.
            attention_mask: (B, L) or None.
            row_tasks: the task of each row; rows of tasks outside D's classes weigh 0.

        Returns:
            A scalar: mean over the B rows of w_t · CE.
        """
        index = {name: i for i, name in enumerate(self.task_names)}
        targets = torch.tensor([index.get(t, 0) for t in row_tasks], device=hidden.device)  # (B,)
        weights = torch.tensor([self.weights[index[t]] if t in index else 0.0 for t in row_tasks],
                               device=hidden.device, dtype=torch.float32)  # (B,)
        features = GradientReversal.apply(pool(hidden, attention_mask, "mean"))  # (B, H)
        logits = self.classifier(features).float()  # (B, K)
        return (weights * F.cross_entropy(logits, targets, reduction="none")).mean()
