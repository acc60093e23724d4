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
A save is atomic as a whole (`save_model`): the folder is the old store or the new one. A load checks
every file it reads against the manifest (sizes always, sha256 with `verify_hashes=True`). Only
safetensors and JSON are read: nothing is unpickled, and no code named by a store is run.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .. import __version__
from ..errors import StoreError, UnknownTaskError
from ..io_utils import (atomic_write_json, is_staging_name, link_or_copy, load_tensors, normal_mode, read_json,
                        save_tensors, sha256_file, staging_folder, swap_in)
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
DATA_FILE_FIELDS = ("train_file", "validation_file", "test_file")
# pickle-based formats: loading one can run arbitrary code, so a store that lists one is refused
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")

logger = logging.getLogger(__name__)



def save_model(model: "MultiTaskModel", save_directory: str | os.PathLike, tasks: Sequence[str] | None = None,
               extra_config: dict[str, Any] | None = None) -> None:
    """Write `tasks` (default: all with a head) of `model` into `save_directory`, atomically as a whole.

    The new store is written into a sibling folder, with the files of the old folder it keeps (other
    tasks, other languages, and whatever else the folder holds: checkpoints, results) hard-linked in,
    then swapped in place of the old folder in one rename (see `hf_mtl.io_utils.swap_in`). A save killed
    at any moment leaves the old store or the new one, never a mix; its leftover folder is removed by
    the next save. Where the folder cannot be renamed (its parent is read-only, or it is a mount point)
    the store is written in place instead, the manifest last, with a warning: a load then refuses files
    that do not match the manifest.

    Tasks already in the folder that are not saved now stay (their manifest entries are kept), so
    saving one task into an existing store does not touch the others.
    """
    target = Path(save_directory).resolve()  # a symlinked store: replace the folder it points to
    names = list(tasks) if tasks is not None else [n for n in model.tasks if n in model.heads]
    model._check_tasks(names)
    previous = _read_existing_config(target)
    try:
        staging = staging_folder(target)
    except OSError as err:  # the parent folder is not writable (e.g. the store is a mounted volume)
        return _save_in_place(model, target, names, previous, extra_config, err)
    try:
        config = _write_store(model, staging, target, names, previous, extra_config)
        _save_step("before_manifest")
        atomic_write_json(staging / CONFIG_NAME, config)  # last: a folder with a config is complete
        _save_step("before_swap")
        cwd = os.getcwd()
        try:
            replaced = swap_in(staging, target)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EBUSY, errno.EACCES, errno.EPERM):
                raise
            shutil.rmtree(staging, ignore_errors=True)
            return _save_in_place(model, target, names, previous, extra_config, err)  # a mount point cannot be renamed
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if cwd == str(target) or cwd.startswith(str(target) + os.sep):
        os.chdir(cwd)  # the process's working folder was the old store: move to the same path in the new one
    _save_step("after_swap")
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def _save_in_place(model: "MultiTaskModel", target: Path, names: list[str], previous: dict[str, Any],
                   extra_config: dict[str, Any] | None, reason: OSError) -> None:
    """Fallback when the folder cannot be swapped: every file atomically, the manifest last. Not atomic as a
    whole: a save killed midway leaves files that the manifest check of the next load refuses."""
    logger.warning("%s cannot be replaced as a whole (%s); writing the store in place, the manifest last.", target, reason)
    config = _write_store(model, target, None, names, previous, extra_config)
    atomic_write_json(target / CONFIG_NAME, config)


def _save_step(point: str) -> None:
    """A named point of a save (`after_tasks`, `before_manifest`, `before_swap`, `after_swap`); tests replace
    this to kill a save there."""


def _write_store(model: "MultiTaskModel", staging: Path, target: Path | None, names: list[str], previous: dict[str, Any],
                 extra_config: dict[str, Any] | None) -> dict[str, Any]:
    """Write the saved parts into `staging`, carry over the rest of `target` (if any), and return the new config."""
    written: list[str] = []
    for name in names:
        written += _save_task(model, staging, name)
    _save_step("after_tasks")
    written += _save_shared(model, staging)
    written += _save_languages(model, staging)
    written += _save_backbone(model, staging)
    rewritten = set(names) | {SHARED_DIR, BACKBONE_DIR}
    _carry_over(target, staging, rewritten)
    kept = {k: v for k, v in previous.get("files", {}).items()
            if _owner(k) not in rewritten and (staging / k).is_file()}
    files = {**kept, **{rel: _file_entry(staging / rel) for rel in written}}
    all_tasks = list(dict.fromkeys([*previous.get("tasks", []), *names]))
    return {
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


def _carry_over(target: Path | None, staging: Path, rewritten: set[str]) -> None:
    """Hard-link into `staging` everything of the old `target` that this save does not rewrite: other tasks'
    folders, language adapters saved before, and files that are not part of the store (checkpoints, results).
    Files already written to `staging` win."""
    if target is None or not target.is_dir():
        return
    for entry in target.iterdir():
        if entry.name == CONFIG_NAME or entry.name in rewritten or is_staging_name(entry.name):
            continue
        dest = staging / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, dest, symlinks=True, copy_function=link_or_copy, dirs_exist_ok=True,
                            ignore=lambda _folder, names: [n for n in names if is_staging_name(n)])
        elif not os.path.lexists(dest):
            if entry.is_symlink():
                os.symlink(os.readlink(entry), dest)
            else:
                link_or_copy(str(entry), str(dest))


