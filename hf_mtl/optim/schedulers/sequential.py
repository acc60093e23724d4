"""`sequential`: one block of steps per task and epoch, or curriculum stages that switch the task set."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from ...errors import TaskConfigError
from .base import TaskScheduler, allocate_steps, draw_task, register_scheduler


@register_scheduler
class SequentialScheduler(TaskScheduler):
    """Sequential (curriculum) training within each epoch: one consecutive block of steps per task.

    Tasks come in the order of option `task_order` (every task name once; default `task_names`).
    Block t lasts ceil(|D_t| / B) steps with the default epoch length, otherwise S·|D_t|/Σ|D| steps
    rounded by largest remainder. `probabilities` gives each task's share of the epoch.

    Curriculum option `stages` (instead of `task_order`): a list of `{"step": s, "tasks": [...] or "all"}`
    that switches the set of tasks in training at given steps, counted over the whole run (epoch·S +
    step, in batches: optimizer steps × gradient_accumulation_steps), e.g. low-level tasks first, then
    all (Søgaard & Goldberg, 2016; Hashimoto et al., 2017). The first stage starts at step 0; within a
    stage each step draws a task i.i.d. with p_t ∝ |D_t| over the stage's tasks (`default_rng([seed,
    epoch, step])`). `probabilities` are those of the stage of the last drawn step (stage 0 before).
    """

    name = "sequential"
    option_defaults = {"task_order": None, "stages": None}

    def __init__(self, task_names: list[str], sizes: list[int], *, seed: int = 0, **options: Any) -> None:
        super().__init__(task_names, sizes, seed=seed, **options)
        self._order = [self.task_names.index(n) for n in self.options["task_order"]]
        self._ends_key: tuple[int, int] | None = None
        self._ends = np.empty(0, dtype=np.int64)
        self._stage = 0  # stage of the last drawn step (for `probabilities`)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["stages"] is not None:
            if options["task_order"] is not None:
                raise TaskConfigError(
                    "Sampling strategy 'sequential': give either `task_order` (one block per task and epoch) or "
                    "`stages` (task sets switched at given steps), not both."
                )
            return {"task_order": list(self.task_names), "stages": self._check_stages(options["stages"])}
        order = options["task_order"]
        if order is None:
            return {"task_order": list(self.task_names), "stages": None}
        if isinstance(order, str) or not isinstance(order, (list, tuple)):
            raise TaskConfigError(f"Invalid task_order {order!r}: give a list of task names, e.g. {self.task_names}.")
        unknown = [n for n in order if n not in self.task_names]
        if unknown:
            raise TaskConfigError(f"Invalid task_order: unknown task(s) {unknown}. Known tasks: {self.task_names}.")
        repeated = sorted({n for n in order if list(order).count(n) > 1})
        missing = [n for n in self.task_names if n not in order]
        if repeated or missing:
            raise TaskConfigError(
                f"Invalid task_order {list(order)}: list every task exactly once"
                + (f"; repeated: {repeated}" if repeated else "")
                + (f"; missing: {missing}" if missing else "")
                + "."
            )
        return {"task_order": list(order), "stages": None}

    def _check_stages(self, stages: Any) -> list[dict[str, Any]]:
        example = '[{"step": 0, "tasks": ["upos"]}, {"step": 500, "tasks": "all"}]'
        if isinstance(stages, (str, dict)) or not isinstance(stages, (list, tuple)) or not stages:
            raise TaskConfigError(f"Invalid stages {stages!r} for sampling strategy 'sequential': give a list like {example}.")
        out, previous = [], -1
        for k, stage in enumerate(stages):
            if not isinstance(stage, dict) or set(stage) != {"step", "tasks"}:
                raise TaskConfigError(f"Invalid stages[{k}] {stage!r}: each stage is {{\"step\": s, \"tasks\": [...] or \"all\"}}.")
            step, names = stage["step"], stage["tasks"]
            if isinstance(step, bool) or not isinstance(step, int) or step <= previous or (k == 0 and step != 0):
                raise TaskConfigError(
                    f"Invalid stages[{k}].step {step!r}: the first stage starts at step 0 and steps increase strictly."
                )
            names = list(self.task_names) if names == "all" else names
            if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
                raise TaskConfigError(f"Invalid stages[{k}].tasks {names!r}: give a non-empty list of task names or \"all\".")
            unknown = [n for n in names if n not in self.task_names]
            if unknown:
                raise TaskConfigError(f"Invalid stages[{k}].tasks: unknown task(s) {unknown}. Known tasks: {self.task_names}.")
            out.append({"step": step, "tasks": [n for n in self.task_names if n in names]})
            previous = step
        return out

    def _stage_probabilities(self, stage: int) -> np.ndarray:
        active = [n in self.options["stages"][stage]["tasks"] for n in self.task_names]
        sizes = np.where(active, np.asarray(self.sizes, dtype=np.float64), 0.0)
        return sizes / sizes.sum()

    def probabilities(self, epoch: int) -> np.ndarray:
        if self.options["stages"] is not None:
            return self._stage_probabilities(self._stage)
        sizes = np.asarray(self.sizes, dtype=np.float64)
        return sizes / sizes.sum()

    def task_for_step(self, epoch: int, step: int, steps_per_epoch: int, global_batch_size: int) -> int:
        if self.options["stages"] is not None:
            starts = [stage["step"] for stage in self.options["stages"]]
            self._stage = bisect.bisect_right(starts, epoch * steps_per_epoch + step) - 1
            return draw_task(self._stage_probabilities(self._stage), [self.seed, epoch, step])
        if (steps_per_epoch, global_batch_size) != self._ends_key:
            counts = allocate_steps([self.sizes[t] for t in self._order], steps_per_epoch, global_batch_size)
            self._ends_key, self._ends = (steps_per_epoch, global_batch_size), np.cumsum(counts)
        block = int(np.searchsorted(self._ends, step, side="right"))
        return self._order[min(block, len(self._order) - 1)]
