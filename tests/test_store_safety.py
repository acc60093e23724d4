"""Store safety: names are data never code, no pickles, no remote code, atomic saves, verified loads,
bad `task.json`/manifest input, file modes, data paths, quiet backbone loads (issues 19 and 20)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertModel

from helpers import tiny_bert_config, tiny_tokenizer, write_tiny_recipe
from hf_mtl import HfMtlError, StoreError, Task, TaskConfigError
from hf_mtl.io_utils import atomic_write_json, read_json, sha256_file
from hf_mtl.metrics import compute_task_metrics
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.backbone import build_backbone, load_backbone_config
from hf_mtl.store.layout import CONFIG_NAME


REPO = Path(__file__).resolve().parents[1]


def _model(trained_backbone: bool = False, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    tasks = [Task("sent", labels=["neg", "pos"]), Task("ner", kind="token_classification", labels=["O", "B-X", "I-X"])]
    return MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), tasks, tokenizer=tok,
                                      base_model="tiny", freeze_backbone=not trained_backbone)


def _store(tmp_path: Path, trained_backbone: bool = True) -> Path:
    root = tmp_path / "store"
    _model(trained_backbone).save_pretrained(str(root))
    return root


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    data = edit(data)
    path.write_text(json.dumps(data))


def _edit_store_file(root: Path, rel: str, edit) -> None:
    """Change a store file and its manifest entry alike, as a crafted (pushed, pulled) store would."""
    _edit_json(root / rel, edit)
    entry = {"size": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)}
    _edit_json(root / CONFIG_NAME, lambda d: {**d, "files": {**d["files"], rel: entry}})


# ---------------------------------------------------------------- 19.1 metric names are data, never code
def test_unknown_metric_name_is_refused_at_task_validation() -> None:
    with pytest.raises(TaskConfigError, match=r"task 'a'.*'someone/evil'.*`metrics`.*accuracy"):
        Task("a", labels=["x", "y"], metrics=["accuracy", "someone/evil"])


def test_store_with_unknown_metric_never_imports_evaluate(tmp_path: Path, monkeypatch) -> None:
    root = _store(tmp_path)
    _edit_store_file(root, "sent/task.json", lambda d: {**d, "metrics": ["accuracy", "someone/evil"]})
    monkeypatch.setitem(sys.modules, "evaluate", None)  # any import of evaluate fails loudly
    with pytest.raises(HfMtlError, match="someone/evil"):
        MultiTaskModel.from_pretrained(str(root))


def test_callable_metric_is_computed_and_never_saved_as_code(tmp_path: Path) -> None:
    def top_label_share(preds: np.ndarray, refs: np.ndarray, task: Task) -> float:
        return float((preds == 1).mean())

    task = Task("sent", labels=["neg", "pos"], metrics=["accuracy", top_label_share])
    out = compute_task_metrics(task, np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 1]))
    assert out == {"accuracy": 0.5, "top_label_share": 0.5}
    saved = task.to_dict()
    assert saved["metrics"] == ["accuracy"]
    json.dumps(saved)  # plain data
    assert Task.from_dict(saved).metrics == ["accuracy"]


# ---------------------------------------------------------------- 19.2 no custom code from a config
def _remote_code_dir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    marker = folder.parent / "ran.txt"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import BertConfig as EvilConfig\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "evil_type", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                                                           "AutoModel": "evil.EvilConfig"}}))
    return marker


def test_backbone_config_with_auto_map_is_refused(tmp_path: Path) -> None:
    marker = _remote_code_dir(tmp_path / "base")
    with pytest.raises(HfMtlError, match="trust_remote_code"):
        load_backbone_config(str(tmp_path / "base"))
    assert not marker.exists()


def test_recipe_base_model_with_auto_map_is_one_error_line_naming_the_option(tmp_path: Path, capsys) -> None:
    from hf_mtl.cli import main

    recipe = write_tiny_recipe(tmp_path / "run")
    marker = _remote_code_dir(tmp_path / "evil_base")
    capsys.readouterr()
    assert main(["train", str(recipe), "--model_name_or_path", str(tmp_path / "evil_base")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1 and "trust_remote_code" in errors[0]
    assert not marker.exists()


def test_recipe_trust_remote_code_reaches_the_backbone_load(tmp_path: Path, monkeypatch) -> None:
    from hf_mtl.run import build_model, load_recipe

    seen = {}
    monkeypatch.setattr(MultiTaskModel, "from_backbone", classmethod(lambda cls, *a, **kw: seen.update(kw)))
    recipe = write_tiny_recipe(tmp_path / "run")
    build_model(args := load_recipe(str(recipe), []), args.task_objects())
    assert seen["trust_remote_code"] is False
    build_model(args := load_recipe(str(recipe), ["--trust_remote_code", "true"]), args.task_objects())
    assert seen["trust_remote_code"] is True


def test_store_backbone_with_auto_map_is_refused(tmp_path: Path) -> None:
    root = _store(tmp_path, trained_backbone=True)
    marker = tmp_path / "ran.txt"
    (root / "backbone" / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    _edit_store_file(root, "backbone/config.json", lambda d: {**d, "model_type": "evil_type", "auto_map": {"AutoConfig": "evil.C"}})
    with pytest.raises(StoreError, match="trust_remote_code"):
        MultiTaskModel.from_pretrained(str(root))
    assert not marker.exists()


# ---------------------------------------------------------------- 19.9 no pickles
def test_store_listing_a_pickle_file_is_refused(tmp_path: Path) -> None:
    root = _store(tmp_path)
    _edit_json(root / CONFIG_NAME, lambda d: {**d, "files": {**d["files"], "backbone/pytorch_model.bin": {"size": 1, "sha256": "0"}}})
    with pytest.raises(StoreError, match=r"backbone/pytorch_model\.bin.*pickle"):
        MultiTaskModel.from_pretrained(str(root))


def test_base_model_with_only_bin_weights_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    model = BertModel(tiny_bert_config(50))
    model.config.save_pretrained(str(base))
    torch.save(model.state_dict(), base / "pytorch_model.bin")
    with pytest.raises(HfMtlError, match="safetensors"):
        build_backbone(load_backbone_config(str(base)), str(base))


# ---------------------------------------------------------------- 19.5 atomic saves, verified loads
CHILD = r"""
import os, signal, sys
sys.path[:0] = [{tests!r}]
import torch
import transformers.modeling_utils as mu
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.store import save as store
point = {point!r}
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def hook(name):
    if name == point:
        die()
