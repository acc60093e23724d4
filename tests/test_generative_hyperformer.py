"""`hyperformer` and `hyperformer++` on generative backbones (issue 22, part 3): adapters generated per task and
layer in every block of every stack (T5/BART: encoder and decoder, as in the paper; Llama/GPT-2: the decoder),
mixed-task batches in training and in generation (greedy, beam, KV cache) equal to task-by-task, exact parameter
formulas, and the build-time refusal of families without a spec."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BartConfig,
    ByT5Tokenizer,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Qwen2Config,
    T5Config,
)

from hf_mtl import MultiTaskModel, Task
from hf_mtl.errors import TaskConfigError
from hf_mtl.generation import generate_ids, prompt_ids
from hf_mtl.modeling.arch import get_generative_spec, layers_of, resolve


TOK = ByT5Tokenizer()
COMMON = dict(vocab_size=len(TOK), pad_token_id=0, eos_token_id=1)
# dropout off, so that training-mode logits of a mixed batch can be compared with task-by-task ones; `deep`: an
# encoder-decoder with more decoder than encoder layers (the decoder's layers get their own ids after the encoder's;
# transformers 5.25's cache cannot generate with such a T5 or BART, so generation tests use equal depths)
CONFIGS = {
    "llama": lambda deep=False: LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, **COMMON),
    "gpt2": lambda deep=False: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, resid_pdrop=0.0,
                               embd_pdrop=0.0, attn_pdrop=0.0, **COMMON),
    "t5": lambda deep=False: T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2 + deep, num_heads=4,
                           decoder_start_token_id=0, dropout_rate=0.0, **COMMON),
    "bart": lambda deep=False: BartConfig(d_model=32, encoder_layers=2, decoder_layers=2 + deep, encoder_attention_heads=4,
                               decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                               max_position_embeddings=256, bos_token_id=1, decoder_start_token_id=1,
                               forced_eos_token_id=None, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                               **COMMON),
}
METHODS = ("hyperformer", "hyperformer++")
OPTIONS = {"reduction_factor": 4, "task_embedding_dim": 8, "projected_task_embedding_dim": 8, "task_hidden_dim": 16}
TEXTS = ["a good film", "the cat sleeps on the mat", "dull", "no way at all"]
NAMES = ["sent", "echo", "echo", "sent"]


def tasks(kind: str) -> list[Task]:
    return [Task("sent", kind=kind, prompt_template="Review: {text} Answer:", label_column="label",
                 label_words={"0": "neg", "1": "pos"}),
            Task("echo", kind=kind, prompt_template="Copy: {text}", target_column="out",
                 generation={"max_new_tokens": 7})]


def build(arch: str, method: str, deep: bool = False) -> MultiTaskModel:
    """A tiny model that generates varied tokens (backbone matrices N(0, 0.3): the default init gives near-tied logits
    and one repeated token) with adapters far from the identity (N(0, 0.5)), so the two tasks generate differently."""
    torch.manual_seed(0)
    config = CONFIGS[arch](deep)
    kind = "seq2seq" if config.is_encoder_decoder else "causal_lm"
    model = MultiTaskModel.from_config(config, tasks(kind), tokenizer=TOK, adapter_method=method,
                                       adapter_config=OPTIONS)
    with torch.no_grad():
        for param in model.backbone.parameters():
            if param.dim() == 2:
                torch.nn.init.normal_(param, std=0.3)
        for param in model.adapter.parameters():
            torch.nn.init.normal_(param, std=0.5)
    return model.eval()


def batch(model: MultiTaskModel, rows: int = 5) -> dict[str, torch.Tensor]:
    """Random token ids; the first half of a decoder-only row is its (unscored) prompt."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, len(TOK), (rows, 9), generator=generator)
    if model.is_encoder_decoder:
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                "labels": torch.randint(3, len(TOK), (rows, 6), generator=generator)}
    labels = input_ids.clone()
    labels[:, :4] = -100
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def prompts(model: MultiTaskModel, texts: list[str], names: list[str]) -> list[list[int]]:
    return [prompt_ids(model, model.tasks[name], text, None) for text, name in zip(texts, names)]


# ---------------------------------------------------------------------------------------------- placement
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_adapters_sit_after_attention_and_ffn_of_every_block_of_every_stack(arch: str) -> None:
    model = build(arch, "hyperformer", deep=True)
    spec = get_generative_spec(model.config)
    blocks = [layer for stack in spec.stacks for layer in layers_of(model.backbone, stack)]
    assert model.adapter.num_layers == len(blocks) == (5 if model.is_encoder_decoder else 2)
    assert model.adapter.hypernets.weight.shape[0] == 2 * len(blocks)  # one generator per block and position
    hooked = [m for stack in spec.stacks for layer in layers_of(model.backbone, stack)
              for m in (resolve(layer, stack.attention_output), resolve(layer, stack.ffn_output))]
    assert all(len(m._forward_hooks) == 1 for m in hooked)
    plus = build(arch, "hyperformer++", deep=True)
    assert plus.adapter.layer_embeddings.num_embeddings == len(blocks)  # l_i over both stacks


@pytest.mark.parametrize("method", METHODS)
def test_the_decoder_layers_have_their_own_ids_after_the_encoder_layers(method: str) -> None:
    """Layer id 2 (T5: the decoder's first block, after the encoder's 2) changes the decoder only: moving its
    generated adapter leaves the encoder's output as it was and changes the logits."""
    model = build("t5", method, deep=True)
    inputs = batch(model)
    names = ["sent"] * 5

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), model.adapter.route(model.routing(names, 5, torch.device("cpu"))):
            encoded = model.backbone.get_encoder()(input_ids=inputs["input_ids"]).last_hidden_state
        return encoded, model(**inputs, task=names).logits

    encoded, logits = run()
    with torch.no_grad():
        if method == "hyperformer":  # generators of layer 2's two positions: rows 4 and 5 of the stack
            model.adapter.hypernets.bias[4:6] += 1.0
        else:
            model.adapter.layer_embeddings.weight[2] += 1.0
    moved_encoded, moved_logits = run()
    assert torch.equal(encoded, moved_encoded)
    assert not torch.allclose(logits, moved_logits)


