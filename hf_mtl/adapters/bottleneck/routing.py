"""Which owner (task, language, ...) serves each row of a batch, computed once per forward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch

from ..base import contiguous_segments, host_index


@dataclass
class RowOwners:
    """The distinct owners of a batch and each row's index among them.

    Attributes:
        owners: the owners present in the batch, in order of first appearance.
        rows: (B,) index into `owners` per row; None when one owner serves every row (plain matmuls).
        owner_of_row: `rows` on the host (empty for one owner): the row groups below need no device read.
        segments: on the CPU, each owner's rows as one range when the rows come grouped by owner
            (`contiguous_segments`), else None.
    """

    owners: list[Hashable]
    rows: torch.Tensor | None
    owner_of_row: list[int] = field(default_factory=list)
    segments: list[slice] | None = None
    _groups: tuple[list[torch.Tensor], torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, keys: Sequence[Hashable], device: torch.device) -> "RowOwners":
        """Build from one key per row."""
        owners = list(dict.fromkeys(keys))
        if len(owners) == 1:
            return cls(owners, None)
        index = {key: i for i, key in enumerate(owners)}
        owner_of_row = [index[key] for key in keys]
        segments = contiguous_segments(owner_of_row) if torch.device(device).type == "cpu" else None
        return cls(owners, host_index(owner_of_row, device), owner_of_row, segments)

    @classmethod
    def single(cls, owner: Hashable) -> "RowOwners":
        return cls([owner], None)

    def groups(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The rows of each owner, and the permutation that puts the owners' concatenated rows back in batch order.

        Built on the host once per forward, the first time a layer asks (grouped adapters, see `routed_adapter`).
        """
        if self._groups is None:
            device = self.rows.device
            members = [[row for row, owner in enumerate(self.owner_of_row) if owner == i] for i in range(len(self.owners))]
            order = [row for rows in members for row in rows]
            inverse = [0] * len(order)
            for position, row in enumerate(order):
                inverse[row] = position
            self._groups = [host_index(rows, device) for rows in members], host_index(inverse, device)
        return self._groups
