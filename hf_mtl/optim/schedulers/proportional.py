"""`proportional`: examples-proportional sampling, with an exact multiset of tasks per epoch (MT-DNN)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import TaskScheduler, allocate_steps, register_scheduler


@register_scheduler
class ProportionalScheduler(TaskScheduler):
    """Examples-proportional sampling, implemented exactly (MT-DNN; Liu et al., 2019).

    p_t = |D_t| / Σ_s |D_s|. Rather than drawing i.i.d., each epoch of S steps holds an exact multiset:
    ceil(|D_t| / B) steps of task t with the default S (one epoch covers each dataset once), otherwise
    S·p_t rounded by largest remainder; the multiset is shuffled with `default_rng([seed, epoch])`.
    """

    name = "proportional"

    def __init__(self, task_names: list[str], sizes: list[int], *, seed: int = 0, **options: Any) -> None:
        super().__init__(task_names, sizes, seed=seed, **options)
        self._plan_key: tuple[int, int, int] | None = None
        self._plan: np.ndarray = np.empty(0, dtype=np.int64)

    def probabilities(self, epoch: int) -> np.ndarray:
        sizes = np.asarray(self.sizes, dtype=np.float64)
        return sizes / sizes.sum()

    def task_for_step(self, epoch: int, step: int, steps_per_epoch: int, global_batch_size: int) -> int:
        key = (epoch, steps_per_epoch, global_batch_size)
        if key != self._plan_key:  # one epoch's plan is cached: it is S ints
            counts = allocate_steps(self.sizes, steps_per_epoch, global_batch_size)
            plan = np.repeat(np.arange(self.num_tasks), counts)
            np.random.default_rng([self.seed, epoch]).shuffle(plan)
            self._plan_key, self._plan = key, plan
        return int(self._plan[step])
