"""`prefix_tuning` on generative backbones (issue 22, parts 3 and 5): prefixes for every attention (the decoder's
self-attention; for T5/BART also the encoder's and the decoder's cross-attention), kept in the KV cache during
generation, routed per row in training and in generation (greedy and beam search)."""

from __future__ import annotations

import pytest
import torch
from transformers import BartConfig, ByT5Tokenizer, GPT2Config, LlamaConfig, MistralConfig, T5Config

from hf_mtl import Task
from hf_mtl.adapters.prefix_tuning.layer import PrefixCacheLayer
from hf_mtl.generation import generate_ids, prompt_ids
from hf_mtl.modeling import MultiTaskModel


TOKENIZER = ByT5Tokenizer()  # needs no files: vocab 384, pad 0, eos 1
COMMON = dict(vocab_size=len(TOKENIZER), pad_token_id=0, eos_token_id=1)
EOS = 1
P = 3  # num_virtual_tokens
CONFIGS = {
    "llama": lambda: LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, **COMMON),
    # sliding-window layers keep the prefix out of the cache (it would slide out): it joins the keys at every step
    "mistral": lambda: MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=256, sliding_window=6,
                                     bos_token_id=None, **COMMON),
    "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, **COMMON),
    "t5": lambda: T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0, **COMMON),
    "bart": lambda: BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                               decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                               max_position_embeddings=256, bos_token_id=1, decoder_start_token_id=1,
                               forced_eos_token_id=None, **COMMON),
}
# (attentions with prefixes, key/value heads x head size of each): GQA keys have 2 heads of 8, T5 heads of d_kv
SITES = {"llama": (2, 2 * 8), "mistral": (2, 2 * 8), "gpt2": (2, 32), "t5": (2 + 2 + 2, 4 * 8), "bart": (2 + 2 + 2, 32)}
TEXTS = ["a good film", "hello there world", "bad", "xyz abc"]
NAMES = ["sent", "echo", "echo", "sent"]


def build(arch: str, **adapter_config) -> MultiTaskModel:
    torch.manual_seed(0)
    config = CONFIGS[arch]()
    for name in ("attention_dropout", "dropout", "dropout_rate", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    kind = "seq2seq" if config.is_encoder_decoder else "causal_lm"
    tasks = [Task("sent", kind=kind, prompt_template="Review: {text} Answer:", label_column="label",
                  label_words={"0": "neg", "1": "pos"}),
             Task("echo", kind=kind, prompt_template="Copy: {text}", target_column="out")]
    model = MultiTaskModel.from_config(config, tasks, tokenizer=TOKENIZER, adapter_method="prefix_tuning",
                                       adapter_config={"num_virtual_tokens": P, **adapter_config})
    with torch.no_grad():  # prefixes far from the backbone's own keys: the tasks generate differently
        for parameter in model.adapter.parameters():
            torch.nn.init.normal_(parameter, std=2.0)
    return model.eval()


def prompts_of(model: MultiTaskModel) -> list[list[int]]:
    return [prompt_ids(model, model.tasks[name], text, 64, {"max_new_tokens": 5}) for text, name in zip(TEXTS, NAMES)]


def teacher_forced(model: MultiTaskModel, prompt: list[int], new: list[int], name: str) -> list[int]:
    """The greedy choice at each generated position, from one forward without a cache (the training path)."""
    with torch.no_grad():
        if model.is_encoder_decoder:
            start = model.backbone.generation_config.decoder_start_token_id
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([[start] + new[:-1]]),
                           task=name).logits[0]
        else:
            logits = model(input_ids=torch.tensor([prompt + new[:-1]]), task=name).logits[0, len(prompt) - 1:]
    logits[:, EOS] = float("-inf")  # generation ran with min_new_tokens: EOS was never a choice
    return logits.argmax(-1).tolist()


@pytest.mark.parametrize("arch", sorted(SITES))
@pytest.mark.parametrize("projection", [False, True])
def test_parameter_count_is_the_formula(arch: str, projection: bool) -> None:
    model = build(arch, prefix_projection=projection, encoder_hidden_size=8)
    sites, width = SITES[arch]
    out, h, e = sites * 2 * width, 32, 8
    expected = P * h + (h * e + e) + (e * out + out) if projection else P * out
    for name in ("sent", "echo"):
        assert sum(p.numel() for p in model.adapter.task_parameters(name)) == expected
        assert model.adapter.formula_parameter_count(name) == expected
    assert model.trainable_parameters()["shared"]["total"] == 0  # the backbone stays frozen


@pytest.mark.parametrize("arch", sorted(SITES))
def test_generation_equals_the_uncached_forward_and_each_row_alone(arch: str) -> None:
    """Greedy ids from a mixed batch (prefixes in the KV cache where the layer allows) == the argmax of a forward
    without cache over the same tokens (prefixes joined to the keys), row by row; rows of different tasks differ."""
    model = build(arch)
    prompts = prompts_of(model)
    mixed = generate_ids(model, prompts, NAMES, min_new_tokens=5, max_new_tokens=5)
    for prompt, name, new in zip(prompts, NAMES, mixed):
        assert len(new) == 5
        assert teacher_forced(model, prompt, new, name) == new
        assert generate_ids(model, [prompt], [name], min_new_tokens=5, max_new_tokens=5) == [new]
    other = generate_ids(model, prompts, ["echo", "sent", "sent", "echo"], min_new_tokens=5, max_new_tokens=5)
    assert other != mixed  # the prefix decides what a row generates


