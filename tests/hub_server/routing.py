"""Routing: map a ``_Request`` (hub or CDN server) to the endpoint that answers it, and errors to responses."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from .model import (
    _REPO_SUBROUTES,
    REPO_TYPES,
    URL_PREFIX,
    HubError,
    Repo,
    _json,
    _Request,
    _Response,
)


def _revision(args: list[str]) -> str:
    """The revision in ``/{action}/{revision}[/...]`` (``main`` when the URL stops at the action)."""
    return RoutingMixin._take_revision(args)[0] if args else "main"


def _revision_and_path(args: list[str]) -> tuple[str, str]:
    revision, path = RoutingMixin._take_revision(args) if args else ("main", [])
    return revision, "/".join(path)


class _RepoRoute(NamedTuple):
    write: bool  # the caller needs write access to the repo
    needs_args: bool  # the route needs at least one segment after the action
    handler: Callable[[Any, _Request, Repo, list[str]], _Response]  # (hub, request, repo, segments after action)


# (action after /api/{type}s/{repo_id}, HTTP method) -> route; None is the repo itself.
_REPO_ROUTES: dict[tuple[str | None, str], _RepoRoute] = {
    (None, "GET"): _RepoRoute(False, False, lambda hub, req, repo, args: hub._repo_info(
        req, repo, hub._resolve_or_404(repo, "main"))),
    ("revision", "GET"): _RepoRoute(False, True, lambda hub, req, repo, args: hub._repo_info(
        req, repo, hub._resolve_or_404(repo, "/".join(args)))),
    ("tree", "GET"): _RepoRoute(False, False, lambda hub, req, repo, args: hub._tree(
        req, repo, *_revision_and_path(args))),
    ("refs", "GET"): _RepoRoute(False, False, lambda hub, req, repo, args: hub._refs(req, repo)),
    ("commits", "GET"): _RepoRoute(False, False, lambda hub, req, repo, args: hub._list_commits(
        req, repo, _revision(args))),
    ("paths-info", "POST"): _RepoRoute(False, False, lambda hub, req, repo, args: hub._paths_info(
        req, repo, _revision(args))),
    ("preupload", "POST"): _RepoRoute(True, False, lambda hub, req, repo, args: hub._preupload(
        req, repo, _revision(args))),
    ("commit", "POST"): _RepoRoute(True, False, lambda hub, req, repo, args: hub._commit(
        req, repo, _revision(args))),
    ("branch", "POST"): _RepoRoute(True, True, lambda hub, req, repo, args: hub._branch(req, repo, "/".join(args))),
    ("branch", "DELETE"): _RepoRoute(True, True, lambda hub, req, repo, args: hub._branch(req, repo, "/".join(args))),
    ("tag", "POST"): _RepoRoute(True, True, lambda hub, req, repo, args: hub._tag(req, repo, _revision(args))),
    ("tag", "DELETE"): _RepoRoute(True, True, lambda hub, req, repo, args: hub._tag(req, repo, "/".join(args))),
    ("settings", "PUT"): _RepoRoute(True, False, lambda hub, req, repo, args: hub._settings(req, repo)),
}


class RoutingMixin:
    """The URL scheme of the Hub: ``/api/...``, ``/{repo}/resolve/...``, the LFS batch and transfer URLs, the CDN."""

    _lock: threading.RLock

    def _route(self, req: _Request) -> _Response:
        segs = req.segs
        if req.server == "cdn":
            if req.method in ("GET", "HEAD") and len(segs) >= 5 and segs[0] == "__cdn__":
                return self._cdn_download(req)
            raise HubError(404, "Not Found")
        if segs and segs[0] == "api":
            return self._route_api(req, segs[1:])
        if segs and segs[0] == "__lfs__":
            return self._route_lfs_transfer(req, segs[1:])
        # /{[datasets|spaces/]}{repo_id}.git/info/lfs/objects/batch
        if len(segs) >= 6 and segs[-4:] == ["info", "lfs", "objects", "batch"] and segs[-5].endswith(".git"):
            repo_type = "model"
            parts = segs[:-4]
            if parts[0] in ("datasets", "spaces"):
                repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
            parts[-1] = parts[-1][: -len(".git")]
            if req.method != "POST":
                raise HubError(405, "Method not allowed")
            return self._lfs_batch(req, repo_type, "/".join(parts))
        # /{[datasets|spaces/]}{repo_id}/resolve/{revision}/{path}
        repo_type, parts = "model", segs
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        if "resolve" in parts[1:3] and req.method in ("GET", "HEAD"):
            i = parts.index("resolve", 1)
            revision, rest = self._take_revision(parts[i + 1 :])
            return self._resolve_file(req, repo_type, "/".join(parts[:i]), revision, "/".join(rest))
        raise HubError(404, "Not Found")

    @staticmethod
    def _take_revision(parts: list[str]) -> tuple[str, list[str]]:
        """Revisions are sent URL-encoded (one segment); also accept unencoded refs/pr/N & co."""
        if not parts:
            raise HubError(400, "Missing revision")
        if len(parts) >= 3 and parts[0] == "refs" and parts[1] in ("pr", "convert", "heads", "tags"):
            return "/".join(parts[:3]), parts[3:]
        return parts[0], parts[1:]

    def _route_api(self, req: _Request, segs: list[str]) -> _Response:
        m = req.method
        if segs == ["whoami-v2"] and m == "GET":
            return self._whoami(req)
        if segs == ["repos", "create"] and m == "POST":
            return self._create_repo(req)
        if segs == ["repos", "delete"] and m == "DELETE":
            return self._delete_repo(req)
        if segs == ["validate-yaml"] and m == "POST":
            return _json({"errors": [], "warnings": []})
        if len(segs) >= 2 and segs[0] in REPO_TYPES:
            repo_type, rest = REPO_TYPES[segs[0]], segs[1:]
            if len(rest) >= 2 and rest[1] not in _REPO_SUBROUTES:
                repo_id, sub = f"{rest[0]}/{rest[1]}", rest[2:]
            else:
                repo_id, sub = rest[0], rest[1:]
            return self._route_repo(req, repo_type, repo_id, sub)
        raise HubError(404, "Not Found")

    def _route_repo(self, req: _Request, repo_type: str, repo_id: str, sub: list[str]) -> _Response:
        with self._lock:
            route = _REPO_ROUTES.get((sub[0] if sub else None, req.method))
            if route is not None and (len(sub) > 1 or not route.needs_args):
                repo = self._get_repo(req, repo_type, repo_id, write=route.write)
                return route.handler(self, req, repo, sub[1:])
            # Make sure missing repos are reported as such even on unknown sub-routes.
            self._get_repo(req, repo_type, repo_id)
            raise HubError(404, "Not Found")

    def _repo_url(self, req: _Request, repo: Repo) -> str:
        return f"{req.base}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _error_response(self, e: HubError) -> _Response:
        resp = _json({"error": e.message}, status=e.status)
        resp.headers["X-Error-Message"] = e.message.encode("latin-1", "replace").decode("latin-1")
        if e.code:
            resp.headers["X-Error-Code"] = e.code
        resp.headers.update(e.headers)
        return resp