def _save_task(model: "MultiTaskModel", root: Path, name: str) -> list[str]:
    task = model.tasks[name]
    folder = root / name
    atomic_write_json(folder / TASK_NAME, _with_absolute_data_paths(task.to_dict()))
    save_tensors(folder / HEAD_NAME, model.heads[name].state_dict(), metadata={"task": name, "library": LIBRARY})
    written = [f"{name}/{TASK_NAME}", f"{name}/{HEAD_NAME}"]
    adapter_state = model.adapter.task_state_dict(name)
    if adapter_state:
        meta = {"task": name, "adapter_method": model.adapter.name, "library": LIBRARY}
        save_tensors(folder / ADAPTER_WEIGHTS, adapter_state, metadata=meta)
        atomic_write_json(folder / ADAPTER_CONFIG, _with_base(model, model.adapter.task_config(name)))
        written += [f"{name}/{ADAPTER_WEIGHTS}", f"{name}/{ADAPTER_CONFIG}"]
    return written


def _with_absolute_data_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Data files as absolute paths: a relative path means "relative to the folder training ran in", which
    `eval` from another folder could not find. URLs and absolute paths are kept as they are."""
    for field_name in DATA_FILE_FIELDS:
        value = data.get(field_name)
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            data[field_name] = os.path.abspath(os.path.expanduser(value))
    return data


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
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    for path in files:
        os.chmod(path, normal_mode())  # transformers writes its weights through a 0600 temporary file
    return [str(p.relative_to(root)) for p in files]


def _file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _owner(relative: str) -> str:
    return relative.split("/", 1)[0]


def _read_existing_config(root: Path) -> dict[str, Any]:
    """The config of the store being replaced ({} for a new folder)."""
    return read_store_config(root) if (root / CONFIG_NAME).is_file() else {}


# ---------------------------------------------------------------------------------------------------- loading
def read_store_config(root: str | os.PathLike) -> dict[str, Any]:
    """Read and validate `mtl_config.json`: task names and file paths must stay inside the store, the
    manifest must be `{path: {"size": int, "sha256": str}}`, and no listed file may be a pickle."""
    root = Path(root)
    path = root / CONFIG_NAME
    config = read_json(path, f"store {root}")
    if not isinstance(config, dict) or config.get("library") != LIBRARY:
        found = config.get("library") if isinstance(config, dict) else type(config).__name__
        raise StoreError(f"{path} was not written by {LIBRARY} (library={found!r}).")
    tasks = config.get("tasks", [])
    if not isinstance(tasks, list):
        raise StoreError(f"{path}: `tasks` must be a list of task names, got {tasks!r}. Fix: save the store again.")
    for name in tasks:
        validate_task_name(name, what=f"task name in {path}")
    files = config.get("files", {})
    if not isinstance(files, dict):
        raise StoreError(f"{path}: `files` must be a JSON object {{path: {{\"size\": ..., \"sha256\": ...}}}}, got "
                         f"{type(files).__name__}. Fix: save the store again.")
    for rel, entry in files.items():
        check_relative_path(rel, path)
        _check_not_pickle(rel, path)
        _check_manifest_entry(rel, entry, path)
    return config


def _check_not_pickle(rel: str, source: Path) -> None:
    if rel.lower().endswith(PICKLE_SUFFIXES):
        raise StoreError(
            f"{source} lists {rel!r}, a pickle file: hf_mtl never reads pickles (loading one can run code). "
            f"Fix: store the weights as safetensors (save the store again with hf_mtl)."
        )


def _check_manifest_entry(rel: str, entry: Any, source: Path) -> None:
    size = entry.get("size") if isinstance(entry, dict) else None
    sha = entry.get("sha256") if isinstance(entry, dict) else None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0 or not isinstance(sha, str):
        raise StoreError(
            f"{source}: the manifest entry of {rel!r} has size={size!r} and sha256={sha!r}; `size` must be an "
            f"integer (bytes) and `sha256` a hex string. Fix: save or push the store again."
        )


def check_relative_path(rel: str, source: Any) -> str:
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\\" in rel or rel.startswith("~"):
        raise StoreError(f"{source} lists the path {rel!r}, which would escape the store folder; refusing to use it.")
    return rel


def verify_store_files(root: Path, config: dict[str, Any], tasks: Sequence[str], languages: Sequence[str] = (),
                       hashes: bool = False) -> None:
    """Check the files a model of `tasks` reads against the manifest: present, same size, sha256 on request.

    A save is atomic, so a mismatch means the folder was changed by hand or by another program; the
    load is refused rather than mixing files of two saves.
    """
    from ..manifest import files_for, verify_files  # manifest.py imports this module's constants

    verify_files(root, files_for(config, tasks, languages), str(root), remove=False, hashes=hashes)


def load_model(cls: type["MultiTaskModel"], path_or_repo: str | os.PathLike, tasks: Sequence[str] | None = None,
               revision: str | None = None, device: str | torch.device | None = None, verify_hashes: bool = False,
               trust_remote_code: bool = False, **kwargs: Any) -> "MultiTaskModel":
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
    names = select_tasks(config, tasks, root)
    verify_store_files(root, config, names, hashes=verify_hashes)
    task_objs = [_read_task(root, name) for name in names]
    from ..manifest import needed_languages

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


def select_tasks(config: dict[str, Any], tasks: Sequence[str] | None, root: Path) -> list[str]:
    available = list(config.get("tasks", []))
    if tasks is None:
        return available
    missing = [t for t in tasks if t not in available]
    if missing:
        raise UnknownTaskError(f"Task(s) {missing} are not in the store {root}. Available tasks: {available}.")
    return list(tasks)


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
    if not isinstance(saved, dict):
        raise StoreError(f"{path} must be a JSON object (the adapter's options), got {type(saved).__name__}. "
                         f"Fix: save or pull {owner} {task!r} again.")
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
