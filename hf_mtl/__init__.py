"""hf_mtl: multi-task learning with adapters on the Hugging Face stack."""

__version__ = "0.1.0"

from .errors import DataError, HfMtlError, StoreError, TaskConfigError, UnknownTaskError  # noqa: E402
from .tasks import Task  # noqa: E402

__all__ = ["DataError", "HfMtlError", "StoreError", "TaskConfigError", "UnknownTaskError", "Task", "__version__"]
