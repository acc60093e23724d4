"""Push and pull per-task stores to and from the Hugging Face Hub (or any Hub-compatible server).

A repo has the store layout (DESIGN.md: local folder = Hub repo). Pushing tasks commits only their
folders, plus `mtl_config.json` merged with the repo's (other tasks' entries stay), the regenerated
card and the shared parts that changed; unchanged files are not sent, and a push that changes
nothing makes no commit. Two pushers of different tasks both survive: each commit names its parent
and is rebuilt on the new head when another push got in first (HTTP 412).

Pulling tasks downloads `mtl_config.json`, `README.md`, the tasks' folders and the shared parts they
run on, at one pinned commit, and checks every file against the manifest (size, sha256, safetensors
header). Into the HF cache, or into `local_dir` through a staging folder inside it: files are moved
into place only once all of them are complete and verified, and only into a folder that is empty or
was made by pulls of the same repo, replacing only files those pulls put there.

Against a server other than huggingface.co, set `HF_HUB_DISABLE_XET=1` (see STACK.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import huggingface_hub
from filelock import FileLock
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.sha import git_hash


# the HTTP client huggingface_hub talks through (its exceptions reach us): httpx2 from huggingface_hub 2, httpx in 1.x
if int(huggingface_hub.__version__.split(".")[0]) >= 2:
    import httpx2 as http_client
else:
    import httpx as http_client

from .errors import HfMtlError, StoreError
from .io_utils import atomic_write_bytes, atomic_write_json, read_json, sha256_file
from .store.card import render_card, run_metrics
from .store.layout import CONFIG_NAME, TASK_NAME, check_relative_path, is_shared_part, owner_of
from .store.manifest import exact_pattern, files_for, needed_languages, read_store_config, select_tasks, verify_files
from .store.merge import check_pushable, kept_tasks, merge_configs
from .tasks import validate_task_name


logger = logging.getLogger(__name__)

README = "README.md"
MAX_PUSH_ATTEMPTS = 8  # commits rebuilt on a newer head after a 412 (another push got in first)
PULL_DIR = ".hf_mtl"  # in a folder pulled into: pull.json (what the pulls put there), pull.lock, staging folders
STAGING_PREFIX = "staging-"
LOGIN_HINT = "Fix: run `hf auth login`, or set HF_TOKEN (or pass token=/--token); pushing needs a token with write access."
READ_HINT = ("Fix: pulling needs a valid token that can read the repo (for a private repo, its owner's): set HF_TOKEN to "
             "one, pass --token (token=), or run `hf auth login`; for a public repo, no token is needed at all.")


@dataclass
class PushResult:
    """What a push did.

    Attributes:
        repo_id: the repo.
        commit: the new commit, or the current head when nothing changed.
        changed: paths added or updated by the commit (empty: no commit was made).
        deleted: paths removed (files of a pushed task that its new version no longer has).
        commit_url, pr_url: links from the Hub (pr_url with `create_pr=True`).
        replaced: `{task: commit}` for pushed tasks that another push changed after this push read the
            repo: this push replaced that commit's version of them (last writer wins; a warning is logged).
    """

    repo_id: str
    commit: str
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commit_url: str | None = None
    pr_url: str | None = None
    replaced: dict[str, str] = field(default_factory=dict)

    @property
    def committed(self) -> bool:
        return bool(self.changed or self.deleted)


# ---------------------------------------------------------------------------------------------------- tokens, errors
def resolve_token(token: str | None, *, required: bool) -> str | None:
    """The token to use: the argument, else `HF_TOKEN`, else the stored login (`hf auth login`).

    Raises:
        StoreError: when `required` and no token is found.
    """
    token = token or get_token()
    if required and not token:
        raise StoreError(f"Pushing to the Hub needs a token, and none was found. {LOGIN_HINT}")
    return token


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None, action: str) -> Iterator[None]:
    """Turn the client's exceptions into one-line `StoreError`s that say what to do."""
    where = f"{repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    hint = LOGIN_HINT if action == "push to" else READ_HINT
    try:
        yield
    except RepositoryNotFoundError as err:
        raise StoreError(
            f"Could not {action} {where}: the repo does not exist, or your token cannot see it (private repos are "
            f"visible to their owner only). Fix: check the repo id; for a private repo, log in as its owner "
            f"(`hf auth login` or HF_TOKEN)."
            + (f" (No local folder {repo_id!r} exists either.)" if action == "pull" and not os.path.exists(repo_id) else "")
        ) from err
    except RevisionNotFoundError as err:
        raise StoreError(f"Could not {action} {where}: no branch, tag or commit {revision!r} in {repo_id!r}. "
                         f"Fix: use an existing revision, or omit it for the default branch.") from err
    except (HfHubHTTPError, OfflineModeIsEnabled, HFValidationError, LocalEntryNotFoundError) as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            raise StoreError(f"Could not {action} {where}: the Hub rejected the token (401): it is invalid or expired. "
                             f"{hint}") from err
        if status == 403:
            raise StoreError(f"Could not {action} {where}: the token's user has no {'write' if action == 'push to' else 'read'} "
                             f"access there (403). {hint}") from err
        offline = (" Fix: HF_HUB_OFFLINE is set and these files are not in the cache: unset it, or pull them once "
                   "with network access.") if constants.HF_HUB_OFFLINE else ""
        raise StoreError(f"Could not {action} {where}: {_first_line(err)}{offline}") from err
    except http_client.HTTPError as err:
        raise StoreError(
            f"Could not {action} {where}: the connection to {constants.ENDPOINT} failed ({type(err).__name__}: "
            f"{_first_line(err)}). Nothing was left half-written. Fix: check the network and run it again."
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------------------- push
def push(store_dir: str | os.PathLike, repo_id: str, tasks: Sequence[str] | None = None, private: bool = False,
         revision: str | None = None, create_pr: bool = False, token: str | None = None,
         commit_message: str | None = None) -> PushResult:
    """Push tasks of a local store to a Hub repo, leaving the repo's other tasks as they are.

    Args:
        store_dir: a store folder (an `hf-mtl train` output folder or `save_pretrained` folder).
        repo_id: `user/name`; created when missing.
        tasks: the tasks to push (default: every task of the store).
        private: create the repo private (an existing repo keeps its visibility).
        revision: the branch to push to (created from the default branch when missing), or a PR ref
            (`refs/pr/N`) to add a commit to an open pull request.
        create_pr: open a pull request against `revision` instead of committing to it.
        token: a write token (default: `HF_TOKEN` or the stored login).
        commit_message: the commit's title (default: "Push tasks a, b").

    Returns:
        A `PushResult`; `committed` is False when the repo already held these files.
    """
    plan = _PushPlan.from_store(Path(store_dir), repo_id, tasks, revision, create_pr, commit_message)
    api = HfApi(token=resolve_token(token, required=True))
    with hub_errors(repo_id, revision, "push to"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and not create_pr:
            _ensure_branch(api, repo_id, revision)
        for attempt in range(1, MAX_PUSH_ATTEMPTS + 1):
            try:
                return plan.commit(api, private)
            except HfHubHTTPError as err:
                if getattr(err.response, "status_code", None) != 412 or attempt == MAX_PUSH_ATTEMPTS:
                    raise
                logger.info("push to %s: the repo moved on (attempt %d); merging again", repo_id, attempt)
                time.sleep(random.uniform(0.05, 0.25) * attempt)
    raise AssertionError("unreachable")


def _ensure_branch(api: HfApi, repo_id: str, revision: str) -> None:
    """Create `revision` as a branch of the default branch's head, unless it is a PR ref or exists."""
    if revision.startswith("refs/pr/"):
        return
    refs = api.list_repo_refs(repo_id)
    if revision in {t.name for t in refs.tags}:
        raise StoreError(f"Cannot push to {repo_id!r} revision {revision!r}: it is a tag. Fix: push to a branch, then tag it.")
    if revision not in {b.name for b in refs.branches}:
        api.create_branch(repo_id, branch=revision, exist_ok=True)


@dataclass
class _PushPlan:
    """What one push sends: the store's tasks and shared parts, checked against its manifest."""

    root: Path
    repo_id: str
    local: dict[str, Any]
    names: list[str]
    upload: dict[str, dict[str, Any]]  # manifest entries of the pushed files
    results: dict[str, dict[str, float]]
    revision: str | None
    create_pr: bool
    message: str
    first_read: dict[str, dict[str, str]] | None = None  # the pushed tasks' files in the repo when first read

    @classmethod
    def from_store(cls, root: Path, repo_id: str, tasks: Sequence[str] | None, revision: str | None, create_pr: bool,
                   message: str | None) -> _PushPlan:
        if not (root / CONFIG_NAME).is_file():
            raise StoreError(f"{root} has no {CONFIG_NAME}: it is not an hf_mtl store. Fix: push an output folder of `hf-mtl train`.")
        local = read_store_config(root)
        names = select_tasks(local, tasks, str(root))
        upload = {rel: e for rel, e in local.get("files", {}).items() if owner_of(rel) in names or is_shared_part(rel)}
        try:  # a store changed by hand after saving is not pushed: its manifest would describe other files
            verify_files(root, upload, str(root), remove=False)
        except StoreError as err:
            raise StoreError(f"Refusing to push: {err} Fix: save the model again (`save_pretrained`) before pushing.") from err
        default = f"Push task{'s' if len(names) > 1 else ''} {', '.join(names)}" if names else "Push shared parts"
        return cls(root, repo_id, local, names, upload, run_metrics(root, names), revision, create_pr, message or default)

    def commit(self, api: HfApi, private: bool) -> PushResult:
        """One attempt: read the repo at its head, merge, commit with that head as parent (412 if it moved)."""
        info = api.repo_info(self.repo_id, revision=self.revision)
        if private and not info.private:
            logger.warning("%s already exists and is public: private=True only applies to new repos", self.repo_id)
        head = info.sha
        tree = {f.path: f for f in api.list_repo_tree(self.repo_id, recursive=True, revision=head) if isinstance(f, RepoFile)}
        with tempfile.TemporaryDirectory(prefix="hf_mtl-remote-") as tmp:
            remote = self._remote_config(api, head, tree, Path(tmp))
            check_pushable(remote, self.local, self.names, self.upload, self.repo_id)
            merged = merge_configs(remote, self.local, self.names, self.upload, self.results)
            infos = {**self._remote_task_infos(api, head, tree, kept_tasks(remote, self.names), Path(tmp)),
                     **{n: read_json(self.root / n / TASK_NAME, f"task {n!r}") for n in self.names}}
        card = render_card(merged, infos, self.repo_id).encode("utf-8")
        ops, changed, deleted = self._operations(merged, card, tree, remote)
        if not ops:
            logger.info("push to %s: the repo already holds these files; no commit", self.repo_id)
            return PushResult(self.repo_id, head)
        replaced = self._replaced(tree, head, changed + deleted)
        done = api.create_commit(self.repo_id, ops, commit_message=self.message, revision=self.revision,
                                 create_pr=self.create_pr, parent_commit=head)
        if replaced:
            logger.warning(
                "push to %s: task(s) %s were changed by another push (the repo's head was %s) after this push read "
                "the repo; this push replaced that version (last writer wins). It stays in the repo's history: "
                "if both were meant to stay, push one of them under another task name.",
                self.repo_id, sorted(replaced), head)
        return PushResult(self.repo_id, done.oid, changed, deleted, commit_url=done.commit_url, pr_url=done.pr_url,
                          replaced=replaced)

    def _replaced(self, tree: dict[str, RepoFile], head: str, touched: list[str]) -> dict[str, str]:
        """Pushed tasks whose files in the repo changed since the first attempt read it (another push of
        the same task got in first) and that this commit overwrites: `{task: head}`."""
        now = {name: {p: f.blob_id for p, f in tree.items() if owner_of(p) == name} for name in self.names}
        if self.first_read is None:
            self.first_read = now
        return {name: head for name in self.names
                if now[name] != self.first_read[name] and any(owner_of(p) == name for p in touched)}

    def _remote_config(self, api: HfApi, head: str, tree: dict[str, RepoFile], tmp: Path) -> dict[str, Any] | None:
        if CONFIG_NAME not in tree:
            return None
        api.hf_hub_download(self.repo_id, CONFIG_NAME, revision=head, local_dir=tmp / "config", token=api.token)
        try:
            return read_store_config(tmp / "config")
        except HfMtlError as err:
            raise StoreError(f"{self.repo_id} holds a {CONFIG_NAME} that hf_mtl cannot use ({err}). Fix: push to another repo.") from err

    def _remote_task_infos(self, api: HfApi, head: str, tree: dict[str, RepoFile], names: list[str],
                           tmp: Path) -> dict[str, dict[str, Any]]:
        """`task.json` of the repo's kept tasks, for their card sections (a missing one gives an empty entry)."""
        infos: dict[str, dict[str, Any]] = {}
        for name in names:
            rel = f"{name}/{TASK_NAME}"
            data = {}
            if rel in tree:
                path = api.hf_hub_download(self.repo_id, rel, revision=head, local_dir=tmp / "tasks", token=api.token)
                data = read_json(path, f"task {name!r} of {self.repo_id}")
            infos[name] = data if isinstance(data, dict) else {}
        return infos

    def _operations(self, merged: dict[str, Any], card: bytes, tree: dict[str, RepoFile], remote: dict[str, Any] | None
                    ) -> tuple[list[Any], list[str], list[str]]:
        """Adds for files whose content differs from the repo's, deletes for files the pushed tasks dropped."""
        ops: list[Any] = []
        changed: list[str] = []
        for rel, entry in sorted(self.upload.items()):
            if not _same_file(tree.get(rel), entry["sha256"], self.root / rel):
                ops.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(self.root / rel)))
                changed.append(rel)
        for rel, data in ((CONFIG_NAME, _json_bytes(merged)), (README, card)):
            if not _same_bytes(tree.get(rel), data):
                ops.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=data))
                changed.append(rel)
        listed = set((remote or {}).get("files", {}))
        deleted = sorted(p for p in tree if p not in merged["files"] and p not in (CONFIG_NAME, README)
                         and (owner_of(p) in self.names or p in listed))
        ops += [CommitOperationDelete(path_in_repo=p) for p in deleted]
        return ops, changed, deleted


