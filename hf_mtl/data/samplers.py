"""The rank-aware multi-task batch sampler.

A *scheduler* (`hf_mtl.optim.schedulers`) decides which task each optimizer micro-step trains; the
*batch sampler* turns that decision into the indices of one single-task batch per rank (DESIGN.md,
"Data path"):

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

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import TaskConfigError
from ..optim.schedulers.base import TaskScheduler, check_int, check_tasks


__all__ = ["MultiTaskBatchSampler"]

# Appended to the entropy of the sampler's example streams. numpy's SeedSequence pads entropy with
# zeros, so [seed, epoch] == [seed, epoch, 0, 0]: without this tag the stream of task 0, cycle 0
# would reuse the proportional scheduler's shuffle seed (and task t's the i.i.d. draw of step t).
_STREAM_DOMAIN = 0x5354524D  # "STRM"


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
        self.task_names, self.sizes = check_tasks(task_names, sizes)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.num_replicas = check_int(num_replicas, "num_replicas", 1)
        self.rank = check_int(rank, "rank", 0)
        if self.rank >= self.num_replicas:
            raise TaskConfigError(f"Invalid rank {rank}: it must be < num_replicas ({num_replicas}).")
        self.seed = check_int(seed, "seed", 0)
        self.steps_per_epoch = None if steps_per_epoch is None else check_int(steps_per_epoch, "steps_per_epoch", 1)
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
        epoch = check_int(epoch, "epoch", 0)
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
        check_int(state["epoch"], "epoch (in the sampler state)", 0)
        histories = [state["history"]] + ([state["previous"]["history"]] if state.get("previous") else [])
        for h in histories:
            if len(h) > len(self) or any(not 0 <= int(t) < len(self.task_names) for t in h):
                raise TaskConfigError(
                    f"Invalid sampler state: field 'history' {h[:10]}... is not a task sequence of at most "
                    f"{len(self)} steps over {len(self.task_names)} tasks."
                )
