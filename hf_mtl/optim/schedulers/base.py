"""`TaskScheduler`: chooses which task each optimizer micro-step trains; the registry `SAMPLING_STRATEGIES`.

A scheduler decides the task, `hf_mtl.data.samplers.MultiTaskBatchSampler` turns the decision into the
indices of each rank's batch (DESIGN.md, "Data path"). Draws are a pure function of (state, seed, epoch,
step), so every rank draws the same task and a resumed run continues the same sequence. The strategies
live one family per file next to this one and register here by name (`sampling_strategy` in a recipe).
"""

from __future__ import annotations

import bisect
from typing import Any, ClassVar

import numpy as np

from ...errors import DataError, TaskConfigError
from ...registry import Registry
from ..strategy import Strategy


def check_tasks(task_names: Any, sizes: Any) -> tuple[list[str], list[int]]:
    """Check the task list and the dataset sizes that go with it; return them as plain lists."""
    if isinstance(task_names, str) or not isinstance(task_names, (list, tuple)) or not task_names:
        raise TaskConfigError(f"Invalid task_names {task_names!r}: give a non-empty list of task names.")
    names = list(task_names)
    if any(not isinstance(n, str) or not n for n in names):
        raise TaskConfigError(f"Invalid task_names {names!r}: every task name must be a non-empty string.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaskConfigError(f"Invalid task_names: {duplicates} appear more than once. Fix: list each task once.")
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) != len(names):
        raise TaskConfigError(
            f"Invalid sizes {sizes!r}: give one dataset size per task ({len(names)} tasks: {names})."
        )
    out = []
    for name, size in zip(names, sizes):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TaskConfigError(f"Invalid sizes entry for task {name!r}: {size!r} is not an integer.")
        if size < 1:
            raise DataError(
                f"Task {name!r} has no training examples (sizes entry {int(size)}): a scheduler cannot draw "
                f"batches from it. Fix: give the task training data or remove it from the run."
            )
        out.append(int(size))
    return names, out


