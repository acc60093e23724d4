"""The PAL of one task, and the projected attention it runs in parallel with each layer.

Stickland & Murray (2019), eq. for a layer l with input h (BERT's post-LN layer):

    h ← LN(h + SA(h) + TS(h)),   TS(h) = V^D · MH_l(V^E · h)

- V^E ∈ R^{d_s×H} (encoder) and V^D ∈ R^{H×d_s} (decoder) belong to the task and are *shared by all
  layers* of that task;
- MH_l is multi-head attention in the d_s-wide space with its own query/key/value projections per
  layer (d_s×d_s each, with biases) and no output projection (V^D plays that role).

Parameters per task: 2·H·d_s + d_s + H (V^E, V^D with biases) + N·3·(d_s² + d_s) (q, k, v of N layers;
an encoder-decoder counts the layers of both stacks).
With H=768, d_s=204, N=12 this is 1.82M per task: 8 tasks add 0.13× BERT-base, the paper's "1.13×".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..per_row import mask_or_causal, routed_linear
from ..routing import Routing


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


def pal_attention(qkv: torch.Tensor, heads: int, mask: torch.Tensor | None, *, causal: bool = False,
                  past: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                  ) -> torch.Tensor:
    """MH_l: multi-head attention in the projected space, no output projection (V^D follows).

    Args:
        qkv: (B, Lq, 3·d_s) the fused query/key/value projections of the new positions.
        heads: heads in the projected space.
        mask: the layer's own attention mask (None, bool (B|1, 1, Lq, Lk) with True = attend, or float
            additive), so the PAL sees exactly the positions the layer's self-attention sees.
        causal: the stack is a decoder: without a mask, position i attends to positions up to i.
        past: a decoder generating with a KV cache: called with this step's keys and values (B, h, Lq, d),
            returns those of every position so far (B, h, Lk, d) — the cache's `update` for this PAL.

    Returns:
        (B, Lq, d_s).
    """
    batch, length, _ = qkv.shape
    q, k, v = qkv.view(batch, length, 3, heads, -1).permute(2, 0, 3, 1, 4)  # 3 × (B, h, Lq, d_s/h)
    if past is not None:
        k, v = past(k, v)  # (B, h, Lk, d_s/h)
    mask = mask_or_causal(mask, length, k.shape[2], causal, q.device)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, Lq, d_s/h)
    return attended.transpose(1, 2).reshape(batch, length, -1)


def projected_attention(routing: Routing, hidden: torch.Tensor, encoder: tuple[torch.Tensor, torch.Tensor],
                        qkv: tuple[torch.Tensor, torch.Tensor], decoder: tuple[torch.Tensor, torch.Tensor], heads: int,
                        mask: torch.Tensor | None, **attention: Any) -> torch.Tensor:
    """TS(h) = V^D · MH(V^E · h), each row with its task's weights.

    Args:
        routing: the batch's routing.
        hidden: (B, L, H) the input of the layer's self-attention.
        encoder: V^E weights (T, d_s, H) and biases (T, d_s) of the batch's T tasks.
        qkv: this layer's fused q/k/v weights (T, 3·d_s, d_s) and biases (T, 3·d_s).
        decoder: V^D weights (T, H, d_s) and biases (T, H).
        heads, mask, attention: see `pal_attention` (`causal`, `past`).

    Returns:
        (B, L, H) to add to the attention branch.
    """
    small = routed_linear(routing, hidden, *encoder)  # (B, L, d_s)
    attended = pal_attention(routed_linear(routing, small, *qkv), heads, mask, **attention)  # (B, L, d_s)
    return routed_linear(routing, attended, *decoder)
