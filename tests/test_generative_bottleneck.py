"""`bottleneck` and `madx` on generative backbones (issue 22, part 3): sites in every layer of every stack,
the pre-LN placement, mixed-task training batches and mixed-task generation (greedy, beams, KV cache), and
MAD-X language adapters trained with the LM loss.

The shared matrix (test_generative_matrix.py) checks the common properties over every method; this file checks
what is specific to these two methods.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import ByT5Tokenizer

from helpers import tiny_lm_config
from hf_mtl import Task
from hf_mtl.adapters.bottleneck.layer import routed_adapter
from hf_mtl.adapters.bottleneck.sites import stack_specs
from hf_mtl.data.collators import pad_rows
from hf_mtl.data.text2text import TextToTextEncoder
from hf_mtl.generation import generate_ids, prompt_ids
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.arch import layers_of, residual_reader, resolve
from hf_mtl.store.load import _load_weights, _read_task


TOK = ByT5Tokenizer()  # needs no files: vocab 384, pad 0, eos 1
COMMON = {"vocab_size": len(TOK), "pad_token_id": 0, "eos_token_id": 1}
CONFIGS = {
    "llama": lambda: tiny_lm_config("llama"),
    "gpt2": lambda: tiny_lm_config("gpt2"),
    "t5": lambda: tiny_lm_config("t5"),
    "bart": lambda: tiny_lm_config("bart", decoder_layers=3),
}
LAYERS = {"llama": 2, "gpt2": 2, "t5": 4, "bart": 5}  # every stack's layers (T5: 2 + 2, BART: 2 encoder + 3 decoder)
ARCHS = list(CONFIGS)
VARIANTS = ["pfeiffer", "houlsby", "parallel"]
MADX = {"languages": ["en", "pt"], "language_reduction_factor": 4, "task_reduction_factor": 8}
TEXTS = ["good movie", "awful plot", "hello there", "abc"]
NAMES = ["sent", "echo", "echo", "sent"]


def kind_of(arch: str) -> str:
    return "seq2seq" if arch in ("t5", "bart") else "causal_lm"


def tasks(arch: str, extra: list[Task] = ()) -> list[Task]:
    kind = kind_of(arch)
    return [Task("sent", kind=kind, prompt_template="Review: {text} Answer:", label_column="label",
                 label_words={"0": "neg", "1": "pos"}, language="en"),
            Task("echo", kind=kind, prompt_template="Copy: {text}", target_column="out",
                 generation={"max_new_tokens": 6}, language="pt"),
            *extra]


def build(arch: str, method: str, config: dict | None, extra: list[Task] = ()) -> MultiTaskModel:
    """A tiny LM (dropout 0) whose adapters, language adapters included, have non-trivial random weights (an
    identity-initialised adapter would hide a wrong routing)."""
    torch.manual_seed(0)
    model = MultiTaskModel.from_config(CONFIGS[arch](), tasks(arch, extra), tokenizer=TOK, adapter_method=method,
                                       adapter_config=config, backbone_dropout=0.0)
    with torch.no_grad():
        for p in model.adapter.parameters():
            torch.nn.init.normal_(p, std=0.5)
    return model


def training_batch(model: MultiTaskModel, names: list[str]) -> dict[str, torch.Tensor]:
    """Tokenized (prompt, target) rows of `names`' tasks, padded as the collators do (targets -100 on padding)."""
    rows = [{"text": text, "label": str(i % 2), "out": text[::-1]} for i, text in enumerate(TEXTS)]
    examples = [TextToTextEncoder(model.tasks[n], TOK, 64).example(r) for n, r in zip(names, rows)]
    batch = {"input_ids": pad_rows([e["input_ids"] for e in examples], 0, "right"),
             "attention_mask": pad_rows([e["attention_mask"] for e in examples], 0, "right"),
             "labels": pad_rows([e["labels"] for e in examples], -100, "right")}
    return batch


