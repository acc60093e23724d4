"""The shared test matrix: every adapter method x every architecture of the spec table.

A method joins the matrix by an entry in `METHOD_CONFIGS` (small options for tiny models).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, DistilBertConfig, ElectraConfig, RobertaConfig, XLMRobertaConfig

from helpers import assert_mixed_equals_single, tiny_tokenizer
from hf_mtl import Task
from hf_mtl.adapters import ADAPTER_METHODS, load_builtin_methods
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.store.layout import CONFIG_NAME


load_builtin_methods()

# method -> options for tiny models. Methods add themselves here.
METHOD_CONFIGS: dict[str, dict] = {
    "none": {},
    "pals": {"pal_heads": 2},
    "hyperformer": {"reduction_factor": 8, "task_embedding_dim": 8, "projected_task_embedding_dim": 8, "task_hidden_dim": 16},
    "hyperformer++": {"reduction_factor": 8, "task_embedding_dim": 8, "projected_task_embedding_dim": 8, "task_hidden_dim": 16},
    "ca_mtl": {"max_seq_length": 16, "num_blocks": 4, "freeze_lower_half": False, "bottleneck_layers": "all"},
    "bottleneck": {"reduction_factor": 8},
    "madx": {"languages": ["en", "pt"], "language_reduction_factor": 4, "task_reduction_factor": 8},
    "lora": {"r": 2},
    "prefix_tuning": {"num_virtual_tokens": 3},
}

_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
ARCH_CONFIGS = {
    "bert": lambda v: BertConfig(vocab_size=v, **_SMALL),
    "roberta": lambda v: RobertaConfig(vocab_size=v, pad_token_id=0, **_SMALL),
    "xlm-roberta": lambda v: XLMRobertaConfig(vocab_size=v, pad_token_id=0, **_SMALL),
    "electra": lambda v: ElectraConfig(vocab_size=v, embedding_size=32, **_SMALL),
    "distilbert": lambda v: DistilBertConfig(vocab_size=v, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, pad_token_id=0),
}

CASES = [(m, a) for m, a in itertools.product(sorted(METHOD_CONFIGS), sorted(ARCH_CONFIGS)) if m in ADAPTER_METHODS]


def make_tasks() -> list[Task]:
    return [
        Task("sent", kind="classification", labels=["neg", "pos"]),
        Task("topic", kind="classification", labels=["a", "b", "c"], pooling="mean"),
        Task("sim", kind="regression", text_pair_column="text2"),
        Task("ner", kind="token_classification", labels=["O", "B-PER", "I-PER"]),
    ]


def build(method: str, arch: str, seed: int = 0) -> tuple[MultiTaskModel, object]:
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    config = ARCH_CONFIGS[arch](tok.vocab_size)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    if hasattr(config, "dropout"):
        config.dropout = config.attention_dropout = 0.0
    model = MultiTaskModel.from_config(config, make_tasks(), tokenizer=tok, adapter_method=method,
                                       adapter_config=dict(METHOD_CONFIGS[method]))
    _randomize_zero_inits(model)
    return model.eval(), tok


def _randomize_zero_inits(model: MultiTaskModel) -> None:
    """Adapters start as the identity (zero up-projections): perturb them so tests see their effect."""
    with torch.no_grad():
        for p in model.adapter.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)


def batch(tok, texts=("good film", "bad food", "john smith in paris", "the city"), pairs=None):
    enc = tok(list(texts), list(pairs) if pairs else None, padding=True, return_tensors="pt")
    return dict(enc)


@pytest.mark.parametrize("method,arch", CASES)
def test_backbone_frozen_and_parameter_count(method: str, arch: str) -> None:
    model, _ = build(method, arch)
    own = model._backbone_own_parameters()
    assert own and not any(p.requires_grad for p in own)
    report = model.trainable_parameters()
    for name in model.tasks:
        counted = report["tasks"][name]["adapter"]
        formula = model.adapter.formula_parameter_count(name)
        assert counted == formula, f"{method}/{arch}/{name}: counted {counted}, formula {formula}"
        head = sum(p.numel() for p in model.heads[name].parameters())
        assert report["tasks"][name]["head"] == head


@pytest.mark.parametrize("method,arch", CASES)
def test_training_one_task_leaves_others_unchanged(method: str, arch: str) -> None:
    model, tok = build(method, arch)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1)
    inputs = batch(tok)
    for _ in range(3):
        out = model(**inputs, labels=torch.tensor([0, 1, 1, 0]), task="sent")
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    own_names = _owned_names(model, "sent")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, "training changed nothing"
    assert changed <= own_names, f"{method}/{arch}: changed parameters outside task 'sent': {sorted(changed - own_names)[:5]}"


def _owned_names(model: MultiTaskModel, task: str) -> set[str]:
    ids = {id(p) for p in model.heads[task].parameters()}
    ids |= {id(p) for p in model.adapter.task_parameters(task)}
    ids |= {id(p) for p in model.adapter.shared_parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("method,arch", CASES)
def test_save_load_identical_logits(method: str, arch: str, tmp_path: Path) -> None:
    model, tok = build(method, arch)
    inputs = batch(tok)
    model.save_pretrained(str(tmp_path))
    assert (tmp_path / CONFIG_NAME).is_file()
    for name in model.tasks:
        assert (tmp_path / name / "head.safetensors").is_file()
        assert (tmp_path / name / "task.json").is_file()
        if model.adapter.task_state_dict(name):
            assert (tmp_path / name / "adapter_model.safetensors").is_file()
            assert (tmp_path / name / "adapter_config.json").is_file()
    if model.adapter.shared_state_dict():
        assert (tmp_path / "shared" / "adapter_model.safetensors").is_file()
    backbone_state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loaded = _load_same_backbone(tmp_path, tok, model, backbone_state)
    for name in model.tasks:
        with torch.no_grad():
            a = model(**inputs, task=name).logits
            b = loaded(**inputs, task=name).logits
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _load_same_backbone(path: Path, tok, model: MultiTaskModel, backbone_state) -> MultiTaskModel:
    """Random backbones are not saved (frozen), so rebuild from the same config and copy the weights."""
    import json

    config = json.loads((path / CONFIG_NAME).read_text())
    from hf_mtl.store.load import _load_weights, _read_task

    tasks = [_read_task(path, n) for n in config["tasks"]]
    fresh = MultiTaskModel.from_config(model.config, tasks, tokenizer=tok, adapter_method=config["adapter_method"],
                                       adapter_config=config["adapter_config"])
    own = {k: v for k, v in backbone_state.items() if k in dict(fresh.backbone.state_dict())}
    fresh.backbone.load_state_dict(own, strict=False)
    _load_weights(fresh, path, config["tasks"])
    return fresh.eval()


@pytest.mark.parametrize("method,arch", [c for c in CASES if ADAPTER_METHODS[c[0]].routes_per_row])
def test_mixed_batch_equals_task_by_task(method: str, arch: str) -> None:
    model, tok = build(method, arch)
    assert_mixed_equals_single(model, batch(tok), ["sent", "ner", "topic", "sent"])
