"""Push and pull of per-task stores against a real Hub-compatible HTTP server (tests/hub_server/),
driven by the unmodified huggingface_hub client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi

from helpers import tiny_bert_config, tiny_tokenizer
from hf_mtl import StoreError, Task, UnknownTaskError
from hf_mtl import hub as hf_hub
from hf_mtl.adapters import ADAPTER_METHODS, load_builtin_methods
from hf_mtl.cli import main
from hf_mtl.hub import pull, push
from hf_mtl.io_utils import sha256_file
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.backbone import build_backbone
from hf_mtl.store.card import task_metrics
from hf_mtl.store.merge import check_pushable, merge_configs


try:  # tests/ as a package, or tests/ on sys.path (rootdir conftest)
    from tests.hub_server import ALICE_TOKEN, BOB_TOKEN, hub, hub_api  # noqa: F401
except ImportError:
    from hub_server import ALICE_TOKEN, BOB_TOKEN, hub, hub_api  # noqa: F401

REPO = "alice/glue-adapters"
TEXTS = ["good film", "john smith in paris", "a terrible movie"]


def tasks() -> list[Task]:
    return [
        Task("sent", labels=["neg", "pos"], dataset_name="glue", dataset_config="sst2"),
        Task("ner", kind="token_classification", labels=["O", "B-PER", "I-PER"], dataset_name="conll2003"),
        Task("sim", kind="regression", text_pair_column="b"),
    ]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny BERT backbone + tokenizer saved as a folder: the stores' `base_model`."""
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    folder = tmp_path_factory.mktemp("base") / "tiny-bert"
    build_backbone(tiny_bert_config(tok.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def build(base: str, seed: int = 0, method: str = "none", task_list: list[Task] | None = None, **kwargs) -> MultiTaskModel:
    torch.manual_seed(seed)
    model = MultiTaskModel.from_backbone(base, task_list or tasks(), adapter_method=method, **kwargs)
    with torch.no_grad():  # distinct, non-trivial weights per seed (adapters start as the identity)
        for p in [*model.heads.parameters(), *model.adapter.parameters()]:
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def store(path: Path, model: MultiTaskModel, results: dict | None = None) -> Path:
    model.save_pretrained(str(path))
    if results is not None:
        (path / "eval_results.json").write_text(json.dumps(results))
    return path


def logits(model: MultiTaskModel, task: str) -> torch.Tensor:
    enc = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc, task=task).logits


def remote_config(hub, revision: str = "main") -> dict:
    return json.loads(hub.read_file(REPO, "mtl_config.json", revision))


def files_of(root: Path) -> set[str]:
    """The files of a folder, without the pull's own record (`.hf_mtl/`)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".hf_mtl" not in p.relative_to(root).parts}


def replace_remote(api: HfApi, files: dict[str, bytes], update_manifest: bool = True) -> None:
    """Overwrite repo files in one commit; with `update_manifest`, mtl_config.json's entries follow them."""
    import hashlib

    config = json.loads(Path(api.hf_hub_download(REPO, "mtl_config.json", token=ALICE_TOKEN)).read_text())
    ops = [CommitOperationAdd(rel, data) for rel, data in files.items()]
    if update_manifest:
        for rel, data in files.items():
            config["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        ops.append(CommitOperationAdd("mtl_config.json", json.dumps(config).encode()))
    api.create_commit(REPO, ops, commit_message="tamper")


# ------------------------------------------------------------------------------------------------ push / pull
def test_push_then_pull_one_task_of_several(hub, hub_api, tmp_path, base):
    model = build(base)
    src = store(tmp_path / "run", model, {"eval_sent_accuracy": 0.91, "eval_sent_loss": 0.3, "eval_ner_entity_f1": 0.7,
                                          "eval_ner_runtime": 1.0, "eval_average": 0.8})
    result = push(src, REPO, token=ALICE_TOKEN)
    assert result.committed and result.commit == hub.head(REPO)
    assert set(hub.list_files(REPO)) == {".gitattributes", "README.md", "mtl_config.json"} | {
        f"{t}/{f}" for t in ("sent", "ner", "sim") for f in ("task.json", "head.safetensors")}

    card = hub.read_file(REPO, "README.md").decode()
    meta = card.split("---")[1]
    assert "library_name: hf_mtl" in meta and "- glue" in meta and "- conll2003" in meta and "- accuracy" in meta
    assert f"base_model: {base}" not in meta  # a local path is no Hub id
    assert "| eval_accuracy | 0.9100 |" in card and "eval_entity_f1" in card and "runtime" not in card
    assert "trainable parameters: head" in card and 'MultiTaskModel.from_pretrained("alice/glue-adapters"' in card

    hub.clear_requests()
    out = pull(REPO, tasks=["ner"], local_dir=tmp_path / "adapters")
    assert sorted(hub.downloaded_files(REPO)) == ["README.md", "mtl_config.json", "ner/head.safetensors", "ner/task.json"]
    assert files_of(Path(out)) == {"README.md", "mtl_config.json", "ner/head.safetensors", "ner/task.json"}
    assert json.loads((Path(out) / "mtl_config.json").read_text())["tasks"] == ["ner"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf_mtl-pull")]
    loaded = MultiTaskModel.from_pretrained(out)
    torch.testing.assert_close(logits(loaded, "ner"), logits(model, "ner"), rtol=0, atol=0)

    # a second pull into the same folder adds a task; the first stays listed
    pull(REPO, tasks=["sent"], local_dir=tmp_path / "adapters")
    assert json.loads((Path(out) / "mtl_config.json").read_text())["tasks"] == ["sent", "ner"]

    # re-pushing unchanged files makes no commit
    commits = len(hub.commit_history(REPO))
    again = push(src, REPO, tasks=["sent"], token=ALICE_TOKEN)
    assert not again.committed and len(hub.commit_history(REPO)) == commits


def test_second_task_and_push_to_hub_keep_the_first(hub, hub_api, tmp_path, base):
    first, second = build(base, seed=0), build(base, seed=1)
    push(store(tmp_path / "a", first, {"eval_sent_accuracy": 0.9}), REPO, tasks=["sent"], token=ALICE_TOKEN)
    sent_head = hub.read_file(REPO, "sent/head.safetensors")
    second.push_to_hub(REPO, tasks=["ner"], token=ALICE_TOKEN)
    config = remote_config(hub)
    assert config["tasks"] == ["sent", "ner"] and config["eval_results"] == {"sent": {"eval_accuracy": 0.9}}
    assert set(config["trainable_parameters"]["tasks"]) == {"sent", "ner"}
    assert hub.read_file(REPO, "sent/head.safetensors") == sent_head
    assert "### `sent`" in hub.read_file(REPO, "README.md").decode() and "### `ner`" in hub.read_file(REPO, "README.md").decode()

    # pushing `sent` again from the second run replaces only `sent`, and its stale results
    ner_head = hub.read_file(REPO, "ner/head.safetensors")
    result = push(store(tmp_path / "b", second), REPO, tasks=["sent"], token=ALICE_TOKEN)
    assert result.changed == ["sent/head.safetensors", "mtl_config.json", "README.md"]
    assert hub.read_file(REPO, "ner/head.safetensors") == ner_head
    assert remote_config(hub)["eval_results"] == {}
    both = MultiTaskModel.from_pretrained(REPO, tasks=["sent", "ner"])
    for task in ("sent", "ner"):
        torch.testing.assert_close(logits(both, task), logits(second, task), rtol=0, atol=0)


def test_racing_push_is_merged_on_the_new_head(hub, hub_api, tmp_path, base, monkeypatch):
    """Another push lands between reading the repo's head and committing: the commit gets HTTP 412,
    and the push is rebuilt on the new head with both tasks' entries."""
    a = store(tmp_path / "a", build(base, seed=0))
    b = store(tmp_path / "b", build(base, seed=1))
    render = hf_hub.render_card
    raced = []

    def render_and_race(*args, **kwargs):
        if not raced:
            raced.append("ner")
            push(b, REPO, tasks=["ner"], token=ALICE_TOKEN)
        return render(*args, **kwargs)

    monkeypatch.setattr(hf_hub, "render_card", render_and_race)
    push(a, REPO, tasks=["sent"], token=ALICE_TOKEN)
    assert [r.status for r in hub.requests if r.status == 412] == [412]
    assert remote_config(hub)["tasks"] == ["ner", "sent"]
    assert {"sent/head.safetensors", "ner/head.safetensors"} <= set(hub.list_files(REPO))
    assert [c.title for c in hub.commit_history(REPO)] == ["Push task sent", "Push task ner", "initial commit"]


PUSHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hf_mtl.cli import main
    store, repo, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    while not barrier.exists():
        time.sleep(0.01)
    for task in sys.argv[4:]:
        assert main(["push", store, repo, "--tasks", task]) == 0
    """
)


def test_two_processes_push_different_tasks(hub, hub_api, tmp_path, base):
    extra = Task("topic", labels=["a", "b", "c"], pooling="mean")
    a = store(tmp_path / "a", build(base, seed=0, task_list=[*tasks(), extra]))
    b = store(tmp_path / "b", build(base, seed=1, task_list=[*tasks(), extra]))
    hub_api.create_repo(REPO)
    barrier = tmp_path / "go"
    procs = []
    for src, names in ((a, ["sent", "ner"]), (b, ["sim", "topic"])):
        env = hub.subprocess_env(tmp_path / f"home-{src.name}", token=ALICE_TOKEN)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
        procs.append(subprocess.Popen([sys.executable, "-c", PUSHER, str(src), REPO, str(barrier), *names], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    barrier.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
    config = remote_config(hub)
    assert sorted(config["tasks"]) == ["ner", "sent", "sim", "topic"]
    for task, src in (("sent", a), ("ner", a), ("sim", b), ("topic", b)):
        assert hub.read_file(REPO, f"{task}/head.safetensors") == (src / task / "head.safetensors").read_bytes()
        assert config["files"][f"{task}/head.safetensors"]["sha256"] == sha256_file(src / task / "head.safetensors")


# ------------------------------------------------------------------------------------------------ revisions
def test_branch_tag_and_pull_request(hub, hub_api, tmp_path, base):
    model = build(base)
    src = store(tmp_path / "run", model)
    push(src, REPO, tasks=["sent"], token=ALICE_TOKEN)
    push(src, REPO, tasks=["ner"], revision="dev", token=ALICE_TOKEN)
    assert remote_config(hub)["tasks"] == ["sent"] and remote_config(hub, "dev")["tasks"] == ["sent", "ner"]
    hub_api.create_tag(REPO, tag="v1", revision="dev")
    pinned = MultiTaskModel.from_pretrained(REPO, tasks=["ner"], revision="v1")
    torch.testing.assert_close(logits(pinned, "ner"), logits(model, "ner"), rtol=0, atol=0)
    with pytest.raises(StoreError, match="it is a tag"):
        push(src, REPO, tasks=["sim"], revision="v1", token=ALICE_TOKEN)

    result = push(src, REPO, tasks=["sim"], create_pr=True, token=ALICE_TOKEN)
    assert result.pr_url.endswith(f"{REPO}/discussions/1")
    assert remote_config(hub)["tasks"] == ["sent"]  # main untouched
    out = pull(REPO, tasks=["sim"], revision="refs/pr/1", local_dir=tmp_path / "pr")
    assert files_of(Path(out)) >= {"sim/head.safetensors", "sim/task.json"}
    push(src, REPO, tasks=["ner"], revision="refs/pr/1", token=ALICE_TOKEN)  # a second commit on the PR
    assert remote_config(hub, "refs/pr/1")["tasks"] == ["sent", "sim", "ner"]


def test_private_repo_is_seen_by_its_owner_only(hub, hub_api, tmp_path, base, monkeypatch):
    push(store(tmp_path / "run", build(base)), REPO, private=True, token=ALICE_TOKEN)
    assert hub_api.model_info(REPO).private is True
    assert "ner" in os.listdir(pull(REPO, tasks=["ner"], token=ALICE_TOKEN))
    for token in (BOB_TOKEN, None):
        with pytest.raises(StoreError, match="does not exist, or your token cannot see it"):
            pull(REPO, tasks=["ner"], token=token, local_dir=tmp_path / "bob")
    assert not (tmp_path / "bob").exists()


def test_token_errors_say_how_to_log_in(hub, hub_api, tmp_path, base, monkeypatch):
    import huggingface_hub

    src = store(tmp_path / "run", build(base))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(StoreError, match=r"needs a token, and none was found. Fix: run `hf auth login`, or set HF_TOKEN"):
        push(src, REPO)
    with pytest.raises(StoreError, match=r"rejected the token \(401\): it is invalid or expired. Fix: run `hf auth login`"):
        push(src, REPO, token="hf_not_a_token")
    with pytest.raises(StoreError, match=r"has no write access there \(403\)"):
        push(src, REPO, token=BOB_TOKEN)
    assert not hub_api.repo_exists(REPO)
    huggingface_hub.login(token=ALICE_TOKEN)  # the stored login is used when no token is given
    assert push(src, REPO, tasks=["sent"]).committed
    monkeypatch.setenv("HF_TOKEN", BOB_TOKEN)  # HF_TOKEN wins over the stored login
    with pytest.raises(StoreError, match="403"):
        push(src, REPO, tasks=["ner"])


def test_repo_revision_and_task_not_found(hub, hub_api, tmp_path, base):
    push(store(tmp_path / "run", build(base)), REPO, token=ALICE_TOKEN)
    with pytest.raises(StoreError, match="'alice/nope'.*does not exist"):
        pull("alice/nope")
    with pytest.raises(StoreError, match="does not exist"):
        MultiTaskModel.from_pretrained("alice/nope")
    with pytest.raises(StoreError, match="no branch, tag or commit 'v9'"):
        pull(REPO, revision="v9", local_dir=tmp_path / "x")
    with pytest.raises(UnknownTaskError, match=r"\['pos'\] are not in alice/glue-adapters@.*Available tasks: \['sent', 'ner', 'sim'\]"):
        pull(REPO, tasks=["pos"])
    with pytest.raises(UnknownTaskError, match=r"Available tasks: \['sent', 'ner', 'sim'\]"):
        push(tmp_path / "run", REPO, tasks=["pos"], token=ALICE_TOKEN)
    hub_api.create_repo("alice/plain")
    hub_api.upload_file(path_or_fileobj=b"hi", path_in_repo="a.txt", repo_id="alice/plain")
    with pytest.raises(StoreError, match="has no mtl_config.json: it is not an hf_mtl store"):
        pull("alice/plain", local_dir=tmp_path / "plain")
    assert not (tmp_path / "x").exists() and not (tmp_path / "plain").exists()


# ------------------------------------------------------------------------------------------------ bad content
@pytest.mark.parametrize("field, value, match", [
    ("tasks", ["sent", "../evil"], "Invalid task name"),
    ("files", {"../../outside.txt": {"size": 1, "sha256": "0" * 64}}, "would escape the store folder"),
    ("files", {"/etc/passwd": {"size": 1, "sha256": "0" * 64}}, "would escape the store folder"),
])
def test_escaping_names_in_a_downloaded_config_are_refused(hub, hub_api, tmp_path, base, field, value, match):
    push(store(tmp_path / "run", build(base)), REPO, token=ALICE_TOKEN)
    config = remote_config(hub)
    config[field] = value if field == "tasks" else {**config["files"], **value}
    hub_api.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="mtl_config.json", repo_id=REPO)
    with pytest.raises(StoreError, match=f"refusing its mtl_config.json.*{match}"):
        pull(REPO, local_dir=tmp_path / "out" / "store")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf_mtl-pull")]


def test_hash_mismatch_names_the_file_and_removes_it(hub, hub_api, tmp_path, base):
    model = build(base)
    push(store(tmp_path / "run", model), REPO, token=ALICE_TOKEN)
    good = hub.read_file(REPO, "ner/head.safetensors")
    other = good[:-1] + bytes([good[-1] ^ 1])  # same size, one weight bit flipped
    replace_remote(hub_api, {"ner/head.safetensors": other}, update_manifest=False)
    with pytest.raises(StoreError, match=r"ner/head.safetensors from alice/glue-adapters@\w+ does not match its sha256.*the file was removed"):
        pull(REPO, tasks=["ner"], local_dir=tmp_path / "dl")
    assert not (tmp_path / "dl").exists()
    with pytest.raises(StoreError, match="ner/head.safetensors"):
        pull(REPO, tasks=["ner"])  # into the cache: the bad snapshot file and its blob are removed
    snapshots = tmp_path / "hf_home" / "hub" / "models--alice--glue-adapters" / "snapshots"
    assert not list(snapshots.rglob("head.safetensors"))


def test_unparsable_safetensors_is_refused(hub, hub_api, tmp_path, base):
    push(store(tmp_path / "run", build(base)), REPO, token=ALICE_TOKEN)
    replace_remote(hub_api, {"ner/head.safetensors": b"\x00" * 64})  # manifest updated: the hash matches
    with pytest.raises(StoreError, match="ner/head.safetensors .*is not a valid safetensors file"):
        pull(REPO, tasks=["ner"], local_dir=tmp_path / "dl")
    assert not (tmp_path / "dl").exists()


def test_adapter_of_another_base_or_method(hub, hub_api, tmp_path, base):
    load_builtin_methods()
    if "bottleneck" not in ADAPTER_METHODS:
        pytest.skip("the bottleneck method is not available")
    push(store(tmp_path / "run", build(base, method="bottleneck")), REPO, token=ALICE_TOKEN)
    # pushing a task of another method into the repo would mix two models
    with pytest.raises(StoreError, match=r"tasks \['sent', 'ner', 'sim'\] were trained with adapter_method='bottleneck'"):
        push(store(tmp_path / "other", build(base, task_list=[Task("topic", labels=["a", "b"])])), REPO, token=ALICE_TOKEN)
    # a downloaded adapter that names another base model or method is refused when loaded
    config = json.loads(hub.read_file(REPO, "sent/adapter_config.json"))
    wrong_base = {**config, "base_model_config": {**config["base_model_config"], "name": "bert-large", "hidden_size": 1024}}
    replace_remote(hub_api, {"sent/adapter_config.json": json.dumps(wrong_base).encode()})
    with pytest.raises(StoreError, match="trained on the base model bert-large"):
        MultiTaskModel.from_pretrained(REPO, tasks=["sent"])
    replace_remote(hub_api, {"sent/adapter_config.json": json.dumps({**config, "adapter_method": "pals"}).encode()})
    with pytest.raises(StoreError, match="saved with adapter_method 'pals'"):
        MultiTaskModel.from_pretrained(REPO, tasks=["sent"])


def test_server_going_away_mid_download_leaves_no_half_files(hub, hub_api, tmp_path, base):
    push(store(tmp_path / "run", build(base)), REPO, token=ALICE_TOKEN)
    target = tmp_path / "adapters"
    pull(REPO, tasks=["sent"], local_dir=target)
    before = {rel: (target / rel).read_bytes() for rel in files_of(target)}
    rule = hub.fail_downloads_matching("ner/head.safetensors", mode="reset")
    with pytest.raises(StoreError, match="connection to .* failed.*Nothing was left half-written"):
        pull(REPO, tasks=["ner"], local_dir=target)
    assert rule.hits >= 1
    assert {rel: (target / rel).read_bytes() for rel in files_of(target)} == before  # untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf_mtl-pull")]
    hub.clear_failures()
    pull(REPO, tasks=["ner"], local_dir=target)
    assert json.loads((target / "mtl_config.json").read_text())["tasks"] == ["sent", "ner"]


# ------------------------------------------------------------------------------------------------ PEFT, CLI
def test_lora_task_loads_with_plain_peft_from_the_server(hub, hub_api, tmp_path, base):
    load_builtin_methods()
    if "lora" not in ADAPTER_METHODS:
        pytest.skip("the lora method is not available yet")
    from peft import PeftModel
    from transformers import AutoModel

    model = build(base, method="lora", adapter_config={"r": 4})
    push(store(tmp_path / "run", model), REPO, token=ALICE_TOKEN)
    assert "PeftModel.from_pretrained(base, \"alice/glue-adapters\", subfolder=\"sent\")" in hub.read_file(REPO, "README.md").decode()
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), REPO, subfolder="sent").eval()
    enc = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad(), model.adapter.route(model.routing("sent", len(TEXTS), torch.device("cpu"))):
        ours = model.backbone(**enc).last_hidden_state
    with torch.no_grad():
        theirs = peft_model(**enc).last_hidden_state
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, AutoModel.from_pretrained(base)(**enc).last_hidden_state, atol=1e-3)


def test_cli_push_pull_predict_with_the_base_model_on_the_hub(hub, hub_api, tmp_path, base, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `hf-mtl pull` without --local-dir writes to ./adapters/<user>/<repo>
    hub_api.create_repo("alice/tiny-bert")
    hub_api.upload_folder(repo_id="alice/tiny-bert", folder_path=base)
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone("alice/tiny-bert", tasks()).eval()
    src = store(tmp_path / "run", model)
    os.environ["HF_TOKEN"] = ALICE_TOKEN  # restored by the hub fixture

    assert main(["push", str(src), REPO, "--tasks", "sent", "ner", "--private"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"][-2:] == ["mtl_config.json", "README.md"]
    assert "base_model: alice/tiny-bert" in hub.read_file(REPO, "README.md").decode()
    assert main(["pull", REPO, "--tasks", "ner", "--local-dir", str(tmp_path / "glue")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "glue")
    assert files_of(tmp_path / "glue") == {"README.md", "mtl_config.json", "ner/head.safetensors", "ner/task.json"}

    assert main(["predict", REPO, "--task", "sent", "good film", "a terrible movie"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == [p["label"] for p in model.predict(["good film", "a terrible movie"], task="sent")]
    assert main(["predict", REPO, "--task", "all", "john smith"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(row) == {"sent", "ner"} and row["ner"]["tokens"] == ["john", "smith"]

    assert main(["push", str(src), REPO, "--token", "hf_bad"]) == 2
    assert "hf auth login" in capsys.readouterr().err
    assert main(["pull", "alice/nope"]) == 2
    assert "error: Could not pull 'alice/nope'" in capsys.readouterr().err


def test_madx_task_pulls_its_language_adapters_and_swaps_language(hub, hub_api, tmp_path, base, capsys):
    load_builtin_methods()
    if "madx" not in ADAPTER_METHODS:
        pytest.skip("the madx method is not available")
    madx_tasks = [Task("sent", labels=["neg", "pos"], language="en"), Task("topic", labels=["a", "b"], language="pt")]
    model = build(base, method="madx", task_list=madx_tasks, adapter_config={"languages": ["en", "pt"]})
    push(store(tmp_path / "run", model), REPO, token=ALICE_TOKEN)
    hub.clear_requests()
    out = Path(pull(REPO, tasks=["sent"], local_dir=tmp_path / "madx"))
    fetched = set(hub.downloaded_files(REPO))
    assert {"languages/en/adapter_model.safetensors", "languages/pt/adapter_model.safetensors"} <= fetched
    assert not any(p.startswith("topic/") for p in fetched)
    enc = model.tokenizer(["good film"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc, task="sent", language="pt").logits.softmax(-1)[0]
    assert main(["predict", str(out), "--task", "sent", "--language", "pt", "good film"]) == 0
    row = json.loads(capsys.readouterr().out)
    torch.testing.assert_close(torch.tensor(list(row["scores"].values())), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ no server
def test_a_store_changed_after_saving_is_not_pushed(tmp_path, base):
    src = store(tmp_path / "run", build(base))
    (src / "ner" / "head.safetensors").write_bytes(b"edited")
    with pytest.raises(StoreError, match=r"Refusing to push: ner/head.safetensors in .* has 6 bytes.*save the model again"):
        push(src, REPO, token=ALICE_TOKEN)
    with pytest.raises(StoreError, match="has no mtl_config.json: it is not an hf_mtl store"):
        push(tmp_path, REPO, token=ALICE_TOKEN)



def test_merge_rules_protect_the_tasks_a_push_keeps():
    remote = {"library": "hf_mtl", "adapter_method": "hyperformer", "base_model": "b", "tasks": ["a", "b"],
              "files": {"a/x": {"sha256": "1"}, "b/x": {"sha256": "2"}, "shared/w": {"sha256": "s"}},
              "eval_results": {"a": {"eval_accuracy": 0.5}, "b": {"eval_accuracy": 0.6}}}
    local = {"library": "hf_mtl", "adapter_method": "hyperformer", "base_model": "b", "tasks": ["a"],
             "files": {"a/x": {"sha256": "3"}, "shared/w": {"sha256": "t"}}}
    upload = dict(local["files"])
    with pytest.raises(StoreError, match=r"tasks \['b'\] run on shared/w"):
        check_pushable(remote, local, ["a"], upload, "r")
    check_pushable(remote, local, ["a", "b"], {**upload, "b/x": {"sha256": "4"}}, "r")  # replaces every task: allowed
    merged = merge_configs(remote, {**local, "files": {"a/x": {"sha256": "3"}, "shared/w": {"sha256": "s"}}}, ["a"],
                           {"a/x": {"sha256": "3"}, "shared/w": {"sha256": "s"}}, {})
    assert merged["files"] == {"a/x": {"sha256": "3"}, "b/x": {"sha256": "2"}, "shared/w": {"sha256": "s"}}
    assert merged["tasks"] == ["a", "b"] and merged["eval_results"] == {"b": {"eval_accuracy": 0.6}}
    assert task_metrics({"eval_a_b_accuracy": 1.0, "eval_a_accuracy": 0.5, "eval_a_loss": 2.0}, ["a", "a_b"]) == {
        "a_b": {"eval_accuracy": 1.0}, "a": {"eval_accuracy": 0.5}}


# ------------------------------------------------------------------------------------------------ what a pull may touch
def hostile_repo(hub, names: list[str], repo: str = "alice/hostile") -> str:
    """A repo whose mtl_config.json lists `names` as tasks, each with its file (written straight into the
    server's storage: the client refuses to upload some of these paths, a hostile server would not)."""
    import hashlib

    files = {f"{n}/task.json": b"{}" for n in names}
    config = {"library": "hf_mtl", "tasks": names,
              "files": {rel: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for rel, data in files.items()}}
    hub.create_repo(repo)
    hub.write_files(repo, {"mtl_config.json": json.dumps(config).encode(), **files}, title="hostile")
    return repo


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_pull_refuses_a_folder_that_is_not_a_store_of_the_repo(hub, hub_api, tmp_path, base, capsys):
    src = store(tmp_path / "run", build(base))
    push(src, REPO, token=ALICE_TOKEN)
    mine = tmp_path / "mine"
    (mine / "ner").mkdir(parents=True)
    (mine / "README.md").write_text("my notes")
    (mine / "ner" / "notes.txt").write_text("keep me")
    hub.clear_requests()
    assert main(["pull", REPO, "--tasks", "ner", "--local-dir", str(mine)]) == 2
    line = error_line(capsys)
    assert str(mine) in line and "not empty" in line and "Fix:" in line
    assert files_of(mine) == {"README.md", "ner/notes.txt"} and (mine / "README.md").read_text() == "my notes"
    assert not (mine / ".hf_mtl").exists()
    assert not hub.downloaded_files(REPO)  # refused before downloading anything
    # a training output folder (a store, but not a pull of this repo) and a pull of another repo are refused too
    with pytest.raises(StoreError, match="not empty"):
        pull(REPO, tasks=["ner"], local_dir=src)
    push(src, "alice/other", tasks=["sent"], token=ALICE_TOKEN)
    pull("alice/other", local_dir=tmp_path / "other")
    with pytest.raises(StoreError, match="alice/other"):
        pull(REPO, tasks=["ner"], local_dir=tmp_path / "other")
    assert json.loads((tmp_path / "other" / "mtl_config.json").read_text())["tasks"] == ["sent"]


def test_pull_again_keeps_files_it_did_not_put_there(hub, hub_api, tmp_path, base):
    first, second = build(base, seed=0), build(base, seed=1)
    push(store(tmp_path / "a", first), REPO, token=ALICE_TOKEN)
    target = tmp_path / "adapters"
    pull(REPO, tasks=["ner"], local_dir=target)
    (target / "ner" / "notes.txt").write_text("keep me")
    (target / "notes.txt").write_text("and me")
    push(store(tmp_path / "b", second), REPO, tasks=["ner"], token=ALICE_TOKEN)  # the repo's ner changes
    pull(REPO, tasks=["ner"], local_dir=target)
    assert (target / "ner" / "notes.txt").read_text() == "keep me" and (target / "notes.txt").read_text() == "and me"
    torch.testing.assert_close(logits(MultiTaskModel.from_pretrained(target), "ner"), logits(second, "ner"), rtol=0, atol=0)
    # a file of the user's at a path the manifest names is not replaced either
    (target / "sent").mkdir()
    (target / "sent" / "head.safetensors").write_bytes(b"mine")
    with pytest.raises(StoreError, match=r"sent/head.safetensors.*was not put there by a pull.*Fix:"):
        pull(REPO, tasks=["sent"], local_dir=target)
    assert (target / "sent" / "head.safetensors").read_bytes() == b"mine"
    assert json.loads((target / "mtl_config.json").read_text())["tasks"] == ["ner"]
    # once a model is saved into the folder, its files are the user's: no pull replaces them
    (target / "sent" / "head.safetensors").unlink()
    second.save_pretrained(str(target), tasks=["ner"])
    with pytest.raises(StoreError, match=r"mtl_config.json changed since the last pull.*Fix:"):
        pull(REPO, tasks=["ner"], local_dir=target)


@pytest.mark.parametrize("name", [".ssh", ".git", "mtl_config.json", "backbone", "shared", "languages", "README.md",
                                  "Backbone", pytest.param("x" * 300, id="300-characters"),
                                  pytest.param("sent\n", id="trailing-newline")])
def test_hostile_task_names_are_refused_at_pull_and_push(hub, hub_api, tmp_path, base, capsys, name):
    repo = hostile_repo(hub, [name])
    os.environ["HF_TOKEN"] = ALICE_TOKEN  # restored by the hub fixture
    target = tmp_path / "home"
    assert main(["pull", repo, "--local-dir", str(target)]) == 2
    assert "Invalid task name" in error_line(capsys)
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".hf_mtl-pull")]
    # asked for by name, on the command line
    assert main(["pull", REPO, "--tasks", name, "--local-dir", str(target)]) == 2
    line = error_line(capsys)
    assert "Invalid task name" in line and "Fix: rename it" in line
    # a store whose config lists such a task is not pushed
    src = store(tmp_path / "run", build(base))
    config = json.loads((src / "mtl_config.json").read_text())
    config["tasks"] = [name if t == "sim" else t for t in config["tasks"]]
    (src / "mtl_config.json").write_text(json.dumps(config))
    assert main(["push", str(src), "alice/pushed"]) == 2
    assert "Invalid task name" in error_line(capsys)
    assert main(["push", str(src), "alice/pushed", "--tasks", name]) == 2
    assert "Invalid task name" in error_line(capsys)
    assert not hub_api.repo_exists("alice/pushed")


def test_pull_stages_inside_the_target_and_cleans_a_killed_pull(hub, hub_api, tmp_path, base, monkeypatch):
    push(store(tmp_path / "run", build(base)), REPO, token=ALICE_TOKEN)
    target = tmp_path / "new" / "adapters"
    fetch_store = hf_hub._fetch_store
    roots = []

    def record(root, *args, **kwargs):
        roots.append(Path(root).resolve())
        return fetch_store(root, *args, **kwargs)

    monkeypatch.setattr(hf_hub, "_fetch_store", record)
    pull(REPO, tasks=["ner"], local_dir=target)
    assert roots and target.resolve() in roots[0].parents
    # a pull killed half-way left its staging folder (with a partial file) inside the target
    stale = target / ".hf_mtl" / "staging-killed" / "files" / "sent"
    stale.mkdir(parents=True)
    (stale / "head.safetensors").write_bytes(b"\x00" * 10)
    pull(REPO, tasks=["sent"], local_dir=target)
    assert not (target / ".hf_mtl" / "staging-killed").exists()
    assert json.loads((target / "mtl_config.json").read_text())["tasks"] == ["sent", "ner"]
    # a first pull killed before anything was installed: the folder holds only its staging folder
    fresh = tmp_path / "fresh"
    (fresh / ".hf_mtl" / "staging-killed" / "files").mkdir(parents=True)
    pull(REPO, tasks=["ner"], local_dir=fresh)
    assert files_of(fresh) >= {"mtl_config.json", "ner/head.safetensors"}
    assert not (fresh / ".hf_mtl" / "staging-killed").exists()
    assert not [p for p in tmp_path.rglob("*staging-*")] and not [p for p in tmp_path.rglob(".hf_mtl-pull*")]


def test_pull_with_a_bad_token_says_how_to_get_a_read_token(hub, hub_api, tmp_path, base, capsys):
    push(store(tmp_path / "run", build(base)), REPO, token=ALICE_TOKEN)
    assert main(["pull", REPO, "--token", "hf_bad", "--local-dir", str(tmp_path / "x")]) == 2
    line = error_line(capsys)
    assert "401" in line and "read" in line and "write access" not in line
    assert "HF_TOKEN" in line and "--token" in line and "hf auth login" in line
    assert not (tmp_path / "x").exists()


def test_same_task_pushed_concurrently_warns_the_last_writer(hub, hub_api, tmp_path, base, monkeypatch, caplog, capsys):
    """Two pushes of `sent` read the same head; the second to commit replaces the first (last writer wins)
    and says so: a warning, and the replaced commit in its result."""
    a = store(tmp_path / "a", build(base, seed=0))
    b = store(tmp_path / "b", build(base, seed=1))
    push(a, REPO, tasks=["ner"], token=ALICE_TOKEN)
    render = hf_hub.render_card
    raced = []

    def render_and_race(*args, **kwargs):
        if not raced:
            raced.append(None)  # before pushing: the racing push renders a card too
            raced[0] = push(b, REPO, tasks=["sent"], token=ALICE_TOKEN)
        return render(*args, **kwargs)

    monkeypatch.setattr(hf_hub, "render_card", render_and_race)
    os.environ["HF_TOKEN"] = ALICE_TOKEN  # restored by the hub fixture
    with caplog.at_level("WARNING", logger="hf_mtl.hub"):
        assert main(["push", str(a), REPO, "--tasks", "sent"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["replaced"] == {"sent": raced[0].commit}
    assert any("sent" in r.message and raced[0].commit in r.message and "last writer wins" in r.message
               for r in caplog.records)
    assert hub.read_file(REPO, "sent/head.safetensors") == (a / "sent" / "head.safetensors").read_bytes()


def test_pull_defaults_to_the_adapters_folder(hub, hub_api, tmp_path, base, capsys, monkeypatch):
    model = build(base)
    push(store(tmp_path / "run", model), REPO, token=ALICE_TOKEN)
    monkeypatch.chdir(tmp_path)
    assert main(["pull", REPO, "--tasks", "ner"]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert out == Path("adapters", "alice", "glue-adapters")
    assert files_of(tmp_path / out) == {"README.md", "mtl_config.json", "ner/head.safetensors", "ner/task.json"}
    assert main(["predict", "adapters/alice/glue-adapters", "--task", "ner", "john smith"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == ["john", "smith"]
    loaded = MultiTaskModel.from_pretrained("adapters/alice/glue-adapters")
    torch.testing.assert_close(logits(loaded, "ner"), logits(model, "ner"), rtol=0, atol=0)


def test_the_adapters_folder_is_no_python_package():
    from setuptools import find_packages

    root = Path(__file__).parents[1]
    assert (root / "adapters" / "README.md").is_file() and not (root / "adapters" / "__init__.py").exists()
    assert not [p for p in find_packages(str(root), include=["hf_mtl", "hf_mtl.*"]) if not p.startswith("hf_mtl")]
    setup = (root / "setup.py").read_text()
    assert 'find_packages(include=["hf_mtl", "hf_mtl.*"])' in setup
    if (root / ".git").exists() and subprocess.run(["git", "--version"], capture_output=True).returncode == 0:
        check = subprocess.run(["git", "check-ignore", "-q", "adapters/alice/repo/mtl_config.json"], cwd=root)
        assert check.returncode == 0  # pulled stores are not committed
        assert subprocess.run(["git", "check-ignore", "-q", "adapters/README.md"], cwd=root).returncode == 1


def test_two_pulls_into_one_new_folder_take_turns(hub, hub_api, tmp_path, base):
    import threading

    push(store(tmp_path / "run", build(base)), REPO, token=ALICE_TOKEN)
    target, errors = tmp_path / "new" / "adapters", []

    def run(task: str) -> None:
        try:
            pull(REPO, tasks=[task], local_dir=target)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(t,)) for t in ("sent", "ner")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(json.loads((target / "mtl_config.json").read_text())["tasks"]) == ["ner", "sent"]
    assert [p.name for p in (target / ".hf_mtl").iterdir() if p.is_dir()] == []
