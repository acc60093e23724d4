"""CA-MTL's task-conditioned modules (Pilault et al., 2021, section 2), all driven by FiLM.

FiLM (feature-wise linear modulation) from a condition c:  FiLM_c(x) = (1 + γ(c)) ⊙ x + β(c),
[γ; β] = W c + b. Every FiLM here starts at W = 0, b = 0 (the identity), so a model starts as its
frozen backbone; the reference code starts its FiLM weights at PyTorch's default init.

Every function takes condition values already computed for the T tasks of a batch and gathered
per row (leading dimension B, or 1 when the batch holds one task), so one call serves a mixed batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FiLM(nn.Module):
    """[γ; β] = W c + b, zero-initialised.

    Args:
        condition_dim: size of the condition c.
        features: size of γ and β.
    """

    def __init__(self, condition_dim: int, features: int):
        super().__init__()
        self.linear = nn.Linear(condition_dim, 2 * features)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, c) -> γ, β each (T, features)."""
        gamma, beta = self.linear(condition).chunk(2, dim=-1)
        return gamma, beta


def film(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """(1 + γ) ⊙ x + β for x (B, L, F) and per-row γ, β (B|1, F)."""
    return x * (1 + gamma.unsqueeze(1)) + beta.unsqueeze(1)


class ConditionalAttentionBias(nn.Module):
    """M(z) of the conditional attention: softmax(QKᵀ/√d + M(z)) V.

    M(z) = ⊕_{n=1..N} A'_n(z), a block-diagonal matrix over sequence positions, with
    A'_n(z) = (1 + γ(z)) ⊙ A_n + β(z) (FiLM over the key offset within a block, as the reference
    code's CBDA), A_n ∈ R^{b×b} learned, b = max_seq_length / N. M is shared by all heads.

    Variable sequence lengths: M is defined over the positions 0 .. max_seq_length-1 and cropped to
    the batch's queries and keys (`crop`): position p lies in block p // b at offset p % b, so a position
    keeps its block whatever the padding, and off-block entries are 0 (attend normally, no extra bias).
    A position is the token's place in its row (a decoder's left padding and KV cache shift the index).

    Args:
        condition_dim: size of the condition (the transformed task embedding).
        max_seq_length: L.
        num_blocks: N (divides L).

    Parameters: L·b (the N blocks A_n, stacked) + condition_dim·2b + 2b (the FiLM).
    """

    def __init__(self, condition_dim: int, max_seq_length: int, num_blocks: int):
        super().__init__()
        self.block_size = max_seq_length // num_blocks
        self.blocks = nn.Parameter(torch.zeros(max_seq_length, self.block_size))  # row p = block p//b, row p%b
        self.film = FiLM(condition_dim, self.block_size)

    def rows(self, condition: torch.Tensor) -> torch.Tensor:
        """(T, c) -> the FiLM-ed blocks A'(z) of each task, stacked by position: (T, L, b), row p = A'_{p//b}[p % b]."""
        gamma, beta = self.film(condition)  # (T, b) each
        return self.blocks.unsqueeze(0) * (1 + gamma.unsqueeze(1)) + beta.unsqueeze(1)

    def crop(self, rows: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """M at the given positions: entry (p, q) = A'[p, q % b] where p and q share a block, else 0.

        Args:
            rows: (N|1, L, b) `rows` of each row's task (or one task's for all rows).
            query_positions: (N|1, Lq) and key_positions (N|1, Lk): positions in 0 .. L-1 (long).

        Returns:
            (N|1, Lq, Lk).
        """
        size = max(rows.shape[0], query_positions.shape[0])
        rows = rows.expand(size, -1, -1)
        query_positions, key_positions = query_positions.expand(size, -1), key_positions.expand(size, -1)
        picked = rows.gather(1, query_positions.unsqueeze(2).expand(-1, -1, self.block_size))  # (N, Lq, b)
        offsets = (key_positions % self.block_size).unsqueeze(1).expand(-1, query_positions.shape[1], -1)
        values = picked.gather(2, offsets)  # (N, Lq, Lk)
        same_block = (query_positions // self.block_size).unsqueeze(2) == (key_positions // self.block_size).unsqueeze(1)
        return values * same_block.to(values.dtype)


class ConditionalLayerNorm(nn.Module):
    """CLN(x) = γ_i ⊙ x̂ + β_i with γ_i = (1 + Δγ(z)) ⊙ γ_LN and β_i = β_LN + Δβ(z).

    Applied to the *output* y = γ_LN ⊙ x̂ + β_LN of the backbone's frozen layer norm, which gives
    CLN = y + Δγ ⊙ (y − β_LN) + Δβ without normalizing twice. The reference code modulates γ with
    FiLM; β is conditioned too here, as the paper's equation (γ, β from z_i).

    Args:
        condition_dim: size of the condition.
        hidden_size: H.

    Parameters: condition_dim·2H + 2H.
    """

    def __init__(self, condition_dim: int, hidden_size: int):
        super().__init__()
        self.film = FiLM(condition_dim, hidden_size)

    @staticmethod
    def apply(output: torch.Tensor, norm: nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Turn the frozen norm's output (B, L, H) into the conditional one, per-row γ, β (B|1, H)."""
        shifted = output if getattr(norm, "bias", None) is None else output - norm.bias
        return output + shifted * gamma.unsqueeze(1) + beta.unsqueeze(1)


class ConditionalBottleneck(nn.Module):
    """Conditional bottleneck adapter on the feed-forward branch y (before the residual and CLN):

        y ← y + U(GELU(D(FiLM_z(y))))

    The reference code's bottleneck (D then U, no activation, after a FiLM of its input) sits after
    the last layer's output and is closed by a conditional layer norm; here it adapts the
    feed-forward branch, which that layer's conditional layer norm then closes. U starts at zero.

    Args:
        condition_dim: size of the condition.
        hidden_size: H.
        bottleneck_dim: m.

    Parameters: condition_dim·2H + 2H (FiLM) + H·m + m (D) + m·H + H (U).
    """

    def __init__(self, condition_dim: int, hidden_size: int, bottleneck_dim: int):
        super().__init__()
        self.film = FiLM(condition_dim, hidden_size)
        self.down = nn.Linear(hidden_size, bottleneck_dim)
        self.up = nn.Linear(bottleneck_dim, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, branch: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """(B, L, H) branch, per-row γ, β (B|1, H) -> the adapted branch."""
        return branch + self.up(F.gelu(self.down(film(branch, gamma, beta))))


class CaMtlLayer(nn.Module):
    """The conditional modules of one conditioned layer.

    Args:
        condition_dim: size of the condition.
        hidden_size: H.
        max_seq_length, num_blocks: see `ConditionalAttentionBias`.
        bottleneck_dim: m, or None for a layer without the conditional bottleneck.
    """

    def __init__(self, condition_dim: int, hidden_size: int, max_seq_length: int, num_blocks: int,
                 bottleneck_dim: int | None):
        super().__init__()
        self.attention = ConditionalAttentionBias(condition_dim, max_seq_length, num_blocks)
        self.attention_norm = ConditionalLayerNorm(condition_dim, hidden_size)
        self.ffn_norm = ConditionalLayerNorm(condition_dim, hidden_size)
        self.bottleneck = ConditionalBottleneck(condition_dim, hidden_size, bottleneck_dim) if bottleneck_dim else None
