"""The prefix encoder of one task and the attention modifier that puts prefixes before the keys/values.

Li & Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation": every layer ℓ attends
to P trainable key/value vectors before the sequence's own,

    head_i = softmax(q_i [P_k,ℓ,i ; K_i]ᵀ / √d) [P_v,ℓ,i ; V_i]

and the prefix positions are never masked.
"""

from __future__ import annotations

import torch
from torch import nn


class PrefixEncoder(nn.Module):
    """The prefixes of one task for every layer, as PEFT's `PrefixEncoder` builds them.

    Without projection, `embedding` (P × 2·L·H) holds them directly: P·2·L·H parameters. With
    projection, `embedding` (P × H) goes through `transform` = Linear(H, E) -> tanh -> Linear(E, 2·L·H):
    P·H + (H·E + E) + (E·2·L·H + 2·L·H) parameters. Parameter names match PEFT's.

    Args:
        num_virtual_tokens: P.
        num_layers: L.
        hidden_size: H (= heads · head size).
        projection: use the MLP reparameterization.
        encoder_hidden_size: E.
    """

    def __init__(self, num_virtual_tokens: int, num_layers: int, hidden_size: int, projection: bool, encoder_hidden_size: int):
        super().__init__()
        out = num_layers * 2 * hidden_size
        self.projection = projection
        # nn.Embedding's N(0, 1) init, as PEFT's
        self.embedding = nn.Embedding(num_virtual_tokens, hidden_size if projection else out)
        if projection:
            self.transform = nn.Sequential(
                nn.Linear(hidden_size, encoder_hidden_size), nn.Tanh(), nn.Linear(encoder_hidden_size, out)
            )

    def forward(self) -> torch.Tensor:
        """Returns: (P, 2·L·H), laid out as (P, L, 2, heads, head size)."""
        weight = self.embedding.weight
        return self.transform(weight) if self.projection else weight


def prefixes_by_layer(flat: torch.Tensor, num_layers: int, num_heads: int) -> torch.Tensor:
    """(P, 2·L·H) -> (L, 2, heads, P, d): per layer, keys [0] and values [1]."""
    num_tokens = flat.shape[0]
    return flat.view(num_tokens, num_layers, 2, num_heads, -1).permute(1, 2, 3, 0, 4)


def prepend_prefix(key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                   prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Put one layer's prefixes before the keys and values; prefix positions are always attended.

    Args:
        key, value: (B, h, Lk, d).
        mask: None (attend everywhere), bool (B, 1|h, Lq, Lk) with True = attend, or float additive.
        prefix: (B, 2, h, P, d), keys then values of each row's task.

    Returns:
        key, value (B, h, P + Lk, d) and the mask in the same form, (B, 1|h, Lq, P + Lk) (None stays None).
    """
    prefix = prefix.to(key.dtype)
    key = torch.cat([prefix[:, 0], key], dim=2)
    value = torch.cat([prefix[:, 1], value], dim=2)
    if mask is None:
        return key, value, None
    open_prefix = mask.new_zeros(*mask.shape[:-1], prefix.shape[3]) if mask.dtype != torch.bool else \
        mask.new_ones(*mask.shape[:-1], prefix.shape[3])
    return key, value, torch.cat([open_prefix, mask], dim=-1)
