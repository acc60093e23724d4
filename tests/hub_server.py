"""A Hugging Face Hub-compatible HTTP server for offline push/pull tests.

Only the Python standard library is used. The server speaks enough of the Hub's HTTP API for an *unmodified*
``huggingface_hub`` 2.x client (with Xet disabled) to create repos, commit (regular base64 files and LFS
files through the basic LFS transfer), list, branch, tag, open PRs and download (``hf_hub_download``,
``snapshot_download``), including the error headers ``hf_raise_for_status`` needs to pick its exception classes.

Typical use::

    with HubServer() as hub, hub.patch_client(hf_home=tmp_path / "hf_home"):
        api = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
        api.create_repo("alice/demo")
        api.upload_file(path_or_fileobj=b"hi", path_in_repo="a.txt", repo_id="alice/demo")
        hf_hub_download("alice/demo", "a.txt")            # module-level functions use the patched endpoint

    env = hub.subprocess_env(hf_home=..., token=ALICE_TOKEN)   # for subprocess.run(..., env=env)

Pytest fixtures ``hub`` (server + patched in-process client + temp HF_HOME) and ``hub_api`` (an ``HfApi`` for
alice) are defined at the bottom; import them into a test module or a conftest (``from tests.hub_server import
hub, hub_api``) or list this module in ``pytest_plugins``.

Storage: blobs are content-addressed by sha256 on disk under ``root/objects``; every commit keeps a full snapshot
of its tree (path -> blob entry), so snapshots are cheap. Commits are serialized with a lock and apply their
operations on top of the branch head at the time they are applied (unless a stale ``parentCommit`` is given: 412).

Faithfulness notes (what the real Hub does and this server mimics):
- a new repo has an initial commit containing the default ``.gitattributes`` (disable with ``gitattributes=False``);
- upload mode (preupload): ``lfs`` for paths matching the repo's ``.gitattributes`` LFS patterns, binary samples
  (NUL byte) or files >= ``lfs_threshold`` bytes, ``regular`` otherwise (``lfs_mode="never"|"always"`` to force);
- regular files are served directly by ``/resolve`` with ``ETag`` = git blob sha1; LFS files get a 302 to a
  "CDN" served from a *second* port and host name (``localhost``: a different origin, as on the real Hub), with ``X-Linked-Etag`` = sha256
  and ``X-Linked-Size``; the client then downloads from the CDN without its Authorization header;
- tree listings expose ``oid`` (git sha1; for LFS files the sha1 of the pointer file), ``size`` and, for LFS
  files, ``lfs: {oid: sha256, size, pointerSize}``;
- preupload returns the remote ``oid`` of existing paths so that the client skips unchanged files itself;
- unknown/invisible repo -> 401 (anonymous) / 404 (authenticated) with ``X-Error-Code: RepoNotFound``;
  unknown revision -> 404 ``RevisionNotFound``; missing file -> 404 ``EntryNotFound`` (+ ``X-Repo-Commit``);
  bad token -> 401 with ``X-Error-Message: Invalid credentials in Authorization header`` on every route.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import http.server
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import traceback
import types
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "ALICE",
    "ALICE_TOKEN",
    "BOB",
    "BOB_TOKEN",
    "HubServer",
    "FailureRule",
    "RequestRecord",
    "hf_client_env",
    "patch_hf_client",
    "no_retry_sleep",
    "hub",
    "hub_api",
]

ALICE, ALICE_TOKEN = "alice", "hf_alice_token"
BOB, BOB_TOKEN = "bob", "hf_bob_token"

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO_SUBROUTES = {
    "revision", "tree", "refs", "commits", "commit", "preupload", "paths-info", "branch", "tag", "settings",
    "resolve", "discussions", "lfs-files",
}

# Trimmed copy of the default .gitattributes the Hub puts in every new repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar",
        "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)


# --------------------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    """git's blob oid (what the Hub reports as ``oid``/``blobId``/``ETag`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    lfs: bool
    git_oid: str  # git blob sha1 of the content (regular) or of the LFS pointer (lfs)

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    @property
    def remote_oid(self) -> str:
        """The oid preupload reports (what ``CommitOperationAdd._local_oid`` is compared against)."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    tree: dict[str, FileEntry]
    title: str
    message: str
    author: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)
    lfs_oids: set[str] = field(default_factory=set)
    next_discussion: int = 1

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


class RequestRecord(NamedTuple):
    method: str
    path: str  # URL-decoded path, without query string
    user: str | None
    status: int
    query: str
    server: str  # "hub" or "cdn"
    range: str | None


@dataclass
class FailureRule:
    """Makes the server break file downloads (content GETs on /resolve and on the CDN) matching ``pattern``."""

    pattern: str
    mode: str = "drop"  # "drop": partial body then FIN, "reset": partial body then RST, "error": HTTP 500
    times: int | None = None  # how many downloads to break (None: all of them)
    after_bytes: int | None = None  # bytes sent before breaking (default: half the body; 0 on resumed requests)
    hits: int = 0

    def matches(self, repo_id: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return fnmatch.fnmatchcase(path, self.pattern) or fnmatch.fnmatchcase(f"{repo_id}/{path}", self.pattern)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


@dataclass
class _Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Streaming a blob: (path on disk, start offset, length) + optional failure rule.
    file: tuple[str, int, int] | None = None
    failure: FailureRule | None = None


def _json(data: Any, status: int = 200, content_type: str = "application/json") -> _Response:
    return _Response(status, {"Content-Type": content_type}, json.dumps(data).encode())


@dataclass
class _Request:
    method: str
    segs: list[str]  # URL-decoded path segments (split on raw '/' first, so '%2F' stays inside a segment)
    query: dict[str, list[str]]
    body: bytes
    user: str | None
    base: str  # scheme://host:port as seen by the client
    headers: Any
    server: str

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise HubError(400, "Invalid JSON body")


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        pass

    def setup(self) -> None:
        super().setup()
        try:  # avoid Nagle + delayed-ACK stalls (~40 ms per request on loopback)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.conn_lock:  # type: ignore[attr-defined]
            self.server.conns.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        with self.server.conn_lock:  # type: ignore[attr-defined]
            self.server.conns.discard(self.connection)  # type: ignore[attr-defined]
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # ---------------------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        role: str = self.server.role  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        segs = [unquote(s) for s in split.path.split("/")[1:]]
        user: str | None = None
        try:
            body = self._read_body()
            host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
            auth = self.headers.get("Authorization")
            if role == "hub" and auth:
                user = hub._user_for_auth_header(auth)
            req = _Request(
                method=method,
                segs=segs,
                query=parse_qs(split.query, keep_blank_values=True),
                body=body,
                user=user,
                base=f"http://{host}",
                headers=self.headers,
                server=role,
            )
            resp = hub._route(req)
        except HubError as e:
            resp = hub._error_response(e)
        except Exception:  # pragma: no cover - surfaced through hub.errors
            hub.errors.append(traceback.format_exc())
            resp = _json({"error": "Internal Error (fake hub)"}, status=500)
        hub._log(
            RequestRecord(
                method, "/" + "/".join(segs), user, resp.status, split.query, role, self.headers.get("Range")
            )
        )
        self._send(method, resp)

    def _send(self, method: str, resp: _Response) -> None:
        headers = dict(resp.headers)
        if resp.file is not None:
            headers["Content-Length"] = str(resp.file[2])
        else:
            headers["Content-Length"] = str(len(resp.body))
        rid = self.headers.get("X-Request-Id") or self.headers.get("X-Amzn-Trace-Id")
        if rid:
            headers.setdefault("X-Request-Id", rid)
        failure = resp.failure  # "drop"/"reset" only: "error" rules are turned into a 500 by the route
        self.send_response(resp.status)
        for key, value in headers.items():
            self.send_header(key, value)
        if failure is not None:
            self.send_header("Connection", "close")
        # Like end_headers(), but headers and an in-memory body go out in a single send().
        self._headers_buffer.append(b"\r\n")
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        if method == "HEAD":
            self.wfile.write(head)
            return
        if resp.file is None:
            self.wfile.write(head + resp.body)
            return
        self.wfile.write(head)
        path, start, length = resp.file
        limit = length
        if failure is not None:
            if failure.after_bytes is not None:
                limit = min(length, failure.after_bytes)
            else:
                limit = length // 2 if start == 0 else 0
        with open(path, "rb") as f:
            f.seek(start)
            remaining = limit
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        if failure is None:
            return
        # Break the connection mid-file.
        self.close_connection = True
        try:
            self.wfile.flush()
            if failure.mode == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, hub: "HubServer", role: str, host: str):
        self.hub = hub
        self.role = role
        self.conns: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def handle_error(self, request, client_address) -> None:  # connection resets etc. are expected in tests
        pass

    def close_all_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------------------------
# The Hub
# --------------------------------------------------------------------------------------------------------------


class HubServer:
    """In-process fake of the Hugging Face Hub HTTP API, listening on 127.0.0.1 (random free port).

    Args:
        root: directory for on-disk storage (a temp dir, removed on stop, if not given).
        users: ``{name: token}``; defaults to alice/``hf_alice_token`` and bob/``hf_bob_token``.
        gitattributes: create new repos with the Hub's default ``.gitattributes`` (as the real Hub does).
        lfs_mode: ``"auto"`` (Hub rules), ``"never"`` (everything regular) or ``"always"`` (everything non-empty LFS).
        lfs_threshold: size in bytes from which ``auto`` uploads as LFS (Hub: 10 MiB).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        users: dict[str, str] | None = None,
        gitattributes: bool = True,
        lfs_mode: str = "auto",
        lfs_threshold: int = 10 * 1024 * 1024,
        host: str = "127.0.0.1",
    ):
        if lfs_mode not in ("auto", "never", "always"):
            raise ValueError("lfs_mode must be 'auto', 'never' or 'always'")
        self._own_root = root is None
        self.root = str(root) if root is not None else tempfile.mkdtemp(prefix="fake-hub-")
        os.makedirs(os.path.join(self.root, "objects"), exist_ok=True)
        self.gitattributes = gitattributes
        self.lfs_mode = lfs_mode
        self.lfs_threshold = lfs_threshold
        self.host = host
        self.requests: list[RequestRecord] = []
        self.errors: list[str] = []  # tracebacks of unexpected server-side exceptions (should stay empty)
        self.failures: list[FailureRule] = []
        self._users: dict[str, str] = {}  # token -> name
        self._orgs: dict[str, set[str]] = {}  # name -> orgs
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._counter = 0
        for name, token in (users if users is not None else {ALICE: ALICE_TOKEN, BOB: BOB_TOKEN}).items():
            self.add_user(name, token)
        self._server: _Server | None = None
        self._cdn: _Server | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "HubServer":
        if self._server is not None:
            return self
        self._server = _Server(self, "hub", self.host)
        self._cdn = _Server(self, "cdn", self.host)
        for srv in (self._server, self._cdn):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self._server, self._cdn):
            if srv is None:
                continue
            srv.shutdown()
            srv.close_all_connections()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self._server = self._cdn = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    endpoint = url

    @property
    def cdn_url(self) -> str:
        """The CDN's origin, under another host *name* than the Hub's: huggingface_hub 1.x compares host names
        only (not ports) to decide whether a redirect stays on the Hub, and would follow one to 127.0.0.1's
        other port, reading the file's metadata from the CDN's response (which has no X-Repo-Commit)."""
        assert self._cdn is not None, "server not started"
        host = "localhost" if self.host == "127.0.0.1" else self.host
        return f"http://{host}:{self._cdn.server_address[1]}"

    # ------------------------------------------------------------------ users / client configuration

    def add_user(self, name: str, token: str, orgs: tuple[str, ...] | list[str] = ()) -> None:
        with self._lock:
            self._users[token] = name
            self._orgs[name] = set(orgs)

    def token_for(self, name: str) -> str:
        for token, user in self._users.items():
            if user == name:
                return token
        raise KeyError(name)

    def patch_client(self, hf_home: str | os.PathLike, *, token: str | None = None):
        """Context manager: make the in-process, unmodified huggingface_hub client talk to this server."""
        return patch_hf_client(self.endpoint, hf_home, token=token)

    def subprocess_env(
        self, hf_home: str | os.PathLike, *, token: str | None = None, base: dict[str, str] | None = None
    ) -> dict[str, str]:
        """A full environment for ``subprocess`` children that use huggingface_hub against this server."""
        return hf_client_env(self.endpoint, hf_home, token=token, base=base)

    # ------------------------------------------------------------------ failure injection / logs

    def fail_downloads_matching(
        self, pattern: str, *, mode: str = "drop", times: int | None = None, after_bytes: int | None = None
    ) -> FailureRule:
        """Break downloads of repo files matching ``pattern`` (fnmatch on ``path`` or ``repo_id/path``).

        ``drop``: send the headers and part of the body, then close the connection (FIN). The client sees an
        incomplete body (``RemoteProtocolError``) and retries with a ``Range`` header up to 5 times, sleeping 1 s
        each time (see :func:`no_retry_sleep`); resumed requests get 0 bytes before the drop.
        ``reset``: same but with a TCP RST: ``httpx2.ReadError``, which ``http_get`` does not retry.
        ``error``: answer HTTP 500 to the content GET (the metadata HEAD still succeeds).
        """
        if mode not in ("drop", "reset", "error"):
            raise ValueError("mode must be 'drop', 'reset' or 'error'")
        rule = FailureRule(pattern, mode=mode, times=times, after_bytes=after_bytes)
        with self._lock:
            self.failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        with self._lock:
            self.failures.clear()

    def clear_requests(self) -> None:
        with self._log_lock:
            self.requests.clear()

    def downloaded_files(self, repo_id: str | None = None) -> list[str]:
        """Repo paths whose *content* was fetched (GET on /resolve for regular files, GET on the CDN for LFS)."""
        out = []
        for r in list(self.requests):
            if r.method != "GET" or r.status >= 400:
                continue
            parsed = self._parse_download_path(r)
            if parsed is None:
                continue
            rid, path, is_redirect = parsed
            if is_redirect or (repo_id is not None and rid != repo_id):
                continue
            out.append(path)
        return out

    def _parse_download_path(self, r: RequestRecord) -> tuple[str, str, bool] | None:
        segs = r.path.split("/")[1:]
        if r.server == "cdn":
            if len(segs) >= 5 and segs[0] == "__cdn__":
                # /__cdn__/{sha256}/{type}/{ns}/{name}/{path...} (repo id decoded into two segments here)
                return f"{segs[3]}/{segs[4]}", "/".join(segs[5:]), False
            return None
        if segs and segs[0] in ("datasets", "spaces"):
            segs = segs[1:]
        if "resolve" not in segs[:3]:
            return None
        i = segs.index("resolve")
        rest = segs[i + 1 :]
        if len(rest) >= 3 and rest[0] == "refs" and rest[1] in ("pr", "convert", "heads", "tags"):
            rest = rest[3:]
        else:
            rest = rest[1:]
        return "/".join(segs[:i]), "/".join(rest), r.status in (301, 302, 307)

    def _log(self, record: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(record)

    # ------------------------------------------------------------------ server-side helpers for tests

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

    def _repo_url(self, req: _Request, repo: Repo) -> str:
        return f"{req.base}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _error_response(self, e: HubError) -> _Response:
        resp = _json({"error": e.message}, status=e.status)
        resp.headers["X-Error-Message"] = e.message.encode("latin-1", "replace").decode("latin-1")
        if e.code:
            resp.headers["X-Error-Code"] = e.code
        resp.headers.update(e.headers)
        return resp

    # ------------------------------------------------------------------ routing

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
        m = req.method
        with self._lock:
            if not sub and m == "GET":
                repo = self._get_repo(req, repo_type, repo_id)
                return self._repo_info(req, repo, self._resolve_or_404(repo, "main"))
            action, args = sub[0], sub[1:]
            if action == "revision" and m == "GET" and args:
                repo = self._get_repo(req, repo_type, repo_id)
                return self._repo_info(req, repo, self._resolve_or_404(repo, "/".join(args)))
            if action == "tree" and m == "GET":
                repo = self._get_repo(req, repo_type, repo_id)
                revision, path = self._take_revision(args) if args else ("main", [])
                return self._tree(req, repo, revision, "/".join(path))
            if action == "refs" and m == "GET":
                return self._refs(req, self._get_repo(req, repo_type, repo_id))
            if action == "commits" and m == "GET":
                repo = self._get_repo(req, repo_type, repo_id)
                revision, _ = self._take_revision(args) if args else ("main", [])
                return self._list_commits(req, repo, revision)
            if action == "paths-info" and m == "POST":
                repo = self._get_repo(req, repo_type, repo_id)
                revision, _ = self._take_revision(args) if args else ("main", [])
                return self._paths_info(req, repo, revision)
            if action == "preupload" and m == "POST":
                repo = self._get_repo(req, repo_type, repo_id, write=True)
                revision, _ = self._take_revision(args) if args else ("main", [])
                return self._preupload(req, repo, revision)
            if action == "commit" and m == "POST":
                repo = self._get_repo(req, repo_type, repo_id, write=True)
                revision, _ = self._take_revision(args) if args else ("main", [])
                return self._commit(req, repo, revision)
            if action == "branch" and args and m in ("POST", "DELETE"):
                repo = self._get_repo(req, repo_type, repo_id, write=True)
                return self._branch(req, repo, "/".join(args))
            if action == "tag" and args and m in ("POST", "DELETE"):
                repo = self._get_repo(req, repo_type, repo_id, write=True)
                return self._tag(req, repo, self._take_revision(args)[0] if m == "POST" else "/".join(args))
            if action == "settings" and m == "PUT":
                repo = self._get_repo(req, repo_type, repo_id, write=True)
                payload = req.json()
                if "private" in payload:
                    repo.private = bool(payload["private"])
                if payload.get("visibility") in ("private", "public"):
                    repo.private = payload["visibility"] == "private"
                return _json({})
            # Make sure missing repos are reported as such even on unknown sub-routes.
            self._get_repo(req, repo_type, repo_id)
            raise HubError(404, "Not Found")

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

    def _entry_json(self, path: str, entry: FileEntry) -> dict:
        out: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
        if entry.lfs:
            out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        return out

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

    # ------------------------------------------------------------------ endpoints: listing

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

    # ------------------------------------------------------------------ endpoints: upload

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

    def _commit(self, req: _Request, repo: Repo, revision: str) -> _Response:
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
        else:  # legacy JSON payload
            payload = req.json()
            header = {"summary": payload.get("summary"), "description": payload.get("description", "")}
            if payload.get("parentCommit"):
                header["parentCommit"] = payload["parentCommit"]
            ops += [("file", f) for f in payload.get("files", [])]
            ops += [("lfsFile", f) for f in payload.get("lfsFiles", [])]
            ops += [("deletedFile", f) for f in payload.get("deletedFiles", [])]
            ops += [("deletedFolder", f) for f in payload.get("deletedFolders", [])]
        create_pr = _truthy(req.q("create_pr"))
        title = header.get("summary") or ""
        if not title:
            raise HubError(400, "Commit summary is required")

        # Decode regular file contents outside of the per-repo critical section would be nicer, but commits are
        # small in tests: do everything under the hub lock (held by _route_repo) so commits are serialized.
        if create_pr:
            base = self._resolve_or_404(repo, revision)
            ref = None
            head_oid = base.oid
        else:
            ref = self._writable_ref(repo, revision)
            head_oid = self._ref_head(repo, ref)
        parent_commit = header.get("parentCommit")
        if parent_commit and not head_oid.startswith(parent_commit.lower()):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.commits[head_oid].tree)
        for key, value in ops:
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

    # ------------------------------------------------------------------ endpoints: download

    def _match_failure(self, repo_id: str, path: str) -> FailureRule | None:
        with self._lock:
            for rule in self.failures:
                if rule.matches(repo_id, path):
                    rule.hits += 1
                    return rule
        return None

    def _file_response(
        self, req: _Request, blob_path: str, size: int, headers: dict[str, str], repo_id: str, path: str
    ) -> _Response:
        start, length, status = 0, size, 200
        rng = req.headers.get("Range")
        if rng:
            spec = rng.strip().lower()
            if spec.startswith("bytes=") and "," not in spec:
                first, _, last = spec[len("bytes=") :].partition("-")
                if first.strip():
                    start = int(first)
                    end = int(last) if last.strip() else size - 1
                else:
                    start = max(0, size - int(last))
                    end = size - 1
                end = min(end, size - 1)
                if start > end and size > 0 or start >= size > 0:
                    raise HubError(416, "Range not satisfiable", None, {"Content-Range": f"bytes */{size}"})
                length = max(0, end - start + 1)
                status = 206
                headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        resp = _Response(status, headers, file=(blob_path, start, length))
        if req.method == "GET":
            resp.failure = self._match_failure(repo_id, path)
            if resp.failure is not None and resp.failure.mode == "error":
                raise HubError(500, "Injected download failure (fake hub)")
        return resp

    def _resolve_file(self, req: _Request, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        with self._lock:
            repo = self._get_repo(req, repo_type, repo_id)
            commit = self._resolve_or_404(repo, revision)
            entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.git_oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if entry.lfs:
            location = f"{self.cdn_url}/__cdn__/{entry.sha256}/{repo_type}/{quote(repo_id, safe='')}/{quote(path)}"
            headers.update(
                {
                    "Location": location,
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(entry.size),
                    "Content-Type": "text/plain; charset=utf-8",
                }
            )
            return _Response(302, headers)
        return self._file_response(req, self._blob_path(entry.sha256), entry.size, headers, repo_id, path)

    def _cdn_download(self, req: _Request) -> _Response:
        # /__cdn__/{sha256}/{repo_type}/{repo_id (one encoded segment)}/{path...}
        sha, repo_id, path = req.segs[1], req.segs[3], "/".join(req.segs[4:])
        blob = self._blob_path(sha)
        if len(sha) != 64 or not os.path.exists(blob):
            raise HubError(404, "Not Found")
        size = os.path.getsize(blob)
        headers = {
            "ETag": f'"{sha}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{path.rsplit("/", 1)[-1]}"',
        }
        return self._file_response(req, blob, size, headers, repo_id, path)


# --------------------------------------------------------------------------------------------------------------
# Client configuration helpers
# --------------------------------------------------------------------------------------------------------------

_ENV_TO_REMOVE = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HUGGINGFACE_CO_STAGING",
    "HUGGINGFACE_HUB_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_ASSETS_CACHE",
    "HF_TOKEN_PATH",
    "HF_XET_CACHE",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN",
)


