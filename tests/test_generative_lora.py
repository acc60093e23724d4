"""`lora` on generative backbones (issue 22 parts 3, 5, 6): targets and parameter counts on Llama, GPT-2, T5 and
BART, mixed-task generation (greedy and beam) equal to generating each row alone, task folders that are plain PEFT
adapters, and `hf-mtl export` of a task into a standalone AutoModelForCausalLM / AutoModelForSeq2SeqLM.

Tiny random models built from configs with ByT5's tokenizer (no files); the adapters get a large random init so
that tasks really generate differently.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    BartConfig,
    ByT5Tokenizer,
    GPT2Config,
    LlamaConfig,
    T5Config,
)

from hf_mtl import Task
from hf_mtl.adapters.lora.fast import FastLoraLinear
from hf_mtl.cli import main
from hf_mtl.errors import StoreError
from hf_mtl.generation import generate_ids, prompt_ids
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.store.export import export_task
from hf_mtl.store.layout import ADAPTER_CONFIG, CONFIG_NAME, HF_MTL_ADAPTER
from hf_mtl.store.manifest import file_entry


TOK = ByT5Tokenizer()  # vocab 384, pad 0, eos 1, no bos: needs no files
_COMMON = dict(vocab_size=len(TOK), pad_token_id=0, eos_token_id=1)
CONFIGS = {
    "llama": lambda: LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, **_COMMON),
    "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, **_COMMON),
    "t5": lambda: T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0, **_COMMON),
    "bart": lambda: BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                               decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                               bos_token_id=1, decoder_start_token_id=1, forced_eos_token_id=None, **_COMMON),
}
ARCHS = sorted(CONFIGS)
# Each family's LoRA-wrapped modules in layer 0 of each stack (PEFT's own defaults match the same ones: gpt2
# `c_attn`, t5 `q`/`v` in self- and cross-attention, bart `q_proj`/`v_proj` in all three attentions).
TARGETS = {
    "llama": {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"},
    "gpt2": {"transformer.h.0.attn.c_attn"},
    "t5": {"encoder.block.0.layer.0.SelfAttention.q", "encoder.block.0.layer.0.SelfAttention.v",
           "decoder.block.0.layer.0.SelfAttention.q", "decoder.block.0.layer.0.SelfAttention.v",
           "decoder.block.0.layer.1.EncDecAttention.q", "decoder.block.0.layer.1.EncDecAttention.v"},
    "bart": {f"model.{stack}.layers.0.{attention}.{p}" for stack, attention in
             (("encoder", "self_attn"), ("decoder", "self_attn"), ("decoder", "encoder_attn")) for p in ("q_proj", "v_proj")},
}
ROWS = [{"text": "good film"}, {"text": "abc"}, {"text": "a dull movie"}, {"text": "xy z"}]
NAMES = ["sent", "echo", "echo", "sent"]


def tasks(kind: str, echo_generation: dict | None = None) -> list[Task]:
    return [Task("sent", kind=kind, prompt_template="Review: {text} Answer:", label_column="label",
                 label_words={"0": "neg", "1": "pos"}),
            Task("echo", kind=kind, prompt_template="Copy: {text}", target_column="out",
                 generation=echo_generation or {"max_new_tokens": 7})]


def kind_of(config) -> str:
    return "seq2seq" if config.is_encoder_decoder else "causal_lm"


def auto_of(config):
    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM


def randomize(model: MultiTaskModel, seed: int = 1) -> None:
    """LoRA's B starts at zero (the adapter is the identity) and tiny random LMs give near-tied logits: a large
    random init makes each task's adapter change what is generated."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name in model.task_names:
            for p in model.adapter.task_parameters(name):
                torch.nn.init.normal_(p, std=0.5)


def build(arch: str, adapter_config: dict | None = None, **task_options) -> MultiTaskModel:
    torch.manual_seed(0)
    config = CONFIGS[arch]()
    model = MultiTaskModel.from_config(config, tasks(kind_of(config), **task_options), tokenizer=TOK,
                                       adapter_method="lora", adapter_config=adapter_config or {"r": 4})
    randomize(model)
    return model.eval()


