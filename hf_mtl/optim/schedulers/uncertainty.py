"""`uncertainty`: CA-MTL's multi-task uncertainty sampling.

Pilault, Elhattami & Pal (2021), "Conditionally Adaptive Multi-Task Learning: Improving Transfer
Learning in NLP Using Fewer Parameters & Less Data", ICLR. Every step draws a pool of b·M candidates
(b = the per-device batch size, b of each task: the `all_tasks` draw), scores each candidate x of task i
with the model's current predictions, and trains on the b most uncertain ones, a mixed-task batch:

    U(x) = S_i(x) / (Ŝ · S'_i)

with S_i(x) the Shannon entropy of the predicted label distribution (token tasks: its mean over the
scored tokens), S'_i = log C_i the entropy of the uniform distribution over task i's C_i labels (so a
task with many labels is not favoured for that alone), and Ŝ = max_j mean_{x in pool_j} S_j(x)/S'_j the
largest mean normalized entropy of the pool's tasks (U = 1 for an average row of the most uncertain
task). A regression task has no predicted distribution: its rows get the mean U of the other rows, and
the task keeps its share of the pool in the batch (b·n_i/(b·M) rows, its first ones): ranked at the
mean, its rows would lose to every above-average row and the task would starve (measured: STS-B got
0% of the rows and its Pearson r fell to 0.08 in benchmarks/optim.py). Scores come from an eval-mode forward without
gradients; the pool means are reduced over ranks, ties keep the pool order, so the selection is
deterministic. Each rank selects within its own slice of the pool.

The scheduler keeps, for logging, an exponential moving average (rate 0.1) of each task's share of the
selected rows: its `probabilities`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ...tasks import Task
from ..distributed import all_reduce_
from ..mixed import forward_per_task, rows_by_task, single_task_batch, take_rows
from .base import TaskScheduler, register_scheduler


IGNORE_INDEX = -100
SHARE_RATE = 0.1


@register_scheduler
class UncertaintyScheduler(TaskScheduler):
    """No options: the pool is b rows of every task, the batch the b most uncertain of them."""

    name = "uncertainty"
    draws_all_tasks = True
    selects_rows = True
    dynamic = True

    def __init__(self, task_names: list[str], sizes: list[int], *, seed: int = 0, **options: Any) -> None:
        super().__init__(task_names, sizes, seed=seed, **options)
        self.shares = np.full(self.num_tasks, 1.0 / self.num_tasks)

    def probabilities(self, epoch: int) -> np.ndarray:
        return self.shares / self.shares.sum()

    def update(self, feedback: dict) -> None:
        """`{"trained": {task: selected rows}}` after each optimizer step (summed over ranks)."""
        counts = np.array([feedback.get("trained", {}).get(n, 0.0) for n in self.task_names], dtype=np.float64)
        if counts.sum() > 0:
            self.shares = (1 - SHARE_RATE) * self.shares + SHARE_RATE * counts / counts.sum()

    def select_batch(self, model: torch.nn.Module, pool: dict[str, Any], tasks: dict[str, Task], batch_size: int,
                     split_forward: bool) -> dict[str, Any]:
        """The `batch_size` most uncertain rows of the pool (see `select_uncertain_rows`)."""
        return select_uncertain_rows(model, pool, tasks, batch_size, split_forward)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "shares": self.shares.tolist()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.shares = np.asarray(state["shares"], dtype=np.float64)


def _has_distribution(task: Task, logits: torch.Tensor) -> bool:
    """Whether a task's predictions are a label distribution that U can score (not regression)."""
    return task.kind != "regression" and logits.shape[-1] >= 2


