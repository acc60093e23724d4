"""`all_tasks`: every optimizer step trains one batch of every task.

Each rank's batch holds its slice of every task's next global batch (M·batch_size rows, a mixed-task
batch), so the loss of a step sees all M task losses at once: what gradient surgery and the weightings
that compare tasks within a step (Tchebycheff) need. The trainer combines them as Σ_t λ_t L_t with
L_t the mean over task t's rows; gradient accumulation and DDP then give the update of one process
with the combined batch. An epoch is one pass over the largest dataset; smaller ones cycle.
"""

from __future__ import annotations

import numpy as np

from .base import TaskScheduler, register_scheduler


@register_scheduler
class AllTasksScheduler(TaskScheduler):
    """No options. `probabilities` is each task's share of a step's rows, 1/M."""

    name = "all_tasks"
    draws_all_tasks = True

    def probabilities(self, epoch: int) -> np.ndarray:
        return np.full(self.num_tasks, 1.0 / self.num_tasks)