def check_int(value: Any, field: str, minimum: int) -> int:
    """`value` as an int, or `TaskConfigError` naming `field` unless it is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TaskConfigError(f"Invalid {field} {value!r}: it must be an integer >= {minimum}.")
    return int(value)


def allocate_steps(sizes: list[int], steps: int, global_batch_size: int) -> list[int]:
    """Split `steps` steps among tasks in proportion to their sizes, exactly.

    With the default epoch length (S = Σ_t ceil(|D_t| / B)) task t gets ceil(|D_t| / B) steps, so the
    epoch covers each dataset once. Otherwise it gets floor(S·p_t) or one more, by largest remainder
    (Hamilton's method) with p_t = |D_t| / Σ|D|; ties go to the earlier task. Integer arithmetic only.

    Args:
        sizes: examples per task.
        steps: steps in the epoch (S).
        global_batch_size: examples per step over all ranks (B).

    Returns:
        Steps per task, summing to `steps`.
    """
    per_task = [-(-n // global_batch_size) for n in sizes]
    if sum(per_task) == steps:
        return per_task
    total = sum(sizes)
    counts = [steps * n // total for n in sizes]
    remainders = [steps * n % total for n in sizes]
    order = sorted(range(len(sizes)), key=lambda t: -remainders[t])  # stable: ties keep task order
    for t in order[: steps - sum(counts)]:
        counts[t] += 1
    return counts


def draw_task(probabilities: np.ndarray, entropy: list[int]) -> int:
    """One uniform u from `default_rng(entropy)`; the task is the first t with u < Σ_{s<=t} p_s.

    Tasks with p_t = 0 have an empty bin and are never drawn, the trailing ones included (the cdf is
    set to 1 from the last task with p_t > 0 on, so rounding cannot leave u above it).
    """
    cdf = np.cumsum(probabilities)
    cdf[int(np.flatnonzero(probabilities > 0)[-1]):] = 1.0
    return bisect.bisect_right(cdf.tolist(), np.random.default_rng(entropy).random())


def softmax(logits: np.ndarray) -> np.ndarray:
    """softmax(logits), computed stably."""
    # Powers |D|^(1/T) overflow for small T; log-space keeps them exact up to normalization.
    z = np.exp(logits - logits.max())
    return z / z.sum()


class TaskScheduler(Strategy):
    """Chooses which task each optimizer micro-step trains.

    Subclasses set `name` (the string a recipe uses), `option_defaults` (option name -> default, or
    `hf_mtl.optim.strategy.REQUIRED`), and implement `probabilities` and `task_for_step`. Draws are a pure function of
    (scheduler state, seed, epoch, step): stochastic schedulers draw with a fresh
    `np.random.default_rng([seed, epoch, step])`, so no RNG state needs saving and every rank draws
    the same task. Dynamic schedulers keep what they learn from `update` in `state_dict`.

    Args:
        task_names: the tasks, in the order of the concatenated dataset.
        sizes: number of training examples of each task (|D_t|).
        seed: non-negative seed shared by all ranks.
        options: strategy options (see each subclass); unknown or invalid ones raise `TaskConfigError`.

    Epochs are 0-based, as in `Sampler.set_epoch` and the Trainer.
    """

    kind: ClassVar[str] = "sampling_strategy"
    options_field: ClassVar[str] = "sampling_options"
    # Trainer-facing flags:
    draws_all_tasks: ClassVar[bool] = False  # every step holds a batch of every task; task_for_step is unused
    selects_rows: ClassVar[bool] = False  # the trainer keeps the most uncertain batch_size rows of that pool
    dynamic: ClassVar[bool] = False  # learns from `update`; its probabilities are logged as prob_<task>

    def __init__(self, task_names: list[str], sizes: list[int], *, seed: int = 0, **options: Any) -> None:
        self.task_names, self.sizes = check_tasks(task_names, sizes)
        self.seed = check_int(seed, "seed", 0)
        self.options = self._check_options(options)

    # -- the schedule

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def probabilities(self, epoch: int) -> np.ndarray:
        """Per-step task probabilities in `epoch` (for logging and tests).

        Args:
            epoch: 0-based epoch.

        Returns:
            Array of shape (num_tasks,) summing to 1, in `task_names` order.
        """
        raise NotImplementedError

    def task_for_step(self, epoch: int, step: int, steps_per_epoch: int, global_batch_size: int) -> int:
        """The task trained at `step` of `epoch`; deterministic given state, seed, epoch and step.

        Args:
            epoch: 0-based epoch.
            step: 0-based step within the epoch, `< steps_per_epoch`.
            steps_per_epoch: number of steps in the epoch (S).
            global_batch_size: examples per step over all ranks (B).

        Returns:
            Index of the task in `task_names`.
        """
        raise NotImplementedError

    def update(self, feedback: dict) -> None:
        """Learn from the trainer (losses, rewards, ...); a no-op for static schedulers.

        Args:
            feedback: whatever the dynamic scheduler documents (e.g. `{"task": ..., "loss": ...}`).
        """

    def eval_feedback(self) -> tuple[int, int, list[str]] | None:
        """What held-out feedback the scheduler wants from the trainer, or None (the default).

        Returns:
            (every K optimizer steps, rows per task of the held-out slice, the tasks to evaluate): the
            trainer then passes `{"eval_losses": {task: loss}}` to `update` every K steps (and once before
            the first step).
        """
        return None

    def select_batch(self, model: Any, pool: dict[str, Any], tasks: dict[str, Any], batch_size: int,
                     split_forward: bool) -> dict[str, Any]:
        """The batch to train on, from the collated batch the sampler drew (called by the trainer in training).

        Args:
            model: the unwrapped `MultiTaskModel` (a scheduler may score the pool with it).
            pool: the collated batch (`task` per row, or one task name).
            tasks: the run's tasks by name.
            batch_size: the per-device batch size.
            split_forward: the adapter method runs a mixed batch as one forward per task.

        Returns:
            `pool` itself by default; `uncertainty` keeps the `batch_size` most uncertain rows.
        """
        return pool

    # -- checkpointing

    def state_dict(self) -> dict:
        """JSON-serializable state. Static schedulers keep only their configuration, for validation.

        Returns:
            `{"name", "seed", "options"}`; dynamic schedulers add their learned state.
        """
        return {"name": self.name, "seed": self.seed, "options": dict(self.options)}

    def check_state(self, state: Any) -> None:
        """A different strategy or seed is an error (different options only warn, see `load_state_dict`)."""
        super().check_state(state)
        if state.get("seed", self.seed) != self.seed:
            raise TaskConfigError(
                f"Scheduler state mismatch in field 'seed': checkpoint {state['seed']}, this run {self.seed}. "
                f"Fix: resume with the checkpoint's seed, or the task sequence would change."
            )

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}(tasks={self.task_names}, seed={self.seed}{opts})"


SAMPLING_STRATEGIES: Registry[type[TaskScheduler]] = Registry("sampling_strategy", base=TaskScheduler)


def register_scheduler(cls: type[TaskScheduler]) -> type[TaskScheduler]:
    """Class decorator adding a scheduler to `SAMPLING_STRATEGIES` under `cls.name`.

    Args:
        cls: a `TaskScheduler` subclass that defines `name`.

    Returns:
        `cls`, unchanged.
    """
    return SAMPLING_STRATEGIES.register(cls)


def build_scheduler(
    name: str, task_names: list[str], sizes: list[int], *, seed: int = 0, **options: Any
) -> TaskScheduler:
    """Build the scheduler registered under `name`.

    Args:
        name: a name of `SAMPLING_STRATEGIES` (case and '-' vs '_' do not matter).
        task_names: the tasks, in dataset order.
        sizes: examples per task.
        seed: non-negative seed shared by all ranks.
        options: the strategy's options.

    Returns:
        The scheduler.
    """
    return SAMPLING_STRATEGIES.get(name)(task_names, sizes, seed=seed, **options)


class IIDScheduler(TaskScheduler):
    """Base of the schedulers that draw each step's task independently from `probabilities(epoch)`.

    The draw uses `np.random.default_rng([seed, epoch, step])`: one uniform u, task = the first t with
    u < Σ_{s<=t} p_s (`draw_task`).
    """

    def task_for_step(self, epoch: int, step: int, steps_per_epoch: int, global_batch_size: int) -> int:
        return draw_task(self.probabilities(epoch), [self.seed, epoch, step])
