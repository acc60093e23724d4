"""Tasks, the model's routing and heads, the store, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch

from helpers import tiny_bert_config, tiny_tokenizer
from hf_mtl import DataError, StoreError, Task, TaskConfigError, UnknownTaskError
from hf_mtl.data.collators import MultiTaskCollator
from hf_mtl.data.dataset import prepare_datasets
from hf_mtl.metrics import compute_task_metrics
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.store.layout import CONFIG_NAME
from hf_mtl.store.manifest import read_store_config
from hf_mtl.tasks import tasks_from_config


# ---------------------------------------------------------------- tasks
@pytest.mark.parametrize("name", ["", "a/b", "../x", "a..b", "shared", "with space", "é"])
def test_invalid_task_names(name: str) -> None:
    with pytest.raises(TaskConfigError, match="Invalid task name"):
        Task(name)


def test_duplicate_task_names() -> None:
    with pytest.raises(TaskConfigError, match="Duplicate task name 'a'"):
        tasks_from_config([{"name": "a"}, {"name": "a", "kind": "regression"}])


def test_task_field_errors() -> None:
    with pytest.raises(TaskConfigError, match="unknown kind"):
        Task("t", kind="ranking")
    with pytest.raises(TaskConfigError, match=r"unknown field\(s\) \['colum'\]"):
        Task.from_dict({"name": "t", "colum": "x"})
    with pytest.raises(TaskConfigError, match="max_train_samples"):
        Task("t", max_train_samples=0)


def test_task_round_trip() -> None:
    task = Task("ner", kind="token_classification", labels=["O", "B-PER", "I-PER"])
    assert task.metrics == ["seqeval", "accuracy"]
    assert Task.from_dict(json.loads(task.to_json())) == task


# ---------------------------------------------------------------- model
def _model(tasks, **kwargs) -> tuple[MultiTaskModel, object]:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    return MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), tasks, tokenizer=tok, **kwargs).eval(), tok


def _tasks() -> list[Task]:
    return [
        Task("sent", labels=["neg", "pos"]),
        Task("sim", kind="regression", text_pair_column="b"),
        Task("ner", kind="token_classification", labels=["O", "B-PER", "I-PER"]),
        Task("layer1", labels=["x", "y", "z"], head_layer=1, pooling="mean"),
    ]


def test_forward_single_and_per_row() -> None:
    model, tok = _model(_tasks())
    enc = dict(tok(["good film", "john smith", "the city", "bad"], padding=True, return_tensors="pt"))
    out = model(**enc, task="sent")
    assert out.logits.shape == (4, 2)
    out = model(**enc, task=["sent", "ner", "sim", "layer1"])
    assert out.task_logits["ner"].shape[:2] == (1, enc["input_ids"].shape[1])
    single = model(**{k: v[3:] for k, v in enc.items()}, task="layer1").logits
    torch.testing.assert_close(out.task_logits["layer1"], single, rtol=1e-5, atol=1e-5)


def test_head_layer_reads_that_layer() -> None:
    model, tok = _model(_tasks())
    enc = dict(tok(["good film"], return_tensors="pt"))
    hidden = model.backbone(**enc, output_hidden_states=True).hidden_states[1]
    expected = model.heads["layer1"](hidden, enc["attention_mask"])
    torch.testing.assert_close(model(**enc, task="layer1").logits, expected)


def test_head_layer_beyond_depth() -> None:
    with pytest.raises(TaskConfigError, match="head_layer=5 but the backbone has 2 layers"):
        _model([Task("a", labels=["x", "y"], head_layer=5)])


def test_unknown_task_lists_known() -> None:
    model, tok = _model(_tasks())
    enc = dict(tok(["good"], return_tensors="pt"))
    with pytest.raises(UnknownTaskError, match=r"'nope' is not a task of this model. Known tasks: \["):
        model(**enc, task="nope")
    with pytest.raises(UnknownTaskError, match="forward\\(\\) needs task="):
        model(**enc)


def test_trainable_counts_head_only_vs_full() -> None:
    frozen, _ = _model(_tasks())
    full, _ = _model(_tasks(), freeze_backbone=False)
    assert frozen.trainable_parameters()["shared"]["total"] == 0
    assert full.trainable_parameters()["shared"]["backbone"] == sum(p.numel() for p in full.backbone.parameters())
    h = 32
    assert frozen.trainable_parameters()["tasks"]["sent"]["head"] == h * h + h + h * 2 + 2
    assert frozen.trainable_parameters()["tasks"]["ner"]["head"] == h * 3 + 3


# ---------------------------------------------------------------- store
@pytest.mark.parametrize("freeze", [True, False])
def test_save_load_identical_logits(tmp_path: Path, freeze: bool) -> None:
    model, tok = _model(_tasks(), freeze_backbone=freeze)
    model.base_model = None
    enc = dict(tok(["good film", "john smith in paris"], padding=True, return_tensors="pt"))
    model.save_pretrained(str(tmp_path))
    config = read_store_config(tmp_path)
    assert config["tasks"] == ["sent", "sim", "ner", "layer1"]
    assert config["backbone_trained"] is (not freeze)
    assert (tmp_path / "backbone").is_dir() is (not freeze)
    for rel, entry in config["files"].items():
        assert (tmp_path / rel).stat().st_size == entry["size"]
    if freeze:
        return  # a frozen random backbone is not saved: covered by the adapter matrix
    loaded = MultiTaskModel.from_pretrained(str(tmp_path))
    for name in model.tasks:
        torch.testing.assert_close(model(**enc, task=name).logits, loaded(**enc, task=name).logits, rtol=0, atol=0)
    subset = MultiTaskModel.from_pretrained(str(tmp_path), tasks=["ner"])
    assert list(subset.heads) == ["ner"]
    with pytest.raises(UnknownTaskError, match=r"Available tasks: \['sent', 'sim', 'ner', 'layer1'\]"):
        MultiTaskModel.from_pretrained(str(tmp_path), tasks=["nope"])


def test_saving_one_task_keeps_the_others(tmp_path: Path) -> None:
    model, _ = _model(_tasks(), freeze_backbone=False)
    model.save_pretrained(str(tmp_path))
    before = read_store_config(tmp_path)["files"]
    with torch.no_grad():
        model.heads["sent"].out.bias.add_(1.0)
    model.save_pretrained(str(tmp_path), tasks=["sent"])
    after = read_store_config(tmp_path)["files"]
    assert after["sent/head.safetensors"] != before["sent/head.safetensors"]
    assert after["ner/head.safetensors"] == before["ner/head.safetensors"]


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    model, _ = _model(_tasks(), freeze_backbone=False)
    model.save_pretrained(str(tmp_path))
    (tmp_path / "ner" / "head.safetensors").write_bytes(b"not a safetensors file")
    # a file changed after the save no longer matches the manifest (issue 19.5: loads verify it)
    with pytest.raises(StoreError, match="ner/head.safetensors.*22 bytes instead of"):
        MultiTaskModel.from_pretrained(str(tmp_path), tasks=["ner"])
    task = json.loads((tmp_path / "sent" / "task.json").read_text())
    task["labels"] = ["a", "b", "c"]
    (tmp_path / "sent" / "task.json").write_text(json.dumps(task))
    config = json.loads((tmp_path / CONFIG_NAME).read_text())  # a crafted store: its manifest matches the edit
    config["files"]["sent/task.json"]["size"] = (tmp_path / "sent" / "task.json").stat().st_size
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(StoreError, match="head of task 'sent'.*shape mismatch"):
        MultiTaskModel.from_pretrained(str(tmp_path), tasks=["sent"])
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config["tasks"].append("../evil")
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(TaskConfigError, match="Invalid task name"):
        MultiTaskModel.from_pretrained(str(tmp_path))
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"library": "other"}))
    with pytest.raises(StoreError, match="not written by hf_mtl"):
        MultiTaskModel.from_pretrained(str(tmp_path))


# ---------------------------------------------------------------- data
def test_collator_token_labels_aligned_to_first_subword() -> None:
    tok = tiny_tokenizer()
    task = Task("ner", kind="token_classification", labels=["O", "B-PER"])
    raw = datasets.Dataset.from_dict({"tokens": [["john", "zzzunknownword"]], "label": [["B-PER", "O"]]})
    enc = prepare_datasets([task], {"ner": raw}, tok, 32, "train")["ner"]
    batch = MultiTaskCollator(tok, [task])([{**enc[0], "task": "ner"}])
    assert batch["task"] == "ner"
    assert batch["labels"].tolist()[0][0] == -100 and batch["labels"].tolist()[0][1] == 1


def test_mixed_collation_puts_sequence_labels_in_column_zero() -> None:
    tok = tiny_tokenizer()
    tasks = [Task("s", labels=["a", "b"]), Task("t", kind="token_classification", labels=["O", "B-X"])]
    s = prepare_datasets(tasks[:1], {"s": datasets.Dataset.from_dict({"text": ["good"], "label": ["b"]})}, tok, 32, "train")
    t = prepare_datasets(tasks[1:], {"t": datasets.Dataset.from_dict({"tokens": [["the", "city"]], "label": [["O", "B-X"]]})}, tok, 32, "train")
    batch = MultiTaskCollator(tok, tasks)([{**s["s"][0], "task": "s"}, {**t["t"][0], "task": "t"}])
    assert batch["task"] == ["s", "t"]
    assert batch["labels"][0, 0] == 1 and (batch["labels"][0, 1:] == -100).all()


@pytest.mark.parametrize(
    "raw, task, match",
    [
        ({"text": ["a"], "label": ["x"]}, Task("s"), "single label"),
        ({"txt": ["a", "b"], "label": ["x", "y"]}, Task("s"), r"no column 'text' \(field `text_column`\). Columns present"),
        ({"text": ["a", "b"], "label": ["1.0", "oops"]}, Task("r", kind="regression"), "regression target 'oops'"),
        ({"text": [], "label": []}, Task("s"), "has no training examples"),
    ],
)
def test_bad_training_data(raw, task, match) -> None:
    with pytest.raises(DataError, match=match):
        prepare_datasets([task], {task.name: datasets.Dataset.from_dict(raw)}, tiny_tokenizer(), 32, "train")


def test_eval_label_absent_from_train() -> None:
    tok = tiny_tokenizer()
    task = Task("s")
    prepare_datasets([task], {"s": datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]})}, tok, 32, "train")
    with pytest.raises(DataError, match=r"label 'z' in the validation split \(row 1"):
        prepare_datasets([task], {"s": datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "z"]})}, tok, 32, "validation")


# ---------------------------------------------------------------- metrics
def test_metrics_by_kind() -> None:
    cls = Task("c", labels=["a", "b"], metrics=["accuracy", "f1", "matthews_correlation"])
    out = compute_task_metrics(cls, [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], [1, 0, 0])
    assert out["accuracy"] == pytest.approx(2 / 3) and out["f1"] == pytest.approx(2 / 3)
    reg = Task("r", kind="regression")
    out = compute_task_metrics(reg, [[1.0], [2.0], [3.0]], [1.0, 2.5, 2.9])
    assert out["pearson"] > 0.9 and out["spearmanr"] == pytest.approx(1.0)
    tok = Task("t", kind="token_classification", labels=["O", "B-PER", "I-PER"])
    logits = torch.nn.functional.one_hot(torch.tensor([[1, 2, 0, 0]]), 3).float().numpy()
    out = compute_task_metrics(tok, logits, [[1, 2, 0, -100]])
    assert out["entity_f1"] == 1.0 and out["accuracy"] == 1.0


def test_classlabel_ids_become_names(tmp_path: Path) -> None:
    from hf_mtl.data.readers import load_task_split

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"]),
                                  "tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER"]))})
    data = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, 0], "tags": [[0, 1], [1]]}, features=features)
    data.to_parquet(str(tmp_path / "d.parquet"))
    task = Task("s", train_file=str(tmp_path / "d.parquet"))
    assert load_task_split(task, "train")["label"] == ["pos", "neg"] and task.labels == ["neg", "pos"]


@pytest.mark.parametrize("fields, message", [
    ({"max_train_samples": True}, r"`max_train_samples` must be an integer or null, got true \(a boolean\)"),
    ({"labels": "pos"}, r"`labels` must be a list of strings or null, got \"pos\""),
    ({"labels": ["neg", 1]}, r"`labels` must be a list of strings"),
    ({"loss_weight": "2"}, r"`loss_weight` must be a number, got \"2\" \(a string\). Fix: write it without quotes"),
    ({"text_column": ["a"]}, r"`text_column` must be a string"),
    ({"drop_unlabeled": "yes"}, r"`drop_unlabeled` must be true or false"),
    ({"extra": []}, r"`extra` must be a JSON object"),
    ({"head_layer": 1.0}, r"`head_layer` must be an integer or null"),
])
def test_task_field_types(fields: dict, message: str) -> None:
    with pytest.raises(TaskConfigError, match=r"task 't': " + message):
        tasks_from_config([{"name": "t", **fields}])


def test_task_single_names_still_stand_for_lists() -> None:
    task = Task("t", metrics="f1", labels=["a", "b"])
    assert task.metrics == ["f1"]
    assert Task("u", input_from_tasks="t").input_from_tasks == ["t"]