@pytest.mark.parametrize("arch", sorted(SITES))
def test_beam_search_mixed_equals_each_row_alone(arch: str) -> None:
    model = build(arch)
    prompts = prompts_of(model)
    options = {"num_beams": 3, "max_new_tokens": 5, "min_new_tokens": 2, "no_repeat_ngram_size": 1}
    mixed = generate_ids(model, prompts, NAMES, **options)
    alone = [generate_ids(model, [prompt], [name], **options)[0] for prompt, name in zip(prompts, NAMES)]
    assert mixed == alone
    assert mixed != generate_ids(model, prompts, ["echo", "sent", "sent", "echo"], **options)


@pytest.mark.parametrize("arch", sorted(SITES))
def test_mixed_training_batch_equals_each_task_alone(arch: str) -> None:
    model = build(arch).train()  # dropout is 0: train mode computes what eval does, with gradients
    batch = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16], [17, 18, 19, 20, 21, 22]])
    names = ["sent", "echo", "sent"]
    extra = {"decoder_input_ids": batch[:, :4]} if model.is_encoder_decoder else {}
    mixed = model(input_ids=batch, task=names, **extra)
    for name in ("sent", "echo"):
        rows = [i for i, n in enumerate(names) if n == name]
        alone = model(input_ids=batch[rows], task=name, **{k: v[rows] for k, v in extra.items()}).logits
        torch.testing.assert_close(mixed.task_logits[name], alone, rtol=1e-5, atol=1e-5)
    mixed.task_logits["echo"].sum().backward()
    assert model.adapter.prefixes["echo"].embedding.weight.grad.abs().sum() > 0
    untouched = model.adapter.prefixes["sent"].embedding.weight.grad
    assert untouched is None or not untouched.any()  # rows of "sent" do not reach the loss


@pytest.mark.parametrize("arch, cached", [("llama", "all"), ("gpt2", "all"), ("bart", "all"), ("t5", "cross"),
                                          ("mistral", "none")])
def test_prefix_lives_in_the_kv_cache(arch: str, cached: str) -> None:
    """After a cached forward each layer's cache holds [prefix ; prompt] and reports the prompt's length (positions
    and masks of later steps are those without a prefix). T5's self-attention and sliding windows keep it out."""
    model = build(arch)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    extra = {"decoder_input_ids": ids[:, :2]} if model.is_encoder_decoder else {}
    with torch.no_grad(), model.adapter.route(model.routing(["sent", "echo"], 2, ids.device)):
        cache = model.backbone(input_ids=ids, use_cache=True, **extra).cache
    caches = {"self": getattr(cache, "self_attention_cache", cache), "cross": getattr(cache, "cross_attention_cache", None)}
    length = 2 if model.is_encoder_decoder else 4
    for kind, part in caches.items():
        if part is None:
            continue
        for layer in part.layers:
            resident = cached == "all" or cached == kind
            assert isinstance(layer, PrefixCacheLayer) == resident
            if resident:
                assert layer.keys.shape[2] == P + (length if kind == "self" else 4)
                assert layer.get_seq_length() == (length if kind == "self" else 4)
    if cached == "all":
        layer = caches["self"].layers[0]
        first = next(i for i, site in enumerate(model.adapter.sites) if site.causal)  # after the encoder's sites
        start = sum(site.size for site in model.adapter.sites[:first])
        width = layer.keys.shape[1] * layer.keys.shape[3]
        for row, name in enumerate(["sent", "echo"]):  # each row starts with its own task's keys
            flat = model.adapter.prefixes[name]()[:, start:start + width]
            expected = flat.view(P, layer.keys.shape[1], layer.keys.shape[3]).transpose(0, 1)
            torch.testing.assert_close(layer.keys[row, :, :P], expected)


def test_t5_prefix_columns_have_no_position_bias_under_eager_and_sdpa() -> None:
    """T5's relative bias gets 0 on the prefix columns; the eager path adds the bias as SDPA does."""
    model = build("t5")
    eager = build("t5")
    eager.backbone.load_state_dict(model.backbone.state_dict())
    object.__setattr__(eager.backbone, "_hf_mtl_original_attention", "eager")
    for site in eager.adapter.sites:
        attention = eager.backbone.get_submodule(site.path)
        object.__setattr__(attention, "_hf_mtl_base_attention", "eager")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected = model(input_ids=ids, decoder_input_ids=ids[:, :3], task="sent").logits
        got = eager(input_ids=ids, decoder_input_ids=ids[:, :3], task="sent").logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_save_load_gives_the_same_generations(tmp_path) -> None:
    model = build("t5")
    model.backbone.save_pretrained(tmp_path / "base")
    model.base_model = str(tmp_path / "base")
    model.save_pretrained(tmp_path / "store")
    loaded = MultiTaskModel.from_pretrained(str(tmp_path / "store"), tokenizer=TOKENIZER).eval()
    prompts = prompts_of(model)
    options = {"min_new_tokens": 5, "max_new_tokens": 5}
    assert generate_ids(loaded, prompts, NAMES, **options) == generate_ids(model, prompts, NAMES, **options)
