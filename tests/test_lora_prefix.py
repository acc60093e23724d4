"""Method-specific tests of `lora` (PEFT LoRA adapters) and `prefix_tuning` (attention-modifier prefixes).

The shared matrix (test_adapter_matrix.py) covers frozen backbones, parameter counts, isolation of
tasks, save/load and per-row routing; here: PEFT's own loader on our saved adapters, DoRA, language
adapters, LoRA mixed batches, prefix specifics, option errors and foreign base models.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, BertConfig, RobertaConfig

from helpers import assert_mixed_equals_single, tiny_tokenizer
from hf_mtl import Task
from hf_mtl.errors import StoreError, TaskConfigError
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.store.load import _load_weights


_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tasks(language: bool = False) -> list[Task]:
    return [
        Task("sent", labels=["neg", "pos"], language="en" if language else None),
        Task("ner", kind="token_classification", labels=["O", "B-PER", "I-PER"], language="de" if language else None),
        Task("topic", labels=["a", "b", "c"], pooling="mean", language="en" if language else None),
    ]


def make(method: str, adapter_config: dict, task_list: list[Task] | None = None, config=None, seed: int = 0):
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    config = config or BertConfig(vocab_size=tok.vocab_size, **_SMALL)
    model = MultiTaskModel.from_config(config, task_list or tasks(), tokenizer=tok, adapter_method=method,
                                       adapter_config=adapter_config)
    with torch.no_grad():  # LoRA's B and DoRA start as the identity: perturb so that adapters matter
        for p in model.adapter.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval(), tok


def encode(tok, texts=("good film", "bad food", "john smith in paris", "the city of london")):
    return dict(tok(list(texts), padding=True, return_tensors="pt"))


def hidden(model: MultiTaskModel, inputs: dict, task: str, language: str | None = None) -> torch.Tensor:
    routing = model.routing(task, inputs["input_ids"].shape[0], inputs["input_ids"].device)
    if language is not None:
        routing.languages = [language] * inputs["input_ids"].shape[0]
    with torch.no_grad(), model.adapter.route(routing):
        return model.backbone(**inputs).last_hidden_state


# ---------------------------------------------------------------------------------------------------- lora
@pytest.mark.parametrize("adapter_config", [{"r": 4}, {"r": 2, "use_dora": True, "lora_alpha": 4}])
def test_lora_store_loads_with_plain_peft(adapter_config: dict, tmp_path: Path) -> None:
    """`PeftModel.from_pretrained(AutoModel base, "<store>/<task>")` gives the same backbone output."""
    from peft import LoraConfig, PeftModel

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    base_dir = tmp_path / "base"
    AutoModel.from_config(BertConfig(vocab_size=tok.vocab_size, **_SMALL)).save_pretrained(base_dir)
    model = MultiTaskModel.from_backbone(str(base_dir), tasks(), tokenizer=tok, adapter_method="lora",
                                         adapter_config=adapter_config).eval()
    with torch.no_grad():
        for p in model.adapter.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "store")
    saved = json.loads((tmp_path / "store" / "sent" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["task_type"] is None  # the bare PeftModel: the heads are hf_mtl's
    assert saved["base_model_name_or_path"] == str(base_dir) and saved["r"] == adapter_config["r"]
    assert set(saved) <= set(LoraConfig.__dataclass_fields__)  # a plain PEFT config: hf_mtl's keys are next to it
    ours = json.loads((tmp_path / "store" / "sent" / "hf_mtl_adapter.json").read_text())
    assert ours["adapter_method"] == "lora" and ours["hf_mtl_adapter_config"] == adapter_config
    inputs = encode(tok)
    for name in ("sent", "ner"):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*nexpected keyword.*")  # PEFT warned about hf_mtl's keys
            peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(base_dir), str(tmp_path / "store" / name)).eval()
        with torch.no_grad():
            expected = peft_model(**inputs).last_hidden_state
        torch.testing.assert_close(hidden(model, inputs, name), expected, rtol=1e-5, atol=1e-6)
    # and our own loader gives the same logits
    loaded = MultiTaskModel.from_pretrained(str(tmp_path / "store"), tokenizer=tok)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs, task="ner").logits, model(**inputs, task="ner").logits, rtol=0, atol=0)


def test_lora_dora_parameter_count_and_mixed_batch() -> None:
    model, tok = make("lora", {"r": 2, "use_dora": True})
    counted = sum(p.numel() for p in model.adapter.task_parameters("sent"))
    # query + value per layer: r·(in + out) + out (DoRA magnitude), 2 layers
    assert counted == model.adapter.formula_parameter_count("sent") == 2 * 2 * (2 * (32 + 32) + 32)
    assert_mixed_equals_single(model, encode(tok), ["sent", "ner", "topic", "sent"])  # PEFT refuses DoRA here: grouped path


@pytest.mark.parametrize("adapter_config", [
    {"r": 2, "rank_pattern": {"value": 4}, "target_modules": ["query", "value", "dense"]},
    {"r": 2, "target_modules": ["word_embeddings", "query"]},
    {"r": 2, "lora_bias": True, "use_rslora": True},
])
def test_lora_formula_follows_rank_pattern_targets_and_embeddings(adapter_config: dict) -> None:
    model, tok = make("lora", adapter_config)
    counted = sum(p.numel() for p in model.adapter.task_parameters("sent"))
    assert counted == model.adapter.formula_parameter_count("sent")
    assert_mixed_equals_single(model, encode(tok), ["sent", "ner", "topic", "sent"])


def _row_gradients(model: MultiTaskModel, inputs: dict, rows: list[str], weight: torch.Tensor, mixed: bool):
    """Gradients of every adapter parameter for sum(hidden * weight) over the rows, from one mixed-task forward
    or from one single-task forward per task (the reference), and the hidden states."""
    model.zero_grad()
    names = list(dict.fromkeys(rows))
    if mixed:
        routing = model.routing(rows, len(rows), inputs["input_ids"].device)
        with model.adapter.route(routing):
            out = model.backbone(**inputs).last_hidden_state
        (out * weight).sum().backward()
    else:
        out = torch.zeros(len(rows), inputs["input_ids"].shape[1], weight.shape[-1])
        for name in names:
            idx = torch.tensor([i for i, r in enumerate(rows) if r == name])
            routing = model.routing(name, len(idx), inputs["input_ids"].device)
            with model.adapter.route(routing):
                part = model.backbone(**{k: v[idx] for k, v in inputs.items()}).last_hidden_state
            (part * weight[idx]).sum().backward()
            out[idx] = part.detach()
    grads = {(n, i): p.grad.clone() for n in names for i, p in enumerate(model.adapter.task_parameters(n))}
    return out.detach(), grads


@pytest.mark.parametrize("adapter_config", [{"r": 2}, {"r": 2, "rank_pattern": {"query": 4}, "lora_dropout": 0.0}])
def test_lora_mixed_batch_trains_each_row_through_its_task(adapter_config: dict) -> None:
    """Plain LoRA runs a mixed-task batch in one forward in training too: each row gets its task's adapter, and
    every task's adapter gets exactly the gradient of its rows (as from a single-task forward per task)."""
    model, tok = make("lora", adapter_config)
    inputs = encode(tok)
    rows = ["sent", "ner", "topic", "sent"]
    assert model.adapter.routes_per_row
    assert_mixed_equals_single(model, inputs, rows)
    model.train()
    weight = torch.randn(4, inputs["input_ids"].shape[1], 32)
    mixed_out, mixed_grads = _row_gradients(model, inputs, rows, weight, mixed=True)
    single_out, single_grads = _row_gradients(model, inputs, rows, weight, mixed=False)
    torch.testing.assert_close(mixed_out, single_out, rtol=1e-5, atol=1e-5)
    assert mixed_grads.keys() == single_grads.keys() and all(g.abs().sum() > 0 for g in single_grads.values())
    for key, grad in single_grads.items():
        torch.testing.assert_close(mixed_grads[key], grad, rtol=1e-4, atol=1e-6)
    for layer in model.adapter._layers:  # after the forward, no adapter stays active or routed per row
        assert layer.active_adapters == [] and layer._row_stacks is None


