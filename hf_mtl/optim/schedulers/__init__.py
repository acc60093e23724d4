"""Task schedulers, chosen by `sampling_strategy` in the recipe: the base and every strategy.

`base.py` holds `TaskScheduler`, `IIDScheduler` and the registry `SAMPLING_STRATEGIES`; each other file
holds one strategy (or one family) and registers it. Importing this package registers them all; the batch
sampler that turns a scheduler's choices into batches is `hf_mtl.data.samplers.MultiTaskBatchSampler`.
"""

from . import all_tasks, bandit, iid, proportional, round_robin, sequential, uncertainty  # noqa: F401  (register)
from .all_tasks import AllTasksScheduler
from .bandit import BanditScheduler
from .base import SAMPLING_STRATEGIES, IIDScheduler, TaskScheduler, build_scheduler, register_scheduler
from .iid import AnnealedScheduler, TemperatureScheduler, UniformScheduler
from .proportional import ProportionalScheduler
from .round_robin import RoundRobinScheduler
from .sequential import SequentialScheduler
from .uncertainty import UncertaintyScheduler


__all__ = [
    "SAMPLING_STRATEGIES",
    "AllTasksScheduler",
    "AnnealedScheduler",
    "BanditScheduler",
    "IIDScheduler",
    "ProportionalScheduler",
    "RoundRobinScheduler",
    "SequentialScheduler",
    "TaskScheduler",
    "TemperatureScheduler",
    "UncertaintyScheduler",
    "UniformScheduler",
    "build_scheduler",
    "register_scheduler",
]