def saved_base(arch: str, root: Path) -> Path:
    """A tiny LM saved as a pretrained model (weights + tokenizer), for stores that name it as their base."""
    torch.manual_seed(0)
    config = CONFIGS[arch]()
    auto_of(config).from_config(config).save_pretrained(root)
    TOK.save_pretrained(root)
    return root


def build_on(base: Path, adapter_config: dict | None = None, **task_options) -> MultiTaskModel:
    model = MultiTaskModel.from_backbone(str(base), tasks(kind_of(_config(base)), **task_options),
                                         adapter_method="lora", adapter_config=adapter_config or {"r": 4})
    randomize(model)
    return model.eval()


def _config(base: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base)


def prompts_of(model: MultiTaskModel, names: list[str], rows: list[dict]) -> list[list[int]]:
    return [prompt_ids(model, model.tasks[n], row, None) for n, row in zip(names, rows)]


# ----------------------------------------------------------------------------------- targets, parameter counts
@pytest.mark.parametrize("arch", ARCHS)
def test_lora_targets_and_parameter_count_on_every_generative_family(arch: str) -> None:
    model = build(arch)
    wrapped = {name for name, module in model.backbone.named_modules() if isinstance(module, LoraLayer)}
    assert {name for name in wrapped if re.search(r"\.(layers|h|block)\.0\.", name)} == TARGETS[arch]
    for name in ("sent", "echo"):
        counted = sum(p.numel() for p in model.adapter.task_parameters(name))
        assert counted == model.adapter.formula_parameter_count(name) == model.trainable_parameters()["tasks"][name]["total"]
        assert counted > 0
    assert not model.backbone_trained  # frozen: only the adapters train
    layers = [module for name, module in model.backbone.named_modules() if name in wrapped]
    if arch == "gpt2":  # fused Conv1D (weight (in, out)): PEFT's own layer with fan_in_fan_out, not FastLoraLinear
        assert model.backbone.peft_config["sent"].fan_in_fan_out is True
        assert not any(isinstance(layer, FastLoraLinear) for layer in layers)
        assert model.adapter.formula_parameter_count("sent") == 2 * 4 * (32 + 3 * 32)  # 2 layers x r·(in + out)
    else:
        assert all(isinstance(layer, FastLoraLinear) for layer in layers)


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_lora_formula_follows_explicit_targets_on_generative_families(arch: str) -> None:
    targets = {"gpt2": ["c_attn", "c_proj", "c_fc"], "t5": ["q", "k", "v", "o", "wi", "wo"]}[arch]
    model = build(arch, {"r": 2, "target_modules": targets, "rank_pattern": {targets[0]: 3}})
    counted = sum(p.numel() for p in model.adapter.task_parameters("sent"))
    assert counted == model.adapter.formula_parameter_count("sent")


# ------------------------------------------------------------------------------------------ mixed generation
@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_task_generation_equals_each_row_alone(arch: str, beams: int) -> None:
    """Rows of two tasks in one batched generate (KV cache, beams expanded per row) give each row the tokens it
    gets alone; the adapters are picked per row inside each forward (PEFT's adapter_names), so the whole batch
    takes one pass per new token, not one per adapter."""
    model = build(arch)
    prompts = prompts_of(model, NAMES, ROWS)
    options = {"num_beams": beams, "suppress_tokens": [0, 2]}  # no pad/unk: every row shows its adapter's tokens
    if beams > 1:
        options["max_new_tokens"] = 6  # beam-search rows share one batch only when all their settings agree
    calls = []
    handle = model.backbone.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        mixed = generate_ids(model, prompts, NAMES, **options)
    finally:
        handle.remove()
    assert len(calls) <= 7  # one forward per new token for all rows of both tasks
    assert mixed == [generate_ids(model, [p], [n], **options)[0] for p, n in zip(prompts, NAMES)]
    swapped = generate_ids(model, prompts, ["echo" if n == "sent" else "sent" for n in NAMES], **options)
    assert all(a != b for a, b in zip(swapped, mixed))  # each task's adapter really changes what is generated


