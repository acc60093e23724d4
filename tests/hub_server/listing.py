"""Listing endpoints: tree, paths-info, refs and commits."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs

from .model import (
    Commit,
    FileEntry,
    HubError,
    Repo,
    _json,
    _Request,
    _Response,
    _truthy,
)


class ListingMixin:
    """Read-only views of a revision's tree and of a repo's refs and history."""

    def _entry_json(self, path: str, entry: FileEntry) -> dict:
        out: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
        if entry.lfs:
            out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        return out

    def _last_commit_json(self, repo: Repo, commit: Commit, path: str, is_dir: bool) -> dict:
        def state(c: Commit) -> Any:
            if is_dir:
                prefix = path + "/"
                return sorted((p, e.git_oid) for p, e in c.tree.items() if p.startswith(prefix))
            entry = c.tree.get(path)
            return entry.git_oid if entry else None

        cur = commit
        target = state(cur)
        while cur.parent is not None and state(repo.commits[cur.parent]) == target:
            cur = repo.commits[cur.parent]
        return {"id": cur.oid, "title": cur.title, "date": cur.date}

    def _dir_oid(self, tree: dict[str, FileEntry], prefix: str) -> str:
        items = sorted((p, e.git_oid) for p, e in tree.items() if p.startswith(prefix))
        return hashlib.sha1(repr(items).encode()).hexdigest()

    def _dirs(self, tree: dict[str, FileEntry]) -> set[str]:
        dirs = set()
        for path in tree:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _tree(self, req: _Request, repo: Repo, revision: str, path: str) -> _Response:
        commit = self._resolve_or_404(repo, revision)
        recursive = _truthy(req.q("recursive"))
        expand = _truthy(req.q("expand"))
        path = path.strip("/")
        dirs = self._dirs(commit.tree)
        if path and path not in dirs:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        prefix = f"{path}/" if path else ""
        depth = prefix.count("/")
        entries = []
        for d in sorted(dirs):
            if d.startswith(prefix) and (recursive or d.count("/") == depth):
                item = {"type": "directory", "oid": self._dir_oid(commit.tree, d + "/"), "size": 0, "path": d}
                if expand:
                    item["lastCommit"] = self._last_commit_json(repo, commit, d, True)
                entries.append(item)
        for p in sorted(commit.tree):
            if p.startswith(prefix) and (recursive or p.count("/") == depth):
                item = self._entry_json(p, commit.tree[p])
                if expand:
                    item["lastCommit"] = self._last_commit_json(repo, commit, p, False)
                entries.append(item)
        return _json(entries)

    def _paths_info(self, req: _Request, repo: Repo, revision: str) -> _Response:
        commit = self._resolve_or_404(repo, revision)
        ctype = req.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = req.json()
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(req.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy((form.get("expand") or ["false"])[0])
        dirs = self._dirs(commit.tree)
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.tree:
                item = self._entry_json(p, commit.tree[p])
                if expand:
                    item["lastCommit"] = self._last_commit_json(repo, commit, p, False)
                out.append(item)
            elif p in dirs:
                item = {"type": "directory", "oid": self._dir_oid(commit.tree, p + "/"), "size": 0, "path": p}
                if expand:
                    item["lastCommit"] = self._last_commit_json(repo, commit, p, True)
                out.append(item)
        return _json(out)

    def _refs(self, req: _Request, repo: Repo) -> _Response:
        return _json(
            {
                "branches": [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in sorted(repo.branches.items())
                ],
                "converts": [],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": oid} for t, oid in sorted(repo.tags.items())],
                "pullRequests": [
                    {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid} for n, oid in sorted(repo.prs.items())
                ],
            }
        )

    def _list_commits(self, req: _Request, repo: Repo, revision: str) -> _Response:
        commit = self._resolve_or_404(repo, revision)
        return _json(
            [
                {
                    "id": c.oid,
                    "title": c.title,
                    "message": c.message,
                    "authors": [{"user": c.author, "avatar": ""}],
                    "date": c.date,
                    "formatted": {"title": c.title, "message": c.message},
                }
                for c in self._history(repo, commit.oid)
            ]
        )
