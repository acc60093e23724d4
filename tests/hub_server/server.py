"""The fake Hub itself: ``HubServer`` puts the endpoint families together and runs the hub and CDN servers."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import Any

from .auth import AuthMixin
from .client import hf_client_env, patch_hf_client
from .download import DownloadMixin
from .lfs import LfsMixin
from .listing import ListingMixin
from .model import ALICE, ALICE_TOKEN, BOB, BOB_TOKEN, FailureRule, Repo, RequestRecord
from .repos import ReposMixin
from .routing import RoutingMixin
from .storage import StorageMixin
from .transport import _Server
from .upload import UploadMixin


class HubServer(
    RoutingMixin, AuthMixin, StorageMixin, ReposMixin, ListingMixin, UploadMixin, LfsMixin, DownloadMixin
):
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

    def start(self) -> HubServer:
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

    def __enter__(self) -> HubServer:
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

    # ------------------------------------------------------------------ client configuration

    def patch_client(self, hf_home: str | os.PathLike, *, token: str | None = None):
        """Context manager: make the in-process, unmodified huggingface_hub client talk to this server."""
        return patch_hf_client(self.endpoint, hf_home, token=token)

    def subprocess_env(
        self, hf_home: str | os.PathLike, *, token: str | None = None, base: dict[str, str] | None = None
    ) -> dict[str, str]:
        """A full environment for ``subprocess`` children that use huggingface_hub against this server."""
        return hf_client_env(self.endpoint, hf_home, token=token, base=base)