def test_lora_mixed_batch_of_dora_runs_at_inference_and_is_refused_in_training() -> None:
    """DoRA (and other LoRA variants) cannot run per row: a mixed batch takes PEFT's grouped path at inference,
    and in training it is one clear error; after either, no adapter stays active."""
    model, tok = make("lora", {"r": 2, "use_dora": True})
    inputs = encode(tok)
    assert not model.adapter.routes_per_row
    assert_mixed_equals_single(model, inputs, ["sent", "ner", "topic", "sent"])
    model.train()
    with pytest.raises(TaskConfigError, match="not all plain LoRA"):
        model(**inputs, task=["sent", "ner", "topic", "sent"])
    for layer in model.adapter._layers:
        assert layer.active_adapters == []


def test_lora_inactive_adapters_get_no_grad_and_stay_bitwise_under_adamw() -> None:
    model, tok = make("lora", {"r": 2})
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01, weight_decay=0.1)
    others = {n: [p.detach().clone() for p in model.adapter.task_parameters(n)] for n in ("ner", "topic")}
    for _ in range(2):
        model(**encode(tok), labels=torch.tensor([0, 1, 1, 0]), task="sent").loss.backward()
        assert all(p.grad is None for n in others for p in model.adapter.task_parameters(n))
        opt.step()
        opt.zero_grad()
    for name, before in others.items():
        assert all(torch.equal(a, b) for a, b in zip(model.adapter.task_parameters(name), before))


