"""Task schedulers and the rank-aware multi-task batch sampler.

A *scheduler* decides which task each optimizer micro-step trains; the *batch sampler* turns that
decision into the indices of one single-task batch per rank (DESIGN.md, "Data path"):

```
scheduler.task_for_step(epoch, step) --> task t (the same on every rank: shared seed, no RNG state)
task t's stream (a seeded permutation of its examples, cycled) --> next global_batch indices
rank r <-- indices[r * batch_size : (r + 1) * batch_size]  +  offsets[t]   (ConcatDataset order)
```

A scheduler with `draws_all_tasks` (`all_tasks`, and the `uncertainty` scheduler's candidate pool)
trains every task at every step: each rank's batch is its slice of every task's next global batch,
in task order (a mixed-task batch of M·batch_size rows).

Resume is exact: the sampler records the tasks it drew in the current epoch (`history`) and
replays them after `load_state_dict`, so skipping the first k batches of the epoch (what the
Trainer does on resume) reproduces what the uninterrupted run yields, even for dynamic schedulers
whose state moved on since those steps were drawn.
"""

from __future__ import annotations

import bisect
import math
import warnings
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from ..errors import DataError, TaskConfigError

__all__ = [
    "SAMPLING_STRATEGIES",
    "AnnealedScheduler",
    "IIDScheduler",
    "MultiTaskBatchSampler",
    "ProportionalScheduler",
    "RoundRobinScheduler",
    "SequentialScheduler",
    "TaskScheduler",
    "TemperatureScheduler",
    "UniformScheduler",
    "build_scheduler",
    "register_scheduler",
]

SAMPLING_STRATEGIES: dict[str, type["TaskScheduler"]] = {}

_REQUIRED = object()  # marks an option without a default
# Appended to the entropy of the sampler's example streams. numpy's SeedSequence pads entropy with
# zeros, so [seed, epoch] == [seed, epoch, 0, 0]: without this tag the stream of task 0, cycle 0
# would reuse the proportional scheduler's shuffle seed (and task t's the i.i.d. draw of step t).
_STREAM_DOMAIN = 0x5354524D  # "STRM"


# ----------------------------------------------------------------------------------------------
# validation helpers


def _check_tasks(task_names: Any, sizes: Any) -> tuple[list[str], list[int]]:
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


def _check_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TaskConfigError(f"Invalid {field} {value!r}: it must be an integer >= {minimum}.")
    return int(value)


def _allocate_steps(sizes: list[int], steps: int, global_batch_size: int) -> list[int]:
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


def _draw_task(probabilities: np.ndarray, entropy: list[int]) -> int:
    """One uniform u from `default_rng(entropy)`; the task is the first t with u < Σ_{s<=t} p_s.

    Tasks with p_t = 0 have an empty bin and are never drawn, the trailing ones included (the cdf is
    set to 1 from the last task with p_t > 0 on, so rounding cannot leave u above it).
    """
    cdf = np.cumsum(probabilities)
    cdf[int(np.flatnonzero(probabilities > 0)[-1]):] = 1.0
    return bisect.bisect_right(cdf.tolist(), np.random.default_rng(entropy).random())


def _softmax(logits: np.ndarray) -> np.ndarray:
    # Powers |D|^(1/T) overflow for small T; log-space keeps them exact up to normalization.
    z = np.exp(logits - logits.max())
    return z / z.sum()


# ----------------------------------------------------------------------------------------------
# schedulers


