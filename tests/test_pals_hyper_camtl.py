"""PALs, Hyperformer(++), CA-MTL: options, formulas, per-row routing in training, subset loading, errors.

The shared matrix (test_adapter_matrix.py) covers frozen backbone, counts, isolation, save/load and
mixed batches on five architectures; these tests cover what is specific to the three methods.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch
from transformers import AlbertConfig, BertConfig, OPTConfig

from helpers import tiny_tokenizer
from hf_mtl import Task, TaskConfigError
from hf_mtl.adapters import Routing, build_adapter_method, load_builtin_methods
from hf_mtl.adapters.pals.config import default_pal_heads, default_pal_size
from hf_mtl.adapters.per_row import count
from hf_mtl.modeling import MultiTaskModel


load_builtin_methods()

TINY = {
    "pals": {"pal_heads": 2},
    "hyperformer": {"reduction_factor": 8, "task_embedding_dim": 8, "projected_task_embedding_dim": 8, "task_hidden_dim": 16},
    "hyperformer++": {"reduction_factor": 8, "task_embedding_dim": 8, "projected_task_embedding_dim": 8, "task_hidden_dim": 16},
    "ca_mtl": {"max_seq_length": 16, "num_blocks": 4},
}
METHODS = sorted(TINY)
SHARED = ["hyperformer", "hyperformer++", "ca_mtl"]


def bert_config(vocab_size: int, layers: int = 2) -> BertConfig:
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    return config


def tasks() -> list[Task]:
    return [Task("sent", labels=["neg", "pos"]), Task("tags", kind="token_classification", labels=["O", "X", "Y"]),
            Task("topic", labels=["a", "b", "c"], pooling="mean")]


def build(method: str, options: dict | None = None, layers: int = 2, seed: int = 0) -> tuple[MultiTaskModel, object]:
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    config = bert_config(tok.vocab_size, layers)
    model = MultiTaskModel.from_config(config, tasks(), tokenizer=tok, adapter_method=method,
                                       adapter_config=TINY[method] if options is None else options)
    with torch.no_grad():  # leave the identity init so every part has an effect
        for p in model.adapter.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval(), tok


def encode(tok, texts=("good film", "bad food the city", "john smith in paris", "the")) -> dict:
    return dict(tok(list(texts), padding=True, return_tensors="pt"))


# ---------------------------------------------------------------------------------------------- options
def test_pal_size_default_scales_with_hidden_size() -> None:
    assert (default_pal_heads(768), default_pal_size(768, 12)) == (12, 204)  # the paper's setting
    assert (default_pal_heads(384), default_pal_size(384, 6)) == (6, 102)  # all-MiniLM-L6-v2: 17 per head, as the paper
    assert default_pal_size(384, 12) == 108  # 102 moved to the nearest multiple of 12
    assert default_pal_size(32, 2) == 8
    method = build_adapter_method("pals", bert_config(100))
    assert method.config == {"pal_size": 9, "pal_heads": 1}  # round(8.5): 9
    method = build_adapter_method("pals", bert_config(100), {"pal_heads": 12})
    assert method.config == {"pal_size": 12, "pal_heads": 12}  # at least one dimension per head


def test_pal_size_not_divisible_by_heads_names_both() -> None:
    with pytest.raises(TaskConfigError, match=r"pal_size=30 is not divisible by pal_heads=4.*Fix"):
        build_adapter_method("pals", bert_config(100), {"pal_size": 30, "pal_heads": 4})


@pytest.mark.parametrize("method", METHODS)
def test_unknown_option_lists_the_valid_ones(method: str) -> None:
    with pytest.raises(TaskConfigError, match=rf"method {re.escape(repr(method))}.*unknown option\(s\) \['bogus'\].*Fix: use only \["):
        build_adapter_method(method, bert_config(100), {**TINY[method], "bogus": 1})


@pytest.mark.parametrize("options,message", [
    ({"num_blocks": 3, "max_seq_length": 128}, r"num_blocks=3 does not divide max_seq_length=128.*Fix: use num_blocks in \[1, 2, 4, 8, 16\]"),
    ({"bottleneck_layers": "middle"}, r"`bottleneck_layers` must be one of \['top', 'all'\]"),
    ({"freeze_lower_half": "yes"}, r"`freeze_lower_half` must be true or false"),
    ({"task_embedding_dim": 0}, r"`task_embedding_dim` must be an integer >= 1"),
])
def test_ca_mtl_option_errors(options: dict, message: str) -> None:
    with pytest.raises(TaskConfigError, match=message):
        build_adapter_method("ca_mtl", bert_config(100), options)


def test_hyperformer_option_errors() -> None:
    with pytest.raises(TaskConfigError, match=r"reduction_factor=64 leaves no bottleneck for hidden size 32"):
        build_adapter_method("hyperformer", bert_config(100), {"reduction_factor": 64})
    with pytest.raises(TaskConfigError, match=r"`non_linearity` must be one of"):
        build_adapter_method("hyperformer++", bert_config(100), {"non_linearity": "sigmoid"})


def test_ca_mtl_rejects_unreachable_attention() -> None:
    method = build_adapter_method("ca_mtl", bert_config(100))
    flash = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="flash_attention_2", model_type="bert"))
    with pytest.raises(TaskConfigError, match=r"'ca_mtl'.*'flash_attention_2' attention implementation.*attn_implementation='sdpa'"):
        method.attach(types.SimpleNamespace(backbone=flash))
    with pytest.raises(TaskConfigError, match=r"'ca_mtl' cannot reach the self-attention.*'albert' has no architecture spec"):
        build_adapter_method("ca_mtl", AlbertConfig())
    with pytest.raises(TaskConfigError, match=r"'ca_mtl' cannot reach the self-attention.*'opt' has no generative"):
        build_adapter_method("ca_mtl", OPTConfig())


def test_ca_mtl_sequence_longer_than_max_seq_length() -> None:
    model, tok = build("ca_mtl", {"max_seq_length": 4, "num_blocks": 2})
    with pytest.raises(TaskConfigError, match=r"tasks \['sent'\]: a batch of sequence length 6 .* max_seq_length=4"):
        model(**encode(tok, ["john smith in paris"]), task="sent")


# ---------------------------------------------------------------------------------------------- counts
@pytest.mark.parametrize("method", SHARED)
def test_shared_count_matches_formula_and_breakdown(method: str) -> None:
    model, _ = build(method)
    report = model.trainable_parameters()
    breakdown = model.adapter.parameter_breakdown()
    assert report["shared"]["adapter"] == model.adapter.shared_formula_parameter_count() == breakdown["shared_total"]
    assert sum(breakdown["shared"].values()) == breakdown["shared_total"]
    config = model.adapter.task_config("sent")
    assert config["parameters"]["task"] == model.adapter.formula_parameter_count("sent")
    assert config["parameters"]["shared"] == breakdown["shared"]


def test_ca_mtl_conditions_upper_half_by_default() -> None:
    model, _ = build("ca_mtl", {"max_seq_length": 16, "num_blocks": 4}, layers=4)
    assert model.adapter.conditioned_layers() == [2, 3]
    assert model.adapter.bottleneck_layers() == [3]
    full, _ = build("ca_mtl", {"max_seq_length": 16, "num_blocks": 4, "freeze_lower_half": False,
                               "bottleneck_layers": "all"}, layers=4)
    assert full.adapter.bottleneck_layers() == full.adapter.conditioned_layers() == [0, 1, 2, 3]
    assert full.adapter.shared_formula_parameter_count() == count(full.adapter.shared_parameters())


# ---------------------------------------------------------------------------------------------- routing
@pytest.mark.parametrize("method", METHODS)
def test_routing_a_task_without_parameters_is_a_clear_error(method: str) -> None:
    model, _ = build(method)
    routing = Routing.of(["sent", "ghost"], torch.device("cpu"))
    with pytest.raises(TaskConfigError, match=rf"task 'ghost': adapter method {re.escape(repr(method))} has no parameters for it"):
        with model.adapter.route(routing):
            pass


@pytest.mark.parametrize("method", ["pals", "ca_mtl"])
def test_new_model_starts_as_the_frozen_backbone(method: str) -> None:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = MultiTaskModel.from_config(bert_config(tok.vocab_size), tasks(), tokenizer=tok, adapter_method=method,
                                       adapter_config=TINY[method]).eval()
    inputs = encode(tok)
    with torch.no_grad():
        plain = model.backbone(**inputs).last_hidden_state  # outside route(): hooks leave it unchanged
        routed = model._encode(model.routing(["sent", "tags", "topic", "sent"], 4, torch.device("cpu")),
                               inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"), None, None)[None]
    torch.testing.assert_close(routed, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_padding_does_not_change_a_row(method: str) -> None:
    """A row's logits do not depend on how far the batch is padded (CA-MTL crops M by position)."""
    model, tok = build(method)
    alone = encode(tok, ["good film"])
    padded = encode(tok, ["good film", "john smith in paris the city"])
    with torch.no_grad():
        a = model(**alone, task="sent").logits
        b = model(**padded, task="sent").logits[:1]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_mixed_batch_gradients_equal_task_by_task(method: str) -> None:
    """Training on a mixed batch gives each task's own parameters the gradient of its rows alone."""
    model, tok = build(method)
    model.train()  # dropout is 0 in these configs
    inputs = encode(tok)
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 0], [0, 1, 2, 0, -100, -100, -100], [2, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    labels = labels[:, : inputs["input_ids"].shape[1]]
    rows = ["sent", "tags", "topic", "sent"]
    model(**inputs, labels=labels, task=rows).loss.backward()
    mixed = {t: [p.grad.clone() for p in model.adapter.task_parameters(t)] for t in dict.fromkeys(rows)}
    for task in dict.fromkeys(rows):
        model.zero_grad(set_to_none=True)
        idx = torch.tensor([i for i, r in enumerate(rows) if r == task])
        sub = {k: v[idx] for k, v in inputs.items()}
        sub_labels = labels[idx] if task == "tags" else labels[idx, 0]
        loss = model(**sub, labels=sub_labels, task=task).loss * (len(idx) / len(rows))
        loss.backward()
        for got, param in zip(mixed[task], model.adapter.task_parameters(task)):
            torch.testing.assert_close(got, param.grad, rtol=1e-4, atol=1e-6)


def test_hyperformer_generates_once_per_task_present() -> None:
    for method in ("hyperformer", "hyperformer++"):
        model, tok = build(method)
        generator = model.adapter.hypernets if method == "hyperformer" else model.adapter.hypernet
        shapes = []
        handle = generator.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
        with torch.no_grad():
            model(**encode(tok), task=["sent", "topic", "sent", "sent"])
        handle.remove()
        # one generation per forward, for the 2 tasks present (4 rows) at every layer and position
        positions = 2 * model.adapter.num_layers
        assert shapes == [(positions, 2, shapes[0][2])] if method == "hyperformer" else [(1, positions * 2, shapes[0][2])]


def test_adamw_weight_decay_leaves_other_tasks_unchanged() -> None:
    for method in METHODS:
        model, tok = build(method)
        model.train()
        others = {t: [p.detach().clone() for p in model.adapter.task_parameters(t)] for t in ("tags", "topic")}
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
        for _ in range(2):
            model(**encode(tok), labels=torch.tensor([0, 1, 1, 0]), task="sent").loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for task, before in others.items():
            for old, new in zip(before, model.adapter.task_parameters(task)):
                assert torch.equal(old, new), f"{method}: task {task!r} moved"


# ---------------------------------------------------------------------------------------------- store
@pytest.mark.parametrize("method", METHODS)
def test_pull_a_subset_of_tasks(method: str, tmp_path: Path) -> None:
    model, tok = build(method)
    base = tmp_path / "base"
    model.backbone.save_pretrained(str(base))
    tok.save_pretrained(str(base))
    model.base_model = str(base)
    model.save_pretrained(str(tmp_path / "store"))
    layout = {p.relative_to(tmp_path / "store").as_posix() for p in (tmp_path / "store").rglob("*.safetensors")}
    assert "sent/adapter_model.safetensors" in layout
    assert ("shared/adapter_model.safetensors" in layout) == (method in SHARED)
    loaded = MultiTaskModel.from_pretrained(str(tmp_path / "store"), tasks=["topic"])
    assert loaded.task_names == ["topic"] and loaded.adapter.known_tasks() == ["topic"]
    inputs = encode(tok)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs, task="topic").logits, model(**inputs, task="topic").logits,
                                   rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_recipe_builds_the_method(method: str) -> None:
    from hf_mtl.run import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "training_args" / f"{method}.json", [])
    assert recipe.adapter_method == method and recipe.freeze_backbone
    minilm = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    adapter = build_adapter_method(method, minilm, recipe.adapter_config)
    if method == "pals":
        assert adapter.config == {"pal_size": 102, "pal_heads": 6}


