"""Which rows of a batch belong to which owner (a task, or a language for language adapters), and how an
adapter method's layers learn it for exactly one forward call.

`Routing` is the one description of a batch's rows: `MultiTaskModel` builds it from the `task` argument,
the adapter methods read it (and MAD-X builds a second one keyed by language). It is handed to the
layers per call: `RoutedCall.scope` puts it (with the values a method computes for that forward) in a
context variable for the duration of one backbone forward and resets it in `finally` (`call_scope`, which
also holds `MultiTaskModel.task_scope`'s default task). Two threads that
run forwards of one model at once each see their own routing (every thread starts with an empty context);
nothing about a batch is ever stored on a module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from ..errors import TaskConfigError


def host_index(values: list[int], device: torch.device) -> torch.Tensor:
    """A long tensor of `values` (built on the host) on `device`, copied without waiting: on a GPU a blocking
    copy would wait for all queued work."""
    return torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)


def contiguous_segments(owner_of_row: list[int]) -> list[slice] | None:
    """Each owner's rows as one range, in owner order, when the rows come grouped by owner (owners numbered in
    order of first appearance, so grouped means non-decreasing); None when some owner's rows are split.

    On the CPU a mixed batch whose rows are grouped runs each owner's rows through plain matmuls on views
    of its range (no gathers), which `MultiTaskModel` arranges for methods with `groups_rows` (see there).
    """
    if any(b < a for a, b in zip(owner_of_row, owner_of_row[1:])):
        return None
    bounds = [0] + [row for row in range(1, len(owner_of_row)) if owner_of_row[row] != owner_of_row[row - 1]]
    return [slice(start, end) for start, end in zip(bounds, bounds[1:] + [len(owner_of_row)])]


def segment_sizes(segments: list[slice]) -> list[int]:
    """The row counts of `contiguous_segments`' ranges, for `Tensor.split` (whose backward is one concatenation;
    a slice's backward writes into a zero tensor of the whole batch)."""
    return [s.stop - s.start for s in segments]


def inverse_permutation(order: Sequence[int]) -> list[int]:
    """The permutation that puts rows taken in `order` back where they were: out[order[i]] = i."""
    inverse = [0] * len(order)
    for position, row in enumerate(order):
        inverse[row] = position
    return inverse