class TaskScheduler:
    """Chooses which task each optimizer micro-step trains.

    Subclasses set `name` (the string a recipe uses), `option_defaults` (option name -> default, or
    `_REQUIRED`), and implement `probabilities` and `task_for_step`. Draws are a pure function of
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

    name: ClassVar[str]
    option_defaults: ClassVar[dict[str, Any]] = {}
    # Trainer-facing flags (hf_mtl.optim.schedulers holds the strategies that set them):
    draws_all_tasks: ClassVar[bool] = False  # every step holds a batch of every task; task_for_step is unused
    selects_rows: ClassVar[bool] = False  # the trainer keeps the most uncertain batch_size rows of that pool
    dynamic: ClassVar[bool] = False  # learns from `update`; its probabilities are logged as prob_<task>

    def __init__(self, task_names: list[str], sizes: list[int], *, seed: int = 0, **options: Any) -> None:
        self.task_names, self.sizes = _check_tasks(task_names, sizes)
        self.seed = _check_int(seed, "seed", 0)
        self.options = self._check_options(options)

    # -- options

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults, reject unknown or missing options, then let the subclass validate values."""
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            valid = ", ".join(sorted(self.option_defaults)) or "none"
            raise TaskConfigError(
                f"Invalid option(s) {unknown} for sampling strategy {self.name!r}: its options are: {valid}."
            )
        # None means "not given", so a recipe may carry every field of every strategy.
        merged = {k: options[k] if options.get(k) is not None else d for k, d in self.option_defaults.items()}
        missing = sorted(k for k, v in merged.items() if v is _REQUIRED)
        if missing:
            raise TaskConfigError(f"Sampling strategy {self.name!r} requires the option(s) {missing}; none given.")
        return self.validate_options(merged)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Check option values and convert them to JSON types; override in subclasses with options.

        Args:
            options: every option, defaults filled in.

        Returns:
            The options to keep in `self.options` (and in `state_dict`).
        """
        return options

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

    # -- checkpointing

    def state_dict(self) -> dict:
        """JSON-serializable state. Static schedulers keep only their configuration, for validation.

        Returns:
            `{"name", "seed", "options"}`; dynamic schedulers add their learned state.
        """
        return {"name": self.name, "seed": self.seed, "options": dict(self.options)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()`. A different strategy or seed is an error; different options
        only warn (e.g. a resumed run that trains more epochs), the run's options win.

        Args:
            state: what `state_dict()` returned, possibly through JSON.
        """
        if not isinstance(state, dict) or "name" not in state:
            raise TaskConfigError(f"Invalid scheduler state {state!r}: expected the dict of `state_dict()`.")
        if state["name"] != self.name:
            raise TaskConfigError(
                f"Scheduler state mismatch in field 'name': the checkpoint was trained with sampling strategy "
                f"{state['name']!r}, this run uses {self.name!r}. Fix: resume with the checkpoint's strategy."
            )
        if state.get("seed", self.seed) != self.seed:
            raise TaskConfigError(
                f"Scheduler state mismatch in field 'seed': checkpoint {state['seed']}, this run {self.seed}. "
                f"Fix: resume with the checkpoint's seed, or the task sequence would change."
            )
        saved = state.get("options", {})
        if saved != self.options:
            warnings.warn(
                f"Sampling strategy {self.name!r}: options {saved} in the checkpoint differ from this run's "
                f"{self.options}; the resumed run continues with this run's options.",
                stacklevel=2,
            )

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}(tasks={self.task_names}, seed={self.seed}{opts})"


