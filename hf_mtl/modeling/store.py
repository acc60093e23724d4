"""Saving and loading a `MultiTaskModel` in the store layout (a local folder and a Hub repo alike).

```
mtl_config.json                  base model + revision, method, tasks, languages, file manifest
<task>/task.json                 the Task (kind, labels, columns, metrics)
<task>/head.safetensors          the task's head
<task>/adapter_config.json       the task's adapter options   } methods with per-task weights
<task>/adapter_model.safetensors the task's adapter weights   }
shared/adapter_model.safetensors parts shared by tasks (a hypernetwork, ...)
languages/<lang>/adapter_config.json        } language adapters: one folder per language of
languages/<lang>/adapter_model.safetensors  } `adapter.adapter_languages()` (MAD-X, LoRA language adapters)
backbone/                        the backbone (save_pretrained), only when it was trained
```
Every file is written atomically; `mtl_config.json` is written last, so a folder with a config is
complete. Only safetensors and JSON are read: nothing is unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .. import __version__
from ..errors import StoreError, UnknownTaskError
from ..io_utils import atomic_write_json, load_tensors, read_json, save_tensors, sha256_file
from ..tasks import Task, validate_task_name
from .backbone import build_backbone, load_backbone_config, load_tokenizer

if TYPE_CHECKING:
    from .model import MultiTaskModel

CONFIG_NAME = "mtl_config.json"
HEAD_NAME = "head.safetensors"
TASK_NAME = "task.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
BACKBONE_DIR = "backbone"
SHARED_DIR = "shared"
LANGUAGES_DIR = "languages"
LIBRARY = "hf_mtl"


def save_model(model: "MultiTaskModel", save_directory: str | os.PathLike, tasks: Sequence[str] | None = None,
               extra_config: dict[str, Any] | None = None) -> None:
    """Write `tasks` (default: all with a head) of `model` into `save_directory`.

    Tasks already in the folder that are not saved now stay (their manifest entries are kept), so
    saving one task into an existing store does not touch the others.
    """
    root = Path(save_directory)
    root.mkdir(parents=True, exist_ok=True)
    names = list(tasks) if tasks is not None else [n for n in model.tasks if n in model.heads]
    model._check_tasks(names)
    previous = _read_existing_config(root)
    written: list[str] = []
    for name in names:
        written += _save_task(model, root, name)
    written += _save_shared(model, root)
    written += _save_languages(model, root)
    written += _save_backbone(model, root)
    kept = {k: v for k, v in previous.get("files", {}).items() if _owner(k) not in set(names) | {SHARED_DIR, BACKBONE_DIR}}
    files = {**kept, **{rel: _file_entry(root / rel) for rel in written}}
    all_tasks = list(dict.fromkeys([*previous.get("tasks", []), *names]))
    config = {
        "library": LIBRARY,
        "library_version": __version__,
        "base_model": model.base_model,
        "base_model_revision": model.base_model_revision,
        "model_type": model.config.model_type,
        "adapter_method": model.adapter.name,
        "adapter_config": model.adapter.config,
        "freeze_backbone": model.freeze_backbone,
        "backbone_trained": model.backbone_trained,
        "tasks": all_tasks,
        "languages": sorted({t.language for t in model.tasks.values() if t.language} | set(model.adapter.adapter_languages())),
        "trainable_parameters": model.trainable_parameters(),
        "files": dict(sorted(files.items())),
        **(extra_config or {}),
    }
    atomic_write_json(root / CONFIG_NAME, config)


def _save_task(model: "MultiTaskModel", root: Path, name: str) -> list[str]:
    task = model.tasks[name]
    folder = root / name
    atomic_write_json(folder / TASK_NAME, task.to_dict())
    save_tensors(folder / HEAD_NAME, model.heads[name].state_dict(), metadata={"task": name, "library": LIBRARY})
    written = [f"{name}/{TASK_NAME}", f"{name}/{HEAD_NAME}"]
    adapter_state = model.adapter.task_state_dict(name)
    if adapter_state:
        meta = {"task": name, "adapter_method": model.adapter.name, "library": LIBRARY}
        save_tensors(folder / ADAPTER_WEIGHTS, adapter_state, metadata=meta)
        atomic_write_json(folder / ADAPTER_CONFIG, _with_base(model, model.adapter.task_config(name)))
        written += [f"{name}/{ADAPTER_WEIGHTS}", f"{name}/{ADAPTER_CONFIG}"]
    return written


def _save_shared(model: "MultiTaskModel", root: Path) -> list[str]:
    state = model.adapter.shared_state_dict()
    if not state:
        return []
    save_tensors(root / SHARED_DIR / ADAPTER_WEIGHTS, state, metadata={"adapter_method": model.adapter.name})
    atomic_write_json(root / SHARED_DIR / ADAPTER_CONFIG, {"adapter_method": model.adapter.name, **model.adapter.config})
    return [f"{SHARED_DIR}/{ADAPTER_WEIGHTS}", f"{SHARED_DIR}/{ADAPTER_CONFIG}"]


def _save_languages(model: "MultiTaskModel", root: Path) -> list[str]:
    """`languages/<lang>/` for every language adapter of the method (none for most methods)."""
    written: list[str] = []
    for language in model.adapter.adapter_languages():
        validate_task_name(language, what="language code")  # it becomes a folder name
        state = model.adapter.language_state_dict(language)
        if not state:
            continue
        folder = root / LANGUAGES_DIR / language
        meta = {"language": language, "adapter_method": model.adapter.name, "library": LIBRARY}
        save_tensors(folder / ADAPTER_WEIGHTS, state, metadata=meta)
        atomic_write_json(folder / ADAPTER_CONFIG, _with_base(model, model.adapter.language_config(language)))
        written += [f"{LANGUAGES_DIR}/{language}/{ADAPTER_WEIGHTS}", f"{LANGUAGES_DIR}/{language}/{ADAPTER_CONFIG}"]
    return written


def base_model_config(model: "MultiTaskModel") -> dict[str, Any]:
    """What an adapter was trained on, recorded in its `adapter_config.json` and checked when it is loaded."""
    config = model.config
    return {
        "name": model.base_model or getattr(config, "_name_or_path", None) or None,
        "model_type": config.model_type,
        "hidden_size": getattr(config, "hidden_size", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
    }


def _with_base(model: "MultiTaskModel", adapter_config: dict[str, Any]) -> dict[str, Any]:
    return {**adapter_config, "base_model_config": adapter_config.get("base_model_config") or base_model_config(model)}


def _save_backbone(model: "MultiTaskModel", root: Path) -> list[str]:
    if not model.backbone_trained:
        return []
    folder = root / BACKBONE_DIR
    inserted = {id(p) for p in model.adapter.parameters()}
    own = {k: v for k, v in model.backbone.state_dict(keep_vars=True).items() if id(v) not in inserted}
    model.backbone.save_pretrained(str(folder), state_dict={k: v.detach() for k, v in own.items()})
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(folder))
    return [str(p.relative_to(root)) for p in sorted(folder.rglob("*")) if p.is_file()]


def _file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _owner(relative: str) -> str:
    return relative.split("/", 1)[0]


def _read_existing_config(root: Path) -> dict[str, Any]:
    path = root / CONFIG_NAME
    return read_json(path, "existing store") if path.is_file() else {}


# ---------------------------------------------------------------------------------------------------- loading
def read_store_config(root: str | os.PathLike) -> dict[str, Any]:
    """Read and validate `mtl_config.json`: task names and file paths must stay inside the store."""
    root = Path(root)
    config = read_json(root / CONFIG_NAME, f"store {root}")
    if not isinstance(config, dict) or config.get("library") != LIBRARY:
        raise StoreError(f"{root / CONFIG_NAME} was not written by {LIBRARY} (library={config.get('library')!r}).")
    for name in config.get("tasks", []):
        validate_task_name(name, what=f"task name in {root / CONFIG_NAME}")
    for rel in config.get("files", {}):
        check_relative_path(rel, root / CONFIG_NAME)
    return config


def check_relative_path(rel: str, source: Any) -> str:
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\\" in rel or rel.startswith("~"):
        raise StoreError(f"{source} lists the path {rel!r}, which would escape the store folder; refusing to use it.")
    return rel


def load_model(cls: type["MultiTaskModel"], path_or_repo: str | os.PathLike, tasks: Sequence[str] | None = None,
               revision: str | None = None, device: str | torch.device | None = None, **kwargs: Any) -> "MultiTaskModel":
    """Rebuild a model from a store: the base backbone (or the saved one) + the tasks' heads and adapters.

    Args:
        path_or_repo: a local store folder, or a Hub repo id (pulled with `hf_mtl.hub`).
        tasks: load only these tasks (default: all in the store).
        revision: Hub revision (branch, tag or commit) of the store.
        device: where to put the model.
        kwargs: passed to the backbone loader (e.g. `backbone_dropout`), or `tokenizer=`.
    """
    root = _local_store(path_or_repo, tasks, revision, kwargs.pop("token", None))
    config = read_store_config(root)
    names = select_tasks(config, tasks, root)
    task_objs = [_read_task(root, name) for name in names]
    backbone, tokenizer = _load_backbone(root, config, kwargs)
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


def select_tasks(config: dict[str, Any], tasks: Sequence[str] | None, root: Path) -> list[str]:
    available = list(config.get("tasks", []))
    if tasks is None:
        return available
    missing = [t for t in tasks if t not in available]
    if missing:
        raise UnknownTaskError(f"Task(s) {missing} are not in the store {root}. Available tasks: {available}.")
    return list(tasks)


def _read_task(root: Path, name: str) -> Task:
    data = read_json(root / name / TASK_NAME, f"task {name!r}")
    task = Task.from_dict(data)
    if task.name != name:
        raise StoreError(f"{root / name / TASK_NAME} describes task {task.name!r}, not {name!r}.")
    return task


def _load_backbone(root: Path, config: dict[str, Any], kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
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
    backbone_config = load_backbone_config(source, backbone_dropout, **hub_kwargs)
    backbone = build_backbone(backbone_config, source, **hub_kwargs, **kwargs)
    if tokenizer is None:
        tokenizer = load_tokenizer(source, **hub_kwargs)
    return backbone, tokenizer


def _load_weights(model: "MultiTaskModel", root: Path, names: Sequence[str]) -> None:
    for name in names:
        adapter_file = root / name / ADAPTER_WEIGHTS
        if adapter_file.is_file():  # checked first: a foreign base model is named before shapes disagree
            _check_adapter_config(model, root / name / ADAPTER_CONFIG, name)
        head_state = load_tensors(root / name / HEAD_NAME, f"head of task {name!r}")
        _load_strict(model.heads[name], head_state, f"head of task {name!r} ({root / name / HEAD_NAME})")
        if adapter_file.is_file():
            model.adapter.load_task_state_dict(name, load_tensors(adapter_file, f"adapter of task {name!r}"))
    shared = root / SHARED_DIR / ADAPTER_WEIGHTS
    if shared.is_file():
        model.adapter.load_shared_state_dict(load_tensors(shared, "shared adapter weights"))
    _load_languages(model, root)


def _load_languages(model: "MultiTaskModel", root: Path) -> None:
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


def _check_adapter_config(model: "MultiTaskModel", path: Path, task: str, owner: str = "task") -> None:
    saved = read_json(path, f"adapter config of {owner} {task!r}")
    method = saved.get("adapter_method", saved.get("peft_type"))
    if saved.get("adapter_method") is not None and method != model.adapter.name:
        raise StoreError(
            f"{path}: {owner} {task!r} was saved with adapter_method {method!r}, but the store's method is "
            f"{model.adapter.name!r}. Fix: load it into a model of method {method!r}."
        )
    _check_base_model(model, saved.get("base_model_config"), path, f"{owner} {task!r}")


def _check_base_model(model: "MultiTaskModel", saved: Any, path: Path, owner: str) -> None:
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


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            part for part in (
                f"missing {missing}" if missing else "",
                f"unexpected {unexpected}" if unexpected else "",
                "shape mismatch " + ", ".join(f"{k}: saved {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong)
                if wrong else "",
            ) if part
        )
        raise StoreError(f"{what} does not fit the model: {detail}. It was saved for another model, method or label set.")
    module.load_state_dict(state)


def load_trainable_state(model: "MultiTaskModel", root: str | os.PathLike) -> None:
    """Load a checkpoint's weights into an existing model (trainer resume): heads, adapters, backbone."""
    root = Path(root)
    config = read_store_config(root)
    _load_weights(model, root, [n for n in config.get("tasks", []) if n in model.heads])
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
