"""`MultiTaskModel.save_pretrained`: write a model's tasks into the store layout (see `hf_mtl.store`).

A save is atomic as a whole (`save_model`): the folder is the old store or the new one. The manifest
(`mtl_config.json["files"]`) lists every file with its size and sha256; loads check files against it.
Only safetensors and JSON are written.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..io_utils import (
    atomic_write_json,
    is_staging_name,
    link_or_copy,
    normal_mode,
    save_tensors,
    staging_folder,
    swap_in,
)
from ..tasks import validate_task_name
from .layout import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BACKBONE_DIR,
    CONFIG_NAME,
    HEAD_NAME,
    HF_MTL_ADAPTER,
    HF_MTL_ADAPTER_KEYS,
    LANGUAGES_DIR,
    LIBRARY,
    SHARED_DIR,
    SHARED_OWNERS,
    TASK_NAME,
    owner_of,
)
from .manifest import file_entry, read_store_config


if TYPE_CHECKING:
    from ..modeling.model import MultiTaskModel

DATA_FILE_FIELDS = ("train_file", "validation_file", "test_file")

logger = logging.getLogger(__name__)


def save_model(model: MultiTaskModel, save_directory: str | os.PathLike, tasks: Sequence[str] | None = None,
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


def _save_in_place(model: MultiTaskModel, target: Path, names: list[str], previous: dict[str, Any],
                   extra_config: dict[str, Any] | None, reason: OSError) -> None:
    """Fallback when the folder cannot be swapped: every file atomically, the manifest last. Not atomic as a
    whole: a save killed midway leaves files that the manifest check of the next load refuses."""
    logger.warning("%s cannot be replaced as a whole (%s); writing the store in place, the manifest last.", target, reason)
    config = _write_store(model, target, None, names, previous, extra_config)
    atomic_write_json(target / CONFIG_NAME, config)


def _save_step(point: str) -> None:
    """A named point of a save (`after_tasks`, `before_manifest`, `before_swap`, `after_swap`); tests replace
    this to kill a save there."""


def _write_store(model: MultiTaskModel, staging: Path, target: Path | None, names: list[str], previous: dict[str, Any],
                 extra_config: dict[str, Any] | None) -> dict[str, Any]:
    """Write the saved parts into `staging`, carry over the rest of `target` (if any), and return the new config."""
    written: list[str] = []
    for name in names:
        written += _save_task(model, staging, name)
    _save_step("after_tasks")
    written += _save_shared(model, staging)
    written += _save_languages(model, staging)
    written += _save_backbone(model, staging)
    # owners this save replaces as a whole: the saved tasks, the shared parts, and each language it wrote
    rewritten = set(names) | set(SHARED_OWNERS) | {owner_of(rel) for rel in written}
    _carry_over(target, staging, rewritten)
    kept = {k: v for k, v in previous.get("files", {}).items()
            if owner_of(k) not in rewritten and (staging / k).is_file()}
    files = {**kept, **{rel: file_entry(staging / rel) for rel in written}}
    all_tasks = list(dict.fromkeys([*previous.get("tasks", []), *names]))
    return {
        "library": LIBRARY,
        "library_version": __version__,
        "base_model": model.base_model,
        "base_model_revision": model.base_model_revision,
        "model_type": model.config.model_type,
        "adapter_method": model.adapter.name,
        "adapter_config": model.adapter.config,
        "peft_adapters": model.adapter.saves_peft_format,  # the model card shows how to load a task with PEFT alone
        "freeze_backbone": model.freeze_backbone,
        "backbone_trained": model.backbone_trained,
        "tasks": all_tasks,
        "languages": sorted({t.language for t in model.tasks.values() if t.language} | set(model.adapter.adapter_languages())),
        "trainable_parameters": model.trainable_parameters(),
        "files": dict(sorted(files.items())),
        **(extra_config or {}),
    }


def _carry_over(target: Path | None, staging: Path, rewritten: set[str]) -> None:
    """Hard-link into `staging` everything of the old `target` whose owner (`layout.owner_of`) this save does
    not rewrite: other tasks' folders, other languages' adapters, and files that are not part of the store
    (checkpoints, results). Files already written to `staging` win."""
    if target is None or not target.is_dir():
        return

    def skipped(folder: str, names: list[str]) -> list[str]:
        rel = Path(folder).relative_to(target).as_posix()
        return [n for n in names if is_staging_name(n) or owner_of(f"{rel}/{n}/-") in rewritten]

    for entry in target.iterdir():
        if entry.name == CONFIG_NAME or entry.name in rewritten or is_staging_name(entry.name):
            continue
        dest = staging / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, dest, symlinks=True, copy_function=link_or_copy, dirs_exist_ok=True, ignore=skipped)
        elif not os.path.lexists(dest):
            if entry.is_symlink():
                os.symlink(os.readlink(entry), dest)
            else:
                link_or_copy(str(entry), str(dest))


def _save_task(model: MultiTaskModel, root: Path, name: str) -> list[str]:
    task = model.tasks[name]
    folder = root / name
    atomic_write_json(folder / TASK_NAME, _with_absolute_data_paths(task.to_dict()))
    save_tensors(folder / HEAD_NAME, model.heads[name].state_dict(), metadata={"task": name, "library": LIBRARY})
    written = [f"{name}/{TASK_NAME}", f"{name}/{HEAD_NAME}"]
    adapter_state = model.adapter.task_state_dict(name)
    if adapter_state:
        meta = {"task": name, "adapter_method": model.adapter.name, "library": LIBRARY}
        save_tensors(folder / ADAPTER_WEIGHTS, adapter_state, metadata=meta)
        written += [f"{name}/{ADAPTER_WEIGHTS}"]
        written += _write_adapter_config(model, root, name, model.adapter.task_config(name))
    return written


def _write_adapter_config(model: MultiTaskModel, root: Path, folder: str, adapter_config: dict[str, Any]) -> list[str]:
    """`<folder>/adapter_config.json` (with the base model it was trained on); for a method that saves PEFT adapters,
    a plain PEFT config there and hf_mtl's keys (`HF_MTL_ADAPTER_KEYS`) in `<folder>/hf_mtl_adapter.json`, so that
    PEFT loads the folder without "Unexpected keyword arguments". Returns the written paths, relative to `root`."""
    config = _with_base(model, adapter_config)
    if not model.adapter.saves_peft_format:
        atomic_write_json(root / folder / ADAPTER_CONFIG, config)
        return [f"{folder}/{ADAPTER_CONFIG}"]
    ours = {key: config.pop(key) for key in HF_MTL_ADAPTER_KEYS if key in config}
    atomic_write_json(root / folder / ADAPTER_CONFIG, config)
    atomic_write_json(root / folder / HF_MTL_ADAPTER, ours)
    return [f"{folder}/{ADAPTER_CONFIG}", f"{folder}/{HF_MTL_ADAPTER}"]


def _with_absolute_data_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Data files as absolute paths: a relative path means "relative to the folder training ran in", which
    `eval` from another folder could not find. URLs and absolute paths are kept as they are."""
    for field_name in DATA_FILE_FIELDS:
        value = data.get(field_name)
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            data[field_name] = os.path.abspath(os.path.expanduser(value))
    return data