def hf_client_env(
    endpoint: str, hf_home: str | os.PathLike, *, token: str | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for a *fresh* Python process whose huggingface_hub must talk to ``endpoint``.

    huggingface_hub reads these at import time (``constants.py``), so they must be set before the child imports it.
    """
    env = dict(os.environ if base is None else base)
    for key in _ENV_TO_REMOVE:
        env.pop(key, None)
    hf_home = os.fspath(hf_home)
    env.update(
        {
            "HF_ENDPOINT": endpoint,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": hf_home,
            "HF_HUB_CACHE": os.path.join(hf_home, "hub"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


_MISSING = object()


@contextlib.contextmanager
def patch_hf_client(endpoint: str, hf_home: str | os.PathLike, *, token: str | None = None) -> Iterator[None]:
    """Point the already-imported huggingface_hub at ``endpoint`` (and a private ``hf_home``), then restore.

    What 2.x reads where (so what must be patched in-process):
    - ``constants.ENDPOINT``: default endpoint of ``HfApi()`` instances created afterwards, of ``hf_hub_url`` &
      module-level helpers; ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` is derived from it *at import time* and is
      what ``hf_hub_url`` formats (the endpoint is only substituted when ``endpoint=`` is passed explicitly);
    - ``huggingface_hub.hf_api.api``: the module-level ``HfApi()`` behind ``upload_file``, ``create_repo``,
      ``whoami``... captured ``constants.ENDPOINT`` at import time;
    - ``constants.HF_URL_HOSTS`` / ``utils._http._HUB_ORIGINS``: hosts trusted for redirects/auth (import time);
    - ``constants.HF_HUB_DISABLE_XET``: read at call time by ``is_xet_available()``;
    - cache/token paths (``HF_HUB_CACHE``, ``HF_TOKEN_PATH``, ...) are module constants derived from ``HF_HOME``;
      ``utils._cache_manager`` imported ``HF_HUB_CACHE`` by value.
    Environment variables are set too (and restored) so subprocesses and lazily-reading libraries agree.
    """
    import huggingface_hub  # noqa: F401
    import huggingface_hub.hf_api as hf_api_module
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hf_home = os.fspath(hf_home)
    os.makedirs(hf_home, exist_ok=True)
    hub_cache = os.path.join(hf_home, "hub")
    assets_cache = os.path.join(hf_home, "assets")
    xet_cache = os.path.join(hf_home, "xet")
    host = (urlsplit(endpoint).hostname or "").lower()

    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name, _MISSING)))
        setattr(obj, name, value)

    values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": hf_home,
        "default_cache_path": hub_cache,
        "default_assets_cache_path": assets_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HUGGINGFACE_ASSETS_CACHE": assets_cache,
        "HF_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": assets_cache,
        "HF_TOKEN_PATH": os.path.join(hf_home, "token"),
        "HF_STORED_TOKENS_PATH": os.path.join(hf_home, "stored_tokens"),
        "default_xet_cache_path": xet_cache,
        "HF_XET_CACHE": xet_cache,
        "CHECK_FOR_UPDATE_DONE_PATH": os.path.join(hf_home, ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": os.path.join(hf_home, ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": os.path.join(hf_home, ".agent_harnesses.json"),
    }
    saved_env = {key: os.environ.get(key) for key in set(_ENV_TO_REMOVE) | set(hf_client_env(endpoint, hf_home))}
    try:
        for name, value in values.items():
            if hasattr(constants, name):
                patch(constants, name, value)
        if hasattr(constants, "HF_URL_HOSTS") and host:
            patch(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host}))
        if hasattr(_http, "_HUB_ORIGINS"):
            patch(_http, "_HUB_ORIGINS", frozenset(_http._HUB_ORIGINS | {_http._url_origin(endpoint)}))
        patch(hf_api_module.api, "endpoint", endpoint)
        for modname, attr, value in (
            ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", hub_cache),
            ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", assets_cache),
        ):
            module = __import__("sys").modules.get(modname)
            if module is not None and hasattr(module, attr):
                patch(module, attr, value)
        env = hf_client_env(endpoint, hf_home, token=token, base={})
        for key in _ENV_TO_REMOVE:
            os.environ.pop(key, None)
        os.environ.update(env)
        _http.close_session()
        yield
    finally:
        for obj, name, value in reversed(saved):
            if value is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _http.close_session()


class _NoSleepTime(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        return None


@contextlib.contextmanager
def no_retry_sleep() -> Iterator[None]:
    """Make huggingface_hub's download/HTTP retry loops (``time.sleep(1)``, exponential backoff) not sleep.

    Patches only the ``time`` name inside ``huggingface_hub.file_download`` and ``huggingface_hub.utils._http``.
    """
    import huggingface_hub.file_download as file_download
    from huggingface_hub.utils import _http

    shim = _NoSleepTime()
    saved = [(file_download, file_download.time), (_http, _http.time)]
    try:
        for module, _ in saved:
            module.time = shim  # type: ignore[attr-defined]
        yield
    finally:
        for module, original in saved:
            module.time = original  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------------------
# Pytest fixtures
# --------------------------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def hub(tmp_path):
        """A running HubServer; the in-process huggingface_hub points at it with HF_HOME=tmp_path/'hf_home'."""
        with HubServer(root=tmp_path / "hub_storage") as server:
            with server.patch_client(hf_home=tmp_path / "hf_home"):
                yield server
            if server.errors:
                raise AssertionError("fake hub raised server-side errors:\n" + "\n".join(server.errors))

    @pytest.fixture
    def hub_api(hub):
        """``HfApi`` authenticated as alice against the ``hub`` fixture."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
