"""Task schedulers of hf_mtl.optim; they register into `hf_mtl.data.samplers.SAMPLING_STRATEGIES`,
which imports this package, so `sampling_strategy: bandit` works wherever the sampler does."""

from . import all_tasks, bandit, uncertainty  # noqa: F401
