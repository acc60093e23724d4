"""Options of CA-MTL (Pilault, Elhattami & Pal, 2021, "Conditionally Adaptive Multi-Task Learning:
Improving Transfer Learning in NLP Using Fewer Parameters & Less Data", ICLR, arXiv:2009.09139).
Defaults follow the paper and its reference code (github.com/CAMTL/CA-MTL) where they apply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import TaskConfigError
from ..per_row import check_choice, check_int, parse_options


METHOD = "ca_mtl"
BOTTLENECK_LAYERS = ("top", "all")


@dataclass
class CaMtlConfig:
    """What `adapter_config` may set for `adapter_method: "ca_mtl"`.

    Args:
        task_embedding_dim: d_z, the size of each task's learned embedding z_i. Default: the hidden
            size H (the reference code's `nn.Embedding(num_tasks, hidden_size)`).
        num_blocks: N, the number of diagonal blocks of the conditional attention bias M(z_i). The
            positions 0 .. max_seq_length-1 are split into N blocks of max_seq_length/N positions;
            `num_blocks` must divide `max_seq_length`. Default 4.
        max_seq_length: L, the longest sequence the conditional attention covers (the bias is an
            L×L matrix cropped to each batch's length). The paper trains with 128. A batch longer
            than this raises an error naming both numbers.
        bottleneck_dim: width of the conditional bottleneck adapter. Default: H // 3 (reference code).
        bottleneck_layers: "top" (the reference code: the conditional bottleneck only in the last
            layer) or "all" (in every conditioned layer).
        freeze_lower_half: the paper freezes the lower half of the pretrained layers. Here the whole
            backbone is frozen, so this means: insert the conditional modules (attention bias,
            conditional layer norms, bottleneck) only in the upper half of the layers (layers
            N_layers // 2 and up). The conditional alignment of the embeddings is always on.
            False conditions every layer.
    """

    task_embedding_dim: int | None = None
    num_blocks: int = 4
    max_seq_length: int = 128
    bottleneck_dim: int | None = None
    bottleneck_layers: str = "top"
    freeze_lower_half: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, hidden_size: int) -> CaMtlConfig:
        """Validate the user's options and fill the defaults that depend on the backbone.

        Args:
            options: the recipe's `adapter_config`.
            hidden_size: H of the backbone.

        Returns:
            The resolved config (every field set).
        """
        config = parse_options(cls, METHOD, options, task_embedding_dim=hidden_size,
                               bottleneck_dim=max(1, hidden_size // 3))
        for field in ("task_embedding_dim", "num_blocks", "max_seq_length", "bottleneck_dim"):
            check_int(METHOD, field, getattr(config, field))
        check_choice(METHOD, "bottleneck_layers", config.bottleneck_layers, BOTTLENECK_LAYERS)
        if not isinstance(config.freeze_lower_half, bool):
            raise TaskConfigError(
                f"adapter_config of method {METHOD!r}: `freeze_lower_half` must be true or false, got {config.freeze_lower_half!r}."
            )
        if config.max_seq_length % config.num_blocks:
            divisors = [n for n in range(1, min(config.max_seq_length, 16) + 1) if config.max_seq_length % n == 0]
            raise TaskConfigError(
                f"adapter_config of method {METHOD!r}: num_blocks={config.num_blocks} does not divide "
                f"max_seq_length={config.max_seq_length}; the conditional attention bias splits the positions "
                f"0..max_seq_length-1 into num_blocks equal diagonal blocks. Fix: use num_blocks in {divisors} "
                f"or a max_seq_length that is a multiple of {config.num_blocks}."
            )
        return config

    @property
    def block_size(self) -> int:
        """b = max_seq_length / num_blocks positions per diagonal block."""
        return self.max_seq_length // self.num_blocks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