def row_slice(batch: dict[str, torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    return {k: v[row:row + 1] for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- bottleneck sites
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sites_in_every_layer_of_every_stack(arch: str, variant: str) -> None:
    model = build(arch, "bottleneck", {"variant": variant, "reduction_factor": 8})
    adapter = model.adapter
    positions = 2 if variant == "houlsby" else 1
    assert adapter.num_layers == LAYERS[arch] and len(adapter.task_adapters[0]) == LAYERS[arch]
    # houlsby: self-attention and feed-forward only; a decoder's cross-attention gets none (AdapterHub's default)
    assert len(adapter._sites) == LAYERS[arch] * positions
    assert {s.position for s in adapter._sites} == ({"attention", "ffn"} if variant == "houlsby" else {"ffn"})
    rank = 32 // 8
    per_site = 2 * 32 * rank + rank + 32
    count = model.trainable_parameters()["tasks"]["sent"]["adapter"]
    assert count == adapter.formula_parameter_count("sent") == LAYERS[arch] * positions * per_site
    assert not model.backbone_trained


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_site_computation_pre_ln_and_post_ln(arch: str, variant: str) -> None:
    """At the last layer's feed-forward site f' is AdapterHub's: pfeiffer f + A(LN(f + x)) with the layer's own LN
    after the residual in post-LN BART and none (f + x) in pre-LN Llama, GPT-2, T5; houlsby f + A(f); parallel
    f + s·A(x), with x the feed-forward's input (the residual stream)."""
    model = build(arch, "bottleneck", {"variant": variant})
    spec = stack_specs(model.config)[-1]
    layer = layers_of(model.backbone, spec)[-1]
    branch = resolve(layer, spec.ffn_output)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        branch.register_forward_hook(lambda m, a, out: seen.setdefault("f", out), prepend=True),  # before the adapter
        branch.register_forward_hook(lambda m, a, out: seen.setdefault("f_new", out)),  # after it
        resolve(layer, residual_reader(spec, "ffn")).register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0])),
    ]
    batch = training_batch(model, ["echo"] * 4)
    with torch.no_grad():
        model.eval()(**batch, task="echo")
    for handle in handles:
        handle.remove()
    f, x = seen["f"], seen["x"]
    a = model.adapter.task_adapters[model.adapter._slots["echo"]][LAYERS[arch] - 1]["ffn"].tensors()
    act, scaling = model.adapter.act, model.adapter.options.scaling
    if variant == "parallel":
        expected = f + routed_adapter(x, [a], None, act, scaling)
    elif variant == "houlsby":
        expected = f + routed_adapter(f, [a], None, act)
    else:
        norm = resolve(layer, spec.ffn_layer_norm) if arch == "bart" else (lambda h: h)  # BART alone is post-LN
        expected = f + routed_adapter(norm(f + x), [a], None, act)
    torch.testing.assert_close(seen["f_new"], expected)
    assert not torch.allclose(seen["f_new"], f)


