"""What the methods driven by one learned embedding per task share (`ca_mtl`, `hyperformer`, `hyperformer++`).

Each task owns a single vector z (its embedding, saved under `<task>/` as `task_embedding`); every other
trainable parameter of the method is shared by all tasks (saved under `shared/`). The subclass builds the
shared modules and hooks; this class keeps the embeddings, the task/shared split of the parameters, and
their saving and loading.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..store.weights import load_exact
from ..tasks import Task
from .per_row import PerRowMethod, stack_parameters, task_key, task_of_key


TASK_EMBEDDINGS = "task_embeddings"  # the attribute, and the parameter-name prefix that is not shared


class TaskEmbeddingMethod(PerRowMethod):
    """A per-row method whose only per-task parameter is an embedding z of `task_embedding_dim` numbers.

    Subclasses set `self.options.task_embedding_dim`, `self._device` and `self._dtype` (in `attach`),
    and may rename the saved shared tensors by overriding `_shared_saved`.
    """

    embedding_init_scale: float = 1.0  # z ~ N(0, scale^2) per entry

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        super().__init__(backbone_config, config)
        self.task_embeddings = nn.ParameterDict()  # task_key(task) -> z (d_z,)
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ tasks
    def add_task(self, task: Task) -> None:
        key = task_key(task.name)
        if key not in self.task_embeddings:
            z = torch.randn(self.options.task_embedding_dim, device=self._device, dtype=self._dtype)
            self.task_embeddings[key] = nn.Parameter(z * self.embedding_init_scale)

    def known_tasks(self) -> Iterable[str]:
        return [task_of_key(key) for key in self.task_embeddings]

    def stack_task_embeddings(self, names: list[str]) -> torch.Tensor:
        """(T, d_z): the embeddings of `names`, in order (a view for one task)."""
        return stack_parameters(self.task_embeddings, [task_key(n) for n in names])

    # ------------------------------------------------------------------ parameters
    def task_parameters(self, task: str) -> list[nn.Parameter]:
        key = task_key(task)
        return [self.task_embeddings[key]] if key in self.task_embeddings else []

    def _shared_named(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if not n.startswith(TASK_EMBEDDINGS + ".")}

    def _shared_saved(self) -> dict[str, torch.Tensor]:
        """{saved name: tensor or view} of the shared parameters (default: their parameter names)."""
        return dict(self._shared_named())

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self._shared_named().values())

    def formula_parameter_count(self, task: str) -> int:
        """Per task: its embedding z, d_z numbers."""
        return self.options.task_embedding_dim

    def per_task_breakdown(self) -> dict[str, dict[str, int]]:
        """{task: {"task_embedding": d_z}}, for `parameter_breakdown`."""
        return {task_of_key(k): {"task_embedding": p.numel()} for k, p in self.task_embeddings.items()}

    def task_config(self, task: str) -> dict[str, Any]:
        parameters = {"task": self.formula_parameter_count(task), "shared": self.parameter_breakdown()["shared"]}
        return {"adapter_method": self.name, **self.config, "parameters": parameters}

    # ------------------------------------------------------------------ saving and loading
    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        return {"task_embedding": self.task_embeddings[task_key(task)].detach()}

    def load_task_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        self.add_task(Task(task))
        load_exact({"task_embedding": self.task_embeddings[task_key(task)]}, state, f"task {task!r} ({self.name})")

    def shared_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self._shared_saved().items()}

    def load_shared_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        load_exact(self._shared_saved(), state, f"shared weights ({self.name})")
