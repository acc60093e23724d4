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
alice) are in ``fixtures``; import them into a test module or a conftest (``from tests.hub_server import
hub, hub_api``) or list this package in ``pytest_plugins``.

Layout (one module per part of the server; ``HubServer`` in ``server`` combines the endpoint families):
- ``model``: constants, blobs/commits/repos, request records, errors, request/response objects;
- ``transport``: the HTTP handler (bodies, streaming, injected connection breaks) and the threaded servers;
- ``routing``: URL -> endpoint; ``auth``: tokens, namespaces, ``whoami``; ``storage``: blobs, commits, revisions
  and the server-side helpers tests use; ``repos``: create/delete/info/settings/branches/tags; ``listing``:
  tree/paths-info/refs/commits; ``upload``: preupload/commit; ``lfs``: LFS batch and transfer; ``download``:
  ``/resolve``, the CDN, ranges, failure injection and the request log;
- ``client``: point the huggingface_hub client at the server (in-process or subprocess env), no retry sleeps;
- ``fixtures``: the pytest fixtures.

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

from .client import hf_client_env, no_retry_sleep, patch_hf_client
from .fixtures import hub, hub_api
from .model import ALICE, ALICE_TOKEN, BOB, BOB_TOKEN, FailureRule, RequestRecord
from .server import HubServer


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
