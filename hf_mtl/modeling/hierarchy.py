"""Hierarchical feature pipeline (`Task.input_from_tasks`): a head reads lower tasks' predictions.

Søgaard & Goldberg (2016), "Deep multi-task learning with low level tasks supervised at lower layers";
Hashimoto et al. (2017), "A Joint Many-Task Model" (JMT): a higher task (NER, chunking) gets the
predicted label distributions of lower tasks (POS) next to the hidden states. Here every lower task u
contributes a (B, L, C_u) block that is concatenated to the (B, L, H) states the head reads:

    token task u:           softmax(logits_u)                       (B, L, C_u)
    classification task u:  softmax(logits_u) repeated on each token (B, L, C_u)
    regression task u:      the predicted value on each token        (B, L, 1)

Gradients of the higher task flow into the lower heads (as in JMT).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import TaskConfigError
from ..tasks import Task


def prediction_width(task: Task) -> int:
    """C_u: the width of task u's block (its number of labels, 1 for regression)."""
    if task.kind == "masked_lm":
        raise TaskConfigError(
            f"task {task.name!r} is a masked_lm task: its predictions (the vocabulary) cannot feed another head "
            f"through `input_from_tasks`. Fix: name classification, regression or token_classification tasks."
        )
    return task.num_labels


def prediction_features(task: Task, logits: torch.Tensor, length: int) -> torch.Tensor:
    """Task u's block for a head that reads L = `length` positions.

    Args:
        task: the lower task u.
        logits: its logits, (B, C_u) or (B, L, C_u).
        length: L of the hidden states they join.

    Returns:
        (B, L, C_u).
    """
    values = logits if task.kind == "regression" else logits.float().softmax(dim=-1).to(logits.dtype)
    if values.dim() == 2:  # sequence-level: the same vector at every position
        values = values.unsqueeze(1).expand(-1, length, -1)
    return values


def with_lower_tasks(tasks: dict[str, Task], names: Iterable[str]) -> list[str]:
    """`names` and, transitively, every task their heads read (whose head layers must be computed too)."""
    out: list[str] = []
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in out:
            out.append(name)
            stack.extend(tasks[name].input_from_tasks or [])
    return out
