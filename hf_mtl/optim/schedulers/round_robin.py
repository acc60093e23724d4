"""`round_robin`: the tasks in turn, one step each."""

from __future__ import annotations

import numpy as np

from .base import TaskScheduler, register_scheduler


@register_scheduler
class RoundRobinScheduler(TaskScheduler):
    """Round-robin: task = step mod M, in `task_names` order; probabilities are uniform."""

    name = "round_robin"

    def probabilities(self, epoch: int) -> np.ndarray:
        return np.full(self.num_tasks, 1.0 / self.num_tasks)

    def task_for_step(self, epoch: int, step: int, steps_per_epoch: int, global_batch_size: int) -> int:
        return step % self.num_tasks
