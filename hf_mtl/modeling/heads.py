"""Prediction heads: one per task, keyed by the task name.

Shapes: B = batch, L = sequence length, H = hidden size, C = number of labels (1 for regression).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks import Task


IGNORE_INDEX = -100


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(B, L, H) -> (B, H) by the first token ("cls") or the mask-weighted mean ("mean")."""
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class SequenceHead(nn.Module):
    """Classification or regression from a pooled sentence vector.

    `head_hidden_layers=1` is RoBERTa's head: dropout, dense H->H, tanh, dropout, out H->C.
    `head_hidden_layers=0` is a dropout and a linear H->C layer.
    """

    def __init__(self, hidden_size: int, num_labels: int, pooling: str, hidden_layers: int, dropout: float):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size) if hidden_layers else None
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        x = pool(hidden, attention_mask, self.pooling)  # (B, H)
        if self.dense is not None:
            x = torch.tanh(self.dense(self.dropout(x)))
        return self.out(self.dropout(x))  # (B, C)


class TokenHead(nn.Module):
    """A tag per token: dropout and a linear H->C layer."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.out(self.dropout(hidden))  # (B, L, C)


class LMHead(nn.Module):
    """The head of a generative task (`causal_lm`, `seq2seq`): the backbone's own LM head, shared and frozen.

    It holds no weights (its saved state is empty); it stands in `MultiTaskModel.heads` so that a generative task
    is known to the model like any other (per task there is only the adapter).
    """

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        raise RuntimeError("A generative task's logits come from the backbone's LM head (MultiTaskModel.forward).")


def build_head(task: Task, hidden_size: int, dropout: float, vocab_size: int | None = None) -> nn.Module:
    """The head a task's kind needs."""
    if task.is_generative:
        return LMHead()
    if task.kind == "token_classification":
        return TokenHead(hidden_size, task.num_labels, dropout)
    if task.kind == "masked_lm":
        from .mlm_head import MaskedLMHead

        return MaskedLMHead(hidden_size, vocab_size or 0)
    return SequenceHead(hidden_size, task.num_labels, task.pooling, task.head_hidden_layers or 0, dropout)


def task_loss(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean loss of one task's rows: cross-entropy (classes, tags, masked tokens) or MSE (regression)."""
    if task.kind == "regression":
        return F.mse_loss(logits.view(-1).float(), labels.view(-1).float())
    logits = logits.float()
    labels = labels.long()
    if logits.dim() == 3:  # (B, L, C) with (B, L) labels
        logits = logits.reshape(-1, logits.size(-1))
        labels = labels.reshape(-1)
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0  # keeps the graph; no scored position in this batch
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
