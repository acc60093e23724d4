"""Tests for the offline Hub-compatible server, driven by the unmodified huggingface_hub client."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.sha import git_hash, sha_fileobj

from hf_mtl.hub import http_client


try:  # works once tests/ is a package (or with `python -m pytest` from the repo root)
    from tests.hub_server import ALICE_TOKEN, BOB_TOKEN, HubServer, hub, hub_api, no_retry_sleep  # noqa: F401
except ImportError:  # tests/ on sys.path (rootdir conftest, no __init__.py)
    from hub_server import ALICE_TOKEN, BOB_TOKEN, HubServer, hub, hub_api, no_retry_sleep  # noqa: F401

REPO = "alice/mtl-adapters"


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts}


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# ------------------------------------------------------------------------------------------------ basics / auth


def test_whoami_and_endpoint_patching(hub, hub_api):
    assert hub_api.whoami()["name"] == "alice"
    assert HfApi(endpoint=hub.endpoint, token=BOB_TOKEN).whoami()["name"] == "bob"
    # Client objects created without endpoint (and module-level helpers) use the patched constants.
    import huggingface_hub
    from huggingface_hub import constants

    assert constants.ENDPOINT == hub.endpoint
    assert HfApi(token=ALICE_TOKEN).whoami()["name"] == "alice"
    assert huggingface_hub.whoami(token=ALICE_TOKEN)["name"] == "alice"
    assert not constants.HF_HUB_OFFLINE and constants.HF_HUB_DISABLE_XET
    assert os.environ["HF_ENDPOINT"] == hub.endpoint
    assert constants.HF_HUB_CACHE.startswith(os.environ["HF_HOME"])


def test_bad_token_raises_401(hub, hub_api):
    hub_api.create_repo(REPO)
    hub_api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=REPO)
    bad = HfApi(endpoint=hub.endpoint, token="hf_not_a_token")
    with pytest.raises(HfHubHTTPError) as err:
        bad.whoami()
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        bad.model_info(REPO)
    assert err.value.response.status_code == 401
    assert not isinstance(err.value, RepositoryNotFoundError)
    with pytest.raises(HfHubHTTPError) as err:
        hf_hub_download(REPO, "a.txt", token="hf_not_a_token")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        bad.upload_file(path_or_fileobj=b"y", path_in_repo="b.txt", repo_id=REPO)
    assert err.value.response.status_code == 401


def test_writes_require_token_and_ownership(hub, hub_api):
    hub_api.create_repo(REPO)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.endpoint, token=False).upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=REPO)
    assert err.value.response.status_code == 401
    bob = HfApi(endpoint=hub.endpoint, token=BOB_TOKEN)
    with pytest.raises(HfHubHTTPError) as err:
        bob.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=REPO)
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        bob.create_repo("alice/other")
    assert err.value.response.status_code == 403
    assert hub.list_files(REPO) == [".gitattributes"]


def test_create_and_delete_repo(hub, hub_api):
    url = hub_api.create_repo(REPO)
    assert url.repo_id == REPO and url == f"{hub.endpoint}/{REPO}"
    assert hub_api.create_repo("short-name").repo_id == "alice/short-name"  # namespace = token's user
    with pytest.raises(HfHubHTTPError) as err:
        hub_api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert hub_api.create_repo(REPO, exist_ok=True).repo_id == REPO
    info = hub_api.model_info(REPO)
    assert len(info.sha) == 40 and [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert info.private is False
    assert hub_api.repo_exists(REPO)
    hub_api.delete_repo(REPO)
    assert not hub_api.repo_exists(REPO)
    with pytest.raises(RepositoryNotFoundError):
        hub_api.delete_repo(REPO)
    hub_api.delete_repo(REPO, missing_ok=True)


# ------------------------------------------------------------------------------------------------ push / pull


def test_push_then_pull(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    info = hub_api.upload_file(path_or_fileobj=b'{"r": 8}', path_in_repo="task_a/adapter_config.json", repo_id=REPO)
    assert len(info.oid) == 40 and info.commit_url == f"{hub.endpoint}/{REPO}/commit/{info.oid}"
    assert hub.read_file(REPO, "task_a/adapter_config.json") == b'{"r": 8}'

    cached = hf_hub_download(REPO, "task_a/adapter_config.json", token=ALICE_TOKEN)
    assert Path(cached).read_bytes() == b'{"r": 8}'
    assert f"snapshots/{info.oid}/" in Path(cached).as_posix()
    assert str(tmp_path / "hf_home") in cached  # per-test HF_HOME

    local = hf_hub_download(REPO, "task_a/adapter_config.json", local_dir=tmp_path / "out", token=ALICE_TOKEN)
    assert Path(local) == tmp_path / "out" / "task_a" / "adapter_config.json"
    assert Path(local).read_bytes() == b'{"r": 8}'

    assert hub_api.file_exists(REPO, "task_a/adapter_config.json")
    assert not hub_api.file_exists(REPO, "task_a/nope.json")
    assert hub_api.list_repo_files(REPO) == [".gitattributes", "task_a/adapter_config.json"]


def test_module_level_helpers_and_implicit_token(hub, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    huggingface_hub.create_repo(REPO, private=True)
    huggingface_hub.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=REPO)
    assert Path(hf_hub_download(REPO, "s.txt")).read_bytes() == b"secret"
    assert {r.user for r in hub.requests} == {"alice"}


def test_lfs_upload_and_cdn_download(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    weights = os.urandom(4096)
    hub_api.upload_file(path_or_fileobj=weights, path_in_repo="task_a/adapter_model.safetensors", repo_id=REPO)
    # .safetensors matches the default .gitattributes -> LFS: batch + PUT + verify, then an lfsFile commit op.
    paths = [(r.method, r.path) for r in hub.requests]
    assert ("POST", f"/{REPO}.git/info/lfs/objects/batch") in paths
    assert any(m == "PUT" and p.startswith("/__lfs__/upload/") for m, p in paths)

    (entry,) = [e for e in hub_api.list_repo_tree(REPO, recursive=True) if e.path.endswith(".safetensors")]
    with open(hf_hub_download(REPO, "task_a/adapter_model.safetensors", token=ALICE_TOKEN), "rb") as f:
        assert f.read() == weights
        f.seek(0)
        assert entry.lfs.sha256 == sha_fileobj(f).hex()
    assert entry.size == 4096 and entry.lfs.size == 4096
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert [r.method for r in cdn] == ["GET"]  # HEAD stopped at the 302 (other origin), GET went to the CDN
    assert hub.downloaded_files(REPO) == ["task_a/adapter_model.safetensors"]

    # Re-uploading identical content: the client compares preupload's remote oid and skips the commit.
    n_commits = len(hub_api.list_repo_commits(REPO))
    hub.clear_requests()
    hub_api.upload_file(path_or_fileobj=weights, path_in_repo="task_a/adapter_model.safetensors", repo_id=REPO)
    assert len(hub_api.list_repo_commits(REPO)) == n_commits
    assert not any(r.method == "PUT" or r.path.endswith("/commit/main") for r in hub.requests)


def test_tree_exposes_hashes_and_noop_commits_are_skipped(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    folder = _write(tmp_path / "src", {"task_a/config.json": b"{}", "task_a/head.bin": b"\x00\x01" * 100})
    hub_api.upload_folder(repo_id=REPO, folder_path=folder)
    tree = {e.path: e for e in hub_api.list_repo_tree(REPO, recursive=True)}
    assert set(tree) == {".gitattributes", "task_a", "task_a/config.json", "task_a/head.bin"}
    assert tree["task_a/config.json"].blob_id == git_hash(b"{}") and tree["task_a/config.json"].lfs is None
    assert tree["task_a/head.bin"].lfs is not None and tree["task_a/head.bin"].size == 200
    non_recursive = {e.path for e in hub_api.list_repo_tree(REPO)}
    assert non_recursive == {".gitattributes", "task_a"}
    assert {e.path for e in hub_api.list_repo_tree(REPO, path_in_repo="task_a")} == {
        "task_a/config.json",
        "task_a/head.bin",
    }
    info = hub_api.model_info(REPO, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["task_a/head.bin"] == 200
    head = hub.head(REPO)
    commit = hub_api.upload_folder(repo_id=REPO, folder_path=folder)  # nothing changed
    assert commit.oid == head == hub.head(REPO)


def test_create_commit_add_delete_and_history(hub, hub_api):
    hub_api.create_repo(REPO)
    hub_api.create_commit(
        REPO,
        [CommitOperationAdd("a/x.txt", b"1"), CommitOperationAdd("a/y.txt", b"2"), CommitOperationAdd("b/z.txt", b"3")],
        commit_message="add three",
        commit_description="details",
    )
    hub_api.create_commit(
        REPO,
        [CommitOperationDelete("a/x.txt"), CommitOperationDelete("b/"), CommitOperationAdd("c.txt", b"4")],
        commit_message="delete some",
    )
    assert hub_api.list_repo_files(REPO) == [".gitattributes", "a/y.txt", "c.txt"]
    commits = hub_api.list_repo_commits(REPO)
    assert [c.title for c in commits] == ["delete some", "add three", "initial commit"]
    assert commits[1].message == "details" and commits[0].authors == ["alice"]
    history = hub.commit_history(REPO)
    assert [c.parent for c in history] == [history[1].oid, history[2].oid, None]
    # Old snapshot still served by commit sha.
    old = hf_hub_download(REPO, "a/x.txt", revision=commits[1].commit_id, token=ALICE_TOKEN)
    assert Path(old).read_bytes() == b"1"
    with pytest.raises(EntryNotFoundError):
        hub_api.create_commit(REPO, [CommitOperationDelete("does/not/exist.txt")], commit_message="bad delete")


def test_stale_parent_commit_is_rejected(hub, hub_api):
    hub_api.create_repo(REPO)
    first = hub_api.upload_file(path_or_fileobj=b"1", path_in_repo="a.txt", repo_id=REPO).oid
    hub_api.upload_file(path_or_fileobj=b"2", path_in_repo="b.txt", repo_id=REPO, parent_commit=first)
    with pytest.raises(HfHubHTTPError) as err:
        hub_api.upload_file(path_or_fileobj=b"3", path_in_repo="c.txt", repo_id=REPO, parent_commit=first)
    assert err.value.response.status_code == 412
    assert hub.list_files(REPO) == [".gitattributes", "a.txt", "b.txt"]


def test_snapshot_download_allow_patterns_fetches_only_matching_files(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    files = {
        "task_a/adapter_config.json": b'{"task": "a"}',
        "task_a/adapter_model.safetensors": os.urandom(512),
        "task_b/adapter_config.json": b'{"task": "b"}',
        "task_b/adapter_model.safetensors": os.urandom(512),
        "README.md": b"# adapters\n",
    }
    hub_api.upload_folder(repo_id=REPO, folder_path=_write(tmp_path / "src", files))
    hub.clear_requests()

    out = snapshot_download(REPO, allow_patterns=["task_a/*"], local_dir=tmp_path / "dl", token=ALICE_TOKEN)
    assert Path(out) == (tmp_path / "dl").resolve()
    assert _files(tmp_path / "dl") == {"task_a/adapter_config.json", "task_a/adapter_model.safetensors"}
    for rel in ("task_a/adapter_config.json", "task_a/adapter_model.safetensors"):
        assert (tmp_path / "dl" / rel).read_bytes() == files[rel]
    assert sorted(hub.downloaded_files(REPO)) == ["task_a/adapter_config.json", "task_a/adapter_model.safetensors"]
    touched = [r.path for r in hub.requests if "/resolve/" in r.path or r.server == "cdn"]
    assert touched and not any("task_b" in p or "README" in p for p in touched)

    # Cache mode too (no local_dir): only the matching files land in the snapshot folder.
    snap = Path(snapshot_download(REPO, allow_patterns="task_b/*.json", token=ALICE_TOKEN))
    assert _files(snap) == {"task_b/adapter_config.json"}


def test_concurrent_pushers_threads(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def push(task: str) -> None:
        try:
            api = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
            start.wait()
            for i in range(4):
                folder = _write(tmp_path / f"{task}-{i}", {f"step{i}.json": f"{task}{i}".encode(), "w.bin": os.urandom(64)})
                api.upload_folder(repo_id=REPO, folder_path=folder, path_in_repo=task, commit_message=f"{task} {i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=push, args=(t,)) for t in ("task_a", "task_b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    files = set(hub_api.list_repo_files(REPO))
    for task in ("task_a", "task_b"):
        assert {f"{task}/step{i}.json" for i in range(4)} | {f"{task}/w.bin"} <= files
        for i in range(4):
            assert hub.read_file(REPO, f"{task}/step{i}.json") == f"{task}{i}".encode()
    assert len(hub_api.list_repo_commits(REPO)) == 1 + 8


PUSHER = textwrap.dedent(
    """
    import os, sys
    from huggingface_hub import HfApi, constants
    assert constants.ENDPOINT == os.environ["HF_ENDPOINT"] and constants.HF_HUB_DISABLE_XET
    task, repo = sys.argv[1], sys.argv[2]
    api = HfApi()  # endpoint from HF_ENDPOINT, token from HF_TOKEN
    for i in range(3):
        api.upload_file(path_or_fileobj=f"{task}-{i}".encode(), path_in_repo=f"{task}/file{i}.txt", repo_id=repo)
    api.upload_file(path_or_fileobj=os.urandom(256), path_in_repo=f"{task}/adapter_model.safetensors", repo_id=repo)
    print("ok", task)
    """
)


def test_concurrent_pushers_subprocesses(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    procs = []
    for task in ("task_a", "task_b"):
        env = hub.subprocess_env(hf_home=tmp_path / f"home-{task}", token=ALICE_TOKEN)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", PUSHER, task, REPO],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.startswith("ok")
    files = set(hub_api.list_repo_files(REPO))
    for task in ("task_a", "task_b"):
        assert {f"{task}/file{i}.txt" for i in range(3)} | {f"{task}/adapter_model.safetensors"} <= files
    assert len(hub_api.list_repo_commits(REPO)) == 1 + 8


# ------------------------------------------------------------------------------------------------ revisions


def test_branch_tag_and_pr_downloads(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    hub_api.upload_file(path_or_fileobj=b"main-v1", path_in_repo="w.txt", repo_id=REPO)
    hub_api.create_branch(REPO, branch="dev")
    with pytest.raises(HfHubHTTPError) as err:
        hub_api.create_branch(REPO, branch="dev")
    assert err.value.response.status_code == 409
    hub_api.create_branch(REPO, branch="dev", exist_ok=True)
    hub_api.upload_file(path_or_fileobj=b"dev-v2", path_in_repo="w.txt", repo_id=REPO, revision="dev")
    hub_api.create_branch(REPO, branch="feature/x", revision="dev")
    hub_api.create_tag(REPO, tag="v1.0", revision="dev", tag_message="release")
    with pytest.raises(HfHubHTTPError):
        hub_api.create_tag(REPO, tag="v1.0")
    hub_api.create_tag(REPO, tag="v1.0", exist_ok=True)

    pr = hub_api.create_commit(
        REPO, [CommitOperationAdd("w.txt", b"pr-v3")], commit_message="proposal", create_pr=True
    )
    assert pr.pr_num == 1 and pr.pr_revision == "refs/pr/1" and pr.pr_url.endswith(f"{REPO}/discussions/1")
    pr2 = hub_api.upload_folder(
        repo_id=REPO, folder_path=_write(tmp_path / "pr2", {"x.txt": b"x"}), create_pr=True
    )
    assert pr2.pr_revision == "refs/pr/2"
    # Pushing more commits to an existing PR ref.
    hub_api.upload_file(path_or_fileobj=b"pr-v4", path_in_repo="w.txt", repo_id=REPO, revision="refs/pr/1")

    def read(revision: str) -> bytes:
        return Path(hf_hub_download(REPO, "w.txt", revision=revision, token=ALICE_TOKEN)).read_bytes()

    assert read("main") == b"main-v1"
    assert read("dev") == b"dev-v2"
    assert read("feature/x") == b"dev-v2"
    assert read("v1.0") == b"dev-v2"
    assert read("refs/pr/1") == b"pr-v4"
    assert read(hub.head(REPO, "dev")) == b"dev-v2"
    assert any("%2F" not in r.path and r.path == f"/{REPO}/resolve/refs/pr/1/w.txt" for r in hub.requests)

    refs = hub_api.list_repo_refs(REPO, include_pull_requests=True)
    assert {b.name for b in refs.branches} == {"main", "dev", "feature/x"}
    assert [(t.name, t.ref) for t in refs.tags] == [("v1.0", "refs/tags/v1.0")]
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1", "refs/pr/2"]
    assert hub_api.model_info(REPO, revision="refs/pr/1").sha == hub.head(REPO, "refs/pr/1")
    assert hub_api.list_repo_files(REPO, revision="refs/pr/2") == [".gitattributes", "w.txt", "x.txt"]
    snap = Path(snapshot_download(REPO, revision="refs/pr/1", token=ALICE_TOKEN))
    assert (snap / "w.txt").read_bytes() == b"pr-v4"
    assert hub.list_files(REPO, "main") == [".gitattributes", "w.txt"]

    hub_api.delete_branch(REPO, branch="feature/x")
    hub_api.delete_tag(REPO, tag="v1.0")
    with pytest.raises(RevisionNotFoundError):
        hub_api.model_info(REPO, revision="v1.0")


def test_dataset_repo_type(hub, hub_api, tmp_path):
    hub_api.create_repo("alice/ds", repo_type="dataset", private=True)
    hub_api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data.csv", repo_id="alice/ds", repo_type="dataset")
    assert hub_api.dataset_info("alice/ds").private is True
    path = hf_hub_download("alice/ds", "data.csv", repo_type="dataset", token=ALICE_TOKEN)
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    assert not hub_api.repo_exists("alice/ds")  # model namespace is separate
    assert hub_api.repo_exists("alice/ds", repo_type="dataset")


# ------------------------------------------------------------------------------------------------ errors


def test_private_repo_invisible_to_other_users(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO, private=True)
    hub_api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=REPO)
    assert hub_api.model_info(REPO).private is True
    assert Path(hf_hub_download(REPO, "s.txt", token=ALICE_TOKEN)).read_bytes() == b"secret"
    for token in (BOB_TOKEN, False):
        api = HfApi(endpoint=hub.endpoint, token=token)
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(REPO)
        assert not api.repo_exists(REPO)
        assert not api.file_exists(REPO, "s.txt")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(REPO, "s.txt", token=token, local_dir=tmp_path / "bob")
        with pytest.raises(RepositoryNotFoundError):
            snapshot_download(REPO, token=token, local_dir=tmp_path / "bob-snap")
    assert not (tmp_path / "bob" / "s.txt").exists()
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=BOB_TOKEN).upload_file(
            path_or_fileobj=b"x", path_in_repo="x", repo_id=REPO
        )
    hub_api.update_repo_settings(REPO, private=False)
    assert HfApi(endpoint=hub.endpoint, token=BOB_TOKEN).model_info(REPO).private is False


def test_not_found_errors(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    hub_api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=REPO)
    with pytest.raises(RepositoryNotFoundError):
        hub_api.model_info("alice/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/does-not-exist", "a.txt", token=ALICE_TOKEN)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("alice/does-not-exist", token=ALICE_TOKEN)
    with pytest.raises(RepositoryNotFoundError):
        hub_api.list_repo_files("alice/does-not-exist")

    with pytest.raises(RevisionNotFoundError):
        hub_api.model_info(REPO, revision="nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "a.txt", revision="nope", token=ALICE_TOKEN)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="nope", token=ALICE_TOKEN)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "a.txt", revision="refs/pr/7", token=ALICE_TOKEN)
    with pytest.raises(RevisionNotFoundError):
        hub_api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=REPO, revision="no-such-branch")
    assert not hub_api.revision_exists(REPO, "nope") and hub_api.revision_exists(REPO, "main")

    with pytest.raises(EntryNotFoundError) as err:
        hf_hub_download(REPO, "missing.txt", token=ALICE_TOKEN)
    assert isinstance(err.value, RemoteEntryNotFoundError)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", local_dir=tmp_path / "ld", token=ALICE_TOKEN)
    assert not hub_api.file_exists(REPO, "missing.txt")



def test_methods_a_repo_url_does_not_serve_are_not_found(hub, hub_api):
    """DELETE on the repo's own API URL, or a trailing slash, is an unknown route: 404, not a server-side error
    (the fixture fails the test on any server-side traceback)."""
    hub_api.create_repo(REPO)
    headers = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    assert http_client.request("DELETE", f"{hub.endpoint}/api/models/{REPO}", headers=headers).status_code == 404
    assert http_client.get(f"{hub.endpoint}/api/models/{REPO}/", headers=headers).status_code == 404
    missing = http_client.request("DELETE", f"{hub.endpoint}/api/models/alice/nope", headers=headers)
    assert (missing.status_code, missing.headers.get("X-Error-Code")) == (404, "RepoNotFound")

# ------------------------------------------------------------------------------------------------ interruptions


def _no_partial_files(local_dir: Path) -> bool:
    return not [p for p in local_dir.rglob("*") if p.is_file() and p.name.endswith(".incomplete")]


def test_interrupted_download_reset_leaves_no_file(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    hub_api.upload_file(path_or_fileobj=b"{}" * 2000, path_in_repo="task_a/cfg.json", repo_id=REPO)
    rule = hub.fail_downloads_matching("task_a/*", mode="reset")
    out = tmp_path / "out"
    with pytest.raises(http_client.TransportError):
        hf_hub_download(REPO, "task_a/cfg.json", local_dir=out, token=ALICE_TOKEN)
    assert rule.hits == 1
    assert not (out / "task_a" / "cfg.json").exists() and _no_partial_files(out)
    # Cache mode: no blob, no snapshot entry either.
    with pytest.raises(http_client.TransportError):
        hf_hub_download(REPO, "task_a/cfg.json", token=ALICE_TOKEN)
    cache = tmp_path / "hf_home" / "hub"
    assert not [p for p in cache.rglob("cfg.json")] and _no_partial_files(cache)
    # Once the server behaves again the download succeeds.
    hub.clear_failures()
    assert Path(hf_hub_download(REPO, "task_a/cfg.json", local_dir=out, token=ALICE_TOKEN)).read_bytes() == b"{}" * 2000


def test_interrupted_download_drop_retries_then_fails(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    weights = os.urandom(10_000)
    hub_api.upload_file(path_or_fileobj=weights, path_in_repo="task_a/adapter_model.safetensors", repo_id=REPO)
    hub_api.upload_file(path_or_fileobj=b"{}", path_in_repo="task_a/adapter_config.json", repo_id=REPO)
    rule = hub.fail_downloads_matching("*.safetensors", mode="drop")
    out = tmp_path / "out"
    with no_retry_sleep(), pytest.raises(http_client.RemoteProtocolError):
        snapshot_download(REPO, local_dir=out, allow_patterns="task_a/*", token=ALICE_TOKEN)
    # First attempt + 5 retries. The client only advances its resume offset per DOWNLOAD_CHUNK_SIZE (10 MB)
    # chunk written, so for small files every retry starts again from byte 0 (no Range header).
    assert rule.hits == 6
    cdn_gets = [r for r in hub.requests if r.server == "cdn" and r.method == "GET"]
    assert len(cdn_gets) == 6 and all(r.range is None for r in cdn_gets)
    assert not (out / "task_a" / "adapter_model.safetensors").exists() and _no_partial_files(out)


def test_interrupted_download_drop_once_is_retried(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    payload = os.urandom(8192)
    hub_api.upload_file(path_or_fileobj=payload, path_in_repo="big.txt", repo_id=REPO)  # regular file (no LFS)
    hub.fail_downloads_matching("big.txt", mode="drop", times=1, after_bytes=1000)
    with no_retry_sleep():
        path = hf_hub_download(REPO, "big.txt", local_dir=tmp_path / "out", token=ALICE_TOKEN)
    assert Path(path).read_bytes() == payload
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith("/big.txt")]
    # < 10 MB: nothing was flushed to disk before the drop, so the retry restarts from byte 0.
    assert [(g.status, g.range) for g in gets] == [(200, None), (200, None)]


def test_interrupted_large_download_resumes_with_range(hub, hub_api, tmp_path):
    from huggingface_hub import constants

    hub_api.create_repo(REPO)
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    payload = os.urandom(chunk + 4096)  # >= 10 MiB -> LFS -> served by the CDN origin
    hub_api.upload_file(path_or_fileobj=payload, path_in_repo="task_a/adapter_model.safetensors", repo_id=REPO)
    hub.fail_downloads_matching("*.safetensors", mode="drop", times=1, after_bytes=chunk + 100)
    with no_retry_sleep():
        path = hf_hub_download(REPO, "task_a/adapter_model.safetensors", local_dir=tmp_path / "o", token=ALICE_TOKEN)
    assert Path(path).read_bytes() == payload
    gets = [(r.status, r.range) for r in hub.requests if r.server == "cdn"]
    assert gets == [(200, None), (206, f"bytes={chunk}-")]


def test_server_error_on_download_raises(hub, hub_api, tmp_path):
    hub_api.create_repo(REPO)
    hub_api.upload_file(path_or_fileobj=b"abc", path_in_repo="a.txt", repo_id=REPO)
    hub.fail_downloads_matching("a.txt", mode="error")
    with pytest.raises(HfHubHTTPError) as err:
        hf_hub_download(REPO, "a.txt", local_dir=tmp_path / "out", token=ALICE_TOKEN)
    assert err.value.response.status_code == 500
    assert not (tmp_path / "out" / "a.txt").exists()


def test_server_stop_releases_port(tmp_path):
    with HubServer(root=tmp_path / "s") as server:
        url = server.url
        with server.patch_client(hf_home=tmp_path / "home"):
            assert HfApi(token=ALICE_TOKEN).whoami()["name"] == "alice"
    with pytest.raises(http_client.ConnectError):
        http_client.get(url + "/api/whoami-v2", timeout=2)
    from huggingface_hub import constants

    assert constants.ENDPOINT != url  # restored


def test_server_side_write_bypasses_the_client_checks(hub, hub_api, tmp_path):
    """`write_files` builds hostile repos: paths that the client refuses to upload (`.git/...`) are served."""
    hub_api.create_repo(REPO)
    with pytest.raises(ValueError, match=".git"):
        hub_api.create_commit(REPO, [CommitOperationAdd(".git/config", b"x")], commit_message="refused")
    before = hub.head(REPO)
    oid = hub.write_files(REPO, {".git/config": b"[core]", "a.txt": b"a"}, title="hostile")
    assert hub.head(REPO) == oid and hub.commit_history(REPO)[0].parent == before
    assert hub.list_files(REPO) == [".git/config", ".gitattributes", "a.txt"]
    path = hf_hub_download(REPO, ".git/config", local_dir=tmp_path / "dl", token=ALICE_TOKEN)
    assert Path(path).read_bytes() == b"[core]"
