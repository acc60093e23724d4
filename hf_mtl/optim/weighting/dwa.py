"""Dynamic Weight Average.

Liu, Johns & Davison (2019), "End-to-End Multi-Task Learning with Attention", CVPR. With L_t(k) the mean
loss of task t over window k (an epoch in the paper) and T a temperature,

    w_t(k-1) = L_t(k-1) / L_t(k-2),   λ_t(k) = M · exp(w_t(k-1)/T) / Σ_i exp(w_i(k-1)/T)

and λ_t = 1 for the first two windows. A task whose loss falls slowly (w close to 1 or above) gains
weight. Windows are `window_steps` optimizer steps (default: one epoch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import LossWeighting, Progress, register_weighting


@register_weighting
class DynamicWeightAverage(LossWeighting):
    """Options: `temperature` T (default 2.0, as in the paper), `window_steps` (default: steps per epoch)."""

    name = "dwa"
    option_defaults = {"temperature": 2.0, "window_steps": None}
    uses_step_losses = True

    def __init__(self, tasks: Any, sizes: Any, **options: Any):
        super().__init__(tasks, sizes, **options)
        self.lambdas = [1.0] * len(self.task_names)
        self.history: list[list[float]] = []  # mean task losses of the last (up to) two closed windows
        self._sums = [0.0] * len(self.task_names)
        self._counts = [0] * len(self.task_names)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        t, window = options["temperature"], options["window_steps"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise self._option_error("temperature", t, "a finite number > 0")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise self._option_error("window_steps", window, "an integer >= 1 (or null for one epoch)")
        return {"temperature": float(t), "window_steps": window}

    def weights(self, progress: Progress) -> dict[str, float]:
        return dict(zip(self.task_names, self.lambdas))

    def update(self, step_losses: dict[str, float], progress: Progress) -> None:
        for i, name in enumerate(self.task_names):
            if name in step_losses:
                self._sums[i] += step_losses[name]
                self._counts[i] += 1
        window = self.options["window_steps"] or max(1, progress.steps_per_epoch)
        if (progress.step + 1) % window == 0:
            self._close_window()

    def _close_window(self) -> None:
        previous = self.history[-1] if self.history else [None] * len(self.task_names)
        # a task not trained in the window keeps its previous mean (None until it is first trained)
        means = [s / c if c else p for s, c, p in zip(self._sums, self._counts, previous)]
        self.history = (self.history + [means])[-2:]
        self._sums, self._counts = [0.0] * len(self.task_names), [0] * len(self.task_names)
        if len(self.history) == 2:
            older, newer = self.history
            ratios = np.array([n / o if n is not None and o else 1.0 for n, o in zip(newer, older)])  # w_t(k-1)
            z = np.exp((ratios - ratios.max()) / self.options["temperature"])
            self.lambdas = (len(self.task_names) * z / z.sum()).tolist()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lambdas": list(self.lambdas), "history": [list(h) for h in self.history],
                "sums": list(self._sums), "counts": list(self._counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.lambdas = [float(x) for x in state["lambdas"]]
        self.history = [[None if x is None else float(x) for x in h] for h in state["history"]]
        self._sums = [float(x) for x in state["sums"]]
        self._counts = [int(x) for x in state["counts"]]
