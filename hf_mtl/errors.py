"""Error types. Every message names the task (or file), the field and the fix."""


class HfMtlError(ValueError):
    """Base class of the errors raised for bad input."""


class TaskConfigError(HfMtlError):
    """A task description or a recipe field is invalid."""


class DataError(HfMtlError):
    """A dataset, file, column or label is missing or malformed."""


class StoreError(HfMtlError):
    """A saved store (output folder, adapter folder, Hub repo) is missing, corrupt or foreign."""


class UnknownTaskError(HfMtlError, KeyError):
    """A task name that the model does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""
