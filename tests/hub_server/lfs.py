"""The git-LFS batch API and the basic transfer's upload/verify URLs it hands out."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any
from urllib.parse import quote

from .model import HubError, Repo, _json, _Request, _Response


class LfsMixin:
    """Uploads go to ``/__lfs__/upload/...`` on the hub; downloads are served by the CDN."""

    _repos: dict[tuple[str, str], Repo]
    _lock: threading.RLock

    def _lfs_batch(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        payload = req.json()
        with self._lock:
            repo = self._get_repo(req, repo_type, repo_id, write=payload.get("operation") == "upload")
            objects = []
            for obj in payload.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if payload.get("operation") == "upload":
                    present = oid in repo.lfs_oids and os.path.exists(self._blob_path(oid))
                    if not present:
                        key = f"{repo_type}/{quote(repo_id, safe='')}/{oid}/{size}"
                        item["actions"] = {
                            "upload": {"href": f"{req.base}/__lfs__/upload/{key}", "header": {}},
                            "verify": {"href": f"{req.base}/__lfs__/verify/{key}", "header": {}},
                        }
                else:
                    if oid not in repo.lfs_oids:
                        item["error"] = {"code": 404, "message": "Object does not exist"}
                    else:
                        href = f"{self.cdn_url}/__cdn__/{oid}/{repo_type}/{quote(repo_id, safe='')}/{oid}"
                        item["actions"] = {"download": {"href": href, "header": {}}}
                objects.append(item)
        return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, content_type="application/vnd.git-lfs+json")

    def _route_lfs_transfer(self, req: _Request, segs: list[str]) -> _Response:
        # /__lfs__/{upload|verify}/{repo_type}/{repo_id}/{oid}/{size}
        if len(segs) != 5 or segs[0] not in ("upload", "verify"):
            raise HubError(404, "Not Found")
        action, repo_type, repo_id, oid, size = segs[0], segs[1], segs[2], segs[3], int(segs[4])
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if action == "upload" and req.method == "PUT":
            if hashlib.sha256(req.body).hexdigest() != oid or len(req.body) != size:
                raise HubError(400, "Uploaded content does not match the announced sha256/size")
            self._store_blob(req.body, lfs=True)
            with self._lock:
                repo.lfs_oids.add(oid)
            return _Response(200)
        if action == "verify" and req.method == "POST":
            if oid not in repo.lfs_oids:
                raise HubError(404, f"LFS object {oid} not found")
            return _json({"oid": oid, "size": size})
        raise HubError(405, "Method not allowed")