# ---------------------------------------------------------------------------------------------- real data
# Hyperformer++ at the paper's lr: its one generator, fed a layer-normed (unit-scale) input and updated by every
# layer and position, moves ~10x faster under Adam than the per-position generators; at 1e-3 / 2e-3 SST-2 stayed at
# chance (0.52, also trained alone), at 3e-4: 0.765 (UPOS 0.917), at 6e-4: 0.745 (measured 2026-11-27, CPU, seed 0).
LEARNING_RATES = {"hyperformer++": 3e-4}
# SST-2 dev accuracy asked of each method (chance: 0.51). Hyperformer++ at 240 steps spreads over seeds 0-2 from 0.74 to
# 0.80 with torch's dropout masks and with hf_mtl's fast ones alike (benchmarks/results/fast_dropout_ab/quality_hyperformer_pp.md).
SST2_FLOOR = {"hyperformer++": 0.70}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_learns_sst2_and_upos_on_minilm(method: str, shared_data: Path, tmp_path: Path) -> None:
    """Each method on the frozen all-MiniLM-L6-v2: SST-2 + UD-EWT UPOS slices, a few hundred steps."""
    from hf_mtl.data.dataset import load_raw_splits
    from hf_mtl.trainer import MultiTaskTrainer
    from hf_mtl.training_args import MultiTaskTrainingArguments

    sst, ewt = shared_data / "glue_sst2", shared_data / "ud_english_ewt"
    real_tasks = [
        Task("sst2", text_column="sentence", train_file=str(sst / "train.tsv"), validation_file=str(sst / "dev.tsv"),
             max_train_samples=4000, max_eval_samples=400, extra={"quoting": "none"}),
        Task("upos", kind="token_classification", label_column="upos", train_file=str(ewt / "en_ewt-ud-train.conllu"),
             validation_file=str(ewt / "en_ewt-ud-dev.conllu"), max_train_samples=2000, max_eval_samples=200),
    ]
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone("sentence-transformers/all-MiniLM-L6-v2", real_tasks, adapter_method=method)
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), max_steps=240, per_device_train_batch_size=16, per_device_eval_batch_size=64,
        learning_rate=LEARNING_RATES.get(method, 2e-3), warmup_steps=20, max_seq_length=64, sampling_strategy="round_robin", report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True, overwrite_output_dir=True, seed=0,
    )
    trainer = MultiTaskTrainer(model, args, tasks=real_tasks, train_dataset=load_raw_splits(real_tasks, "train"),
                               eval_dataset=load_raw_splits(real_tasks, "validation"))
    trainer.train()
    metrics = trainer.evaluate()
    print(f"{method}: sst2 {metrics['eval_sst2_accuracy']:.3f}, upos {metrics['eval_upos_accuracy']:.3f}")
    # chance: 0.51 (SST-2 dev majority class), 0.17 (UPOS majority tag NOUN)
    assert metrics["eval_sst2_accuracy"] > SST2_FLOOR.get(method, 0.75), metrics
    assert metrics["eval_upos_accuracy"] > 0.80, metrics