def register_scheduler(cls: type[TaskScheduler]) -> type[TaskScheduler]:
    """Class decorator adding a scheduler to `SAMPLING_STRATEGIES` under `cls.name`.

    Args:
        cls: a `TaskScheduler` subclass that defines `name`.

    Returns:
        `cls`, unchanged.
    """
    if not (isinstance(cls, type) and issubclass(cls, TaskScheduler)):
        raise TypeError(f"register_scheduler expects a TaskScheduler subclass, got {cls!r}.")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} must define a class attribute `name` (the strategy's string).")
    if name in SAMPLING_STRATEGIES and SAMPLING_STRATEGIES[name] is not cls:
        raise TypeError(f"Sampling strategy {name!r} is already registered by {SAMPLING_STRATEGIES[name].__name__}.")
    SAMPLING_STRATEGIES[name] = cls
    return cls


def build_scheduler(
    name: str, task_names: list[str], sizes: list[int], *, seed: int = 0, **options: Any
) -> TaskScheduler:
    """Build the scheduler registered under `name`.

    Args:
        name: a key of `SAMPLING_STRATEGIES` (case and '-' vs '_' do not matter).
        task_names: the tasks, in dataset order.
        sizes: examples per task.
        seed: non-negative seed shared by all ranks.
        options: the strategy's options.

    Returns:
        The scheduler.
    """
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in SAMPLING_STRATEGIES:
        raise TaskConfigError(
            f"Unknown sampling strategy {name!r}. Valid strategies: {', '.join(sorted(SAMPLING_STRATEGIES))}."
        )
    return SAMPLING_STRATEGIES[key](task_names, sizes, seed=seed, **options)


class IIDScheduler(TaskScheduler):
    """Base of the schedulers that draw each step's task independently from `probabilities(epoch)`.

    The draw uses `np.random.default_rng([seed, epoch, step])`: one uniform u, task = the first t with
    u < Σ_{s<=t} p_s (`_draw_task`).
    """

    def task_for_step(self, epoch: int, step: int, steps_per_epoch: int, global_batch_size: int) -> int:
        return _draw_task(self.probabilities(epoch), [self.seed, epoch, step])


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
            counts = _allocate_steps(self.sizes, steps_per_epoch, global_batch_size)
            plan = np.repeat(np.arange(self.num_tasks), counts)
            np.random.default_rng([self.seed, epoch]).shuffle(plan)
            self._plan_key, self._plan = key, plan
        return int(self._plan[step])


@register_scheduler
class TemperatureScheduler(IIDScheduler):
    """Temperature-scaled sampling (Arivazhagan et al., 2019; T5, Raffel et al., 2020).

    p_t ∝ |D_t|^(1/T): T = 1 is proportional, T -> ∞ uniform. Option `temperature` (T > 0, default 2.0).
    """

    name = "temperature"
    option_defaults = {"temperature": 2.0}

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        t = options["temperature"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise TaskConfigError(
                f"Invalid temperature {t!r} for sampling strategy 'temperature': it must be a finite number > 0 "
                f"(1 = proportional, larger = closer to uniform)."
            )
        return {"temperature": float(t)}

    def probabilities(self, epoch: int) -> np.ndarray:
        return _softmax(np.log(np.asarray(self.sizes, dtype=np.float64)) / self.options["temperature"])


@register_scheduler
class AnnealedScheduler(IIDScheduler):
    """Annealed sampling (Stickland & Murray, 2019, "BERT and PALs", ICML).

    p_t ∝ |D_t|^α(e), α(e) = 1 − 0.8·(e − 1)/(E − 1), with e the 1-based epoch (`epoch + 1`) and E the
    option `num_epochs` (required, >= 1; E = 1 gives α = 1): proportional at first, closer to
    uniform later. Past epoch E, α stays at its final value 0.2.
    """

    name = "annealed"
    option_defaults = {"num_epochs": _REQUIRED}

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        e = options["num_epochs"]
        if isinstance(e, float) and e.is_integer():
            e = int(e)
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1:
            raise TaskConfigError(
                f"Invalid num_epochs {e!r} for sampling strategy 'annealed': it must be an integer >= 1 "
                f"(the number of training epochs E that α anneals over)."
            )
        return {"num_epochs": int(e)}

    def alpha(self, epoch: int) -> float:
        """α for the 0-based `epoch`: 1 − 0.8·(e − 1)/(E − 1), e = min(epoch + 1, E)."""
        total = self.options["num_epochs"]
        if total == 1:
            return 1.0
        return 1.0 - 0.8 * (min(epoch + 1, total) - 1) / (total - 1)

    def probabilities(self, epoch: int) -> np.ndarray:
        return _softmax(self.alpha(epoch) * np.log(np.asarray(self.sizes, dtype=np.float64)))


@register_scheduler
class UniformScheduler(IIDScheduler):
    """Uniform sampling: p_t = 1/M, i.i.d. per step."""

    name = "uniform"

    def probabilities(self, epoch: int) -> np.ndarray:
        return np.full(self.num_tasks, 1.0 / self.num_tasks)


@register_scheduler
class RoundRobinScheduler(TaskScheduler):
    """Round-robin: task = step mod M, in `task_names` order; probabilities are uniform."""

    name = "round_robin"

    def probabilities(self, epoch: int) -> np.ndarray:
        return np.full(self.num_tasks, 1.0 / self.num_tasks)

    def task_for_step(self, epoch: int, step: int, steps_per_epoch: int, global_batch_size: int) -> int:
        return step % self.num_tasks


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
            return _draw_task(self._stage_probabilities(self._stage), [self.seed, epoch, step])
        if (steps_per_epoch, global_batch_size) != self._ends_key:
            counts = _allocate_steps([self.sizes[t] for t in self._order], steps_per_epoch, global_batch_size)
            self._ends_key, self._ends = (steps_per_epoch, global_batch_size), np.cumsum(counts)
        block = int(np.searchsorted(self._ends, step, side="right"))
        return self._order[min(block, len(self._order) - 1)]


# ----------------------------------------------------------------------------------------------
# batch sampler


class _TaskStream:
    """Task t's examples for one epoch: permutations seeded by (seed, epoch, t, cycle), concatenated."""

    def __init__(self, size: int, seed: int, epoch: int, task: int) -> None:
        self.size, self.entropy = size, [seed, epoch, task]
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, cycle: int) -> np.ndarray:
        if cycle not in self._perms:
            for old in [c for c in self._perms if c < cycle]:  # the stream only moves forward
                del self._perms[old]
            rng = np.random.default_rng([*self.entropy, cycle, _STREAM_DOMAIN])
            self._perms[cycle] = rng.permutation(self.size)
        return self._perms[cycle]

    def take(self, start: int, count: int) -> list[int]:
        """Local indices at stream positions [start, start + count), wrapping into later cycles."""
        out: list[int] = []
        while count > 0:
            cycle, pos = divmod(start, self.size)
            chunk = self._perm(cycle)[pos : pos + count]
            out.extend(chunk.tolist())
            start, count = start + len(chunk), count - len(chunk)
        return out


class MultiTaskBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields single-task batches of indices into the concatenation of the task datasets (or, for a
    scheduler with `draws_all_tasks`, one slice of every task per step; `last_task` is then None).

    At each step of the epoch, `scheduler.task_for_step` picks task t (the same on every rank); the
    next `batch_size * num_replicas` positions of t's stream are taken and rank r keeps slice
    [r·batch_size, (r+1)·batch_size), shifted by `offsets[t]`. So every rank trains the same task at
    the same step on disjoint shards (disjoint as long as the task has at least a global batch of
    examples left in its current permutation; streams wrap, so batches are always full).

    Args:
        task_names: the tasks, in the order of the concatenated dataset.
        sizes: examples per task.
        batch_size: per-rank (per-device) batch size.
        scheduler: the task scheduler, built for the same tasks and sizes.
        seed: non-negative seed of the example streams, the same on every rank.
        num_replicas: number of data-parallel ranks.
        rank: this rank, in [0, num_replicas).
        steps_per_epoch: steps per epoch; default Σ_t ceil(|D_t| / (batch_size·num_replicas)).

    Use it as `DataLoader(ConcatDataset(datasets), batch_sampler=sampler)`. Under Accelerate, keep the
    Trainer from sharding it a second time: give each rank its own `rank`, or build it with
    `num_replicas=1, batch_size=global` and let Accelerate split batches (`split_batches=True`).
    """

    drop_last: bool = False  # batches are always full (read by Accelerate's BatchSamplerShard)

    def __init__(
        self,
        task_names: list[str],
        sizes: list[int],
        batch_size: int,
        scheduler: TaskScheduler,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.task_names, self.sizes = _check_tasks(task_names, sizes)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.num_replicas = _check_int(num_replicas, "num_replicas", 1)
        self.rank = _check_int(rank, "rank", 0)
        if self.rank >= self.num_replicas:
            raise TaskConfigError(f"Invalid rank {rank}: it must be < num_replicas ({num_replicas}).")
        self.seed = _check_int(seed, "seed", 0)
        self.steps_per_epoch = None if steps_per_epoch is None else _check_int(steps_per_epoch, "steps_per_epoch", 1)
        self.scheduler = self._check_scheduler(scheduler)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int).tolist()
        self.epoch = 0
        self.history: list[int] = []  # task indices drawn so far in `epoch`, replayed by __iter__
        self._previous: tuple[int, list[int]] | None = None  # (epoch, history) of the epoch before
        self.last_task: str | None = None

    def _check_scheduler(self, scheduler: TaskScheduler) -> TaskScheduler:
        if not isinstance(scheduler, TaskScheduler):
            raise TaskConfigError(f"Invalid scheduler {scheduler!r}: build one with build_scheduler(...).")
        if scheduler.task_names != self.task_names or scheduler.sizes != self.sizes:
            raise TaskConfigError(
                f"Invalid scheduler: it was built for tasks {scheduler.task_names} with sizes {scheduler.sizes}, "
                f"the sampler has {self.task_names} with sizes {self.sizes}. Fix: build both from the same lists."
            )
        return scheduler

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        batches = [-(-n // self.global_batch_size) for n in self.sizes]
        # every step trains every task: an epoch is one pass over the largest dataset
        return max(1, max(batches) if self.scheduler.draws_all_tasks else sum(batches))

    def task_of_index(self, index: int) -> str:
        """The task owning global index `index` of the concatenated dataset."""
        if not 0 <= index < sum(self.sizes):
            raise IndexError(f"Index {index} is outside the concatenated dataset (size {sum(self.sizes)}).")
        return self.task_names[int(np.searchsorted(self.offsets, index, side="right")) - 1]

    def current_probabilities(self) -> dict[str, float]:
        """The scheduler's per-step task probabilities in the current epoch, by task name (for logging)."""
        return dict(zip(self.task_names, self.scheduler.probabilities(self.epoch).tolist()))

    def set_epoch(self, epoch: int) -> None:
        """Move to `epoch` (always wins over the automatic advance at the end of a pass).

        Going back to the epoch the sampler was in just before keeps that epoch's recorded history, so
        a resume whose dataloader had prefetched past the end of the epoch still replays it exactly.
        """
        epoch = _check_int(epoch, "epoch", 0)
        if epoch == self.epoch:
            return
        restored = self._previous[1] if self._previous and self._previous[0] == epoch else []
        self._previous = (self.epoch, self.history) if self.history else None
        self.epoch, self.history = epoch, restored

    def __iter__(self) -> Iterator[list[int]]:
        # Every pass over an epoch replays the recorded history first, so a restarted or resumed pass
        # yields what the first one did; new draws are appended to the same (shared) list.
        epoch, history, steps, B = self.epoch, self.history, len(self), self.global_batch_size
        streams: dict[int, _TaskStream] = {}
        cursors = [0] * len(self.task_names)
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        every_task = list(range(len(self.task_names)))
        for step in range(steps):
            if self.scheduler.draws_all_tasks:
                tasks = every_task  # nothing is drawn: nothing to record
            elif step < len(history):
                tasks = [history[step]]
            else:
                tasks = [self._draw(epoch, step, steps)]
                history.append(tasks[0])
            batch = []
            for task in tasks:
                if task not in streams:
                    streams[task] = _TaskStream(self.sizes[task], self.seed, epoch, task)
                local = streams[task].take(cursors[task] + lo, hi - lo)
                cursors[task] += B
                batch.extend(self.offsets[task] + i for i in local)
            self.last_task = self.task_names[tasks[0]] if len(tasks) == 1 else None
            yield batch
        if self.epoch == epoch and self.history is history:  # nobody called set_epoch meanwhile
            self._previous = (epoch, history)
            self.epoch, self.history = epoch + 1, []

    def _draw(self, epoch: int, step: int, steps: int) -> int:
        task = self.scheduler.task_for_step(epoch, step, steps, self.global_batch_size)
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or not 0 <= task < len(self.task_names):
            raise TypeError(f"{type(self.scheduler).__name__}.task_for_step returned {task!r}, not a task index.")
        return int(task)

    # -- checkpointing

    def state_dict(self) -> dict:
        """JSON-serializable state for exact resume.

        Returns:
            `{"epoch", "history", "previous", "scheduler", "seed", "task_names", "sizes", "batch_size",
            "num_replicas", "steps_per_epoch"}`; `previous` is `{"epoch", "history"}` of the epoch before
            (or None), `steps_per_epoch` the effective `len(self)`.
        """
        previous = None if self._previous is None else {"epoch": self._previous[0], "history": list(self._previous[1])}
        return {
            "epoch": self.epoch,
            "history": list(self.history),
            "previous": previous,
            "scheduler": self.scheduler.state_dict(),
            "seed": self.seed,
            "task_names": list(self.task_names),
            "sizes": list(self.sizes),
            "batch_size": self.batch_size,
            "num_replicas": self.num_replicas,
            "steps_per_epoch": len(self),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()`; the next pass over the saved epoch replays its history.

        The run's tasks, sizes, seed, global batch size and epoch length must match the checkpoint's
        (`TaskConfigError` names the field otherwise). The split of the global batch over ranks may
        differ (e.g. 2 ranks x 16 -> 4 x 8): the streams depend on the global batch only.

        Args:
            state: what `state_dict()` returned, possibly through JSON.
        """
        self._check_state(state)
        self.scheduler.load_state_dict(state["scheduler"])  # validates before we change anything
        previous = state.get("previous")
        self.epoch, self.history = int(state["epoch"]), [int(t) for t in state["history"]]
        self._previous = None if not previous else (int(previous["epoch"]), [int(t) for t in previous["history"]])

    def _check_state(self, state: dict) -> None:
        keys = ("epoch", "history", "scheduler", "seed", "task_names", "sizes", "batch_size", "num_replicas")
        missing = [k for k in keys if not isinstance(state, dict) or k not in state]
        if missing:
            raise TaskConfigError(
                f"Invalid sampler state: missing field(s) {missing}; expected MultiTaskBatchSampler.state_dict()."
            )
        fix = "The run's training data and batch size must match the checkpoint's to resume it exactly."
        if list(state["task_names"]) != self.task_names:
            raise TaskConfigError(
                f"Sampler state mismatch in field 'task_names': checkpoint {list(state['task_names'])}, "
                f"this run {self.task_names}. {fix}"
            )
        if list(state["sizes"]) != self.sizes:
            diff = {n: (a, b) for n, a, b in zip(self.task_names, state["sizes"], self.sizes) if a != b}
            raise TaskConfigError(
                f"Sampler state mismatch in field 'sizes' (checkpoint, this run): {diff}. {fix}"
            )
        saved_global = int(state["batch_size"]) * int(state["num_replicas"])
        if saved_global != self.global_batch_size:
            raise TaskConfigError(
                f"Sampler state mismatch in field 'batch_size': checkpoint {state['batch_size']} x "
                f"{state['num_replicas']} replicas, this run {self.batch_size} x {self.num_replicas} "
                f"(num_replicas). {fix}"
            )
        if int(state["seed"]) != self.seed:
            raise TaskConfigError(
                f"Sampler state mismatch in field 'seed': checkpoint {state['seed']}, this run {self.seed}. "
                f"Fix: resume with the checkpoint's seed."
            )
        if state.get("steps_per_epoch", len(self)) != len(self):
            raise TaskConfigError(
                f"Sampler state mismatch in field 'steps_per_epoch': checkpoint {state['steps_per_epoch']}, "
                f"this run {len(self)}. Fix: resume with the checkpoint's steps_per_epoch."
            )
        _check_int(state["epoch"], "epoch (in the sampler state)", 0)
        histories = [state["history"]] + ([state["previous"]["history"]] if state.get("previous") else [])
        for h in histories:
            if len(h) > len(self) or any(not 0 <= int(t) < len(self.task_names) for t in h):
                raise TaskConfigError(
                    f"Invalid sampler state: field 'history' {h[:10]}... is not a task sequence of at most "
                    f"{len(self)} steps over {len(self.task_names)} tasks."
                )


# The dynamic and all-task strategies live in hf_mtl.optim.schedulers (one file each); importing them
# here registers them wherever SAMPLING_STRATEGIES is used.
from ..optim import schedulers as _optim_schedulers  # noqa: E402,F401
