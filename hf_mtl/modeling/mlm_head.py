"""Masked-language-model head for `masked_lm` tasks (language adapters, MAD-X).

BERT's prediction head: dense H->H, GELU, LayerNorm, then scores against the backbone's (frozen) input
embeddings, tied rather than copied, plus a trainable output bias of size V. An adapter method may
set an output transform that runs just before the projection (MAD-X: the inverse of the language's
invertible adapter).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MaskedLMHead(nn.Module):
    def __init__(self, hidden_size: int, vocab_size: int, layer_norm_eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self._embedding: list[nn.Embedding] = []  # a list hides it from state_dict: it belongs to the backbone
        self._output_transform: list[Callable[[torch.Tensor], torch.Tensor]] = []  # likewise: owned by the adapter

    def tie(self, embedding: nn.Embedding) -> None:
        """Use the backbone's word embeddings (V, H) as the output projection."""
        self._embedding[:] = [embedding]

    def set_output_transform(self, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        """Apply `transform` (B, L, H) -> (B, L, H) to the states just before the output projection (None: none)."""
        self._output_transform[:] = [transform] if transform is not None else []

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if not self._embedding:
            raise RuntimeError("MaskedLMHead is not tied to the backbone's word embeddings; call tie() first.")
        x = self.layer_norm(F.gelu(self.dense(hidden)))  # (B, L, H)
        if self._output_transform:
            x = self._output_transform[0](x)
        return x @ self._embedding[0].weight.t() + self.bias  # (B, L, V)
