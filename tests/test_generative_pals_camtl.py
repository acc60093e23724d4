"""PALs and CA-MTL on generative LMs (issue 22, part 3): Llama (Qwen2/Mistral share its spec), GPT-2, T5, BART.

Both route per row, so a batch mixing tasks runs in one forward in training and in one `generate` call; what
they add to the attention must hold through the KV cache: PALs keep their projected keys/values in the model's
cache (beam search reorders them with it), CA-MTL's conditional bias reads each token's position in its row
(decoder-only prompts are padded on the left when rows of several lengths generate together).
"""

from __future__ import annotations

import pytest
import torch
from transformers import ByT5Tokenizer, MistralConfig

from helpers import tiny_lm_config
from hf_mtl import MultiTaskModel
from hf_mtl.errors import TaskConfigError
from hf_mtl.generation import generate_ids, prompt_ids
from hf_mtl.tasks import Task


TOKENIZER = ByT5Tokenizer()
COMMON = dict(vocab_size=len(TOKENIZER), pad_token_id=0, eos_token_id=1)
CONFIGS = {arch: (lambda arch=arch: tiny_lm_config(arch)) for arch in ("llama", "gpt2", "t5", "bart")}
# every layer conditioned and every conditioned layer with a bottleneck: all of CA-MTL's modules in both stacks
OPTIONS = {"pals": None, "ca_mtl": {"freeze_lower_half": False, "bottleneck_layers": "all"}}
TEXTS = ["a good film", "bad", "hello world!", "xyz"]  # prompts of different lengths: left padding when mixed
TASKS = ["sent", "echo", "echo", "sent"]


def _model(method: str, arch: str, options: dict | None = None) -> MultiTaskModel:
    torch.manual_seed(0)
    config = CONFIGS[arch]()
    kind = "seq2seq" if config.is_encoder_decoder else "causal_lm"
    tasks = [Task("sent", kind=kind, prompt_template="Review: {text} Answer:", label_column="label",
                  label_words={"0": "neg", "1": "pos"}),
             Task("echo", kind=kind, prompt_template="Copy: {text}", target_column="out",
                  generation={"max_new_tokens": 6})]
    model = MultiTaskModel.from_config(config, tasks, tokenizer=TOKENIZER, adapter_method=method,
                                       adapter_config=options if options is not None else OPTIONS[method],
                                       backbone_dropout=0.0)
    if model.is_encoder_decoder:  # the tiny random T5 and BART generate one token whatever the input: spread them
        for name, parameter in model.backbone.named_parameters():
            if name.endswith("weight") and parameter.dim() == 2:
                torch.nn.init.normal_(parameter, std=0.3)
    for name, parameter in model.adapter.named_parameters():  # non-trivial: the tasks really generate differently
        torch.nn.init.normal_(parameter, std=_init_std(name))
    return model.eval()


def _init_std(name: str) -> float:
    """Large enough that every module changes the output, small enough that the output still follows the input:
    the tiny LMs' residual streams are small (token embeddings drawn with std 0.02), so CA-MTL's FiLMs and
    bottlenecks stay small, while its attention bias M is large, so that positions matter."""
    if name.startswith("pals"):
        return 0.3
    if "task_embeddings" in name or name.endswith("attention.blocks"):
        return 1.0
    return 0.0005 if name.startswith("alignment") else 0.01


def _generate(model: MultiTaskModel, texts: list[str], tasks: list[str], **options) -> list[list[int]]:
    prompts = [prompt_ids(model, model.tasks[task], text, None, options) for text, task in zip(texts, tasks)]
    return generate_ids(model, prompts, tasks, **options)