def _save_shared(model: MultiTaskModel, root: Path) -> list[str]:
    state = model.adapter.shared_state_dict()
    if not state:
        return []
    save_tensors(root / SHARED_DIR / ADAPTER_WEIGHTS, state, metadata={"adapter_method": model.adapter.name})
    atomic_write_json(root / SHARED_DIR / ADAPTER_CONFIG, {"adapter_method": model.adapter.name, **model.adapter.config})
    return [f"{SHARED_DIR}/{ADAPTER_WEIGHTS}", f"{SHARED_DIR}/{ADAPTER_CONFIG}"]


def _save_languages(model: MultiTaskModel, root: Path) -> list[str]:
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
        written += [f"{LANGUAGES_DIR}/{language}/{ADAPTER_WEIGHTS}"]
        written += _write_adapter_config(model, root, f"{LANGUAGES_DIR}/{language}", model.adapter.language_config(language))
    return written


def base_model_config(model: MultiTaskModel) -> dict[str, Any]:
    """What an adapter was trained on, recorded in its `adapter_config.json` and checked when it is loaded."""
    config = model.config
    return {
        "name": model.base_model or getattr(config, "_name_or_path", None) or None,
        "model_type": config.model_type,
        "hidden_size": getattr(config, "hidden_size", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
    }


def _with_base(model: MultiTaskModel, adapter_config: dict[str, Any]) -> dict[str, Any]:
    return {**adapter_config, "base_model_config": adapter_config.get("base_model_config") or base_model_config(model)}


def _save_backbone(model: MultiTaskModel, root: Path) -> list[str]:
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


def _read_existing_config(root: Path) -> dict[str, Any]:
    """The config of the store being replaced ({} for a new folder)."""
    return read_store_config(root) if (root / CONFIG_NAME).is_file() else {}
