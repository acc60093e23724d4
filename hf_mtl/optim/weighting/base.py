"""`LossWeighting`: one loss from the per-task losses, W(L_1, ..., L_M); the registry `LOSS_WEIGHTINGS`.

The trainer calls, per micro-batch, `combine(task_losses, progress)` (the tasks present in the batch),
and once per optimizer step `update(step_losses, progress)` with each task's mean loss of the step
(over micro-batches and ranks), so dynamic weightings evolve identically on every rank. `weights`
gives the λ_t that are logged as `weight_<task>`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import TaskConfigError
from ...registry import Registry
from ...tasks import Task
from ..strategy import Strategy


@dataclass(frozen=True)
class Progress:
    """Where training stands when a loss is combined.

    Attributes:
        step: optimizer steps completed before the current one (the Trainer's `global_step`).
        epoch: fractional epochs completed (the Trainer's `state.epoch`).
        max_steps: optimizer steps of the whole run.
        steps_per_epoch: optimizer steps per epoch.
    """

    step: int = 0
    epoch: float = 0.0
    max_steps: int = 1
    steps_per_epoch: int = 1


class LossWeighting(Strategy, abc.ABC):
    """Base class. Subclasses implement `weights` (and, if W is not Σ λ_t L_t, `combine`).

    Args:
        tasks: the run's tasks by name, in training order.
        sizes: training examples per task, |D_t|.
        options: the weighting's options (`loss_weighting_options`).

    Class flags read by the trainer:
        linear: W = Σ_t λ_t L_t with λ fixed during a step, so gradient accumulation may combine
            micro-batches one by one. False (Tchebycheff's max) makes the trainer keep per-task
            gradients when a step spans several micro-batches or ranks.
        needs_all_tasks: compares tasks within a step: requires `sampling_strategy: all_tasks`.
        uses_step_losses: `update` reads the step's mean losses (the trainer then reduces them over ranks).
    """

    kind: ClassVar[str] = "loss_weighting"
    options_field: ClassVar[str] = "loss_weighting_options"
    linear: ClassVar[bool] = True
    needs_all_tasks: ClassVar[bool] = False
    uses_step_losses: ClassVar[bool] = False

    def __init__(self, tasks: dict[str, Task], sizes: dict[str, int], **options: Any):
        self.tasks = dict(tasks)
        self.task_names = list(tasks)
        self.sizes = dict(sizes)
        self.options = self._check_options(options)

    @abc.abstractmethod
    def weights(self, progress: Progress) -> dict[str, float]:
        """λ_t of every task at `progress` (logged as `weight_<task>`).

        Args:
            progress: where training stands.

        Returns:
            {task: λ_t}.
        """

    def combine(self, task_losses: dict[str, torch.Tensor], progress: Progress) -> torch.Tensor:
        """W over the tasks present: Σ_t λ_t L_t by default.

        Args:
            task_losses: {task: mean loss of its rows}, one entry per task in the batch.
            progress: where training stands.

        Returns:
            A scalar tensor.
        """
        weights = self.weights(progress)
        return sum(weights[name] * loss for name, loss in task_losses.items())

    def update(self, step_losses: dict[str, float], progress: Progress) -> None:
        """Learn from the optimizer step that just ended (no-op for static weightings).

        Args:
            step_losses: {task: mean loss over the step's micro-batches and ranks}, tasks trained in the step.
            progress: `step` is the index of that step (0-based).
        """

    def parameters(self) -> list[nn.Parameter]:
        """Learned parameters of the weighting (optimized with the model; none by default)."""
        return []

    def to(self, device: torch.device) -> LossWeighting:
        """Move learned parameters to `device` (before the optimizer is built)."""
        for param in self.parameters():
            param.data = param.data.to(device)
        return self

    def _check_task_names(self, option: str, names: Any) -> list[str]:
        if isinstance(names, str) or not isinstance(names, (list, tuple, dict)):
            raise self._option_error(option, names, f"a list (or object) of task names among {self.task_names}")
        unknown = [n for n in names if n not in self.tasks]
        if unknown:
            raise TaskConfigError(
                f"Invalid {self.options_field}.{option} for {self.kind} {self.name!r}: unknown task(s) {unknown}. "
                f"Known tasks: {self.task_names}."
            )
        return list(names)


LOSS_WEIGHTINGS: Registry[type[LossWeighting]] = Registry("loss_weighting", base=LossWeighting)


def register_weighting(cls: type[LossWeighting]) -> type[LossWeighting]:
    """Class decorator adding a weighting to `LOSS_WEIGHTINGS` under `cls.name`."""
    return LOSS_WEIGHTINGS.register(cls)


def build_loss_weighting(name: str, tasks: dict[str, Task], sizes: dict[str, int],
                         options: dict[str, Any] | None = None) -> LossWeighting:
    """Build the weighting registered under `name`.

    Args:
        name: a key of `LOSS_WEIGHTINGS`.
        tasks: the run's tasks by name.
        sizes: training examples per task.
        options: its options (`loss_weighting_options`).

    Returns:
        The weighting.
    """
    return LOSS_WEIGHTINGS.get(name)(tasks, sizes, **(options or {}))