# ---------------------------------------------------------------------------------------------- mixed-task rows
METHODS = [("bottleneck", {"variant": v}) for v in VARIANTS] + [("madx", MADX)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method,config", METHODS, ids=[f"{m}-{c.get('variant', '')}" for m, c in METHODS])
def test_mixed_training_batch_equals_task_by_task(arch: str, method: str, config: dict) -> None:
    """One train-mode forward over rows of two tasks gives each row the logits and each task the loss of running
    its rows alone, and its backward reaches exactly the two tasks' adapters."""
    model = build(arch, method, config).train()
    batch = training_batch(model, NAMES)
    out = model(**batch, task=NAMES)
    for name in ("sent", "echo"):
        rows = [i for i, n in enumerate(NAMES) if n == name]
        alone = model(**{k: v[rows] for k, v in batch.items()}, task=name)
        torch.testing.assert_close(out.task_logits[name], alone.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.task_losses[name], alone.loss, rtol=1e-5, atol=1e-5)
    model.zero_grad()
    out.loss.backward()
    for name in ("sent", "echo"):  # (a random ReLU unit may be dead: every tensor gets a gradient, not each value)
        grads = [p.grad for p in model.adapter.task_parameters(name)]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def _generate(model: MultiTaskModel, names: list[str], texts: list[str], **options) -> list[list[int]]:
    prompts = [prompt_ids(model, model.tasks[n], t, None) for n, t in zip(names, texts)]
    return generate_ids(model, prompts, names, **options)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method,config", METHODS, ids=[f"{m}-{c.get('variant', '')}" for m, c in METHODS])
def test_mixed_generation_equals_alone_greedy_beam_and_cache(arch: str, method: str, config: dict) -> None:
    """Rows of two tasks in one generate() call give each row what it gives alone (greedy and 2 beams); the
    adapters act on every new token's hidden state, so decoding with the KV cache equals decoding without it."""
    model = build(arch, method, config).eval()
    greedy = {"min_new_tokens": 3}  # no row may stop at once: the tokens must be compared
    for options in (greedy, {**greedy, "num_beams": 2}):
        mixed = _generate(model, NAMES, TEXTS, **options)
        alone = [_generate(model, [n], [t], **options)[0] for n, t in zip(NAMES, TEXTS)]
        assert mixed == alone
        assert all(len(ids) >= 3 for ids in mixed)
    first = _generate(model, NAMES, TEXTS, **greedy)
    assert _generate(model, NAMES, TEXTS, use_cache=False, **greedy) == first
    swapped = _generate(model, ["echo" if n == "sent" else "sent" for n in NAMES], TEXTS, **greedy)
    assert swapped != first  # the tasks' adapters really differ


# ---------------------------------------------------------------------------------------------- MAD-X language adapters
def lm_task(arch: str) -> Task:
    """Plain language modelling in Portuguese: an empty prompt, the loss on the whole text."""
    return Task("lm_pt", kind=kind_of(arch), language="pt", prompt_template="", target_column="text")


@pytest.mark.parametrize("arch", ARCHS)
def test_madx_language_adapter_trains_with_the_lm_loss(arch: str) -> None:
    model = build(arch, "madx", MADX, extra=[lm_task(arch)]).train()
    adapter = model.adapter
    pt, en = adapter.language_parameters("pt"), adapter.language_parameters("en")
    assert all(p.requires_grad for p in pt) and not any(p.requires_grad for p in en)  # en has no language task
    assert adapter.task_state_dict("lm_pt") == {}  # a language task has no task adapter
    counts = model.trainable_parameters()["tasks"]
    assert counts["lm_pt"]["adapter"] == adapter.formula_parameter_count("lm_pt") == sum(p.numel() for p in pt)
    example = TextToTextEncoder(model.tasks["lm_pt"], TOK, 64).example({"text": "o gato dorme"})
    scored = [t for t in example["labels"] if t != -100]
    assert len(scored) >= len("o gato dorme") + 1  # the loss covers the whole text (and EOS)
    batch = {k: torch.tensor([example[k]]) for k in ("input_ids", "attention_mask", "labels")}

    model.zero_grad()
    model(**batch, task="lm_pt").loss.backward()
    assert all(p.grad is not None for p in pt)  # the invertible adapter's too (embeddings and the LM head's inverse)
    assert all(p.grad is None for name in ("sent", "echo") for p in adapter.task_parameters(name))

    model.zero_grad()
    model(**row_slice(training_batch(model, NAMES), 1), task="echo").loss.backward()  # echo is a pt task
    assert all(p.grad is None for p in pt)  # a task's loss never reaches a language adapter
    assert all(p.grad is not None for p in adapter.task_parameters("echo"))


@pytest.mark.parametrize("arch", ARCHS)
def test_madx_language_switch_on_generative_rows(arch: str) -> None:
    """`language=` swaps the language adapter (and the invertible adapter with its inverse before the LM head)
    under the same task adapter; each row of a batch may use its own language."""
    model = build(arch, "madx", MADX).eval()
    batch = training_batch(model, ["sent"] * 4)
    with torch.no_grad():
        own = model(**batch, task="sent").logits
        other = model(**batch, task="sent", language="pt").logits
        mixed = model(**batch, task="sent", language=["en", "pt", "pt", "en"]).logits
    assert not torch.allclose(own, other)
    torch.testing.assert_close(mixed[[0, 3]], own[[0, 3]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[[1, 2]], other[[1, 2]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "t5"])
@pytest.mark.parametrize("method,config", [("bottleneck", {"variant": "houlsby"}), ("madx", MADX)])
def test_save_load_same_generations(arch: str, method: str, config: dict, tmp_path) -> None:
    """A store of a generative model (task adapters; MAD-X also `languages/<lang>/`) reloads onto the same backbone
    and generates the same tokens."""
    extra = [lm_task(arch)] if method == "madx" else []
    model = build(arch, method, config, extra=extra).eval()
    model.save_pretrained(str(tmp_path))
    if method == "madx":
        assert (tmp_path / "languages" / "pt" / "adapter_model.safetensors").is_file()
    config_file = json.loads((tmp_path / "mtl_config.json").read_text())
    fresh = MultiTaskModel.from_config(CONFIGS[arch](), [_read_task(tmp_path, n) for n in config_file["tasks"]],
                                       tokenizer=TOK, adapter_method=config_file["adapter_method"],
                                       adapter_config=config_file["adapter_config"])
    fresh.backbone.load_state_dict(model.backbone.state_dict())
    _load_weights(fresh, tmp_path, config_file["tasks"])
    fresh.eval()
    assert _generate(fresh, NAMES, TEXTS, min_new_tokens=3) == _generate(model, NAMES, TEXTS, min_new_tokens=3)
    batch = training_batch(model, NAMES)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch, task=NAMES).task_logits["echo"],
                                   model(**batch, task=NAMES).task_logits["echo"], rtol=0, atol=0)