def test_mixed_generation_with_dora_takes_the_grouped_path() -> None:
    """DoRA is refused by PEFT's adapter_names path: each LoRA layer recomputes its rows per adapter stack."""
    model = build("llama", {"r": 2, "use_dora": True})
    prompts = prompts_of(model, NAMES, ROWS)
    for beams in (1, 2):
        mixed = generate_ids(model, prompts, NAMES, num_beams=beams)
        assert mixed == [generate_ids(model, [p], [n], num_beams=beams)[0] for p, n in zip(prompts, NAMES)]


# ---------------------------------------------------------------------------------------- plain PEFT folders
def _forward_kwargs(config) -> dict[str, torch.Tensor]:
    kwargs = {"input_ids": torch.tensor([[40, 41, 42, 43, 44, 1], [50, 51, 52, 53, 54, 1]])}
    if config.is_encoder_decoder:
        kwargs["decoder_input_ids"] = torch.tensor([[config.decoder_start_token_id, 60, 61], [config.decoder_start_token_id, 62, 63]])
    return kwargs


def _peft_load(auto, base: Path, folder: Path, caplog) -> tuple[PeftModel, list[str]]:
    """PeftModel.from_pretrained(base, folder), with every warning PEFT gave (warnings and log records)."""
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(auto.from_pretrained(base), str(folder)).eval()
    return peft_model, [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_task_folder_is_a_plain_peft_adapter(arch: str, tmp_path: Path, caplog) -> None:
    base = saved_base(arch, tmp_path / "base")
    model = build_on(base)
    model.save_pretrained(tmp_path / "store")
    config = _config(base)
    fields = {f for f in LoraConfig.__dataclass_fields__}
    for name in ("sent", "echo"):
        folder = tmp_path / "store" / name
        saved = json.loads((folder / ADAPTER_CONFIG).read_text())
        assert set(saved) <= fields, set(saved) - fields  # only LoraConfig's fields
        assert saved["task_type"] == ("SEQ_2_SEQ_LM" if config.is_encoder_decoder else "CAUSAL_LM")
        ours = json.loads((folder / HF_MTL_ADAPTER).read_text())
        assert ours["adapter_method"] == "lora" and ours["hf_mtl_adapter_config"] == {"r": 4}
        assert ours["base_model_config"]["model_type"] == arch
        for weights in folder.glob("*.safetensors"):  # the adapter's LoRA factors, and an empty head (the LM's own)
            with safe_open(str(weights), framework="pt") as f:
                assert all(".lora_A." in key or ".lora_B." in key for key in f.keys()), weights
        peft_model, messages = _peft_load(auto_of(config), base, folder, caplog)
        assert not [m for m in messages if "nexpected keyword" in m], messages
        kwargs = _forward_kwargs(config)
        with torch.no_grad():
            expected = model(**kwargs, task=name).logits
            torch.testing.assert_close(peft_model(**kwargs).logits, expected, rtol=1e-4, atol=1e-4)  # FastLoraLinear: W₀ + sBA first
            assert not torch.allclose(auto_of(config).from_pretrained(base)(**kwargs).logits, expected, atol=1e-2)
    loaded = MultiTaskModel.from_pretrained(str(tmp_path / "store"))  # hf_mtl reads its keys back from both files
    kwargs = _forward_kwargs(config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**kwargs, task="echo").logits, model(**kwargs, task="echo").logits, rtol=0, atol=0)


def _rewrite(store: Path, files: dict[str, dict | None]) -> None:
    """Replace (or delete, None) task files of a store and update its manifest, as a store of another version would be."""
    config = json.loads((store / CONFIG_NAME).read_text())
    for rel, content in files.items():
        path = store / rel
        if content is None:
            path.unlink()
            config["files"].pop(rel)
        else:
            path.write_text(json.dumps(content))
            config["files"][rel] = file_entry(path)
    (store / CONFIG_NAME).write_text(json.dumps(config))


