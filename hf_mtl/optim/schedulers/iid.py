"""The size-based i.i.d. strategies: `temperature`, `annealed` and `uniform`.

Each step's task is drawn independently from `probabilities(epoch)` (`IIDScheduler`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import TaskConfigError
from ..strategy import REQUIRED
from .base import IIDScheduler, register_scheduler, softmax


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
        return softmax(np.log(np.asarray(self.sizes, dtype=np.float64)) / self.options["temperature"])


@register_scheduler
class AnnealedScheduler(IIDScheduler):
    """Annealed sampling (Stickland & Murray, 2019, "BERT and PALs", ICML).

    p_t ∝ |D_t|^α(e), α(e) = 1 − 0.8·(e − 1)/(E − 1), with e the 1-based epoch (`epoch + 1`) and E the
    option `num_epochs` (required, >= 1; E = 1 gives α = 1): proportional at first, closer to
    uniform later. Past epoch E, α stays at its final value 0.2.
    """

    name = "annealed"
    option_defaults = {"num_epochs": REQUIRED}

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
        return softmax(self.alpha(epoch) * np.log(np.asarray(self.sizes, dtype=np.float64)))


@register_scheduler
class UniformScheduler(IIDScheduler):
    """Uniform sampling: p_t = 1/M, i.i.d. per step."""

    name = "uniform"

    def probabilities(self, epoch: int) -> np.ndarray:
        return np.full(self.num_tasks, 1.0 / self.num_tasks)
