"""The adapter-method interface and its registry.

An adapter method owns every parameter it adds to the frozen backbone. The `MultiTaskModel` calls it
at a few named points:

- `attach(model)` once, after the backbone is built: insert modules through the architecture spec
  (`hf_mtl.modeling.arch`), never by copying `forward` code or swapping `__class__`;
- `add_task(task)` for each task (and language) it must serve;
- `route(routing)` around every backbone forward: a context manager that tells the inserted modules
  which task (and language) each row belongs to (`hf_mtl.adapters.routing`). The routing is per call:
  a `RoutedCall` scoped to the forward in a context variable (`current_call()`), never an attribute of a
  module, so threads that run forwards of one model at once never see each other's;
- `task_state_dict` / `load_task_state_dict` and `shared_state_dict` / `load_shared_state_dict` to
  save `<task>/adapter_model.safetensors` and `shared/adapter_model.safetensors`;
- `adapter_languages()` + `language_state_dict` / `load_language_state_dict` / `language_config` for
  methods with language adapters (MAD-X, LoRA language adapters): the store writes each language
  returned by `adapter_languages()` to `languages/<lang>/adapter_model.safetensors` (+ its
  `adapter_config.json`) and loads it back for every such language of the rebuilt model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import TaskConfigError
from ..registry import Registry
from ..tasks import Task
from .routing import RoutedCall, Routing


class AdapterMethod(nn.Module):
    """Base class; the `none` method (head-only or full fine-tuning) is this class unchanged."""

    name: ClassVar[str] = "none"
    routes_per_row: ClassVar[bool] = True  # a mixed-task batch runs in one forward pass
    # On the CPU, the method runs a mixed batch fastest with each task's rows in one contiguous range
    # (plain matmuls on views instead of per-row gathers): `MultiTaskModel` then orders the rows by task
    # around the backbone's forward when they come interleaved, and puts the outputs back in batch order.
    groups_rows: ClassVar[bool] = False
    # Capabilities that generic code (inference, export, the store) asks for instead of comparing names. The
    # values here are the `none` method's; a subclass adds modules, so it does not inherit the first two
    # (see `__init_subclass__`) and sets True only what it supports.
    shares_backbone_pass: ClassVar[bool] = True  # the backbone's output does not depend on the task
    exportable: ClassVar[bool] = True  # `export_task` writes a task as a plain transformers model (after `merge_for_export`)
    saves_peft_format: ClassVar[bool] = False  # each `<task>/` folder of a store is a PEFT adapter (PeftModel loads it)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for capability in ("shares_backbone_pass", "exportable"):
            if capability not in cls.__dict__:
                setattr(cls, capability, False)

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        super().__init__()
        self.backbone_config = backbone_config
        self.config = dict(config or {})

    # -- lifecycle ---------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> None:
        """Insert the method's modules into `model.backbone`."""

    def add_task(self, task: Task) -> None:
        """Create the task's own parameters (no-op for methods without per-task parameters)."""

    @contextlib.contextmanager
    def route(self, routing: Routing) -> Iterator[None]:
        """Activate the parameters of the batch's tasks for one backbone forward."""
        yield

    def current_call(self) -> RoutedCall | None:
        """The forward this method's layers serve now, in this thread (None outside `route`)."""
        return RoutedCall.current(self)

    # -- parameters --------------------------------------------------------------------------
    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return []

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        return {}

    def load_task_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise TaskConfigError(f"task {task!r}: method {self.name!r} has no per-task weights to load.")

    def shared_state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_shared_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise TaskConfigError(f"method {self.name!r} has no shared weights to load.")

    # -- language adapters (methods without them keep these defaults) -------------------------------
    def adapter_languages(self) -> list[str]:
        """The languages that own weights of this method (saved under `languages/<lang>/`)."""
        return []

    def language_parameters(self, language: str) -> list[nn.Parameter]:
        return []

    def language_state_dict(self, language: str) -> dict[str, torch.Tensor]:
        return {}

    def load_language_state_dict(self, language: str, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise TaskConfigError(f"language {language!r}: method {self.name!r} has no language adapters to load.")

    def language_config(self, language: str) -> dict[str, Any]:
        """Content of `languages/<lang>/adapter_config.json`."""
        return {"adapter_method": self.name, "language": language, **self.config}

    def task_config(self, task: str) -> dict[str, Any]:
        """Content of `<task>/adapter_config.json`."""
        return {"adapter_method": self.name, **self.config}

    def merge_for_export(self, model: nn.Module, task: str) -> None:
        """Fold `task`'s adapter into `model.backbone`'s own weights, leaving a plain transformers backbone
        (`export_task`, for methods with `exportable = True`). The `none` method has nothing to fold."""

    def formula_parameter_count(self, task: str) -> int | None:
        """Per-task parameter count from the method's formula (checked against the real count in tests)."""
        return 0


# Every adapter method, by name -> the module that registers it; a method's module is imported the first
# time its name is looked up, so validating a recipe does not import PEFT or every method's code.
METHOD_MODULES: dict[str, str] = {
    "none": "hf_mtl.adapters.base",
    "bottleneck": "hf_mtl.adapters.bottleneck",
    "ca_mtl": "hf_mtl.adapters.ca_mtl",
    "hyperformer": "hf_mtl.adapters.hyperformer",
    "hyperformer++": "hf_mtl.adapters.hyperformer",
    "lora": "hf_mtl.adapters.lora",
    "madx": "hf_mtl.adapters.madx",
    "pals": "hf_mtl.adapters.pals",
    "prefix_tuning": "hf_mtl.adapters.prefix_tuning",
}
ADAPTER_METHODS: Registry[type[AdapterMethod]] = Registry("adapter_method", base=AdapterMethod, modules=METHOD_MODULES)
ADAPTER_METHODS.register(AdapterMethod)


def register_method(cls: type[AdapterMethod]) -> type[AdapterMethod]:
    """Class decorator: make `cls` selectable by `adapter_method: cls.name` (list it in `METHOD_MODULES` too)."""
    return ADAPTER_METHODS.register(cls)


def build_adapter_method(name: str, backbone_config: Any, config: dict[str, Any] | None = None) -> AdapterMethod:
    """Build the adapter method registered under `name` (case and '-' vs '_' do not matter).

    Args:
        name: a name of `ADAPTER_METHODS`.
        backbone_config: the backbone's `PretrainedConfig`.
        config: the method's options (`adapter_config`).

    Returns:
        The method, not yet attached.
    """
    cls = ADAPTER_METHODS.get(name)
    with naming_method(cls.name):
        return cls(backbone_config, config)


@contextlib.contextmanager
def naming_method(method: str) -> Iterator[None]:
    """Errors raised while a method is built or attached name the method (a backbone it cannot run on, a bad
    option), unless they already do."""
    try:
        yield
    except TaskConfigError as err:
        if repr(method) in str(err):
            raise
        raise TaskConfigError(f"adapter_method {method!r}: {err}") from err