def uncertainty_scores(tasks: dict[str, Task], task_logits: dict[str, torch.Tensor],
                       task_rows: dict[str, torch.Tensor], labels: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """U(x) of every row of a pool.

    Args:
        tasks: the run's tasks by name (the reduction over ranks runs over them, in this order).
        task_logits: {task: logits of its rows}, (n_t, C) or (n_t, L, C).
        task_rows: {task: (n_t,) row indices}.
        labels: the pool's (B, L) labels: positions with -100 are not scored in token tasks.
        batch_size: B, the pool size.

    Returns:
        (B,) float32 scores.
    """
    names = list(tasks)
    normalized = torch.zeros(batch_size, dtype=torch.float64)  # S_i(x) / S'_i
    scored = torch.zeros(batch_size, dtype=torch.bool)
    sums = torch.zeros(2, len(names), dtype=torch.float64)  # per task: Σ normalized, rows
    for name, logits in task_logits.items():
        rows = task_rows[name].cpu()
        if not _has_distribution(tasks[name], logits):
            continue
        logp = logits.detach().float().log_softmax(dim=-1)
        entropy = -(logp.exp() * logp).sum(dim=-1).cpu().double()  # (n,) or (n, L)
        if entropy.dim() == 2:  # token task: mean over scored tokens
            mask = (labels[task_rows[name]] != IGNORE_INDEX).cpu() if labels is not None else torch.ones_like(entropy, dtype=torch.bool)
            mask = mask[:, : entropy.shape[1]]
            entropy = (entropy * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        normalized[rows] = entropy / math.log(logits.shape[-1])
        scored[rows] = True
        sums[0, names.index(name)] += normalized[rows].sum()
        sums[1, names.index(name)] += rows.numel()
    all_reduce_(sums)  # the pool's means over every rank's slice
    means = sums[0] / sums[1].clamp(min=1)
    top = float(means.max())
    scores = normalized / top if top > 0 else normalized
    if (~scored).any():
        scores[~scored] = scores[scored].mean() if scored.any() else 1.0
    return scores.float()


def select_rows(scores: torch.Tensor, keep: int, reserved: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The rows to train on, in ascending row order.

    Args:
        scores: (B,) U of every row.
        keep: rows to select.
        reserved: {task: its (n_t,) rows} for tasks that are not scored (regression): each keeps
            ⌊keep · n_t / B + ½⌋ of its rows, the first ones; the rest of `keep` goes to the highest scores
            among the other rows (ties: the earlier row wins).
    """
    size = scores.shape[0]
    taken = torch.zeros(size, dtype=torch.bool)
    unscored = torch.zeros(size, dtype=torch.bool)
    for rows in (reserved or {}).values():
        rows = rows.cpu().sort().values
        unscored[rows] = True
        taken[rows[: int(keep * rows.numel() / size + 0.5)]] = True
    scored = (~unscored).nonzero().squeeze(1)
    # the scored rows by U, then (only when rounding left too few of them) the other unscored rows in order
    ranked = torch.cat([scored[torch.sort(-scores[scored], stable=True).indices], (unscored & ~taken).nonzero().squeeze(1)])
    taken[ranked[: max(keep - int(taken.sum()), 0)]] = True
    return taken.nonzero().squeeze(1)


def select_uncertain_rows(scorer: torch.nn.Module, pool: dict[str, Any], tasks: dict[str, Task], keep: int,
                          split_forward: bool) -> dict[str, Any]:
    """The `keep` most uncertain rows of a collated pool, as the batch to train on.

    Args:
        scorer: the unwrapped `MultiTaskModel` (an eval-mode forward without gradients scores the pool).
        pool: the collated pool (`task` per row).
        tasks: the run's tasks by name.
        keep: rows to keep (the per-device batch size).
        split_forward: score with one forward per task (adapter methods that do not route per row).

    Returns:
        A mixed batch of the kept rows, or a single-task batch when they all belong to one task.
    """
    unlabeled = {k: v for k, v in pool.items() if k != "labels"}
    size = pool["input_ids"].shape[0]
    was_training = scorer.training
    scorer.eval()
    try:
        with torch.no_grad():
            mixed = isinstance(pool["task"], list)
            out = forward_per_task(scorer, unlabeled, tasks) if split_forward and mixed else scorer(**unlabeled)
    finally:
        scorer.train(was_training)
    by_task = rows_by_task(pool["task"], size)
    logits = out.get("task_logits") or {name: out["logits"] for name in by_task}
    unscored = {name: rows for name, rows in by_task.items() if not _has_distribution(tasks[name], logits[name])}
    rows = select_rows(uncertainty_scores(tasks, logits, by_task, pool.get("labels"), size), keep, unscored)
    rows = rows.to(pool["input_ids"].device)
    kept = [pool["task"][i] for i in rows.tolist()] if isinstance(pool["task"], list) else [pool["task"]]
    if len(set(kept)) == 1:  # one task left: give it its own batch layout
        return single_task_batch(pool, rows, tasks[kept[0]])
    return take_rows(pool, rows)