def test_lora_language_adapters_stack_and_stay_frozen(tmp_path: Path) -> None:
    task_list = tasks(language=True) + [Task("mlm_en", kind="masked_lm", language="en")]
    model, tok = make("lora", {"r": 2, "language_adapters": True, "languages": ["fr"]}, task_list)
    adapter = model.adapter
    assert adapter.adapter_languages() == ["fr", "en", "de"]  # configured first, then as tasks name them
    assert adapter.task_parameters("mlm_en") == []  # a masked_lm task with a language trains its language adapter
    assert all(p.requires_grad for p in adapter.language_parameters("en"))  # trained by mlm_en
    assert not any(p.requires_grad for lang in ("de", "fr") for p in adapter.language_parameters(lang))
    report = model.trainable_parameters()
    assert report["languages"]["de"] == 0 and report["languages"]["en"] == sum(p.numel() for p in adapter.language_parameters("en"))

    seen = []
    handle = adapter._layers[0].register_forward_pre_hook(lambda m, a: seen.append(list(m.active_adapters)))
    inputs = encode(tok)
    en, de = hidden(model, inputs, "sent"), hidden(model, inputs, "sent", language="de")
    handle.remove()
    assert seen == [["language:en", "sent"], ["language:de", "sent"]]
    assert not torch.allclose(en, de)  # zero-shot transfer: the language adapter is swapped under the task's

    # training a task leaves every language adapter (and the other tasks) bitwise unchanged
    model.train()
    languages = {lang: [p.detach().clone() for p in adapter.language_parameters(lang)] for lang in ("en", "de", "fr")}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01, weight_decay=0.1)
    for _ in range(2):
        model(**inputs, labels=torch.tensor([0, 1, 1, 0]), task="sent").loss.backward()
        assert all(p.grad is None for lang in languages for p in adapter.language_parameters(lang))
        opt.step()
        opt.zero_grad()
    for lang, before in languages.items():
        assert all(torch.equal(a, b) for a, b in zip(adapter.language_parameters(lang), before)), lang
    assert all(p.requires_grad for p in adapter.language_parameters("en"))  # flags restored after the batch

    # the masked_lm task trains the English adapter only
    sent_before = [p.detach().clone() for p in adapter.task_parameters("sent")]
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model(**inputs, labels=labels, task="mlm_en").loss.backward()
    opt.step()
    opt.zero_grad()
    assert not all(torch.equal(a, b) for a, b in zip(adapter.language_parameters("en"), languages["en"]))
    assert all(torch.equal(a, b) for a, b in zip(adapter.task_parameters("sent"), sent_before))
    model.eval()

    # mixed tasks and languages at inference: rows need stacks -> the grouped path
    assert_mixed_equals_single(model, inputs, ["sent", "ner", "topic", "sent"])

    model.save_pretrained(tmp_path)
    assert (tmp_path / "languages" / "fr" / "adapter_model.safetensors").is_file()
    # the language adapter's folder is a plain PEFT adapter too: hf_mtl's keys sit next to its adapter_config.json
    assert json.loads((tmp_path / "languages" / "en" / "hf_mtl_adapter.json").read_text())["language"] == "en"
    assert "language" not in json.loads((tmp_path / "languages" / "en" / "adapter_config.json").read_text())
    assert not (tmp_path / "mlm_en" / "adapter_model.safetensors").exists()
    fresh = MultiTaskModel.from_config(model.config, task_list, tokenizer=tok, adapter_method="lora",
                                       adapter_config=model.adapter.config)
    fresh.backbone.load_state_dict(model.backbone.state_dict())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in fresh.adapter.parameters():
            p.normal_()
    _load_weights(fresh, tmp_path, [t.name for t in task_list])
    fresh.eval()
    with torch.no_grad():
        for name in ("sent", "ner"):
            torch.testing.assert_close(fresh(**inputs, task=name).logits, model(**inputs, task=name).logits, rtol=0, atol=0)