def _same_file(remote: RepoFile | None, sha256: str, path: Path) -> bool:
    if remote is None:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == sha256
    return remote.blob_id == git_hash(path.read_bytes())


def _same_bytes(remote: RepoFile | None, data: bytes) -> bool:
    if remote is None:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == hashlib.sha256(data).hexdigest()
    return remote.blob_id == git_hash(data)


def _json_bytes(obj: Any) -> bytes:
    """The bytes `atomic_write_json` writes, so a pulled config is byte-identical to the pushed one."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------------- pull
def pull(repo_id: str, tasks: Sequence[str] | None = None, revision: str | None = None,
         local_dir: str | os.PathLike | None = None, token: str | None = None) -> str:
    """Download what `tasks` need from a Hub repo, at one commit, verified against the manifest.

    Fetched: `mtl_config.json`, `README.md`, `<task>/` of each task, `shared/`, `backbone/` (when the
    backbone was trained) and `languages/<lang>/` for the tasks' languages and those the method
    declares (`adapter_config.languages`). Nothing else.

    Args:
        repo_id: `user/name`.
        tasks: the tasks to pull (default: all).
        revision: a branch, tag, commit or `refs/pr/N` (default: the default branch). All files come
            from the one commit it points to when the pull starts.
        local_dir: a folder to put the store in; default: the HF cache (usable offline afterwards).
            It must be absent, empty, or a folder that earlier pulls of the same repo made (and no
            model was saved into since). Files are downloaded into a staging folder inside it
            (`.hf_mtl/staging-*`; those of killed pulls are removed) and moved in only when all are
            complete and verified. Only files that earlier pulls put there (listed in
            `.hf_mtl/pull.json`) are ever replaced or removed; tasks pulled earlier stay listed while
            their files still match the repo.
        token: a token for private repos (default: `HF_TOKEN` or the stored login).

    Returns:
        The local store folder (a snapshot folder of the cache, or `local_dir`).
    """
    api = HfApi(token=resolve_token(token, required=False))
    requested = None if tasks is None else [validate_task_name(t) for t in tasks]
    with hub_errors(repo_id, revision, "pull"):
        if local_dir is None:
            return str(_pull_to_cache(api, repo_id, requested, revision))
        return str(_pull_to_folder(api, repo_id, requested, revision, Path(local_dir)))


def _pull_to_cache(api: HfApi, repo_id: str, tasks: list[str] | None, revision: str | None) -> Path:
    # The first call resolves the revision (and records it in the cache for offline use); the
    # snapshot folder's name is the commit, which every later call downloads from.
    snapshot = Path(api.snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_NAME], token=api.token))
    commit = snapshot.name

    def fetch(patterns: list[str]) -> None:
        api.snapshot_download(repo_id, revision=commit, allow_patterns=patterns, token=api.token)

    _fetch_store(snapshot, f"{repo_id}@{commit[:12]}", tasks, fetch)
    return snapshot


def _pull_to_folder(api: HfApi, repo_id: str, tasks: list[str] | None, revision: str | None, target: Path) -> Path:
    if target.exists() and not target.is_dir():
        raise StoreError(f"local_dir {target} is a file, not a folder. Fix: give a folder path (--local-dir).")
    _previous_pull(target, repo_id)  # refuse a foreign folder before writing anything into it
    commit = api.repo_info(repo_id, revision=revision).sha
    created = _make_folder(target)
    own = target / PULL_DIR
    try:
        own.mkdir(exist_ok=True)
        with FileLock(str(own / "pull.lock")):
            record = _previous_pull(target, repo_id)  # again: another pull may have finished meanwhile
            for stale in own.glob(f"{STAGING_PREFIX}*"):  # left by killed pulls (the lock says none is running)
                shutil.rmtree(stale, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=own))
            try:
                files = staging / "files"

                def fetch(patterns: list[str]) -> None:
                    api.snapshot_download(repo_id, revision=commit, allow_patterns=patterns, local_dir=files,
                                          token=api.token)

                fetch([CONFIG_NAME])
                config, names, wanted = _fetch_store(files, f"{repo_id}@{commit[:12]}", tasks, fetch)
                _install(files, target, config, names, wanted, _PullRecord(repo_id, commit, record))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        if not (own / "pull.json").exists():  # nothing was ever installed here: leave no trace
            (own / "pull.lock").unlink(missing_ok=True)
            _remove_empty_folders(own, created or own)
        raise
    return target


def _make_folder(target: Path) -> Path | None:
    """Create `target` and its missing parents; return the topmost folder created (None: it existed)."""
    missing = [folder for folder in (target, *target.parents) if not folder.exists()]
    target.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def _remove_empty_folders(folder: Path, last: Path) -> None:
    """Remove `folder` and its parents up to `last` (the folders a failed pull made), while empty."""
    for each in (folder, *folder.parents):
        try:
            each.rmdir()
        except OSError:
            return
        if each == last:
            return


def _previous_pull(target: Path, repo_id: str) -> dict[str, Any] | None:
    """The record of the pulls of `repo_id` into `target` (None: `target` is absent or empty).

    Raises:
        StoreError: `target` holds anything else: files of the user's, a store that was not pulled
            (or was saved into since), or a pull of another repo.
    """
    fix = "Fix: pull into a new or empty folder (--local-dir / local_dir), or move the folder away."
    if not target.is_dir():
        return None
    own = target / PULL_DIR
    if own.is_symlink() or (own.exists() and not own.is_dir()):
        raise StoreError(f"Refusing to pull {repo_id!r} into {target}: {own} is not a folder of hf_mtl's. {fix}")
    record_path = own / "pull.json"
    if not record_path.exists():
        others = sorted(p.name for p in target.iterdir() if p.name != PULL_DIR)
        if others:
            raise StoreError(
                f"Refusing to pull {repo_id!r} into {target}: the folder is not empty ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}) and no pull of {repo_id!r} made it; a pull never replaces "
                f"files it did not put there. {fix}")
        return None
    record = read_json(record_path, f"the pull record of {target}")
    ok = isinstance(record, dict) and all(isinstance(record.get(key), list) for key in ("files", "config_sha256"))
    if not ok or not all(isinstance(rel, str) for rel in record["files"]):
        raise StoreError(f"Refusing to pull into {target}: {record_path} is damaged. {fix}")
    for rel in record["files"]:
        check_relative_path(rel, record_path)
    if record.get("repo_id") != repo_id:
        raise StoreError(f"Refusing to pull {repo_id!r} into {target}: it holds a pull of {record.get('repo_id')!r}. {fix}")
    config = target / CONFIG_NAME
    if config.is_file() and sha256_file(config) not in record["config_sha256"]:
        raise StoreError(f"Refusing to pull {repo_id!r} into {target}: its {CONFIG_NAME} changed since the last pull "
                         f"(a model was saved into it), so its files may be the user's. {fix}")
    return record


@dataclass
class _PullRecord:
    """What the pulls into a folder put there (`<folder>/.hf_mtl/pull.json`): only these files are ever
    replaced or removed by a later pull."""

    repo_id: str
    commit: str
    previous: dict[str, Any] | None

    @property
    def files(self) -> set[str]:
        return set(self.previous["files"]) if self.previous else set()

    def write(self, target: Path, files: set[str], configs: list[str]) -> None:
        atomic_write_json(target / PULL_DIR / "pull.json", {
            "repo_id": self.repo_id, "commit": self.commit, "files": sorted(files), "config_sha256": configs})


def _check_destination(target: Path, rel: str, ours: set[str]) -> None:
    """A downloaded file may only go to a new path or replace a file an earlier pull put there, through
    real folders inside `target` (no link out of it)."""
    fix = "Fix: move it away, or pull into a new folder."
    folder = target
    for part in Path(rel).parts[:-1]:
        folder = folder / part
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise StoreError(f"Refusing to pull into {target}: {folder} is a link or a file where the store needs a folder. {fix}")
    dest = target / rel
    if dest.is_symlink() or dest.is_dir() or (dest.exists() and rel not in ours):
        raise StoreError(f"Refusing to pull into {target}: {dest} exists and was not put there by a pull; a pull never "
                         f"replaces it. {fix}")


def _fetch_store(root: Path, source: str, tasks: list[str] | None, fetch: Any) -> tuple[dict, list[str], dict]:
    """Validate the downloaded config, then fetch and verify the tasks' files and the shared parts.

    Returns:
        (config, task names, manifest entries of every fetched file).
    """
    if not (root / CONFIG_NAME).is_file():
        raise StoreError(f"{source} has no {CONFIG_NAME}: it is not an hf_mtl store. Fix: check the repo id and revision.")
    try:
        config = read_store_config(root)  # task names and paths are checked before any is used
    except HfMtlError as err:
        raise StoreError(f"{source}: refusing its {CONFIG_NAME}: {err}") from err
    names = select_tasks(config, tasks, source)
    first = files_for(config, names, languages=())
    fetch([README, *(exact_pattern(rel) for rel in first)])
    verify_files(root, first, source)
    infos = {name: read_json(root / name / TASK_NAME, f"task {name!r} of {source}") for name in names}
    wanted = files_for(config, names, needed_languages(config, infos))
    languages = {rel: entry for rel, entry in wanted.items() if rel not in first}
    if languages:
        fetch([exact_pattern(rel) for rel in languages])
        verify_files(root, languages, source)
    return config, names, wanted


def _install(files: Path, target: Path, config: dict[str, Any], names: list[str], wanted: dict[str, Any],
             record: _PullRecord) -> None:
    """Move verified files into `target`, replacing (or removing) only files that earlier pulls put there.

    The record is written first, listing every file this pull may leave behind, so that a pull killed
    half-way leaves a folder the next pull can finish; the config goes last.
    """
    ours = record.files
    incoming = [*sorted(wanted), *([README] if (files / README).is_file() else [])]
    for rel in incoming:
        _check_destination(target, rel, ours)
    owners = {owner_of(rel) for rel in wanted}
    dropped = sorted(rel for rel in ours if owner_of(rel) in owners and rel not in wanted)
    old_config = [sha256_file(target / CONFIG_NAME)] if (target / CONFIG_NAME).is_file() else []
    record.write(target, ours | set(incoming), old_config)
    for rel in dropped:  # files of the replaced folders that this commit no longer has
        (target / rel).unlink(missing_ok=True)
    for rel in incoming:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(files / rel, target / rel)
    _remove_empty_parents(target, dropped)
    earlier = [t for t in config["tasks"] if t not in names and _still_valid(target, config, t)]
    present = [t for t in config["tasks"] if t in names or t in earlier]
    listed = {rel: e for rel, e in config.get("files", {}).items()
              if owner_of(rel) in present or (is_shared_part(rel) and (target / rel).is_file())}
    data = _json_bytes({**config, "tasks": present, "files": listed})
    kept, new_config = (ours - set(dropped)) | set(incoming), hashlib.sha256(data).hexdigest()
    record.write(target, kept, [*old_config, new_config])  # a pull killed between these writes is still ours
    atomic_write_bytes(target / CONFIG_NAME, data)
    record.write(target, kept, [new_config])


def _remove_empty_parents(target: Path, removed: list[str]) -> None:
    for rel in removed:
        for folder in (target / rel).parents:
            if folder == target:
                break
            try:
                folder.rmdir()
            except OSError:
                break


def _still_valid(target: Path, config: dict[str, Any], name: str) -> bool:
    """A task pulled into `target` earlier, whose files (and shared parts) match this commit's manifest."""
    info = target / name / TASK_NAME
    if not info.is_file():
        return False
    try:
        entries = files_for(config, [name], needed_languages(config, {name: read_json(info, name)}))
        verify_files(target, entries, str(target), remove=False)
    except StoreError:
        return False
    return True