store._save_step = hook
if point == "mid_backbone":
    real = mu.safe_save_file
    def half(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        data = open(filename, "rb").read()
        open(filename, "wb").write(data[: len(data) // 2])
        die()
    mu.safe_save_file = half
model = MultiTaskModel.from_pretrained({new!r})
model.backbone.requires_grad_(True)
model.save_pretrained({store!r})
"""


def _weights(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("point", ["after_tasks", "mid_backbone", "before_manifest", "before_swap", "after_swap"])
def test_killed_save_leaves_the_old_or_the_new_store(tmp_path: Path, point: str) -> None:
    # One subprocess per kill point (a SIGKILL cannot be caught in-process); each costs one torch import.
    root = tmp_path / "out" / "store"
    old = _model(trained_backbone=True, seed=0)
    old.save_pretrained(str(root))
    (root / "train_results.json").write_text("{}")  # a file of the output folder that is not part of the store
    new = _model(trained_backbone=True, seed=1)
    new.save_pretrained(str(tmp_path / "new"))
    old_w, new_w = _weights(MultiTaskModel.from_pretrained(str(root))), _weights(new)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = CHILD.format(tests=str(REPO / "tests"), point=point, new=str(tmp_path / "new"), store=str(root))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    loaded = _weights(MultiTaskModel.from_pretrained(str(root)))
    assert _same(loaded, old_w) or _same(loaded, new_w), f"a mix of the old and new store after a kill at {point}"
    assert (root / "train_results.json").is_file()
    new.save_pretrained(str(root))  # the next save cleans what the killed one left
    assert sorted(p.name for p in root.parent.iterdir()) == ["store"]
    assert _same(_weights(MultiTaskModel.from_pretrained(str(root))), new_w)


def test_save_in_place_where_the_folder_cannot_be_swapped(tmp_path: Path, monkeypatch, caplog) -> None:
    from hf_mtl.store import save as store

    root = _store(tmp_path)
    (root / "train_results.json").write_text("{}")

    def refuse(target: Path) -> Path:
        raise PermissionError(13, "Permission denied", str(target.parent))

    monkeypatch.setattr(store, "staging_folder", refuse)
    new = _model(trained_backbone=True, seed=1)
    with caplog.at_level(logging.WARNING):
        new.save_pretrained(str(root))
    assert "in place" in caplog.text
    assert _same(_weights(MultiTaskModel.from_pretrained(str(root))), _weights(new))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"] and (root / "train_results.json").is_file()


def test_load_refuses_files_that_differ_from_the_manifest(tmp_path: Path) -> None:
    root = _store(tmp_path, trained_backbone=True)
    (root / "backbone" / "config.json").write_text("")
    with pytest.raises(StoreError, match=r"backbone/config\.json.*0 bytes"):
        MultiTaskModel.from_pretrained(str(root))
    root = _store(tmp_path / "b")
    from safetensors.torch import load_file, save_file
    head = root / "sent" / "head.safetensors"
    save_file({k: v + 1 for k, v in load_file(str(head)).items()}, str(head), metadata={"other": "x" * 40})
    with pytest.raises(StoreError, match=r"sent/head\.safetensors.*bytes"):
        MultiTaskModel.from_pretrained(str(root))


def test_load_checks_hashes_on_request(tmp_path: Path) -> None:
    root = _store(tmp_path)
    from safetensors.torch import load_file, save_file
    head = root / "sent" / "head.safetensors"
    save_file({k: v + 1 for k, v in load_file(str(head)).items()}, str(head), metadata={"task": "sent", "library": "hf_mtl"})
    MultiTaskModel.from_pretrained(str(root))  # same size: the default check (sizes) passes
    with pytest.raises(StoreError, match="sha256"):
        MultiTaskModel.from_pretrained(str(root), verify_hashes=True)


# ---------------------------------------------------------------- 19.10 bad task.json / manifest / adapter config
@pytest.mark.parametrize("labels", [5, "ab", {"a": 0, "b": 1}])
def test_task_json_labels_must_be_a_list(tmp_path: Path, labels) -> None:
    root = _store(tmp_path)
    _edit_store_file(root, "sent/task.json", lambda d: {**d, "labels": labels})
    with pytest.raises(TaskConfigError, match=r"task 'sent'.*`labels`.*list"):
        MultiTaskModel.from_pretrained(str(root))


def test_task_json_array_and_bad_language(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match=r"`language`"):
        Task.from_dict({"name": "a", "labels": ["x", "y"], "language": ["../x"]})
    with pytest.raises(TaskConfigError, match=r"`language`"):
        Task("a", labels=["x", "y"], language="../x")
    root = _store(tmp_path)
    _edit_store_file(root, "sent/task.json", lambda d: [])
    with pytest.raises(HfMtlError, match=r"sent/task\.json.*JSON object"):
        MultiTaskModel.from_pretrained(str(root))


def test_manifest_files_must_be_a_mapping_with_int_sizes(tmp_path: Path) -> None:
    root = _store(tmp_path)
    _edit_json(root / CONFIG_NAME, lambda d: {**d, "files": list(d["files"])})
    with pytest.raises(StoreError, match=r"`files`.*object"):
        MultiTaskModel.from_pretrained(str(root))
    root = _store(tmp_path / "b")
    _edit_json(root / CONFIG_NAME, lambda d: {**d, "files": {k: {**v, "size": str(v["size"])} for k, v in d["files"].items()}})
    with pytest.raises(StoreError, match=r"size.*'\d+'.*integer"):
        MultiTaskModel.from_pretrained(str(root))


def test_adapter_config_that_is_not_an_object(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [Task("sent", labels=["a", "b"])], tokenizer=tok,
                                       base_model="tiny", adapter_method="bottleneck")
    root = tmp_path / "store"
    model.save_pretrained(str(root))
    _edit_store_file(root, "sent/adapter_config.json", lambda d: [])
    with pytest.raises(StoreError, match=r"adapter_config\.json.*JSON object"):
        from hf_mtl.store.load import _load_weights
        _load_weights(model, root, ["sent"])


def test_nan_scores_are_written_as_null(tmp_path: Path) -> None:
    from hf_mtl.io_utils import json_safe

    scores = {"eval_sent_accuracy": float("nan"), "n": [float("inf"), 1.0], "x": np.float32("nan")}
    assert json_safe(scores) == {"eval_sent_accuracy": None, "n": [None, 1.0], "x": None}
    atomic_write_json(tmp_path / "r.json", scores)
    json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))


# ---------------------------------------------------------------- 20.9 modes and data paths
def test_store_files_get_the_modes_of_a_normal_write(tmp_path: Path) -> None:
    from hf_mtl.store.export import export_task

    previous = os.umask(0o022)
    try:
        root = _store(tmp_path, trained_backbone=True)
        exported = Path(export_task(root, "sent", tmp_path / "exported"))
    finally:
        os.umask(previous)
    for path in [root, *root.rglob("*"), exported, *exported.rglob("*")]:
        expected = 0o755 if path.is_dir() else 0o644
        assert path.stat().st_mode & 0o777 == expected, path


def test_task_data_paths_are_saved_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    tok = tiny_tokenizer()
    task = Task("sent", labels=["a", "b"], train_file="data/train.csv", validation_file="data/dev.csv")
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [task], tokenizer=tok, base_model="tiny")
    model.save_pretrained("store")
    saved = read_json(tmp_path / "store" / "sent" / "task.json", "t")
    assert saved["train_file"] == str(tmp_path / "data" / "train.csv")
    assert saved["validation_file"] == str(tmp_path / "data" / "dev.csv")
    assert task.train_file == "data/train.csv"  # the live task is unchanged


def test_run_evaluation_takes_other_data_files(tmp_path: Path) -> None:
    from hf_mtl.run import run_evaluation

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    task = Task("sent", labels=["bad", "good"], validation_file=str(tmp_path / "missing.csv"))
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [task], tokenizer=tok, base_model="tiny",
                                       freeze_backbone=False)
    model.save_pretrained(str(tmp_path / "store"))
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\na good film,good\na bad film,bad\n")
    out = run_evaluation(str(tmp_path / "store"), data_files={"sent": str(dev)}, batch_size=2)
    assert "eval_sent_accuracy" in out
    with pytest.raises(HfMtlError, match="nope"):
        run_evaluation(str(tmp_path / "store"), data_files={"nope": str(dev)})


# ---------------------------------------------------------------- 20.7 quiet loads
def _saved_bert(folder: Path, extra: dict[str, torch.Tensor] | None = None) -> Path:
    model = BertModel(tiny_bert_config(50))  # with its pooler, as all-MiniLM-L6-v2 is saved
    state = {**model.state_dict(), **(extra or {})}
    model.save_pretrained(str(folder), state_dict=state)
    return folder


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _load_messages(folder: Path, caplog) -> str:
    records = _Records()
    logging.getLogger("transformers").addHandler(records)  # transformers' loggers do not propagate to the root
    try:
        with caplog.at_level(logging.WARNING):
            build_backbone(load_backbone_config(str(folder)), str(folder))
    finally:
        logging.getLogger("transformers").removeHandler(records)
    text = caplog.text + "\n".join(records.lines)
    caplog.clear()
    return text


def test_dropped_pooler_is_not_reported_but_other_keys_are(tmp_path: Path, caplog) -> None:
    quiet = _load_messages(_saved_bert(tmp_path / "quiet"), caplog)
    assert "pooler.dense" not in quiet and "LOAD REPORT" not in quiet
    loud = _load_messages(_saved_bert(tmp_path / "loud", {"encoder.extra_weight": torch.zeros(2)}), caplog)
    assert "encoder.extra_weight" in loud and "pooler.dense" not in loud
