"""Upload endpoints: preupload (which files go through LFS) and commit (apply operations on a branch or a PR)."""

from __future__ import annotations

import base64
import fnmatch
import json
from typing import Any

from .model import FileEntry, HubError, Repo, _json, _Request, _Response, _truthy


class UploadMixin:
    """Commits are applied under the hub lock (held by the router), on top of the branch head at that time."""

    lfs_mode: str
    lfs_threshold: int

    def _lfs_patterns(self, tree: dict[str, FileEntry]) -> list[str]:
        entry = tree.get(".gitattributes")
        if entry is None:
            return []
        with open(self._blob_path(entry.sha256), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        patterns = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    @staticmethod
    def _gitattributes_match(pattern: str, path: str) -> bool:
        if "/" in pattern:
            return fnmatch.fnmatchcase(path, pattern.lstrip("/").replace("**/", "*").replace("**", "*"))
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)

    def _upload_mode(self, path: str, size: int, sample: bytes, patterns: list[str]) -> str:
        if self.lfs_mode == "never" or size == 0:
            return "regular"
        if self.lfs_mode == "always":
            return "lfs"
        if size >= self.lfs_threshold or b"\x00" in sample:
            return "lfs"
        if any(self._gitattributes_match(p, path) for p in patterns):
            return "lfs"
        return "regular"

    def _preupload(self, req: _Request, repo: Repo, revision: str) -> _Response:
        commit = self._resolve_or_404(repo, revision)
        payload = req.json()
        patterns = self._lfs_patterns(commit.tree)
        files = []
        for f in payload.get("files", []):
            path = f["path"]
            sample = base64.b64decode(f.get("sample") or "")
            item: dict[str, Any] = {
                "path": path,
                "uploadMode": self._upload_mode(path, int(f.get("size") or 0), sample, patterns),
                "shouldIgnore": False,
            }
            if path in commit.tree:
                item["oid"] = commit.tree[path].remote_oid
            files.append(item)
        return _json({"files": files, "commitOid": commit.oid})

    @staticmethod
    def _commit_payload(req: _Request) -> tuple[dict[str, Any], list[tuple[str, dict]]]:
        """The commit's header and its operations, from the NDJSON payload (or the legacy JSON one)."""
        header: dict[str, Any] = {}
        ops: list[tuple[str, dict]] = []
        ctype = req.headers.get("Content-Type", "")
        if "ndjson" in ctype or b"\n" in req.body.strip():
            for line in req.body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item["key"] == "header":
                    header = item["value"]
                else:
                    ops.append((item["key"], item["value"]))
            return header, ops
        payload = req.json()
        header = {"summary": payload.get("summary"), "description": payload.get("description", "")}
        if payload.get("parentCommit"):
            header["parentCommit"] = payload["parentCommit"]
        ops += [("file", f) for f in payload.get("files", [])]
        ops += [("lfsFile", f) for f in payload.get("lfsFiles", [])]
        ops += [("deletedFile", f) for f in payload.get("deletedFiles", [])]
        ops += [("deletedFolder", f) for f in payload.get("deletedFolders", [])]
        return header, ops

    def _apply_operation(self, repo: Repo, tree: dict[str, FileEntry], key: str, value: dict) -> None:
        """Apply one commit operation to ``tree`` (a copy of the parent's), or refuse the whole commit."""
        path = str(value.get("path", "")).strip()
        if key in ("file", "lfsFile") and (not path or path.startswith("/") or ".." in path.split("/")):
            raise HubError(400, f"Invalid path: {path!r}")
        if key == "file":
            content = value.get("content", "")
            data = base64.b64decode(content) if value.get("encoding", "base64") == "base64" else content.encode()
            tree[path] = self._store_blob(data, lfs=False)
        elif key == "lfsFile":
            oid = value.get("oid")
            entry = self._lfs_entry(oid) if oid else None
            if entry is None or (value.get("size") is not None and int(value["size"]) != entry.size):
                raise HubError(400, f"LFS file {oid} for '{path}' was not uploaded")
            repo.lfs_oids.add(oid)
            tree[path] = entry
        elif key == "deletedFile":
            if path not in tree:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del tree[path]
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            doomed = [p for p in tree if p.startswith(prefix)]
            if not doomed:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        else:
            raise HubError(400, f"Unknown commit operation: {key}")

    def _commit(self, req: _Request, repo: Repo, revision: str) -> _Response:
        header, ops = self._commit_payload(req)
        create_pr = _truthy(req.q("create_pr"))
        title = header.get("summary") or ""
        if not title:
            raise HubError(400, "Commit summary is required")

        # Decode regular file contents outside of the per-repo critical section would be nicer, but commits are
        # small in tests: do everything under the hub lock (held by _route_repo) so commits are serialized.
        if create_pr:
            ref = None
            head_oid = self._resolve_or_404(repo, revision).oid
        else:
            ref = self._writable_ref(repo, revision)
            head_oid = self._ref_head(repo, ref)
        parent_commit = header.get("parentCommit")
        if parent_commit and not head_oid.startswith(parent_commit.lower()):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.commits[head_oid].tree)
        for key, value in ops:
            self._apply_operation(repo, tree, key, value)
        commit = self._new_commit(repo, head_oid, tree, title, header.get("description") or "", req.user or "")
        out: dict[str, Any] = {"success": True, "commitOid": commit.oid, "hookOutput": ""}
        url = self._repo_url(req, repo)
        out["commitUrl"] = f"{url}/commit/{commit.oid}"
        if create_pr:
            num = repo.next_discussion
            repo.next_discussion += 1
            repo.prs[num] = commit.oid
            out["pullRequestUrl"] = f"{url}/discussions/{num}"
        else:
            assert ref is not None
            self._set_ref(repo, ref, commit.oid)
        return _json(out)
