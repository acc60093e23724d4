"""Repo endpoints: create, delete, info, settings, branches and tags."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from .model import (
    URL_PREFIX,
    Commit,
    HubError,
    Repo,
    _json,
    _Request,
    _Response,
    _truthy,
)


class ReposMixin:
    """Repos and their refs; ``_create_repo`` and ``_delete_repo`` take the hub lock themselves."""

    _repos: dict[tuple[str, str], Repo]
    _lock: threading.RLock

    def _create_repo(self, req: _Request) -> _Response:
        if req.user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        payload = req.json()
        name = payload.get("name")
        namespace = payload.get("organization") or req.user
        repo_type = payload.get("type") or "model"
        if not name or repo_type not in URL_PREFIX:
            raise HubError(400, "Invalid repo name or type")
        if not self._can_write_namespace(req.user, namespace):
            raise HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        private = payload.get("visibility") == "private" if "visibility" in payload else bool(payload.get("private"))
        repo_id = f"{namespace}/{name}"
        with self._lock:
            url = f"{req.base}/{URL_PREFIX[repo_type]}{repo_id}"
            if (repo_type, repo_id) in self._repos:
                resp = self._error_response(HubError(409, f"You already created this {repo_type} repo"))
                resp.body = json.dumps({"error": f"You already created this {repo_type} repo", "url": url}).encode()
                return resp
            repo = self.create_repo(repo_id, private=private, repo_type=repo_type, author=req.user)
        return _json({"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24], "private": repo.private})

    def _delete_repo(self, req: _Request) -> _Response:
        payload = req.json()
        namespace = payload.get("organization") or req.user
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload.get('name')}"
        with self._lock:
            self._get_repo(req, repo_type, repo_id, write=True)
            del self._repos[(repo_type, repo_id)]
        return _Response(200)

    def _repo_info(self, req: _Request, repo: Repo, commit: Commit) -> _Response:
        blobs = _truthy(req.q("blobs"))
        siblings = []
        for path in sorted(commit.tree):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = commit.tree[path]
                sibling.update(size=entry.size, blobId=entry.git_oid)
                if entry.lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        data: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.tree.values()),
        }
        if repo.repo_type == "model":
            data["modelId"] = repo.repo_id
            data["spaces"] = []
        return _json(data)

    def _settings(self, req: _Request, repo: Repo) -> _Response:
        payload = req.json()
        if "private" in payload:
            repo.private = bool(payload["private"])
        if payload.get("visibility") in ("private", "public"):
            repo.private = payload["visibility"] == "private"
        return _json({})

    # ------------------------------------------------------------------ endpoints: branches & tags

    def _branch(self, req: _Request, repo: Repo, branch: str) -> _Response:
        if req.method == "DELETE":
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch")
            del repo.branches[branch]
            return _Response(200)
        payload = req.json()
        if branch in repo.branches or branch in repo.tags:
            raise HubError(409, "Reference already exists")
        starting = payload.get("startingPoint") or "main"
        repo.branches[branch] = self._resolve_or_404(repo, starting).oid
        return _Response(200)

    def _tag(self, req: _Request, repo: Repo, name: str) -> _Response:
        if req.method == "DELETE":
            if name not in repo.tags:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            del repo.tags[name]
            return _Response(200)
        payload = req.json()
        tag = payload.get("tag")
        if not tag:
            raise HubError(400, "Missing tag name")
        if tag in repo.tags or tag in repo.branches:
            raise HubError(409, "Tag already exists")
        repo.tags[tag] = self._resolve_or_404(repo, name).oid
        return _Response(200)