def test_lora_unknown_language_names_the_fix() -> None:
    model, tok = make("lora", {"r": 2, "language_adapters": True}, tasks(language=True))
    with pytest.raises(TaskConfigError, match=r"language 'pt' has no LoRA language adapter.*Fix"):
        model(**encode(tok), task="sent", language="pt")


@pytest.mark.parametrize(
    "adapter_config, match",
    [
        ({"rank": 4}, r"unknown option\(s\) \['rank'\].*'lora_alpha'.*'r'"),
        ({"modules_to_save": ["pooler"]}, "modules_to_save is not supported"),
        ({"init_lora_weights": "pissa"}, "rewrite the shared base weights"),
        ({"language_lora": {"alpha": 2}, "language_adapters": True}, r"language_lora: unknown option"),
        ({"languages": ["de"]}, "language_adapters is false"),
        ({"r": 0}, r"`r` should be a positive integer.*Fix: correct that adapter_config option"),
        ({"lora_dropout": "high"}, r"lora_dropout must be of type int/float"),
        ({"target_modules": ["nothing_like_this"]}, "target_modules"),
    ],
)
def test_lora_option_errors(adapter_config: dict, match: str) -> None:
    with pytest.raises(TaskConfigError, match=match):
        make("lora", adapter_config)


def test_lora_task_name_with_dot_is_refused() -> None:
    model, _ = make("lora", {"r": 2})
    with pytest.raises(TaskConfigError, match=r"task 'glue.sst2'.*Fix: rename the task, e.g. 'glue_sst2'"):
        model.adapter.add_task(Task("glue.sst2", labels=["a", "b"]))


# ---------------------------------------------------------------------------------------------------- prefix tuning
def test_prefix_projection_parameter_count_and_save_load(tmp_path: Path) -> None:
    model, tok = make("prefix_tuning", {"num_virtual_tokens": 4, "prefix_projection": True, "encoder_hidden_size": 8})
    p, h, e, layers = 4, 32, 8, 2
    expected = p * h + (h * e + e) + (e * 2 * layers * h + 2 * layers * h)
    assert sum(x.numel() for x in model.adapter.task_parameters("sent")) == model.adapter.formula_parameter_count("sent") == expected
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "sent" / "adapter_config.json").read_text())
    assert saved["adapter_method"] == "prefix_tuning" and saved["base_model_config"]["hidden_size"] == 32
    fresh = MultiTaskModel.from_config(model.config, tasks(), tokenizer=tok, adapter_method="prefix_tuning",
                                       adapter_config=model.adapter.config)
    fresh.backbone.load_state_dict(model.backbone.state_dict())
    _load_weights(fresh, tmp_path, ["sent", "ner", "topic"])
    inputs = encode(tok)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(**inputs, task="sent").logits, model(**inputs, task="sent").logits, rtol=0, atol=0)


def test_prefix_mixed_batch_computes_each_task_once_and_padding_is_masked() -> None:
    model, tok = make("prefix_tuning", {"num_virtual_tokens": 3})
    calls = []
    for name, encoder in model.adapter.prefixes.items():
        encoder.register_forward_hook(lambda m, a, o, name=name: calls.append(name))
    texts = ["good film", "bad food and service", "john smith in paris", "the city"]
    rows = ["sent", "ner", "topic", "sent"]
    inputs = encode(tok, texts)
    with torch.no_grad():
        mixed = model(**inputs, task=rows)
    assert sorted(calls) == ["ner", "sent", "topic"]
    # each row alone (no padding) matches its row of the padded mixed batch
    for i, (text, name) in enumerate(zip(texts, rows)):
        alone = encode(tok, [text])
        with torch.no_grad():
            single = model(**alone, task=name).logits[0]
        position = (mixed.task_rows[name] == i).nonzero()[0, 0]
        got = mixed.task_logits[name][position]
        got = got[: single.shape[0]] if single.dim() == 2 else got
        torch.testing.assert_close(got, single, rtol=1e-5, atol=1e-5)


