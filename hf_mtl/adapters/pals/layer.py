"""The PAL of one task, and the projected attention it runs in parallel with each layer.

Stickland & Murray (2019), eq. for a layer l with input h (BERT's post-LN layer):

    h ← LN(h + SA(h) + TS(h)),   TS(h) = V^D · MH_l(V^E · h)

- V^E ∈ R^{d_s×H} (encoder) and V^D ∈ R^{H×d_s} (decoder) belong to the task and are *shared by all
  layers* of that task;
- MH_l is multi-head attention in the d_s-wide space with its own query/key/value projections per
  layer (d_s×d_s each, with biases) and no output projection (V^D plays that role).

Parameters per task: 2·H·d_s + d_s + H (V^E, V^D with biases) + N·3·(d_s² + d_s) (q, k, v of N layers).
With H=768, d_s=204, N=12 this is 1.82M per task: 8 tasks add 0.13× BERT-base, the paper's "1.13×".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..per_row import row_linear


class TaskPals(nn.Module):
    """One task's PAL parameters.

    Args:
        hidden_size: H.
        pal_size: d_s.
        num_layers: N, one query/key/value projection per layer.
        init_std: std of the normal init of V^E and q/k/v (BERT's `initializer_range`).

    V^D starts at zero, so a new task starts as the frozen backbone (its other weights get gradients
    from the second step on).
    """

    def __init__(self, hidden_size: int, pal_size: int, num_layers: int, init_std: float = 0.02):
        super().__init__()
        self.encoder = nn.Linear(hidden_size, pal_size)  # V^E, shared by the layers
        self.decoder = nn.Linear(pal_size, hidden_size)  # V^D, shared by the layers
        # q, k, v of each layer's attention, fused: (3·d_s, d_s)
        self.layers = nn.ModuleList(nn.Linear(pal_size, 3 * pal_size) for _ in range(num_layers))
        for linear in [self.encoder, *self.layers]:
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)
        nn.init.zeros_(self.decoder.weight)
        nn.init.zeros_(self.decoder.bias)


def projected_attention(
    hidden: torch.Tensor,
    encoder: tuple[torch.Tensor, torch.Tensor],
    qkv: tuple[torch.Tensor, torch.Tensor],
    decoder: tuple[torch.Tensor, torch.Tensor],
    heads: int,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """TS(h) = V^D · MH(V^E · h) with per-row weights.

    Args:
        hidden: (B, L, H) the layer's input h.
        encoder: V^E weight (B|1, d_s, H) and bias (B|1, d_s).
        qkv: this layer's fused q/k/v weight (B|1, 3·d_s, d_s) and bias (B|1, 3·d_s).
        decoder: V^D weight (B|1, H, d_s) and bias (B|1, H).
        heads: number of heads in the projected space.
        mask: the layer's attention mask (None, bool (B, 1, L, L) with True = attend, or float additive).

    Returns:
        (B, L, H) to add to the attention branch.
    """
    batch, length, _ = hidden.shape
    small = row_linear(hidden, *encoder)  # (B, L, d_s)
    q, k, v = row_linear(small, *qkv).view(batch, length, 3, heads, -1).permute(2, 0, 3, 1, 4)  # 3 × (B, h, L, d_s/h)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, L, d_s/h)
    attended = attended.transpose(1, 2).reshape(batch, length, -1)  # (B, L, d_s)
    return row_linear(attended, *decoder)