def test_hyperformer_saves_one_generator_per_name_and_position() -> None:
    """The stacked generators are saved under the per-generator names of the paper's layout (one (n, t) weight
    and (n,) bias per layer, position and generated part), and a state in that layout loads back exactly."""
    for method in ("hyperformer", "hyperformer++"):
        model, tok = build(method)
        adapter = model.adapter
        state = adapter.shared_state_dict()
        hidden, small = adapter.hidden_size, adapter.bottleneck
        t = adapter.options.projected_task_embedding_dim
        key = "hypernets.1.ffn" if method == "hyperformer" else "hypernet"
        assert state[f"{key}.generators.down_weight.weight"].shape == (small * hidden, t)
        assert state[f"{key}.generators.ln_bias.bias"].shape == (hidden,)
        assert sum(v.numel() for v in state.values()) == adapter.shared_formula_parameter_count()
        assert all(v.is_contiguous() for v in state.values())  # safetensors writes them as they are
        model.eval()
        expected = model(**encode(tok), task="sent").logits
        other, _ = build(method)  # same seed: the same backbone and heads (a deepcopy would keep hooks on `model`)
        other.eval()
        with torch.no_grad():
            for param in other.adapter.shared_parameters():
                param.normal_()
        assert not torch.equal(other(**encode(tok), task="sent").logits, expected)
        other.adapter.load_shared_state_dict({k: v.clone() for k, v in state.items()})
        torch.testing.assert_close(other(**encode(tok), task="sent").logits, expected, rtol=0, atol=0)