def test_stores_with_hf_mtl_keys_in_adapter_config_still_load_and_foreign_bases_are_refused(tmp_path: Path) -> None:
    base = saved_base("llama", tmp_path / "base")
    model = build_on(base)
    store = tmp_path / "store"
    model.save_pretrained(store)
    peft_config = json.loads((store / "sent" / ADAPTER_CONFIG).read_text())
    ours = json.loads((store / "sent" / HF_MTL_ADAPTER).read_text())
    # written before hf_mtl_adapter.json existed: hf_mtl's keys inside adapter_config.json
    _rewrite(store, {f"sent/{ADAPTER_CONFIG}": {**peft_config, **ours}, f"sent/{HF_MTL_ADAPTER}": None})
    kwargs = _forward_kwargs(model.config)
    loaded = MultiTaskModel.from_pretrained(str(store), tasks=["sent"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**kwargs, task="sent").logits, model(**kwargs, task="sent").logits, rtol=0, atol=0)
    # the keys hf_mtl checks are read from hf_mtl_adapter.json: another base model is named and refused
    model.save_pretrained(store)
    wrong = {**ours, "base_model_config": {**ours["base_model_config"], "name": "llama-big", "hidden_size": 64}}
    _rewrite(store, {f"sent/{HF_MTL_ADAPTER}": wrong})
    with pytest.raises(StoreError, match=r"hf_mtl_adapter.json: task 'sent' was trained on the base model llama-big"):
        MultiTaskModel.from_pretrained(str(store), tasks=["sent"])
    _rewrite(store, {f"sent/{HF_MTL_ADAPTER}": {**ours, "adapter_method": "bottleneck"}})
    with pytest.raises(StoreError, match="saved with adapter_method 'bottleneck'"):
        MultiTaskModel.from_pretrained(str(store), tasks=["sent"])


# ------------------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("arch", ARCHS)
def test_export_merges_a_lora_task_into_a_standalone_lm(arch: str, tmp_path: Path) -> None:
    """`hf-mtl export --task T` writes an AutoModelForCausalLM / AutoModelForSeq2SeqLM folder (weights, config,
    tokenizer, the task's generation config) whose plain `generate` gives hf_mtl's tokens for that task."""
    base = saved_base(arch, tmp_path / "base")
    model = build_on(base, echo_generation={"max_new_tokens": 6, "num_beams": 2})
    model.save_pretrained(tmp_path / "store")
    config = _config(base)
    rows = [{"text": "hello"}, {"text": "a b c d"}]
    for name in ("sent", "echo"):
        out = tmp_path / f"export-{name}"
        if name == "echo":
            assert main(["export", str(tmp_path / "store"), "--task", name, str(out)]) == 0
        else:
            assert export_task(tmp_path / "store", name, out) == str(out)
        files = {p.name for p in out.iterdir()}
        assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"} <= files
        exported = auto_of(config).from_pretrained(out).eval()
        assert not any("lora" in key for key in exported.state_dict())
        assert exported.generation_config.num_beams == (2 if name == "echo" else 1)
        prompts = prompts_of(model, [name] * len(rows), rows)
        for prompt, expected in zip(prompts, generate_ids(model, prompts, [name] * len(rows))):
            with torch.no_grad():  # the exported folder's own generation config: the task's settings
                sequence = exported.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
            new = sequence[0, 1 if config.is_encoder_decoder else len(prompt):].tolist()
            assert new[:len(expected)] == expected and (len(new) == len(expected) or new[len(expected)] == 1)
        kwargs = _forward_kwargs(config)
        with torch.no_grad():
            torch.testing.assert_close(exported(**kwargs).logits, model(**kwargs, task=name).logits, rtol=1e-4, atol=1e-4)
