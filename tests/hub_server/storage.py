"""Storage: content-addressed blobs on disk, commits (full tree snapshots), revision resolution, and the
server-side helpers tests use to set up and inspect repos without going through HTTP."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from typing import Any

from .model import (
    DEFAULT_GITATTRIBUTES,
    Commit,
    FileEntry,
    HubError,
    Repo,
    _now,
    git_blob_sha1,
    lfs_pointer,
)


class StorageMixin:
    """Blobs live under ``root/objects`` keyed by sha256; every commit keeps a full snapshot of its tree."""

    root: str
    gitattributes: bool
    _repos: dict[tuple[str, str], Repo]
    _lock: threading.RLock
    _counter: int

    def create_repo(
        self, repo_id: str, *, private: bool = False, repo_type: str = "model", author: str | None = None
    ) -> Repo:
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                raise ValueError(f"{repo_type} {repo_id} exists")
            repo = Repo(repo_type, repo_id, private, _now())
            tree: dict[str, FileEntry] = {}
            if self.gitattributes:
                tree[".gitattributes"] = self._store_blob(DEFAULT_GITATTRIBUTES.encode(), lfs=False)
            commit = self._new_commit(repo, None, tree, "initial commit", "", author or repo.namespace)
            repo.branches["main"] = commit.oid
            self._repos[key] = repo
            return repo

    def get_repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self._repos[(repo_type, repo_id)]

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        repo = self.get_repo(repo_id, repo_type)
        oid = self._resolve(repo, revision)
        if oid is None:
            raise KeyError(revision)
        return oid

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        repo = self.get_repo(repo_id, repo_type)
        return sorted(repo.commits[self.head(repo_id, revision, repo_type)].tree)

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        repo = self.get_repo(repo_id, repo_type)
        entry = repo.commits[self.head(repo_id, revision, repo_type)].tree[path]
        with open(self._blob_path(entry.sha256), "rb") as f:
            return f.read()

    def commit_history(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[Commit]:
        repo = self.get_repo(repo_id, repo_type)
        return self._history(repo, self.head(repo_id, revision, repo_type))

    def write_files(self, repo_id: str, files: dict[str, bytes], title: str = "server-side write",
                    branch: str = "main", repo_type: str = "model") -> str:
        """Commit `files` straight into the storage, bypassing the client's checks (for hostile repos with
        paths a client refuses to upload, such as `.git/...`). Returns the new commit."""
        with self._lock:
            repo = self.get_repo(repo_id, repo_type)
            parent = repo.branches[branch]
            tree = dict(repo.commits[parent].tree)
            for path, data in files.items():
                tree[path] = self._store_blob(data, lfs=False)
            commit = self._new_commit(repo, parent, tree, title, "", repo.namespace)
            repo.branches[branch] = commit.oid
            return commit.oid

    # ------------------------------------------------------------------ storage

    def _blob_path(self, sha256: str) -> str:
        return os.path.join(self.root, "objects", sha256[:2], sha256[2:])

    def _store_blob(self, data: bytes, *, lfs: bool) -> FileEntry:
        sha = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        git_oid = git_blob_sha1(lfs_pointer(sha, len(data))) if lfs else git_blob_sha1(data)
        return FileEntry(sha, len(data), lfs, git_oid)

    def _lfs_entry(self, sha256: str) -> FileEntry | None:
        path = self._blob_path(sha256)
        if not os.path.exists(path):
            return None
        size = os.path.getsize(path)
        return FileEntry(sha256, size, True, git_blob_sha1(lfs_pointer(sha256, size)))

    def _new_commit(
        self, repo: Repo, parent: str | None, tree: dict[str, FileEntry], title: str, message: str, author: str
    ) -> Commit:
        self._counter += 1
        seed = f"{repo.repo_type}/{repo.repo_id}\n{parent}\n{sorted((p, e.git_oid) for p, e in tree.items())}"
        seed += f"\n{title}\n{message}\n{author}\n{time.time_ns()}\n{self._counter}\n{uuid.uuid4().hex}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, tree, title, message, author, _now())
        repo.commits[commit.oid] = commit
        return commit

    def _history(self, repo: Repo, oid: str) -> list[Commit]:
        out = []
        cur: str | None = oid
        while cur is not None:
            commit = repo.commits[cur]
            out.append(commit)
            cur = commit.parent
        return out

    def _resolve(self, repo: Repo, revision: str) -> str | None:
        """revision (branch, tag, refs/heads/x, refs/tags/x, refs/pr/N, full or >=7-char commit sha) -> commit."""
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.tags:
            return repo.tags[revision]
        if revision.startswith("refs/heads/"):
            return repo.branches.get(revision[len("refs/heads/") :])
        if revision.startswith("refs/tags/"):
            return repo.tags.get(revision[len("refs/tags/") :])
        if revision.startswith("refs/pr/"):
            num = revision[len("refs/pr/") :]
            return repo.prs.get(int(num)) if num.isdigit() else None
        rev = revision.lower()
        if len(rev) == 40 and rev in repo.commits:
            return rev
        if 7 <= len(rev) < 40 and all(c in "0123456789abcdef" for c in rev):
            matches = [oid for oid in repo.commits if oid.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        return None

    def _resolve_or_404(self, repo: Repo, revision: str, *, headers: dict | None = None) -> Commit:
        oid = self._resolve(repo, revision)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound", headers)
        return repo.commits[oid]

    def _writable_ref(self, repo: Repo, revision: str) -> tuple[str, Any]:
        if revision in repo.branches:
            return ("branch", revision)
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in repo.branches:
            return ("branch", revision[len("refs/heads/") :])
        if revision.startswith("refs/pr/"):
            num = revision[len("refs/pr/") :]
            if num.isdigit() and int(num) in repo.prs:
                return ("pr", int(num))
        if self._resolve(repo, revision) is not None:
            raise HubError(400, f"Invalid rev id: {revision} is not a branch")
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _ref_head(self, repo: Repo, ref: tuple[str, Any]) -> str:
        return repo.branches[ref[1]] if ref[0] == "branch" else repo.prs[ref[1]]

    def _set_ref(self, repo: Repo, ref: tuple[str, Any], oid: str) -> None:
        if ref[0] == "branch":
            repo.branches[ref[1]] = oid
        else:
            repo.prs[ref[1]] = oid
