"""Data model of the fake Hub: constants, blobs/commits/repos, request records, errors and the request and
response objects the route handlers exchange."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple


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
