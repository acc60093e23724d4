"""Which owner (task, language, ...) serves each row of a batch, computed once per forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import torch

from ..base import host_index


@dataclass
class RowOwners:
    """The distinct owners of a batch and each row's index among them.

    Attributes:
        owners: the owners present in the batch, in order of first appearance.
        rows: (B,) index into `owners` per row; None when one owner serves every row (plain matmuls).
    """

    owners: list[Hashable]
    rows: torch.Tensor | None

    @classmethod
    def of(cls, keys: Sequence[Hashable], device: torch.device) -> "RowOwners":
        """Build from one key per row."""
        owners = list(dict.fromkeys(keys))
        if len(owners) == 1:
            return cls(owners, None)
        index = {key: i for i, key in enumerate(owners)}
        return cls(owners, host_index([index[key] for key in keys], device))

    @classmethod
    def single(cls, owner: Hashable) -> "RowOwners":
        return cls([owner], None)