# ---------------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("method", METHODS)
def test_parameter_counts_follow_the_formula(arch: str, method: str) -> None:
    model = build(arch, method)
    counts = model.trainable_parameters()
    for name in ("sent", "echo"):
        assert counts["tasks"][name]["adapter"] == model.adapter.formula_parameter_count(name) == 8
    assert counts["shared"]["adapter"] == model.adapter.shared_formula_parameter_count()
    assert counts["shared"]["backbone"] == 0  # frozen


# ---------------------------------------------------------------------------------------------- mixed batches
@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rows", [["sent", "echo", "sent", "echo", "echo"], ["sent", "sent", "echo", "echo", "echo"]],
                         ids=["interleaved", "grouped"])  # per-row gathers / each task's range of rows (CPU)
def test_mixed_training_batch_equals_task_by_task(arch: str, method: str, rows: list[str]) -> None:
    """One forward of a mixed batch in training mode: each task's logits and loss are those of its rows alone,
    and each task's embedding gets exactly the gradient of its own rows."""
    model = build(arch, method).train()
    inputs = batch(model)
    mixed = model(**inputs, task=rows)
    mixed.loss.backward()
    grads = {t: model.adapter.task_embeddings[t].grad.clone() for t in ("sent", "echo")}
    for name in ("sent", "echo"):
        model.zero_grad(set_to_none=True)
        index = torch.tensor([i for i, r in enumerate(rows) if r == name])
        single = model(**{k: v[index] for k, v in inputs.items()}, task=name)
        torch.testing.assert_close(mixed.task_logits[name], single.logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mixed.task_losses[name], single.loss, rtol=1e-5, atol=1e-5)
        (single.loss * len(index) / len(rows)).backward()
        torch.testing.assert_close(grads[name], model.adapter.task_embeddings[name].grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("method", METHODS)
def test_mixed_generation_equals_each_row_alone(arch: str, method: str) -> None:
    """Greedy with each task's own `max_new_tokens` (rows of both tasks in one batch, stopped per row), and beam
    search (each row's beams keep its task): every row gives what it gives alone."""
    model = build(arch, method)
    ids = prompts(model, TEXTS, NAMES)
    for options in ({}, {"max_new_tokens": 5, "num_beams": 2}):
        mixed = generate_ids(model, ids, NAMES, **options)
        assert mixed == [generate_ids(model, [p], [n], **options)[0] for p, n in zip(ids, NAMES)], options
    # the adapters are live in generation: the same prompts give other tokens under the other task
    swapped = ["echo" if n == "sent" else "sent" for n in NAMES]
    assert generate_ids(model, ids, swapped, **options) != mixed


@pytest.mark.parametrize("config_cls", [Qwen2Config, MistralConfig])
def test_qwen2_and_mistral_take_the_llama_layout(config_cls: type) -> None:
    torch.manual_seed(0)
    config = config_cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, **COMMON)
    model = MultiTaskModel.from_config(config, tasks("causal_lm"), tokenizer=TOK, adapter_method="hyperformer++",
                                       adapter_config=OPTIONS).eval()
    with torch.no_grad():
        for param in model.adapter.parameters():
            torch.nn.init.normal_(param, std=0.5)
    assert all(len(resolve(layer, path)._forward_hooks) == 1 for layer in model.backbone.model.layers
               for path in ("self_attn", "mlp"))
    ids = prompts(model, TEXTS, NAMES)
    assert generate_ids(model, ids, NAMES) == [generate_ids(model, [p], [n])[0] for p, n in zip(ids, NAMES)]


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_generation_with_the_kv_cache_equals_full_recomputation(arch: str) -> None:
    """With the cache each step feeds only the new token: its hidden states still pass the row's adapters."""
    model = build(arch, "hyperformer++")
    ids = prompts(model, TEXTS, NAMES)
    assert generate_ids(model, ids, NAMES, max_new_tokens=6) == generate_ids(model, ids, NAMES, max_new_tokens=6,
                                                                              use_cache=False)


def test_save_and_load_give_the_same_generations(tmp_path) -> None:
    model = build("t5", "hyperformer++")
    ids = prompts(model, TEXTS, NAMES)
    model.backbone.save_pretrained(str(tmp_path / "base"))  # the store rebuilds the frozen backbone from here
    model.base_model = str(tmp_path / "base")
    model.save_pretrained(str(tmp_path / "store"))
    loaded = MultiTaskModel.from_pretrained(str(tmp_path / "store"), tokenizer=TOK).eval()
    assert generate_ids(loaded, ids, NAMES, num_beams=2) == generate_ids(model, ids, NAMES, num_beams=2)


# ---------------------------------------------------------------------------------------------- refusal
@pytest.mark.parametrize("method", METHODS)
def test_a_family_without_a_spec_is_refused_at_build_time(method: str) -> None:
    config = OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
                       max_position_embeddings=64, **COMMON)
    with pytest.raises(TaskConfigError) as err:
        MultiTaskModel.from_config(config, tasks("causal_lm"), tokenizer=TOK, adapter_method=method,
                                   adapter_config=OPTIONS)
    message = str(err.value)
    assert method in message and "'opt'" in message and "GenerativeSpec" in message
