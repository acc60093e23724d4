"""The fast CPU dropout (hf_mtl.ops.fast_dropout) and its use in the backbone's attention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import BertConfig

import hf_mtl.ops.attention as attention_module
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.ops.attention import _eager
from hf_mtl.ops.fast_dropout import FastDropout, drop_mask, fast_dropout, fast_threshold, use_fast_dropout
from hf_mtl.tasks import Task


TASKS = [Task("a", "classification", labels=["x", "y"]), Task("b", "classification", labels=["u", "v", "w"])]


def tiny_config(dropout: float = 0.1) -> BertConfig:
    return BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                      max_position_embeddings=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_drop_rate_and_expectation(p):
    torch.manual_seed(0)
    n = 1 << 20
    levels = fast_threshold(p)
    rate = drop_mask((n,), levels).float().mean().item()
    assert abs(levels / 65536 - p) <= 2**-17
    assert abs(rate - levels / 65536) < 5 * math.sqrt(p * (1 - p) / n)  # five standard errors
    y = fast_dropout(torch.ones(n), p)
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)  # E[y] = x
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 65536 / (65536 - levels)))


def test_masks_are_independent_and_seeded():
    torch.manual_seed(3)
    first = drop_mask((64, 257), fast_threshold(0.5))
    second = drop_mask((64, 257), fast_threshold(0.5))
    torch.manual_seed(3)
    again = drop_mask((64, 257), fast_threshold(0.5))
    assert torch.equal(first, again)
    assert 0.4 < (first != second).float().mean().item() < 0.6  # fresh bits each call
    # the four 16-bit parts of a word are not copies of each other
    parts = first.view(-1)[: 64 * 256].view(-1, 4).float()
    assert 0.4 < (parts[:, 0] != parts[:, 3]).float().mean().item() < 0.6


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(40, 50, requires_grad=True)
    y = fast_dropout(x, 0.2)
    y.backward(torch.ones_like(y))
    scale = 65536 / (65536 - fast_threshold(0.2))
    kept = y != 0
    assert torch.allclose(x.grad, kept.float() * scale)
    assert torch.allclose(y[kept], x[kept] * scale)


@pytest.mark.parametrize("p", [0.0, 1e-5, 1.0])
def test_unrepresentable_p_takes_torchs_dropout(p):
    x = torch.randn(300, 40)
    torch.manual_seed(5)
    ours = fast_dropout(x, p)
    torch.manual_seed(5)
    assert torch.equal(ours, nn.functional.dropout(x, p, True))


def test_module_eval_is_identity_and_replacement_keeps_p():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.3), nn.Sequential(nn.Dropout(0.1)))
    assert use_fast_dropout(model) == 2
    assert isinstance(model[1], FastDropout) and model[1].p == 0.3 and model[2][0].p == 0.1
    x = torch.randn(8, 4)
    assert torch.equal(model.eval()[1](x), x)


def _attention_mask(kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    mask = torch.ones(3, 1, 5, 7, dtype=torch.bool)
    mask[1, ..., 4:] = False  # padded keys
    if kind == "bool_row_all_masked":
        mask[2, :, 1] = False  # one query row that may attend nowhere: uniform probabilities, no dS
    if kind == "float_requires_grad":  # an additive mask with a learned part (CA-MTL's conditional bias)
        return (torch.zeros(mask.shape).masked_fill(~mask, -1e4) + torch.randn(3, 1, 5, 7)).requires_grad_(True)
    return mask


@pytest.mark.parametrize("kind", ["bool", "none", "bool_row_all_masked", "float_requires_grad"])
def test_attention_with_fast_dropout_equals_the_reference_with_the_same_mask(kind):
    """The fused attention function (forward and backward) against autograd through the composite ops."""
    torch.manual_seed(0)
    q = torch.randn(3, 2, 5, 8, requires_grad=True)
    k, v = (torch.randn(3, 2, 7, 8, requires_grad=True) for _ in range(2))  # 7 keys: prefixes make Lk != Lq
    mask = _attention_mask(kind)
    leaves = [q, k, v] + ([mask] if kind == "float_requires_grad" else [])
    module = nn.Module().train()
    torch.manual_seed(9)
    out, _ = _eager(module, q, k, v, mask, dropout=0.25, fast_dropout=True)
    (out.square() * torch.arange(8.0)).sum().backward()
    ours = [out.detach(), *(t.grad.clone() for t in leaves)]
    for t in leaves:
        t.grad = None
    torch.manual_seed(9)  # the same random words: rebuild the mask the reference way
    scores = q @ k.transpose(2, 3) / math.sqrt(8)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(q.dtype).min) if mask.dtype == torch.bool else scores + mask
    weights = scores.softmax(-1)
    keep = ~drop_mask(weights.shape, fast_threshold(0.25))
    reference = ((weights * keep / (1 - fast_threshold(0.25) / 65536)) @ v).transpose(1, 2)
    (reference.square() * torch.arange(8.0)).sum().backward()
    for got, want in zip(ours, [reference.detach(), *(t.grad for t in leaves)]):
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    if kind == "bool":  # padded keys were not attended: no gradient reaches them
        assert not ours[2][1, :, 4:].any() and not ours[3][1, :, 4:].any() and ours[2][1, :, :4].abs().sum() > 0


def test_model_uses_fast_dropout_on_cpu_training_only(monkeypatch):
    torch.manual_seed(0)
    fast = MultiTaskModel.from_config(tiny_config(), TASKS)
    torch.manual_seed(0)
    stock = MultiTaskModel.from_config(tiny_config(), TASKS, fast_dropout=False)
    stock.load_state_dict(fast.state_dict())
    dropouts = [m for m in fast.modules() if isinstance(m, nn.Dropout)]  # the backbone's and the heads'
    assert any(m is fast.heads["a"].dropout for m in dropouts)
    assert dropouts and all(isinstance(m, FastDropout) for m in dropouts)
    assert not any(isinstance(m, FastDropout) for m in stock.modules())
    assert fast.backbone.config._attn_implementation == "hf_mtl"
    batch = {"input_ids": torch.randint(5, 120, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "task": ["a", "b", "a", "b"]}
    batch["attention_mask"][2, 7:] = 0
    fast.eval(), stock.eval()
    with torch.no_grad():  # eval: the same model, bit for bit in what it computes
        for name in ("a", "b"):
            assert torch.allclose(fast(**batch).task_logits[name], stock(**batch).task_logits[name], atol=1e-6)
    fast.train()
    calls = []
    monkeypatch.setattr(attention_module, "_eager",
                        lambda *a, **kw: calls.append(kw["fast_dropout"]) or _eager(*a, **kw))
    first = fast(**batch).task_logits["a"]
    second = fast(**batch).task_logits["a"]
    assert calls == [True] * 4  # 2 layers x 2 forwards, each through the fast attention dropout
    assert not torch.allclose(first, second)  # dropout is on
    first.sum().backward()
    assert all(p.grad is not None for p in fast.heads["a"].parameters())


def test_no_dropout_keeps_stock_attention():
    model = MultiTaskModel.from_config(tiny_config(0.0), TASKS)
    assert model.backbone.config._attn_implementation != "hf_mtl"


def test_an_eager_backbone_stays_eager_in_every_layer():
    config = tiny_config()
    config._attn_implementation = "eager"
    model = MultiTaskModel.from_config(config, TASKS, adapter_method="prefix_tuning")
    bases = [getattr(layer.attention.self, attention_module._BASE) for layer in model.backbone.encoder.layer]
    assert bases == ["eager", "eager"]
    assert model.backbone.config._attn_implementation == "hf_mtl"
