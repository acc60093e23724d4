"""`FastLoraLinear`: PEFT's LoRA Linear with the merged-product forward gives PEFT's outputs and gradients.

Each case builds the same two-layer module twice, once with PEFT's own `lora.Linear` and once with
hf_mtl's (registered through PEFT's custom-module API, as the `lora` method does), copies the weights
across, and compares the forward and every gradient. The fallback cases check that PEFT's own forward
runs (bit-identical results) where the merged product does not apply.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn
from transformers import BertConfig

from helpers import tiny_tokenizer
from hf_mtl import Task
from hf_mtl.adapters.lora.fast import FastLoraLinear, _MergedLoraProduct
from hf_mtl.modeling import MultiTaskModel


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(12, 10)
        self.value = nn.Linear(10, 10)

    def forward(self, x):
        return self.value(torch.tanh(self.query(x)))


def build(fast: bool, configs: dict[str, dict]) -> Net:
    torch.manual_seed(0)
    net = Net()
    for name, options in configs.items():
        config = LoraConfig(target_modules=["query", "value"], **options)
        if fast:
            config._register_custom_module({nn.Linear: FastLoraLinear})
        inject_adapter_in_model(config, net, adapter_name=name)
    torch.manual_seed(1)
    for module in net.modules():  # B = 0 at PEFT's init: give every adapter a non-trivial update
        if isinstance(module, PeftLoraLinear):
            for b in module.lora_B.values():
                nn.init.normal_(b.weight, std=0.5)
            for dora in module.lora_magnitude_vector.values():
                dora.weight.data.mul_(1.5)
    for name, p in net.named_parameters():
        p.requires_grad_(".lora_" in name)
    return net


def run(net: Net, active: list[str], train: bool = True, seed: int = 2):
    for module in net.modules():
        if isinstance(module, PeftLoraLinear):
            module._active_adapter = list(active)
    net.train(train)
    torch.manual_seed(seed)
    x = torch.randn(3, 5, 12, requires_grad=True)
    out = net(x)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return out.detach(), x.grad.clone(), grads


def compare(configs: dict[str, dict], active: list[str], exact: bool = False, train: bool = True):
    reference, fast = build(False, configs), build(True, configs)
    assert all(isinstance(m, FastLoraLinear) for m in (fast.query, fast.value))
    assert not isinstance(reference.query, FastLoraLinear)
    fast.load_state_dict(reference.state_dict())
    out_r, dx_r, grads_r = run(reference, active, train)
    out_f, dx_f, grads_f = run(fast, active, train)
    assert grads_r.keys() == grads_f.keys() and bool(grads_r) == bool(active), "the same LoRA weights get gradients"
    def close(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
        # float rounding differs (the update is added to W before the product): relative to the tensor's scale
        atol = 0.0 if exact else 1e-5 * float(expected.abs().max())
        torch.testing.assert_close(got, expected, rtol=0 if exact else 1e-5, atol=atol, msg=what)

    close(out_f, out_r, "output")
    close(dx_f, dx_r, "input gradient")
    for name in grads_r:
        close(grads_f[name], grads_r[name], name)


def count_merged_calls(monkeypatch) -> list[int]:
    calls = [0]
    original = _MergedLoraProduct.apply

    def counting(*args):
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(_MergedLoraProduct, "apply", counting)
    return calls


@pytest.mark.parametrize("options", [dict(r=4, lora_alpha=8), dict(r=3, lora_alpha=5, use_rslora=True)])
def test_merged_product_matches_peft_one_adapter(options, monkeypatch):
    calls = count_merged_calls(monkeypatch)
    compare({"a": options}, ["a"])
    assert calls[0] == 2  # both layers took the merged product in the fast model


def test_merged_product_matches_peft_stacked_adapters(monkeypatch):
    """Language + task adapters active together: PEFT sums them; the merged product stacks them."""
    calls = count_merged_calls(monkeypatch)
    compare({"lang": dict(r=2, lora_alpha=4), "task": dict(r=4, lora_alpha=16)}, ["lang", "task"])
    assert calls[0] == 2


def test_inference_and_no_active_adapter():
    compare({"a": dict(r=4)}, ["a"], train=False)
    compare({"a": dict(r=4)}, [], exact=True)


@pytest.mark.parametrize("options", [dict(r=4, lora_dropout=0.3), dict(r=4, use_dora=True), dict(r=4, lora_bias=True)])
def test_peft_forward_where_the_merged_product_does_not_apply(options, monkeypatch):
    """Dropout while training, DoRA and LoRA biases run PEFT's own forward: bit-identical results."""
    calls = count_merged_calls(monkeypatch)
    compare({"a": options}, ["a"], exact=True)
    assert calls[0] == 0


def test_lora_method_uses_the_fast_layer_and_trains():
    tok = tiny_tokenizer()
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = MultiTaskModel.from_config(config, [Task("sent", labels=["neg", "pos"])], tokenizer=tok,
                                       adapter_method="lora", adapter_config={"r": 4})
    layers = [m for m in model.backbone.modules() if isinstance(m, PeftLoraLinear)]
    assert layers and all(isinstance(m, FastLoraLinear) for m in layers)
    inputs = tok(["a good film", "a bad one"], return_tensors="pt", padding=True)
    loss = model(**inputs, labels=torch.tensor([1, 0]), task="sent").loss
    loss.backward()
    grads = [p.grad for p in model.adapter.task_parameters("sent")]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
