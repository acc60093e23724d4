"""`MultiTaskModel.from_pretrained`: rebuild a model from a store (a local folder or a Hub repo).

A load checks every file it reads against the manifest (sizes always, sha256 with `verify_hashes=True`).
Only safetensors and JSON are read: nothing is unpickled, and no code named by a store is run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import StoreError
from ..io_utils import load_tensors, read_json
from ..modeling.backbone import build_backbone, load_backbone_config, load_tokenizer
from ..tasks import Task, validate_task_name
from .layout import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BACKBONE_DIR,
    CONFIG_NAME,
    HEAD_NAME,
    HF_MTL_ADAPTER,
    LANGUAGES_DIR,
    SHARED_DIR,
    TASK_NAME,
)
from .manifest import needed_languages, read_store_config, select_tasks, verify_store_files
from .save import base_model_config
from .weights import load_exact


if TYPE_CHECKING:
    from ..modeling.model import MultiTaskModel


def load_model(cls: type[MultiTaskModel], path_or_repo: str | os.PathLike, tasks: Sequence[str] | None = None,
               revision: str | None = None, device: str | torch.device | None = None, verify_hashes: bool = False,
               trust_remote_code: bool = False, **kwargs: Any) -> MultiTaskModel:
    """Rebuild a model from a store: the base backbone (or the saved one) + the tasks' heads and adapters.

    Args:
        path_or_repo: a local store folder, or a Hub repo id (pulled with `hf_mtl.hub`).
        tasks: load only these tasks (default: all in the store).
        revision: Hub revision (branch, tag or commit) of the store.
        device: where to put the model.
        verify_hashes: also check every file's sha256 against the manifest (sizes are always checked).
        trust_remote_code: let transformers run custom code named by the backbone's config (`auto_map`).
            Off by default: a store or base model that needs it is refused with an error naming this option.
        kwargs: passed to the backbone loader (e.g. `backbone_dropout`), or `tokenizer=`.
    """
    root = _local_store(path_or_repo, tasks, revision, kwargs.pop("token", None))
    config = read_store_config(root)
    names = select_tasks(config, tasks, f"the store {root}")
    verify_store_files(root, config, names, hashes=verify_hashes)
    task_objs = [_read_task(root, name) for name in names]
    languages = needed_languages(config, {t.name: t.to_dict() for t in task_objs})
    verify_store_files(root, config, [], languages, hashes=verify_hashes)
    backbone, tokenizer = _load_backbone(root, config, kwargs, trust_remote_code)
    model = cls(
        backbone, task_objs,
        adapter_method=config.get("adapter_method", "none"), adapter_config=config.get("adapter_config") or {},
        freeze_backbone=config.get("freeze_backbone", True), base_model=config.get("base_model"),
        base_model_revision=config.get("base_model_revision"), tokenizer=tokenizer,
    )
    _load_weights(model, root, names)
    model.eval()
    return model.to(device) if device is not None else model


def _local_store(path_or_repo: str | os.PathLike, tasks: Sequence[str] | None, revision: str | None, token: Any) -> Path:
    path = Path(path_or_repo)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise StoreError(f"{path} has no {CONFIG_NAME}: it is not an hf_mtl store (or its save did not finish).")
        return path
    try:
        from .. import hub
    except ImportError as err:  # pragma: no cover - hub is part of the package
        raise StoreError(f"{path_or_repo} is not a folder, and Hub support is unavailable ({err}).") from err
    return Path(hub.pull(str(path_or_repo), tasks=tasks, revision=revision, token=token))


def _read_task(root: Path, name: str) -> Task:
    path = root / name / TASK_NAME
    data = read_json(path, f"task {name!r}")
    if not isinstance(data, dict):
        raise StoreError(f"{path} must be a JSON object describing task {name!r}, got {type(data).__name__}. "
                         f"Fix: save or pull the task again.")
    task = Task.from_dict(data)
    if task.name != name:
        raise StoreError(f"{root / name / TASK_NAME} describes task {task.name!r}, not {name!r}.")
    return task


def _load_backbone(root: Path, config: dict[str, Any], kwargs: dict[str, Any],
                   trust_remote_code: bool = False) -> tuple[torch.nn.Module, Any]:
    tokenizer = kwargs.pop("tokenizer", None)
    backbone_dropout = kwargs.pop("backbone_dropout", None)
    saved = root / BACKBONE_DIR
    if saved.is_dir():
        source, hub_kwargs = str(saved), {}
    else:
        source = config.get("base_model")
        if not source:
            raise StoreError(f"{root / CONFIG_NAME} names no base_model and holds no backbone/ folder.")
        hub_kwargs = {"revision": config["base_model_revision"]} if config.get("base_model_revision") else {}
    hub_kwargs["trust_remote_code"] = trust_remote_code
    backbone_config = load_backbone_config(source, backbone_dropout, **hub_kwargs)
    backbone = build_backbone(backbone_config, source, **hub_kwargs, **kwargs)
    if tokenizer is None:
        tokenizer = load_tokenizer(source, **hub_kwargs)
    return backbone, tokenizer


def _load_weights(model: MultiTaskModel, root: Path, names: Sequence[str]) -> None:
    for name in names:
        adapter_file = root / name / ADAPTER_WEIGHTS
        if adapter_file.is_file():  # checked first: a foreign base model is named before shapes disagree
            _check_adapter_config(model, root / name / ADAPTER_CONFIG, name)
        head_state = load_tensors(root / name / HEAD_NAME, f"head of task {name!r}")
        load_exact(model.heads[name].state_dict(), head_state, f"head of task {name!r} ({root / name / HEAD_NAME})")
        if adapter_file.is_file():
            model.adapter.load_task_state_dict(name, load_tensors(adapter_file, f"adapter of task {name!r}"))
    shared = root / SHARED_DIR / ADAPTER_WEIGHTS
    if shared.is_file():
        model.adapter.load_shared_state_dict(load_tensors(shared, "shared adapter weights"))
    _load_languages(model, root)


def _load_languages(model: MultiTaskModel, root: Path) -> None:
    """Load `languages/<lang>/` for every language adapter the rebuilt method has."""
    for language in model.adapter.adapter_languages():
        validate_task_name(language, what="language code")
        folder = root / LANGUAGES_DIR / language
        if not (folder / ADAPTER_WEIGHTS).is_file():
            raise StoreError(
                f"language adapter {language!r}: {folder / ADAPTER_WEIGHTS} is missing, but the model's method "
                f"{model.adapter.name!r} has an adapter for this language. Fix: save or pull {LANGUAGES_DIR}/{language}/ "
                f"with the store, or load only tasks of the languages the store holds."
            )
        _check_adapter_config(model, folder / ADAPTER_CONFIG, language, owner="language adapter")
        state = load_tensors(folder / ADAPTER_WEIGHTS, f"language adapter {language!r}")
        model.adapter.load_language_state_dict(language, state)


def _check_adapter_config(model: MultiTaskModel, path: Path, task: str, owner: str = "task") -> None:
    """Refuse an adapter saved by another method or for another base model. `path` is its `adapter_config.json`;
    a PEFT-format adapter keeps hf_mtl's keys next to it in `hf_mtl_adapter.json` (stores written before that
    file existed have them in `adapter_config.json`)."""
    saved = _adapter_json(path, task, owner)
    ours = path.with_name(HF_MTL_ADAPTER)
    if ours.is_file():
        saved.update(_adapter_json(ours, task, owner))
        path = ours  # where hf_mtl's keys are, for the messages
    method = saved.get("adapter_method", saved.get("peft_type"))
    if saved.get("adapter_method") is not None and method != model.adapter.name:
        raise StoreError(
            f"{path}: {owner} {task!r} was saved with adapter_method {method!r}, but the store's method is "
            f"{model.adapter.name!r}. Fix: load it into a model of method {method!r}."
        )
    _check_base_model(model, saved.get("base_model_config"), path, f"{owner} {task!r}")


def _adapter_json(path: Path, task: str, owner: str) -> dict[str, Any]:
    saved = read_json(path, f"adapter config of {owner} {task!r}")
    if not isinstance(saved, dict):
        raise StoreError(f"{path} must be a JSON object (the adapter's options), got {type(saved).__name__}. "
                         f"Fix: save or pull {owner} {task!r} again.")
    return saved


def _check_base_model(model: MultiTaskModel, saved: Any, path: Path, owner: str) -> None:
    """An adapter trained on one base model does not fit another: name both, whatever the shapes say."""
    if not isinstance(saved, dict):
        return  # written before this field existed, or by another library (e.g. a plain PEFT adapter)
    current = base_model_config(model)
    differ = [k for k in ("model_type", "hidden_size", "num_hidden_layers") if saved.get(k) is not None and saved.get(k) != current[k]]
    if differ:
        def describe(c: dict[str, Any]) -> str:
            return f"{c.get('name') or 'an unnamed model'} ({', '.join(f'{k}={c.get(k)}' for k in differ)})"

        raise StoreError(
            f"{path}: {owner} was trained on the base model {describe(saved)}, but this model's base is "
            f"{describe(current)}. Fix: load it onto {saved.get('name') or 'its own base model'}, or train the "
            f"adapter again on {current['name'] or 'this base model'}."
        )


def load_trainable_state(model: MultiTaskModel, root: str | os.PathLike) -> None:
    """Load a checkpoint's weights into an existing model (trainer resume): heads, adapters, backbone."""
    root = Path(root)
    config = read_store_config(root)
    names = [n for n in config.get("tasks", []) if n in model.heads]
    verify_store_files(root, config, names, model.adapter.adapter_languages())
    _load_weights(model, root, names)
    saved = root / BACKBONE_DIR
    if saved.is_dir():
        state = {}
        for file in sorted(saved.glob("*.safetensors")):
            state.update(load_tensors(file, "checkpoint backbone"))
        result = model.backbone.load_state_dict(state, strict=False)
        inserted = {n for n, p in model.backbone.named_parameters() if id(p) in {id(q) for q in model.adapter.parameters()}}
        missing = [k for k in result.missing_keys if k not in inserted]
        if missing or result.unexpected_keys:
            raise StoreError(f"checkpoint backbone in {saved} does not fit: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
