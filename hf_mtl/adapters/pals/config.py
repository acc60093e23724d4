"""Options of PALs (Stickland & Murray, 2019, "BERT and PALs: Projected Attention Layers for
Efficient Adaptation in Multi-Task Learning", ICML, arXiv:1902.02671)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import TaskConfigError
from ..per_row import check_int, parse_options


METHOD = "pals"
PAPER_HIDDEN_SIZE = 768  # BERT-base
PAPER_PAL_SIZE = 204  # d_s of the paper's best setting on BERT-base
PAPER_PAL_HEADS = 12


@dataclass
class PalsConfig:
    """What `adapter_config` may set for `adapter_method: "pals"`.

    Args:
        pal_size: d_s, the width of the projected space where each layer's PAL attends. Default: the
            paper's 204 for hidden size 768 scaled with the backbone's hidden size H,
            round(204·H/768), moved to the nearest multiple of `pal_heads` (102 for H=384).
        pal_heads: attention heads of the PAL attention in the projected space. Default: the paper's
            12 for H=768 scaled likewise, round(12·H/768) (6 for H=384), which keeps the paper's
            17 dimensions per head. The heads, not their width, set the cost of the extra attention
            on a CPU: 12 heads of 9 dimensions on all-MiniLM-L6-v2 cost about twice 6 heads of 17.
    """

    pal_size: int | None = None
    pal_heads: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, hidden_size: int) -> PalsConfig:
        """Validate the user's options and fill the defaults that depend on the backbone.

        Args:
            options: the recipe's `adapter_config`.
            hidden_size: H of the backbone.

        Returns:
            The resolved config (every field set).
        """
        config = parse_options(cls, METHOD, options, pal_heads=default_pal_heads(hidden_size))
        heads = check_int(METHOD, "pal_heads", config.pal_heads)
        if config.pal_size is None:
            config.pal_size = default_pal_size(hidden_size, heads)
        size = check_int(METHOD, "pal_size", config.pal_size)
        if size % heads:
            raise TaskConfigError(
                f"adapter_config of method 'pals': pal_size={size} is not divisible by pal_heads={heads} "
                f"(each head gets pal_size/pal_heads dimensions). Fix: set pal_size to a multiple of {heads} "
                f"(e.g. {max(heads, heads * round(size / heads))}) or pal_heads to a divisor of {size}."
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_pal_heads(hidden_size: int) -> int:
    """round(12·H/768), at least 1: the paper's heads scaled with the hidden size."""
    return max(1, int(PAPER_PAL_HEADS * hidden_size / PAPER_HIDDEN_SIZE + 0.5))


def default_pal_size(hidden_size: int, heads: int) -> int:
    """d_s = round(204·H/768), moved to the nearest multiple of `heads` (at least `heads`)."""
    scaled = PAPER_PAL_SIZE * hidden_size / PAPER_HIDDEN_SIZE
    return max(heads, heads * int(scaled / heads + 0.5))