@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("method", ["pals", "ca_mtl"])
def test_mixed_generation_equals_task_by_task_and_the_kv_cache_changes_nothing(method, arch):
    model = _model(method, arch)
    for options in ({"min_new_tokens": 4}, {"num_beams": 3, "min_new_tokens": 4}):
        mixed = _generate(model, TEXTS, TASKS, **options)
        alone = [_generate(model, [text], [task], **options)[0] for text, task in zip(TEXTS, TASKS)]
        assert mixed == alone, options
        # the KV cache path (one-token steps) equals recomputing every position at every step
        assert _generate(model, TEXTS, TASKS, use_cache=False, **options) == mixed, options
    # the tasks' adapters differ: the same inputs generate differently under each task
    first = {task: [ids[:4] for ids in _generate(model, TEXTS, [task] * len(TEXTS), min_new_tokens=4)]
             for task in ("sent", "echo")}
    assert first["sent"] != first["echo"]


@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("method", ["pals", "ca_mtl"])
def test_mixed_training_batch_equals_each_task_alone_and_counts_match_the_formula(method, arch):
    model = _model(method, arch).train()
    torch.manual_seed(1)
    ids = torch.randint(2, len(TOKENIZER), (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a right-padded row, as the training collator pads
    extra = {"decoder_input_ids": torch.randint(2, len(TOKENIZER), (4, 5))} if model.is_encoder_decoder else {}
    mixed = model(input_ids=ids, attention_mask=mask, task=TASKS, **extra)
    for task in ("sent", "echo"):
        rows = [i for i, name in enumerate(TASKS) if name == task]
        alone = model(input_ids=ids[rows], attention_mask=mask[rows], task=task,
                      **{k: v[rows] for k, v in extra.items()}).logits
        torch.testing.assert_close(mixed.task_logits[task], alone, rtol=1e-5, atol=1e-5)
    for task, counts in model.trainable_parameters()["tasks"].items():
        assert counts["adapter"] == model.adapter.formula_parameter_count(task) > 0
    assert not model.backbone_trained


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5", "bart"])
@pytest.mark.parametrize("method", ["pals", "ca_mtl"])
def test_decoder_stays_causal(method, arch):
    """transformers passes an unpadded decoder no mask (SDPA's is_causal): what the methods add must not let
    position i see the tokens after it."""
    model = _model(method, arch)
    torch.manual_seed(2)
    ids = torch.randint(2, len(TOKENIZER), (1, 8))
    changed = ids.clone()
    changed[0, 5:] = (ids[0, 5:] + 7) % len(TOKENIZER)
    if model.is_encoder_decoder:
        source = torch.randint(2, len(TOKENIZER), (1, 6))
        logits = [model(input_ids=source, decoder_input_ids=x, task="sent").logits for x in (ids, changed)]
    else:
        logits = [model(input_ids=x, task="sent").logits for x in (ids, changed)]
    torch.testing.assert_close(logits[0][:, :5], logits[1][:, :5])
    assert not torch.allclose(logits[0][:, 5:], logits[1][:, 5:])


def test_pals_keep_their_keys_and_values_in_the_models_cache():
    """A decoder-only LM with N layers: the cache holds N layers of the model and N of the PALs after a step."""
    model = _model("pals", "llama")
    ids = torch.randint(2, len(TOKENIZER), (2, 5))
    with model.adapter.route(model.routing("sent", 2, ids.device)):
        cache = model.backbone(input_ids=ids, use_cache=True).past_key_values
    layers = model.config.num_hidden_layers
    assert len(cache.layers) == 2 * layers
    pal_keys = cache.layers[layers].keys  # (B, pal_heads, L, d_s / pal_heads)
    assert pal_keys.shape[0] == 2 and pal_keys.shape[2] == 5
    assert pal_keys.shape[1] * pal_keys.shape[3] == model.adapter.options.pal_size


def test_pals_count_every_layer_of_both_stacks():
    model = _model("pals", "t5")
    size, hidden, layers = model.adapter.options.pal_size, 32, 2 + 2  # T5: 2 encoder + 2 decoder layers
    expected = 2 * hidden * size + size + hidden + layers * 3 * (size * size + size)
    assert model.adapter.formula_parameter_count("sent") == expected == sum(
        p.numel() for p in model.adapter.task_parameters("sent"))


def test_ca_mtl_conditions_the_upper_half_of_each_stack_by_default():
    model = _model("ca_mtl", "t5", options={})
    assert model.adapter.conditioned_layers() == [1, 3]  # layer 1 of the encoder, layer 1 (3) of the decoder
    assert model.adapter.bottleneck_layers() == [1, 3]  # "top": the last layer of each stack
    assert sorted(model.adapter.layers) == ["1", "3"]


def test_ca_mtl_refuses_a_generation_longer_than_its_positions():
    model = _model("ca_mtl", "gpt2", options={"max_seq_length": 16, "num_blocks": 4})
    with pytest.raises(TaskConfigError, match="max_seq_length=16"):
        _generate(model, ["a longer prompt than sixteen"], ["sent"])


def test_ca_mtl_on_an_eager_t5_keeps_its_relative_position_bias():
    """CA-MTL routes T5's attention through hf_mtl's attention function; with the eager implementation that
    function must still add T5's relative position bias (a fresh CA-MTL model is its frozen backbone)."""
    def logits(method: str) -> torch.Tensor:
        torch.manual_seed(0)
        config = CONFIGS["t5"]()
        config._attn_implementation = "eager"
        model = MultiTaskModel.from_config(config, [Task("s", kind="seq2seq", target_column="out")],
                                           tokenizer=TOKENIZER, adapter_method=method).eval()
        return model(input_ids=ids, decoder_input_ids=decoder_ids, task="s").logits

    ids, decoder_ids = torch.randint(2, 300, (2, 6)), torch.randint(2, 300, (2, 4))
    torch.testing.assert_close(logits("ca_mtl"), logits("none"))


@pytest.mark.parametrize("method,arch", [("pals", "t5"), ("ca_mtl", "llama")])
def test_save_and_load_give_the_same_generations(method, arch, tmp_path):
    import json

    from hf_mtl.store.load import _load_weights, _read_task

    model = _model(method, arch)
    model.save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "mtl_config.json").read_text())
    tasks = [_read_task(tmp_path, name) for name in config["tasks"]]
    torch.manual_seed(5)  # other random adapters: only the loaded weights can make the generations equal
    loaded = MultiTaskModel.from_config(model.config, tasks, tokenizer=TOKENIZER, adapter_method=method,
                                        adapter_config=config["adapter_config"])
    loaded.backbone.load_state_dict(model.backbone.state_dict())
    _load_weights(loaded, tmp_path, config["tasks"])
    loaded.eval()
    for options in ({}, {"num_beams": 2}):
        assert _generate(loaded, TEXTS, TASKS, **options) == _generate(model, TEXTS, TASKS, **options)


