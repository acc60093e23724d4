"""hf_mtl: multi-task learning with adapters on the Hugging Face stack."""

__version__ = "0.1.0"

from .errors import DataError, HfMtlError, StoreError, TaskConfigError, UnknownTaskError  # noqa: E402
from .tasks import Task  # noqa: E402

__all__ = ["DataError", "HfMtlError", "StoreError", "TaskConfigError", "UnknownTaskError", "Task", "__version__"]

# The heavy classes load on first use (importing hf_mtl stays cheap for the CLI's error paths).
# (h-docs: a stand-in so the examples' imports work on this branch; the cli helper owns this API.)
_LAZY = {
    "MultiTaskModel": ".modeling",
    "MultiTaskTrainer": ".trainer",
    "MultiTaskTrainingArguments": ".training_args",
    "load_task_split": ".data.readers",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
