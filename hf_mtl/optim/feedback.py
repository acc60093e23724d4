"""Feedback from the trainer to a dynamic task scheduler, after every optimizer step.

`SchedulerFeedback` (a `TrainerCallback`) passes the scheduler `{"trained": {task: rows}}` (the step's
training rows per task, summed over ranks) after each step and, for a scheduler whose `eval_feedback()`
asks for it (the bandit), `{"eval_losses": {task: loss}}` every K steps and once before the first step:
the mean loss of each task on the first rows of its evaluation data, computed in eval mode, each rank on
its share of the batches, then reduced, so every rank's scheduler takes the same update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback

from ..errors import DataError
from .distributed import all_reduce_


class HeldOutLosses:
    """Mean task losses on a small held-out slice.

    Args:
        eval_sets: {task: TaskDataset} with at least one row each.
        rows: rows per task (the first ones).
        collator: the trainer's data collator.
        batch_size: rows per forward.
        rank, world: this rank and the number of ranks (rank r evaluates batches r, r + world, ...).
    """

    def __init__(self, eval_sets: dict[str, Any], rows: int, collator: Callable, batch_size: int, rank: int, world: int):
        self.task_names = list(eval_sets)
        self.batches: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for name, data in eval_sets.items():
            count = min(rows, len(data))
            starts = list(range(0, count, batch_size))[rank::world]
            self.batches[name] = [(min(batch_size, count - s), collator([data[i] for i in range(s, min(s + batch_size, count))]))
                                  for s in starts]

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """{task: mean loss over the slice} (row-weighted mean of batch means), the same on every rank."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        sums = torch.zeros(2, len(self.task_names), dtype=torch.float64)
        try:
            for i, name in enumerate(self.task_names):
                for rows, batch in self.batches[name]:
                    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                    sums[0, i] += float(model(**batch).task_losses[name]) * rows
                    sums[1, i] += rows
        finally:
            model.train(was_training)
        all_reduce_(sums)
        return {name: float(sums[0, i] / sums[1, i]) for i, name in enumerate(self.task_names)}


class SchedulerFeedback(TrainerCallback):
    """Feeds the trainer's task scheduler; see the module docstring.

    Args:
        trainer: the `MultiTaskTrainer` (its `task_sampler`, `optim_plan`, `model`, `accelerator`).
        held_out: the held-out losses for schedulers with `eval_feedback()`, else None.
    """

    def __init__(self, trainer: Any, held_out: HeldOutLosses | None):
        self.trainer = trainer
        self.held_out = held_out

    def _scheduler(self) -> Any:
        return self.trainer.task_sampler.scheduler

    def _eval_losses(self) -> dict[str, float]:
        return self.held_out(self.trainer.accelerator.unwrap_model(self.trainer.model))

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.held_out is not None and state.global_step == 0:  # the baseline; a resumed run has its own
            self._scheduler().update({"eval_losses": self._eval_losses()})

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        scheduler = self._scheduler()
        scheduler.update({"trained": self.trainer.optim_plan.last_step_rows})
        feedback = scheduler.eval_feedback()
        if self.held_out is not None and feedback is not None and state.global_step % feedback[0] == 0:
            scheduler.update({"eval_losses": self._eval_losses()})


def build_held_out(scheduler: Any, eval_sets: dict[str, Any], collator: Callable, batch_size: int, rank: int,
                   world: int) -> HeldOutLosses | None:
    """The held-out slice a scheduler asks for through `eval_feedback()` (None if it asks for none).

    Raises:
        DataError: a task the reward reads has no evaluation data (the message names it and the fix).
    """
    feedback = scheduler.eval_feedback()
    if feedback is None:
        return None
    _, rows, tasks = feedback
    missing = [t for t in tasks if t not in eval_sets or len(eval_sets[t]) == 0]
    if missing:
        raise DataError(
            f"sampling_strategy={scheduler.name!r} measures its reward on held-out data of task(s) {missing} every "
            f"{feedback[0]} steps, and they have no evaluation data. Fix: pass eval_dataset={{task: dataset}} with "
            f"those tasks (or give them a `validation_file`), or choose another `primary_task` or sampling strategy."
        )
    return HeldOutLosses({t: eval_sets[t] for t in tasks}, rows, collator, batch_size, rank, world)