def _windowed() -> MistralConfig:
    """A Mistral whose sliding window (4 positions) is shorter than the prompts: its KV cache drops keys."""
    return MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, sliding_window=4,
                         **COMMON)


def test_pals_follow_a_sliding_window_through_the_kv_cache(monkeypatch):
    monkeypatch.setitem(CONFIGS, "mistral-window", _windowed)
    model = _model("pals", "mistral-window")
    mixed = _generate(model, TEXTS, TASKS, min_new_tokens=4)
    assert mixed == [_generate(model, [text], [task], min_new_tokens=4)[0] for text, task in zip(TEXTS, TASKS)]
    assert _generate(model, TEXTS, TASKS, use_cache=False, min_new_tokens=4) == mixed


def test_ca_mtl_refuses_a_sliding_window_shorter_than_its_positions(monkeypatch):
    monkeypatch.setitem(CONFIGS, "mistral-window", _windowed)
    with pytest.raises(TaskConfigError, match=r"'ca_mtl' on this mistral backbone: .*sliding window of 4 .*"
                                              r"max_seq_length=128.*Fix: set adapter_config max_seq_length"):
        _model("ca_mtl", "mistral-window")
    assert _model("ca_mtl", "mistral-window", options={"max_seq_length": 4, "num_blocks": 2}).adapter is not None
