"""hf_mtl: multi-task learning with adapters on the Hugging Face stack.

    from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task, load_task_split

The heavy names (everything that needs torch, transformers or datasets) are imported on first use, the
way PEFT and TRL do it: `import hf_mtl` and `hf-mtl --help` stay fast, and `import hf_mtl` never imports
torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


__version__ = "0.1.0"

from .errors import DataError, HfMtlError, StoreError, TaskConfigError, UnknownTaskError  # noqa: E402
from .tasks import Task  # noqa: E402


# public name -> the module that defines it; imported by `__getattr__` on first access
_LAZY: dict[str, str] = {
    "MultiTaskModel": ".modeling",
    "MultiTaskOutput": ".modeling",
    "MultiTaskTrainer": ".trainer",
    "MultiTaskTrainingArguments": ".training_args",
    "load_task_split": ".data.readers",
    "load_recipe": ".run",
    "run_training": ".run",
    "run_evaluation": ".run",
    "export_task": ".store.export",
}

if TYPE_CHECKING:  # static checkers and IDEs see the real names
    from .data.readers import load_task_split
    from .modeling import MultiTaskModel, MultiTaskOutput
    from .run import load_recipe, run_evaluation, run_training
    from .store.export import export_task
    from .trainer import MultiTaskTrainer
    from .training_args import MultiTaskTrainingArguments

__all__ = ["DataError", "HfMtlError", "StoreError", "TaskConfigError", "UnknownTaskError", "Task", "__version__",
           *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        # AttributeError (not ImportError) lets `from hf_mtl import hub` fall back to importing the submodule
        raise AttributeError(f"module 'hf_mtl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
