"""Merging a pushed store into the one already in a repo: the pushed tasks replace theirs, the others stay.

A push of tasks P into a repo holding tasks R keeps every task of R that is not in P ("kept" tasks).
Kept tasks were trained on the repo's base model, method, options and shared parts (`shared/`,
`languages/<lang>/`, `backbone/`); a push that would change any of those under them is refused,
because it would silently change what the kept tasks compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import StoreError
from .layout import is_shared_part, owner_of


# Store settings every task of one repo must share (they rebuild the one model the tasks run on).
SHARED_SETTINGS = ("base_model", "base_model_revision", "model_type", "adapter_method", "adapter_config",
                   "freeze_backbone", "backbone_trained")
# Fields rebuilt by `merge_configs` rather than copied from the pushed store.
_MERGED_FIELDS = ("tasks", "files", "languages", "trainable_parameters", "eval_results")


def kept_tasks(remote: dict[str, Any] | None, pushed: Sequence[str]) -> list[str]:
    """Tasks of the repo that this push leaves as they are."""
    return [t for t in (remote or {}).get("tasks", []) if t not in set(pushed)]


def check_pushable(remote: dict[str, Any] | None, local: dict[str, Any], pushed: Sequence[str],
                   upload: dict[str, dict[str, Any]], repo_id: str) -> None:
    """Refuse a push that would change what the repo's other tasks run on.

    Args:
        remote: the repo's `mtl_config.json` (None for an empty repo).
        local: the pushed store's config.
        pushed: the pushed task names.
        upload: manifest entries of the files being pushed.
        repo_id: for messages.

    Raises:
        StoreError: naming the setting or file, the tasks that depend on it, and the fix.
    """
    kept = kept_tasks(remote, pushed)
    if not kept:
        return
    fix = (f"Fix: push to another repo, or push {kept} together with {list(pushed)} from one run (so they "
           f"replace each other consistently).")
    for key in SHARED_SETTINGS:
        if remote.get(key) != local.get(key):
            raise StoreError(
                f"{repo_id}: its tasks {kept} were trained with {key}={remote.get(key)!r}, but the pushed store has "
                f"{key}={local.get(key)!r}. All tasks of one repo run on one model. {fix}"
            )
    remote_files = remote.get("files", {})
    for rel, entry in sorted(upload.items()):
        old = remote_files.get(rel)
        if is_shared_part(rel) and old is not None and old.get("sha256") != entry.get("sha256"):
            raise StoreError(
                f"{repo_id}: its tasks {kept} run on {rel}, and the pushed store's {rel} differs (a shared part "
                f"trained again?). Pushing it would change those tasks' predictions. {fix}"
            )


def merge_configs(remote: dict[str, Any] | None, local: dict[str, Any], pushed: Sequence[str],
                  upload: dict[str, dict[str, Any]], results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The repo's `mtl_config.json` after the push.

    Args:
        remote: the repo's config (None for an empty repo).
        local: the pushed store's config.
        pushed: the pushed task names.
        upload: manifest entries of the pushed files (tasks' files and the store's shared parts).
        results: `{task: metrics}` of the pushed tasks' run (see `hf_mtl.store.card.run_metrics`).

    Returns:
        Settings from the pushed store; tasks, files, languages, parameter counts and results of the
        kept tasks from the repo, of the pushed tasks from the store.
    """
    remote = remote or {}
    kept = kept_tasks(remote, pushed)
    files = {rel: e for rel, e in remote.get("files", {}).items() if owner_of(rel) in kept or (kept and is_shared_part(rel))}
    files.update(upload)
    merged = {**remote, **{k: v for k, v in local.items() if k not in _MERGED_FIELDS}}
    merged["tasks"] = [*remote.get("tasks", []), *(t for t in pushed if t not in remote.get("tasks", []))]
    merged["files"] = dict(sorted(files.items()))
    merged["languages"] = sorted(set(remote.get("languages", []) if kept else []) | set(local.get("languages", [])))
    merged["trainable_parameters"] = _merge_counts(remote.get("trainable_parameters") or {},
                                                   local.get("trainable_parameters") or {}, kept, pushed)
    old_results = remote.get("eval_results") or {}
    merged["eval_results"] = {**{t: old_results[t] for t in kept if t in old_results},
                              **{t: results[t] for t in pushed if t in results}}
    return merged


def _merge_counts(remote: dict[str, Any], local: dict[str, Any], kept: list[str], pushed: Sequence[str]) -> dict[str, Any]:
    tasks = {**{t: c for t, c in (remote.get("tasks") or {}).items() if t in kept},
             **{t: c for t, c in (local.get("tasks") or {}).items() if t in pushed}}
    languages = {**((remote.get("languages") or {}) if kept else {}), **(local.get("languages") or {})}
    return {**remote, **local, "tasks": tasks, "languages": languages}
