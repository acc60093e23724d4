"""The `hf_mtl.store` package (issue 21.1): one owner function, one task selection, one strict loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import tiny_bert_config, tiny_tokenizer
from hf_mtl.errors import StoreError, TaskConfigError, UnknownTaskError
from hf_mtl.io_utils import sha256_file
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.store.layout import CONFIG_NAME, owner_of
from hf_mtl.store.manifest import select_tasks
from hf_mtl.store.weights import load_exact
from hf_mtl.tasks import Task


MADX = {"languages": ["en", "pt"], "language_reduction_factor": 4, "task_reduction_factor": 8}


def _madx(languages: list[str]) -> MultiTaskModel:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    tasks = [Task("sent", labels=["neg", "pos"], language=languages[0])]
    return MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), tasks, tokenizer=tok, base_model="tiny",
                                      adapter_method="madx", adapter_config={**MADX, "languages": languages})


def _list_in_manifest(root: Path, rel: str) -> None:
    config = json.loads((root / CONFIG_NAME).read_text())
    config["files"][rel] = {"size": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)}
    (root / CONFIG_NAME).write_text(json.dumps(config))


def test_owner_of_a_language_adapter_file_is_its_language_folder() -> None:
    assert owner_of("languages/pt/adapter_model.safetensors") == "languages/pt"
    assert owner_of("sent/head.safetensors") == "sent"
    assert owner_of("shared/adapter_model.safetensors") == "shared"
    assert owner_of("README.md") == ""


def test_save_replaces_each_language_folder_it_writes_and_keeps_the_others(tmp_path: Path) -> None:
    """A save owns `languages/<lang>/` per language (the owner the hub pushes and pulls by), not the whole
    `languages/` folder: a language it writes is replaced as a whole, like a task's folder; one it does not
    write stays, in the folder and in the manifest. Before, the save's own owner function said `languages`
    for every language file, so an old file of a rewritten language stayed listed."""
    root = tmp_path / "store"
    _madx(["en", "pt"]).save_pretrained(str(root))
    stale = root / "languages" / "en" / "old_notes.json"  # a file an earlier save of `en` listed
    stale.write_text("{}")
    _list_in_manifest(root, "languages/en/old_notes.json")
    pt_before = sha256_file(root / "languages" / "pt" / "adapter_model.safetensors")

    _madx(["en"]).save_pretrained(str(root))  # rewrites `en` only

    files = json.loads((root / CONFIG_NAME).read_text())["files"]
    assert "languages/en/old_notes.json" not in files and not stale.exists()
    assert "languages/en/adapter_model.safetensors" in files
    assert files["languages/pt/adapter_model.safetensors"]["sha256"] == pt_before
    assert (root / "languages" / "pt" / "adapter_model.safetensors").is_file()


def test_store_task_selection_refuses_bad_names_like_the_hub(tmp_path: Path) -> None:
    """`from_pretrained(folder, tasks=...)` validates the names as `hub.pull` does (one `select_tasks`)."""
    tok = tiny_tokenizer()
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [Task("sent", labels=["neg", "pos"])],
                                       tokenizer=tok, base_model="tiny")
    model.save_pretrained(str(tmp_path / "store"))
    with pytest.raises(TaskConfigError, match=r"Invalid task name '\.\./sent'.*Fix: rename it"):
        MultiTaskModel.from_pretrained(str(tmp_path / "store"), tasks=["../sent"])
    with pytest.raises(UnknownTaskError, match=r"\['ner'\] are not in the store .*Available tasks: \['sent'\]"):
        MultiTaskModel.from_pretrained(str(tmp_path / "store"), tasks=["ner"])
    assert select_tasks({"tasks": ["a", "b"]}, ["b", "a", "b"], "x") == ["b", "a"]


def test_one_strict_loader_names_missing_unexpected_and_misshaped_keys() -> None:
    head = torch.nn.Linear(3, 2)
    with pytest.raises(StoreError, match=r"head: .*missing \['bias'\]; unexpected \['extra'\]; shape mismatch weight: "
                                         r"saved \(2, 4\) vs model \(2, 3\)"):
        load_exact(head.state_dict(), {"weight": torch.zeros(2, 4), "extra": torch.zeros(1)}, "head")
    load_exact(head.state_dict(), {"weight": torch.ones(2, 3, dtype=torch.float64), "bias": torch.zeros(2)}, "head")
    assert torch.equal(head.weight, torch.ones(2, 3)) and head.weight.dtype == torch.float32
