"""The store's file names, and which *owner* each file belongs to.

A store's files belong to an owner, the first folder of their path: a task (`<task>/...`), `shared/`,
`languages/<lang>/` (owner `languages/<lang>`) or `backbone/`. Saving, pulling and pushing tasks all
decide which files they touch by this owner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import StoreError


CONFIG_NAME = "mtl_config.json"
HEAD_NAME = "head.safetensors"
TASK_NAME = "task.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Methods that save PEFT adapters (`saves_peft_format`) keep `adapter_config.json` a plain PEFT config (PEFT,
# vLLM and LoRAX read it as it is) and write hf_mtl's own keys about the adapter next to it, in this file.
HF_MTL_ADAPTER = "hf_mtl_adapter.json"
HF_MTL_ADAPTER_KEYS = ("adapter_method", "hf_mtl_adapter_config", "base_model_config", "language")
BACKBONE_DIR = "backbone"
SHARED_DIR = "shared"
LANGUAGES_DIR = "languages"
LIBRARY = "hf_mtl"
# Owners that every task of a store runs on (besides its languages' folders).
SHARED_OWNERS = (SHARED_DIR, BACKBONE_DIR)
# pickle-based formats: loading one can run arbitrary code, so a store that lists one is refused
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def owner_of(relative: str) -> str:
    """The owner of a store path.

    Args:
        relative: a path relative to the store folder, with `/` separators.

    Returns:
        `sst2/head.safetensors` -> `sst2`; `languages/pt/x` -> `languages/pt`; `shared/x` -> `shared`;
        `languages` (the folder itself) -> `languages`; a top-level file (`README.md`) -> `""`.
    """
    parts = relative.split("/")
    if parts[0] == LANGUAGES_DIR and len(parts) > 2:
        return f"{LANGUAGES_DIR}/{parts[1]}"
    return parts[0] if len(parts) > 1 else ""


def is_shared_part(relative: str) -> bool:
    """True for files that every task of a store runs on (`shared/`, `languages/<lang>/`, `backbone/`)."""
    owner = owner_of(relative)
    return owner in SHARED_OWNERS or owner.startswith(f"{LANGUAGES_DIR}/")


def check_relative_path(rel: str, source: Any) -> str:
    """`rel`, unchanged, when it stays inside the store folder; a `StoreError` naming `source` otherwise."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\\" in rel or rel.startswith("~"):
        raise StoreError(f"{source} lists the path {rel!r}, which would escape the store folder; refusing to use it.")
    return rel
