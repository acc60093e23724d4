"""Options of Hyperformer and Hyperformer++ (Karimi Mahabadi, Ruder, Dehghani & Henderson, 2021,
"Parameter-efficient Multi-task Fine-tuning for Transformers via Shared Hypernetworks", ACL,
arXiv:2106.04489). Defaults are the paper's (its released recipes `hyperformer.json` and
`hyperformer++.json`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import TaskConfigError
from ..per_row import check_choice, check_int, parse_options


ACTIVATIONS = ("gelu_new", "gelu", "relu", "swish", "silu", "tanh")


@dataclass
class HyperformerConfig:
    """What `adapter_config` may set for `adapter_method: "hyperformer"` or `"hyperformer++"`.

    Args:
        task_embedding_dim: t', the size of each task's learned embedding z_τ (and, in Hyperformer++,
            of the layer-id and position embeddings). Paper recipes: 64.
        projected_task_embedding_dim: t, the size of the task projector's output I_τ that feeds the
            hypernetworks. Paper: 64.
        task_hidden_dim: hidden width of the task projector MLP h(·) (two linear layers, ReLU). Paper: 128.
        reduction_factor: r; each adapter's bottleneck is m = H // r. Paper: 32.
        non_linearity: activation between the adapter's down and up projections. Paper: gelu_new.
        init_std: std of the normal init of the hypernetworks' weights (their biases start at zero),
            as the reference code's `weight_init_range`. 1e-2.

    Learning rate (a training argument, not an option here): Hyperformer++'s one generator, fed a layer-normed
    input and updated by every layer and position, moves ~10x faster under Adam than Hyperformer's per-position
    ones; use about the paper's 3e-4 for it (measured on MiniLM, SST-2 + UPOS slices: 1e-3 and 2e-3 left SST-2 at
    chance, 3e-4 learned it; see the README).
    """

    task_embedding_dim: int = 64
    projected_task_embedding_dim: int = 64
    task_hidden_dim: int = 128
    reduction_factor: int = 32
    non_linearity: str = "gelu_new"
    init_std: float = 1e-2

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, hidden_size: int, method: str) -> HyperformerConfig:
        """Validate the user's options.

        Args:
            options: the recipe's `adapter_config`.
            hidden_size: H of the backbone (the bottleneck H // r must be at least 1).
            method: "hyperformer" or "hyperformer++", for error messages.

        Returns:
            The config.
        """
        config = parse_options(cls, method, options)
        for field in ("task_embedding_dim", "projected_task_embedding_dim", "task_hidden_dim", "reduction_factor"):
            check_int(method, field, getattr(config, field))
        check_choice(method, "non_linearity", config.non_linearity, ACTIVATIONS)
        if not isinstance(config.init_std, (int, float)) or config.init_std <= 0:
            raise TaskConfigError(f"adapter_config of method {method!r}: `init_std` must be a number > 0, got {config.init_std!r}.")
        if hidden_size // config.reduction_factor < 1:
            raise TaskConfigError(
                f"adapter_config of method {method!r}: reduction_factor={config.reduction_factor} leaves no bottleneck "
                f"for hidden size {hidden_size} (H // r = 0). Fix: use a reduction_factor <= {hidden_size}."
            )
        return config

    def bottleneck(self, hidden_size: int) -> int:
        """m = H // r."""
        return hidden_size // self.reduction_factor

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
