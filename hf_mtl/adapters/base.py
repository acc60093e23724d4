"""The adapter-method interface and its registry.

An adapter method owns every parameter it adds to the frozen backbone. The `MultiTaskModel` calls it
at a few named points:

- `attach(model)` once, after the backbone is built: insert modules through the architecture spec
  (`hf_mtl.modeling.arch`), never by copying `forward` code or swapping `__class__`;
- `add_task(task)` for each task (and language) it must serve;
- `route(routing)` around every backbone forward: a context manager that tells the inserted modules
  which task (and language) each row belongs to. The routing lives on the method's own modules for
  the duration of the call (scoped, not global or thread-local), and is cleared on exit;
- `task_state_dict` / `load_task_state_dict` and `shared_state_dict` / `load_shared_state_dict` to
  save `<task>/adapter_model.safetensors` and `shared/adapter_model.safetensors`;
- `adapter_languages()` + `language_state_dict` / `load_language_state_dict` / `language_config` for
  methods with language adapters (MAD-X, LoRA language adapters): the store writes each language
  returned by `adapter_languages()` to `languages/<lang>/adapter_model.safetensors` (+ its
  `adapter_config.json`) and loads it back for every such language of the rebuilt model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from ..errors import TaskConfigError
from ..registry import Registry
from ..tasks import Task


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


@dataclass
class Routing:
    """Which task (and language) each row of a batch belongs to.

    Attributes:
        task_ids: (B,) index of each row's task in `task_names`.
        task_names: every task the model knows, in index order.
        batch_tasks: the distinct tasks present in the batch, in order of first appearance.
        languages: per-row language codes (or None), for language adapters.
        row_tasks: per-row task names on the host, when the caller has them: row selections then need no
            device-to-host read of `task_ids` (on a GPU each such read waits for all queued work).
    """

    task_ids: torch.Tensor
    task_names: list[str]
    batch_tasks: list[str]
    languages: list[str | None] | None = None
    row_tasks: list[str] | None = None

    def reordered(self, order: list[int], rows: torch.Tensor) -> "Routing":
        """The routing of the batch with its rows taken in the order `order` (`rows`: the same on `task_ids`' device)."""
        return Routing(
            task_ids=self.task_ids.index_select(0, rows), task_names=self.task_names, batch_tasks=self.batch_tasks,
            languages=None if self.languages is None else [self.languages[i] for i in order],
            row_tasks=None if self.row_tasks is None else [self.row_tasks[i] for i in order],
        )

    @property
    def single_task(self) -> str | None:
        return self.batch_tasks[0] if len(self.batch_tasks) == 1 else None

    def rows_of(self, name: str) -> torch.Tensor:
        """(n,) indices of task `name`'s rows, on `task_ids`' device."""
        if self.row_tasks is not None:
            return host_index([i for i, task in enumerate(self.row_tasks) if task == name], self.task_ids.device)
        return (self.task_ids == self.task_names.index(name)).nonzero(as_tuple=True)[0]

    def names_per_row(self) -> list[str]:
        """Each row's task name (read back from `task_ids` only when neither the host names nor a single task
        give it)."""
        if self.row_tasks is not None:
            return list(self.row_tasks)
        if self.single_task is not None:
            return [self.single_task] * self.task_ids.numel()
        return [self.task_names[i] for i in self.task_ids.tolist()]


class AdapterMethod(nn.Module):
    """Base class; the `none` method (head-only or full fine-tuning) is this class unchanged."""

    name: ClassVar[str] = "none"
    routes_per_row: ClassVar[bool] = True  # a mixed-task batch runs in one forward pass
    # On the CPU, the method runs a mixed batch fastest with each task's rows in one contiguous range
    # (plain matmuls on views instead of per-row gathers): `MultiTaskModel` then orders the rows by task
    # around the backbone's forward when they come interleaved, and puts the outputs back in batch order.
    groups_rows: ClassVar[bool] = False

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        super().__init__()
        self.backbone_config = backbone_config
        self.config = dict(config or {})

    # -- lifecycle ---------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> None:
        """Insert the method's modules into `model.backbone`."""

    def add_task(self, task: Task) -> None:
        """Create the task's own parameters (no-op for methods without per-task parameters)."""

    @contextlib.contextmanager
    def route(self, routing: Routing) -> Iterator[None]:
        """Activate the parameters of the batch's tasks for one backbone forward."""
        yield

    # -- parameters --------------------------------------------------------------------------
    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return []

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        return {}

    def load_task_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise TaskConfigError(f"task {task!r}: method {self.name!r} has no per-task weights to load.")

    def shared_state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_shared_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise TaskConfigError(f"method {self.name!r} has no shared weights to load.")

    # -- language adapters (methods without them keep these defaults) -------------------------------
    def adapter_languages(self) -> list[str]:
        """The languages that own weights of this method (saved under `languages/<lang>/`)."""
        return []

    def language_parameters(self, language: str) -> list[nn.Parameter]:
        return []

    def language_state_dict(self, language: str) -> dict[str, torch.Tensor]:
        return {}

    def load_language_state_dict(self, language: str, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise TaskConfigError(f"language {language!r}: method {self.name!r} has no language adapters to load.")

    def language_config(self, language: str) -> dict[str, Any]:
        """Content of `languages/<lang>/adapter_config.json`."""
        return {"adapter_method": self.name, "language": language, **self.config}

    def task_config(self, task: str) -> dict[str, Any]:
        """Content of `<task>/adapter_config.json`."""
        return {"adapter_method": self.name, **self.config}

    def formula_parameter_count(self, task: str) -> int | None:
        """Per-task parameter count from the method's formula (checked against the real count in tests)."""
        return 0


# Every adapter method, by name -> the module that registers it; a method's module is imported the first
# time its name is looked up, so validating a recipe does not import PEFT or every method's code.
METHOD_MODULES: dict[str, str] = {
    "none": "hf_mtl.adapters.base",
    "bottleneck": "hf_mtl.adapters.bottleneck",
    "ca_mtl": "hf_mtl.adapters.ca_mtl",
    "hyperformer": "hf_mtl.adapters.hyperformer",
    "hyperformer++": "hf_mtl.adapters.hyperformer",
    "lora": "hf_mtl.adapters.lora",
    "madx": "hf_mtl.adapters.madx",
    "pals": "hf_mtl.adapters.pals",
    "prefix_tuning": "hf_mtl.adapters.prefix_tuning",
}
ADAPTER_METHODS: Registry[type[AdapterMethod]] = Registry("adapter_method", base=AdapterMethod, modules=METHOD_MODULES)
ADAPTER_METHODS.register(AdapterMethod)


def register_method(cls: type[AdapterMethod]) -> type[AdapterMethod]:
    """Class decorator: make `cls` selectable by `adapter_method: cls.name` (list it in `METHOD_MODULES` too)."""
    return ADAPTER_METHODS.register(cls)


def build_adapter_method(name: str, backbone_config: Any, config: dict[str, Any] | None = None) -> AdapterMethod:
    """Build the adapter method registered under `name` (case and '-' vs '_' do not matter).

    Args:
        name: a name of `ADAPTER_METHODS`.
        backbone_config: the backbone's `PretrainedConfig`.
        config: the method's options (`adapter_config`).

    Returns:
        The method, not yet attached.
    """
    return ADAPTER_METHODS.get(name)(backbone_config, config)