@dataclass
class Routing:
    """Which owner (task, or language) each row of a batch belongs to.

    Attributes:
        owners: the distinct owners of the batch, in order of first appearance (for tasks: the batch's tasks).
        owner_of_row: (B,) on the host: each row's index into `owners` (row selections need no device read;
            on a GPU each such read waits for all queued work).
        device: the batch's device.
        rows: (B,) `owner_of_row` on `device`, for gathers of per-owner values; None when one owner serves
            every row (per-owner values then enter with a leading dimension of 1 and broadcast).
        segments: on the CPU, each owner's rows as one range (in `owners` order) when the rows come grouped by
            owner, else None: then `segmented` runs each owner's rows on views of its range, which costs less
            there than per-row gathers and batched matmuls (`AdapterMethod.groups_rows`).
        languages: per-row language codes (or None), for language adapters.
    """

    owners: list[Hashable]
    owner_of_row: list[int]
    device: torch.device
    rows: torch.Tensor | None = None
    segments: list[slice] | None = None
    languages: list[str | None] | None = None
    _groups: tuple[list[torch.Tensor], torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, keys: Sequence[Hashable], device: torch.device | str, *, languages: list[str | None] | None = None,
           owners: Sequence[Hashable] | None = None) -> Routing:
        """The routing of a batch from one key (task name, language, ...) per row.

        Args:
            keys: each row's owner.
            device: the batch's device.
            languages: per-row languages, kept for language adapters.
            owners: the owners in this order (default: order of first appearance); must include every key.
        """
        device = torch.device(device)
        owners = list(dict.fromkeys(keys)) if owners is None else list(owners)
        index = {key: i for i, key in enumerate(owners)}
        owner_of_row = [index[key] for key in keys]
        if len(owners) == 1:
            return cls(owners, owner_of_row, device, languages=languages)
        segments = contiguous_segments(owner_of_row) if device.type == "cpu" else None
        return cls(owners, owner_of_row, device, host_index(owner_of_row, device), segments, languages)

    # ------------------------------------------------------------------ the batch's tasks
    @property
    def size(self) -> int:
        return len(self.owner_of_row)

    @property
    def batch_tasks(self) -> list[Hashable]:
        """The owners under their name for task routing: the distinct tasks of the batch."""
        return self.owners

    @property
    def single_task(self) -> Hashable | None:
        return self.owners[0] if len(self.owners) == 1 else None

    def names_per_row(self) -> list[Hashable]:
        """Each row's owner."""
        return [self.owners[i] for i in self.owner_of_row]

    def rows_of(self, owner: Hashable) -> torch.Tensor:
        """(n,) indices of `owner`'s rows, on the batch's device."""
        position = self.owners.index(owner)
        return host_index([row for row, i in enumerate(self.owner_of_row) if i == position], self.device)

    def reordered(self, order: list[int]) -> Routing:
        """The routing of the batch with its rows taken in the order `order` (same owners, same owner order)."""
        keys = [self.owners[self.owner_of_row[i]] for i in order]
        languages = None if self.languages is None else [self.languages[i] for i in order]
        return Routing.of(keys, self.device, languages=languages, owners=self.owners)

    def check_known(self, known: Iterable[Hashable], method: str) -> None:
        """Raise a clear error when `method` has no parameters for some task of the batch."""
        known = set(known)
        for name in self.owners:
            if name not in known:
                raise TaskConfigError(
                    f"task {name!r}: adapter method {method!r} has no parameters for it (it knows {sorted(known)}). "
                    f"Fix: add the task to the model (model.add_task) before routing rows to it, or load a store "
                    f"that holds {name}/adapter_model.safetensors."
                )

    # ------------------------------------------------------------------ per-owner values -> per-row values
    def per_row(self, stacked: torch.Tensor) -> torch.Tensor:
        """(T, ...) values of the batch's owners -> (B, ...) values of each row ((1, ...) for one owner)."""
        return stacked if self.rows is None else stacked.index_select(0, self.rows)

    def segmented(self, fn: Callable[..., torch.Tensor], rowwise: Sequence[torch.Tensor | None],
                  stacked: Sequence[torch.Tensor]) -> torch.Tensor:
        """fn over each owner's range of rows, concatenated back in batch order (needs `segments`).

        Args:
            fn: called as fn(*rowwise_of_the_range, *stacked_of_the_owner): a one-owner computation that takes
                per-owner values with a leading dimension of 1.
            rowwise: (B, ...) tensors sliced to the range; None, or a leading dimension of 1 (broadcast over
                rows), passes unchanged.
            stacked: (T, ...) per-owner values; owner i's enter as (1, ...) (a split of the stack).
        """
        batch, sizes = self.size, segment_sizes(self.segments)
        # one split per tensor, not a slice per range: a split's backward is one concatenation, while each
        # slice's backward writes its gradient into a zero tensor of the whole batch
        parts = [r.split(sizes) if r is not None and r.shape[0] == batch else [r] * len(sizes) for r in rowwise]
        parts += [t.split(1) for t in stacked]
        return torch.cat([fn(*(p[i] for p in parts)) for i in range(len(sizes))])

    def groups(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The rows of each owner, and the permutation that puts the owners' concatenated rows back in batch order.

        Built on the host once per routing, the first time a layer asks (grouped adapters, see `routed_adapter`).
        """
        if self._groups is None:
            members = [[row for row, owner in enumerate(self.owner_of_row) if owner == i] for i in range(len(self.owners))]
            order = [row for rows in members for row in rows]
            self._groups = ([host_index(rows, self.device) for rows in members],
                            host_index(inverse_permutation(order), self.device))
        return self._groups


# ---------------------------------------------------------------------------------------------- per-call scope
# {id(owner): its value in this context} (an adapter method's RoutedCall, a model's scoped task); replaced, never
# mutated, by each scope, so a scope's reset restores exactly what its caller saw.
_SCOPED: ContextVar[Mapping[int, Any]] = ContextVar("hf_mtl_scoped", default=MappingProxyType({}))


@contextlib.contextmanager
def call_scope(owner: object, value: Any) -> Iterator[Any]:
    """Give `owner` (an adapter method, a model) `value` in this thread's context until the block exits."""
    token = _SCOPED.set(MappingProxyType({**_SCOPED.get(), id(owner): value}))
    try:
        yield value
    finally:
        _SCOPED.reset(token)


def scoped_value(owner: object) -> Any | None:
    """`owner`'s value in this context (None outside any `call_scope` of it; every thread starts outside)."""
    return _SCOPED.get().get(id(owner))


@dataclass
class RoutedCall:
    """One backbone forward as an adapter method's layers see it.

    Attributes:
        routing: the batch's routing.
        values: what the method computes once for the forward (stacked task weights, generated adapters, ...).
        inputs: what a pre-hook captures for a later hook of the same forward (a layer's input, ...).
    """

    routing: Routing
    values: dict[str, Any] = field(default_factory=dict)
    inputs: dict[Hashable, Any] = field(default_factory=dict)

    def scope(self, owner: object) -> contextlib.AbstractContextManager[RoutedCall]:
        """Make this the current call of `owner` (an adapter method) in this thread's context, until exit."""
        return call_scope(owner, self)

    @staticmethod
    def current(owner: object) -> RoutedCall | None:
        """The call `owner` serves in this context; None outside any (the backbone called directly)."""
        return scoped_value(owner)
