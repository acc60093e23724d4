"""Users, tokens and namespaces: who is asking (``Authorization``), what they may see and write, ``whoami``."""

from __future__ import annotations

import hashlib
import threading

from .model import INVALID_CREDENTIALS, HubError, Repo, _json, _Request, _Response


class AuthMixin:
    """Tokens map to users; a user may write to their own namespace and to their orgs'."""

    _users: dict[str, str]  # token -> name
    _orgs: dict[str, set[str]]  # name -> orgs
    _repos: dict[tuple[str, str], Repo]
    _lock: threading.RLock

    def add_user(self, name: str, token: str, orgs: tuple[str, ...] | list[str] = ()) -> None:
        with self._lock:
            self._users[token] = name
            self._orgs[name] = set(orgs)

    def token_for(self, name: str) -> str:
        for token, user in self._users.items():
            if user == name:
                return token
        raise KeyError(name)

    # ------------------------------------------------------------------ auth & lookup

    def _user_for_auth_header(self, auth: str) -> str:
        scheme, _, token = auth.partition(" ")
        user = self._users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        return user

    def _can_write_namespace(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or namespace in self._orgs.get(user, set()))

    def _repo_not_found(self, req: _Request) -> HubError:
        return HubError(404 if req.user else 401, "Repository not found", "RepoNotFound")

    def _get_repo(self, req: _Request, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._can_write_namespace(req.user, repo.namespace)):
            raise self._repo_not_found(req)
        if write:
            if req.user is None:
                raise HubError(401, "You must be authenticated to access this resource")
            if not self._can_write_namespace(req.user, repo.namespace):
                raise HubError(403, f"You don't have the rights to write to {repo_type}s/{repo_id}")
        return repo

    # ------------------------------------------------------------------ endpoints: users & repos

    def _whoami(self, req: _Request) -> _Response:
        if req.user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(req.user.encode()).hexdigest()[:24],
                "name": req.user,
                "fullname": req.user.title(),
                "email": f"{req.user}@example.com",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [{"type": "org", "name": org, "roleInOrg": "write"} for org in sorted(self._orgs[req.user])],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
            }
        )
