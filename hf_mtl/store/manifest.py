"""The file manifest of a store (`mtl_config.json["files"]`): reading and checking the config, selecting
tasks, which files a set of tasks needs, and verifying files against their entries.

Pulling tasks fetches the files of those tasks plus every shared part they run on (owners: see
`hf_mtl.store.layout`); pushing replaces the files of the pushed tasks only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from safetensors import safe_open

from ..errors import StoreError, UnknownTaskError
from ..io_utils import read_json, sha256_file
from ..tasks import validate_task_name
from .layout import CONFIG_NAME, LANGUAGES_DIR, LIBRARY, PICKLE_SUFFIXES, SHARED_OWNERS, check_relative_path, owner_of


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


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest entry of a file: `{"size": bytes, "sha256": hex}`."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def select_tasks(config: dict[str, Any], tasks: Sequence[str] | None, where: str) -> list[str]:
    """The tasks of a store to use: all of them, or the requested ones, each a valid name the store holds.

    Args:
        config: a validated store config (`read_store_config`).
        tasks: requested task names, or None for every task of the store.
        where: the store, for messages (a folder, or a repo id and revision).

    Returns:
        The task names, without repeats, in the requested order.

    Raises:
        TaskConfigError: a requested name that cannot be a task name (e.g. `../x`).
        UnknownTaskError: requested tasks the store does not hold, with the ones it holds.
    """
    available = list(config.get("tasks", []))
    if tasks is None:
        return available
    names = list(dict.fromkeys(validate_task_name(t) for t in tasks))
    missing = [t for t in names if t not in available]
    if missing:
        raise UnknownTaskError(f"Task(s) {missing} are not in {where}. Available tasks: {available}.")
    return names


def needed_languages(config: dict[str, Any], tasks: dict[str, Any]) -> set[str]:
    """Languages whose adapters a model of `tasks` loads: the tasks' own and those the method declares.

    Args:
        config: the store's `mtl_config.json`.
        tasks: `{name: task.json content}` of the selected tasks.

    Returns:
        Language codes (`languages/<code>/` folders).
    """
    declared = (config.get("adapter_config") or {}).get("languages") or []
    own = {t.get("language") for t in tasks.values() if t.get("language")}
    return {str(code) for code in declared} | own


def files_for(config: dict[str, Any], tasks: Sequence[str], languages: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The manifest entries of `tasks`, of `shared/` and `backbone/`, and of `languages`' folders.

    Args:
        config: a validated store config (`read_store_config`).
        tasks: selected task names.
        languages: language codes whose adapters are needed.

    Returns:
        `{relative path: {"size", "sha256"}}`.
    """
    owners = set(tasks) | set(SHARED_OWNERS) | {f"{LANGUAGES_DIR}/{code}" for code in languages}
    return {rel: entry for rel, entry in config.get("files", {}).items() if owner_of(rel) in owners}


def verify_store_files(root: Path, config: dict[str, Any], tasks: Sequence[str], languages: Iterable[str] = (),
                       hashes: bool = False) -> None:
    """Check the files a model of `tasks` reads in a local store: present, same size, sha256 on request.

    A save is atomic, so a mismatch means the folder was changed by hand or by another program; the
    load is refused rather than mixing files of two saves.
    """
    verify_files(root, files_for(config, tasks, languages), str(root), remove=False, hashes=hashes)


def exact_pattern(relative: str) -> str:
    """An `allow_patterns` entry that matches exactly this path (fnmatch's special characters escaped)."""
    return re.sub(r"([*?\[])", r"[\1]", relative)


def verify_files(root: Path, entries: dict[str, dict[str, Any]], source: str, remove: bool = True,
                 hashes: bool = True) -> None:
    """Check every file of `entries` under `root`: present, same size (and sha256), safetensors parse.

    With `remove`, a file that fails is deleted (with its cache blob when it is a symlink into the HF
    cache), so a later pull fetches it again.

    Args:
        root: the folder holding the files.
        entries: manifest entries to check.
        source: where the files came from, for messages (a repo id and revision, or a folder).
        remove: delete a bad file (downloads), or leave it (a user's own store).
        hashes: also compare sha256 (reads every byte); False checks sizes only (a local load).

    Raises:
        StoreError: naming the first bad file and what is wrong with it.
    """
    for rel, entry in sorted(entries.items()):
        path = root / rel
        problem = _problem(path, entry, hashes)
        if problem is None:
            continue
        if not remove:
            raise StoreError(
                f"{rel} in {source} {problem} (the manifest of mtl_config.json lists size={entry.get('size')!r}): the "
                f"folder was changed after it was saved. Fix: save the store again, or restore the file."
            )
        _remove(path)
        raise StoreError(
            f"{rel} from {source} {problem}; the file was removed. mtl_config.json's manifest lists "
            f"size={entry.get('size')!r} sha256={str(entry.get('sha256'))[:12]}... for it. Fix: pull again; if it "
            f"fails again, the repo is corrupt: push the task again from its output folder."
        )


def _problem(path: Path, entry: dict[str, Any], hashes: bool = True) -> str | None:
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != entry.get("size"):
        return f"has {size} bytes instead of {entry.get('size')!r}"
    if hashes and sha256_file(path) != entry.get("sha256"):
        return "does not match its sha256 in the manifest"
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as err:  # safetensors raises several types for a bad header
            return f"is not a valid safetensors file ({err})"
    return None


def _remove(path: Path) -> None:
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        path.unlink()
        target.unlink(missing_ok=True)
    elif path.is_file():
        path.unlink()
