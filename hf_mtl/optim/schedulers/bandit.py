"""`bandit`: task selection as a multi-armed bandit with Boltzmann exploration.

Guo, Pasunuru & Bansal (2018), "Dynamic Multi-Level Multi-Task Learning for Sentence Simplification",
COLING. Each task is an arm with value Q_t; each step draws its task i.i.d. from

    π(t) = softmax(Q / τ)_t

Every K optimizer steps the trainer measures the loss on a small held-out slice; the reward is its
decrease since the previous measurement, r = L_prev − L_now (of the primary task by default, or the
average over tasks), and each arm moves towards it in proportion to its share f_t of the window's
training rows, with decay α:

    Q_t <- Q_t + α f_t (r − Q_t)

(with one task per window this is the paper's update Q_t <- Q_t + α (r − Q_t)). The held-out losses
are reduced over ranks and the task sequence is shared, so Q is identical on every rank; Q, the last
held-out loss and the window's counts are the saved state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import TaskConfigError
from .base import IIDScheduler, register_scheduler, softmax


@register_scheduler
class BanditScheduler(IIDScheduler):
    """Options: `tau` (τ > 0, default 0.1), `decay` (α in (0, 1], default 0.3), `reward_every` (K optimizer
    steps, default 10), `eval_samples` (held-out rows per task, default 64), `reward` ("primary" default,
    or "average"), `primary_task` (default: the first task)."""

    name = "bandit"
    dynamic = True
    option_defaults = {"tau": 0.1, "decay": 0.3, "reward_every": 10, "eval_samples": 64, "reward": "primary",
                       "primary_task": None}

    def __init__(self, task_names: list[str], sizes: list[int], *, seed: int = 0, **options: Any) -> None:
        super().__init__(task_names, sizes, seed=seed, **options)
        self.q = np.zeros(self.num_tasks)
        self.last_loss: float | None = None
        self.counts = np.zeros(self.num_tasks)  # training rows per task since the last reward

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        def bad(option: str, expected: str) -> TaskConfigError:
            return TaskConfigError(f"Invalid {option} {options[option]!r} for sampling strategy 'bandit': it must be {expected}.")

        tau, decay = options["tau"], options["decay"]
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
            raise bad("tau", "a finite number > 0 (the softmax temperature)")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise bad("decay", "a number in (0, 1] (the step size of the Q update)")
        for option in ("reward_every", "eval_samples"):
            value = options[option]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(option, "an integer >= 1")
        if options["reward"] not in ("primary", "average"):
            raise bad("reward", 'one of ["primary", "average"]')
        primary = options["primary_task"] if options["primary_task"] is not None else self.task_names[0]
        if primary not in self.task_names:
            raise bad("primary_task", f"one of the tasks {self.task_names}")
        return {**options, "tau": float(tau), "decay": float(decay), "primary_task": primary}

    def probabilities(self, epoch: int) -> np.ndarray:
        return softmax(self.q / self.options["tau"])

    def eval_feedback(self) -> tuple[int, int, list[str]]:
        tasks = list(self.task_names) if self.options["reward"] == "average" else [self.options["primary_task"]]
        return self.options["reward_every"], self.options["eval_samples"], tasks

    def update(self, feedback: dict) -> None:
        """`{"trained": {task: rows}}` after each optimizer step; `{"eval_losses": {task: loss}}` every K steps
        (the first one only sets the baseline)."""
        for name, rows in feedback.get("trained", {}).items():
            self.counts[self.task_names.index(name)] += rows
        losses = feedback.get("eval_losses")
        if losses is None:
            return
        _, _, tasks = self.eval_feedback()
        value = float(np.mean([losses[t] for t in tasks]))
        if self.last_loss is not None and self.counts.sum() > 0:
            reward = self.last_loss - value
            share = self.counts / self.counts.sum()
            self.q = self.q + self.options["decay"] * share * (reward - self.q)
        self.last_loss = value
        self.counts = np.zeros(self.num_tasks)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "q": self.q.tolist(), "last_loss": self.last_loss, "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.q = np.asarray(state["q"], dtype=np.float64)
        self.last_loss = state["last_loss"]
        self.counts = np.asarray(state["counts"], dtype=np.float64)
