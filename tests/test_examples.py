"""The scripts in examples/ run as a user runs them, with tiny settings: a tiny BERT saved from a config
(`--model`), two steps (`--max-steps 2`), every output under tmp_path. The scripts read
`examples/data/...` relative to the working directory, so each test runs in a tmp folder that links
`examples` to the repository's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from helpers import tiny_bert_config, tiny_tokenizer, words_of
from hf_mtl import MultiTaskModel
from hf_mtl.modeling.backbone import build_backbone


try:  # tests/ as a package, or tests/ on sys.path (rootdir conftest)
    from tests.hub_server import ALICE_TOKEN, hub  # noqa: F401
except ImportError:
    from hub_server import ALICE_TOKEN, hub  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_model_dir(root: Path) -> Path:
    """A tiny BERT + a word-level tokenizer over the example data's words, saved as a folder."""
    torch.manual_seed(0)
    data = EXAMPLES / "data"
    tok = tiny_tokenizer(words_of([data / "sentiment" / "train.csv", data / "ner" / "train.txt"]))
    folder = root / "tiny-bert"
    build_backbone(tiny_bert_config(tok.vocab_size)).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def in_user_dir(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory like the repository root: `examples/` is there, outputs land in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "examples").symlink_to(EXAMPLES, target_is_directory=True)
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="module")
def two_task_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/train_two_tasks.py run tiny; its store is the input of the other examples."""
    root = tmp_path_factory.mktemp("examples")
    with pytest.MonkeyPatch.context() as monkeypatch:
        in_user_dir(root / "cwd", monkeypatch)
        metrics = load_example("train_two_tasks").main(
            ["--model", str(tiny_model_dir(root)), "--max-steps", "2", "--output-dir", "two_tasks"])
    assert {"eval_sentiment_accuracy", "eval_ner_entity_f1", "eval_average"} <= set(metrics)
    return root / "cwd" / "two_tasks"  # (running it twice: tests/test_readme.py, on the README's copy of its code)


def test_train_two_tasks_saves_a_small_store(two_task_store: Path) -> None:
    store = MultiTaskModel.from_pretrained(str(two_task_store))
    assert store.task_names == ["sentiment", "ner"]
    # a small store: heads and adapters, no backbone copy and no checkpoints
    names = {p.name for p in two_task_store.iterdir()}
    assert "backbone" not in names and not any(n.startswith("checkpoint-") for n in names)


def test_share_adapters_through_a_local_folder(two_task_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys) -> None:
    in_user_dir(tmp_path / "cwd", monkeypatch)
    load_example("share_adapters").main(["--store", str(two_task_store), "--hub-dir", "hub"])
    printed = capsys.readouterr().out
    assert "pushed 'sentiment'" in printed and "pushed 'ner'" in printed and "pulled ['sentiment']" in printed
    assert MultiTaskModel.from_pretrained(str(tmp_path / "cwd" / "hub")).task_names == ["sentiment", "ner"]


def test_share_adapters_through_a_hub(two_task_store: Path, hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys) -> None:
    in_user_dir(tmp_path / "cwd", monkeypatch)
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    load_example("share_adapters").main(["--store", str(two_task_store), "--repo", "alice/two-tasks"])
    printed = capsys.readouterr().out
    assert "pushed 'ner' to alice/two-tasks" in printed and "pulled ['sentiment']" in printed
    assert hub.read_file("alice/two-tasks", "ner/head.safetensors")


def test_predict_mixed_gives_each_row_its_own_task(two_task_store: Path, capsys) -> None:
    predictions = load_example("predict_mixed").main(["--store", str(two_task_store)])
    assert [p["task"] for p in predictions] == ["sentiment", "ner", "sentiment"]
    assert "tags" in predictions[1] and "label" in predictions[0]
    alone = MultiTaskModel.from_pretrained(str(two_task_store)).predict(["Mary flew from Paris to Berlin"], task="ner")
    assert predictions[1]["tags"] == alone[0]["tags"]