def test_prefix_changes_attention_only_inside_route() -> None:
    model, tok = make("prefix_tuning", {"num_virtual_tokens": 3})
    plain = MultiTaskModel.from_config(model.config, tasks(), tokenizer=tok, adapter_method="none")
    plain.backbone.load_state_dict(model.backbone.state_dict())
    inputs = encode(tok)
    with torch.no_grad():
        outside = model.backbone(**inputs).last_hidden_state
        base = plain.eval().backbone(**inputs).last_hidden_state
    torch.testing.assert_close(outside, base, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(hidden(model, inputs, "sent"), base, atol=1e-3)


@pytest.mark.parametrize(
    "adapter_config, match",
    [
        ({"prefix_length": 4}, r"unknown option\(s\) \['prefix_length'\].*'num_virtual_tokens'"),
        ({"num_virtual_tokens": 0}, "num_virtual_tokens must be a positive integer"),
        ({"prefix_projection": "yes"}, "prefix_projection must be true or false"),
    ],
)
def test_prefix_option_errors(adapter_config: dict, match: str) -> None:
    with pytest.raises(TaskConfigError, match=match):
        make("prefix_tuning", adapter_config)


# ---------------------------------------------------------------------------------------------------- foreign base models
@pytest.mark.parametrize("method, adapter_config", [("lora", {"r": 2}), ("prefix_tuning", {"num_virtual_tokens": 3})])
@pytest.mark.parametrize("other", ["hidden_size", "model_type"])
def test_adapter_on_another_base_model_names_both(method: str, adapter_config: dict, other: str, tmp_path: Path) -> None:
    model, tok = make(method, adapter_config)
    model.save_pretrained(tmp_path)
    if other == "hidden_size":
        config = BertConfig(vocab_size=tok.vocab_size, **{**_SMALL, "hidden_size": 48})
        pattern = r"hidden_size=32.*hidden_size=48"
    else:
        config = RobertaConfig(vocab_size=tok.vocab_size, pad_token_id=0, **_SMALL)
        pattern = r"model_type=bert.*model_type=roberta"
    foreign, _ = make(method, adapter_config, config=config)
    with pytest.raises(StoreError, match=f"task 'sent' was trained on the base model .*{pattern}.*Fix"):
        _load_weights(foreign, tmp_path, ["sent"])


# ---------------------------------------------------------------------------------------------------- real data
REAL_RUNS = {  # method -> (adapter_config, learning rate)
    "lora": ({"r": 8, "lora_alpha": 16}, 3e-3),
    "prefix_tuning": ({"num_virtual_tokens": 20}, 1e-2),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(REAL_RUNS))
def test_real_data_sst2_and_upos_learn(method: str, shared_data: Path, tmp_path: Path) -> None:
    """all-MiniLM-L6-v2 + the method, 120 steps of batch 16 on SST-2 and UD-EWT UPOS slices: both tasks
    far above chance (SST-2 dev is balanced: 0.5; UPOS's majority tag NOUN: about 0.17)."""
    from hf_mtl.data.dataset import load_raw_splits
    from hf_mtl.trainer import MultiTaskTrainer
    from hf_mtl.training_args import MultiTaskTrainingArguments

    ud = shared_data / "ud_english_ewt"
    task_list = [
        Task("sst2", text_column="sentence", pooling="mean", train_file=str(shared_data / "glue_sst2/train.tsv"),
             validation_file=str(shared_data / "glue_sst2/dev.tsv"), max_train_samples=2000, max_eval_samples=200),
        Task("upos", kind="token_classification", label_column="upos", train_file=str(ud / "en_ewt-ud-train.conllu"),
             validation_file=str(ud / "en_ewt-ud-dev.conllu"), max_train_samples=1500, max_eval_samples=100),
    ]
    adapter_config, learning_rate = REAL_RUNS[method]
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone("sentence-transformers/all-MiniLM-L6-v2", task_list, adapter_method=method,
                                         adapter_config=adapter_config)
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), max_steps=120, per_device_train_batch_size=16, per_device_eval_batch_size=64,
        learning_rate=learning_rate, warmup_steps=10, max_seq_length=64, sampling_strategy="uniform", seed=0,
        use_cpu=True, save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=60,
    )
    trainer = MultiTaskTrainer(model, args, tasks=task_list, train_dataset=load_raw_splits(task_list, "train"),
                               eval_dataset=load_raw_splits(task_list, "validation"))
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_sst2_accuracy"] > 0.7, metrics
    assert metrics["eval_upos_accuracy"] > 0.8, metrics
