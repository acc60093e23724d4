"""The prefix encoder of one task, the attentions that get prefixes, and how a prefix joins the keys/values.

Li & Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation": every attention ℓ attends
to P trainable key/value vectors before the sequence's own,

    head_i = softmax(q_i [P_k,ℓ,i ; K_i]ᵀ / √d) [P_v,ℓ,i ; V_i]

and the prefix positions are never masked. An encoder has one such attention per layer; a decoder-only LM
too (its self-attention, causal among the sequence's own keys); an encoder-decoder has three kinds, the
encoder's self-attention, the decoder's self-attention and the decoder's cross-attention (whose keys are
the encoder's output). Prefix keys carry no position: no rotary embedding (Llama: they join the keys after
the rotation, as PEFT's prefixes join as a KV cache), no learned position (GPT-2, BART) and a relative
position bias of 0 (T5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer


@dataclass(frozen=True)
class PrefixSite:
    """One attention module that gets a prefix.

    Attributes:
        path: the module's path from the backbone's root (`encoder.block.0.layer.0.SelfAttention`).
        heads: its key/value heads (grouped-query attention: `num_key_value_heads`, fewer than the query heads).
        head_dim: the size of one head.
        causal: a decoder's self-attention: each position sees the sequence's keys up to its own (and every prefix
            key).
        cacheable: during generation the prefix may be written into the KV cache once, before the sequence's own
            keys (`PrefixCacheLayer`): true where nothing reads positions from the cache's length beyond what
            `PrefixCacheLayer` reports (not T5's self-attention, whose relative bias spans the cached keys).
        cross: the decoder's cross-attention over the encoder's output (its cache is the cross-attention cache).
    """

    path: str
    heads: int
    head_dim: int
    causal: bool = False
    cacheable: bool = False
    cross: bool = False

    @property
    def size(self) -> int:
        """Keys and values of one virtual token: 2·heads·head_dim."""
        return 2 * self.heads * self.head_dim


class PrefixEncoder(nn.Module):
    """The prefixes of one task for every attention, as PEFT's `PrefixEncoder` builds them.

    Without projection, `embedding` (P × O) holds them directly: P·O parameters, with O = Σ_sites 2·heads·head_dim
    (2·L·H for an encoder of L layers). With projection, `embedding` (P × H) goes through `transform` =
    Linear(H, E) -> tanh -> Linear(E, O): P·H + (H·E + E) + (E·O + O) parameters. Parameter names match PEFT's.

    Args:
        num_virtual_tokens: P.
        out_size: O, every site's keys and values of one virtual token.
        hidden_size: H, the backbone's hidden size (the projection's input).
        projection: use the MLP reparameterization.
        encoder_hidden_size: E.
    """

    def __init__(self, num_virtual_tokens: int, out_size: int, hidden_size: int, projection: bool,
                 encoder_hidden_size: int):
        super().__init__()
        self.projection = projection
        # nn.Embedding's N(0, 1) init, as PEFT's
        self.embedding = nn.Embedding(num_virtual_tokens, hidden_size if projection else out_size)
        if projection:
            self.transform = nn.Sequential(
                nn.Linear(hidden_size, encoder_hidden_size), nn.Tanh(), nn.Linear(encoder_hidden_size, out_size)
            )

    def forward(self) -> torch.Tensor:
        """Returns: (P, O), laid out site after site as (2, heads, head_dim) per virtual token."""
        weight = self.embedding.weight
        return self.transform(weight) if self.projection else weight


def prefixes_by_site(flat: torch.Tensor, sites: list[PrefixSite]) -> list[torch.Tensor]:
    """(P, O) -> per site (2, heads, P, d): keys [0] and values [1]. For an encoder (every site of one shape)
    this is the layout (P, L, 2, heads, d) that PEFT's prefixes have."""
    num_tokens = flat.shape[0]
    parts = flat.split([site.size for site in sites], dim=1)
    return [part.view(num_tokens, 2, site.heads, site.head_dim).permute(1, 2, 0, 3) for part, site in zip(parts, sites)]


def prepend_prefix(key: torch.Tensor, value: torch.Tensor, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Put one attention's prefixes before its keys and values.

    Args:
        key, value: (B, h, Lk, d).
        prefix: (B, 2, h, P, d), keys then values of each row's task.

    Returns:
        key, value (B, h, P + Lk, d).
    """
    prefix = prefix.to(key.dtype)
    return torch.cat([prefix[:, 0], key], dim=2), torch.cat([prefix[:, 1], value], dim=2)


def open_prefix(mask: torch.Tensor | None, query: torch.Tensor, num_keys: int, num_virtual_tokens: int,
                causal: bool) -> torch.Tensor | None:
    """The attention mask over [prefix ; keys]: the prefix positions always attended.

    Args:
        mask: the mask over the sequence's `num_keys` keys: None (attend everywhere, or causally where `causal`),
            bool (B|1, 1|h, Lq, num_keys) with True = attend, or float additive.
        query: (B, h, Lq, d).
        num_keys: the sequence's keys (cached ones included), without the prefix.
        num_virtual_tokens: P.
        causal: the attention is causal. A None mask then stands for "causal" (SDPA's `is_causal`, which aligns
            the causal triangle top-left and would hide the last keys once a prefix comes first): it is written out,
            each query seeing the keys up to its own position (the last Lq keys are the queries' own).

    Returns:
        (B|1, 1|h, Lq, P + num_keys), or None where every query attends every key.
    """
    length = query.shape[2]
    if mask is None:
        if not causal or length == 1:
            return None
        past = num_keys - length
        seen = torch.arange(num_keys, device=query.device)[None, :] <= torch.arange(length, device=query.device)[:, None] + past
        mask = seen.view(1, 1, length, num_keys)
    if mask.dtype == torch.bool:
        opened = mask.new_ones(*mask.shape[:-1], num_virtual_tokens)
    else:
        opened = mask.new_zeros(*mask.shape[:-1], num_virtual_tokens)
    return torch.cat([opened, mask], dim=-1)


class PrefixCacheLayer(DynamicLayer):
    """A KV-cache layer that starts with the rows' prefixes, written once, before any key of the sequence.

    It reports the sequence's length only (`get_seq_length` leaves the prefix out), so what the model derives from
    the cache's length (the next positions, the mask's size, BART's learned positions) is what it is without
    prefixes; the attention's mask gets the prefix columns from `open_prefix`. Beam search's reordering and batch
    edits move the prefix with its row.

    Args:
        keys, values: (B, h, P, d), each row's prefix.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values
        self.prefix_length = keys.shape[-2]

    def get_seq_length(self) -> int:
        return self.keys.shape[-2] - self.prefix_length if self.is_initialized else 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self.keys.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.keys = self.keys.repeat_interleave(repeats, dim=0)
        self.values = self.values.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keys = self.keys[indices, ...]
        self.values = self.values[indices, ...]

    def crop(self, tokens_to_remove: int) -> None:
        """Drops the last tokens, never the prefix (a positive count, the legacy form, is refused by the base)."""
        super().crop(max(tokens_to_remove, -self.get_seq_length()))

    def reset(self) -> None:
        """Back to the prefix alone."""
        self.crop(-self.get_seq_length())
