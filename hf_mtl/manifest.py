"""The file manifest of a store (`mtl_config.json["files"]`): which files a set of tasks needs, and checks.

A store's files belong to an *owner*, the first folder of their path: a task (`<task>/...`), `shared/`,
`languages/` (owner `languages/<lang>`) or `backbone/`. Pulling tasks fetches the files of those tasks
plus every shared part they run on; pushing replaces the files of the pushed tasks only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from safetensors import safe_open

from .errors import StoreError
from .io_utils import sha256_file
from .modeling.store import BACKBONE_DIR, LANGUAGES_DIR, SHARED_DIR

SHARED_OWNERS = (SHARED_DIR, BACKBONE_DIR)


def owner_of(relative: str) -> str:
    """`sst2/head.safetensors` -> `sst2`; `languages/pt/x` -> `languages/pt`; `shared/x` -> `shared`."""
    parts = relative.split("/")
    if parts[0] == LANGUAGES_DIR and len(parts) > 2:
        return f"{LANGUAGES_DIR}/{parts[1]}"
    return parts[0] if len(parts) > 1 else ""


def is_shared_part(relative: str) -> bool:
    """True for files that every task of a store runs on (`shared/`, `languages/<lang>/`, `backbone/`)."""
    owner = owner_of(relative)
    return owner in SHARED_OWNERS or owner.startswith(f"{LANGUAGES_DIR}/")


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
