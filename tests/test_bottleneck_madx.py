"""`bottleneck` and `madx` adapter methods: variants, options, per-row routing, training isolation, stores.

The shared matrix (test_adapter_matrix.py) covers `bottleneck` (pfeiffer) and `madx` over five
architectures; this file covers what is specific to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_bert_config, tiny_tokenizer
from hf_mtl import Task
from hf_mtl.adapters.bottleneck.layer import BottleneckAdapter, routed_adapter
from hf_mtl.adapters.madx.invertible import InvertibleAdapter, coupling_forward, coupling_inverse
from hf_mtl.adapters.routing import Routing
from hf_mtl.errors import StoreError, TaskConfigError
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.backbone import build_backbone
from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.training_args import MultiTaskTrainingArguments


MADX = {"languages": ["en", "pt"], "language_reduction_factor": 4, "task_reduction_factor": 8}
TEXTS = ["good film", "bad food", "john smith in paris", "the city was very nice"]


def sentence_tasks() -> list[Task]:
    return [Task("sent", labels=["neg", "pos"]), Task("topic", labels=["a", "b", "c"], pooling="mean"),
            Task("ner", kind="token_classification", labels=["O", "B-PER", "I-PER"])]


def madx_tasks() -> list[Task]:
    return [Task("sent", labels=["neg", "pos"], language="en"),
            Task("topic", labels=["a", "b", "c"], pooling="mean", language="pt"),
            Task("mlm_en", kind="masked_lm", language="en")]


def build(method: str, config: dict | None, tasks: list[Task], layers: int = 2, seed: int = 0,
          randomize: bool = True) -> tuple[MultiTaskModel, object]:
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = tiny_bert_config(tok.vocab_size, num_hidden_layers=layers, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    model = MultiTaskModel.from_config(cfg, tasks, tokenizer=tok, adapter_method=method, adapter_config=config)
    if randomize:  # adapters start as the identity: perturb every adapter weight, frozen ones included
        with torch.no_grad():
            for p in model.adapter.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval(), tok


def encode(tok, texts=TEXTS) -> dict[str, torch.Tensor]:
    return dict(tok(list(texts), padding=True, return_tensors="pt"))


def rows_of(inputs: dict[str, torch.Tensor], index: list[int]) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in inputs.items()}


def adapter_state(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.adapter.named_parameters()}


# ---------------------------------------------------------------------------------------------- bottleneck
@pytest.mark.parametrize("variant,positions,rank", [("pfeiffer", 1, 2), ("houlsby", 2, 2), ("parallel", 1, 16)])
def test_variant_sites_counts_and_identity_init(variant: str, positions: int, rank: int) -> None:
    model, tok = build("bottleneck", {"variant": variant}, sentence_tasks(), randomize=False)
    plain, _ = build("none", None, sentence_tasks(), randomize=False)
    plain.backbone.load_state_dict(model.backbone.state_dict())
    plain.heads.load_state_dict(model.heads.state_dict())
    adapter = model.adapter
    assert adapter.rank == rank  # H=32: 32 // 16, 32 // 16, 32 // 2
    assert len(adapter.task_adapters[0]) == 2 and len(adapter.task_adapters[0][0]) == positions
    assert adapter.formula_parameter_count("sent") == 2 * positions * (2 * 32 * rank + rank + 32)
    inputs = encode(tok)
    with torch.no_grad():  # zero up-projections: an untrained adapter is exactly the identity
        torch.testing.assert_close(model(**inputs, task="topic").logits, plain(**inputs, task="topic").logits,
                                   rtol=0, atol=0)


def _reference_layer(model: MultiTaskModel, variant: str, ids: torch.Tensor, residual_before_ln: bool = True):
    """One BERT layer with the adapter equations written out (no hooks fire on the modules called here)."""
    layer = model.backbone.encoder.layer[0]
    attention = layer.attention
    emb = model.backbone.embeddings(input_ids=ids)
    adapters = model.adapter.task_adapters[0][0]

    def adapter(h, a, act, scale=1.0):
        return (act(h @ a.down + a.down_bias) @ a.up + a.up_bias) * scale

    context = attention.self(emb)[0]
    f_att = attention.output.dense(context)
    if variant == "houlsby":
        f_att = f_att + adapter(f_att, adapters["attention"], F.silu)
    x = attention.output.LayerNorm(f_att + emb)
    f = layer.output.dense(layer.intermediate(x))
    ln = layer.output.LayerNorm
    if variant == "pfeiffer":
        h = ln(f + x)
        f = (f if residual_before_ln else h) + adapter(h, adapters["ffn"], F.relu)
    elif variant == "houlsby":
        f = f + adapter(f, adapters["ffn"], F.silu)
    else:
        f = f + adapter(x, adapters["ffn"], F.relu, 4.0)
    return ln(f + x)


@pytest.mark.parametrize("variant,residual_before_ln", [("pfeiffer", True), ("pfeiffer", False), ("houlsby", True),
                                                        ("parallel", True)])
def test_variants_match_their_equations(variant: str, residual_before_ln: bool) -> None:
    config = {"variant": variant, "residual_before_ln": residual_before_ln}
    model, tok = build("bottleneck", config, sentence_tasks(), layers=1)
    ids = tok(["good film", "bad food"], return_tensors="pt")["input_ids"]  # same length: no padding mask
    with torch.no_grad():
        expected = _reference_layer(model, variant, ids, residual_before_ln)
        with model.adapter.route(model.routing("sent", 2, ids.device)):
            got = model.backbone(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [
    {"variant": "houlsby", "ln_before": True, "ln_after": True},
    {"variant": "parallel", "non_linearity": "gelu", "scaling": 2.0},
    {"variant": "pfeiffer", "non_linearity": "tanh", "init": "bert", "residual_before_ln": False},
])
def test_mixed_task_batch_equals_row_by_row(config: dict) -> None:
    model, tok = build("bottleneck", config, sentence_tasks())
    inputs = encode(tok)
    rows = ["topic", "ner", "sent", "topic"]
    with torch.no_grad():
        mixed = model(**inputs, task=rows)
        for i, name in enumerate(rows):
            single = model(**rows_of(inputs, [i]), task=name).logits
            position = (mixed.task_rows[name] == i).nonzero().item()
            got = mixed.task_logits[name][position: position + 1]
            torch.testing.assert_close(got[:, : single.shape[1]] if got.dim() == 3 else got, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank,length", [(2, 9), (8, 9)])  # 2r < L: per-row weights; 2r >= L: grouped rows
@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("keys", ["bacabb", "bbbaac"])  # interleaved owners; owners in ranges (views, no gathers)
def test_routed_adapter_every_mixed_path_equals_each_owner_alone(rank: int, length: int, ln: bool, keys: str) -> None:
    torch.manual_seed(0)
    adapters = [BottleneckAdapter(12, rank, init="bert", ln_before=ln, ln_after=ln) for _ in range(3)]
    keys = list(keys)
    owners = Routing.of(keys, torch.device("cpu"))
    assert (owners.segments is not None) == (keys == sorted(keys, key=keys.index))
    h = torch.randn(len(keys), length, 12, requires_grad=True)
    out = routed_adapter(h, [adapters["abc".index(k)].tensors() for k in owners.owners], owners, torch.tanh, 2.5)
    grads = torch.autograd.grad(out.square().sum(), [h, *adapters[0].parameters()])
    h_alone = h.detach().clone().requires_grad_(True)
    expected = torch.cat([routed_adapter(h_alone[i:i + 1], [adapters["abc".index(k)].tensors()], None, torch.tanh, 2.5)
                          for i, k in enumerate(keys)])
    expected_grads = torch.autograd.grad(expected.square().sum(), [h_alone, *adapters[0].parameters()])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config,message", [
    ({"reduction": 4}, "unknown option(s) ['reduction']"),
    ({"variant": "lora"}, "`variant` is 'lora'"),
    ({"non_linearity": "sigmoid"}, "`non_linearity` is 'sigmoid'"),
    ({"reduction_factor": 0}, "`reduction_factor` must be a number > 0"),
    ({"init": "zeros"}, "`init` is 'zeros'"),
    ({"ln_before": "yes"}, "`ln_before` must be true or false"),
])
def test_bottleneck_option_errors_name_the_option(config: dict, message: str) -> None:
    with pytest.raises(TaskConfigError) as err:
        build("bottleneck", config, sentence_tasks(), randomize=False)
    assert message in str(err.value) and "Fix:" in str(err.value)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(TaskConfigError, match=r"variant.*reduction_factor.*non_linearity"):
        build("bottleneck", {"bottleneck_size": 8}, sentence_tasks(), randomize=False)
    with pytest.raises(TaskConfigError, match=r"languages.*language_reduction_factor.*task_reduction_factor"):
        build("madx", {"languages": ["en"], "rf": 2}, sentence_tasks(), randomize=False)


@pytest.mark.parametrize("method,config", [("bottleneck", None), ("madx", MADX)])
def test_backbone_called_without_routing_names_the_fix(method: str, config: dict | None) -> None:
    model, tok = build(method, config, sentence_tasks(), randomize=False)
    with pytest.raises(TaskConfigError, match=r"outside MultiTaskModel.forward.*Fix: call the MultiTaskModel"):
        model.backbone(**encode(tok))


@pytest.mark.parametrize("method,config,tasks", [("bottleneck", {"variant": "houlsby"}, sentence_tasks),
                                                  ("madx", MADX, madx_tasks)])
def test_deepcopy_routes_through_the_copied_adapters(method: str, config: dict, tasks) -> None:
    import copy

    model, tok = build(method, config, tasks())
    twin = copy.deepcopy(model)
    inputs = encode(tok)
    task = "mlm_en" if method == "madx" else "sent"  # madx: the MLM head's inverse is rebound too
    with torch.no_grad():
        before = model(**inputs, task=task).logits
        torch.testing.assert_close(twin(**inputs, task=task).logits, before, rtol=0, atol=0)
        for p in twin.adapter.parameters():
            p.zero_()
        assert not torch.allclose(twin(**inputs, task=task).logits, before)
        torch.testing.assert_close(model(**inputs, task=task).logits, before, rtol=0, atol=0)


def _train(model: MultiTaskModel, tok, out: Path, train: dict, tasks: list[Task] | None = None, steps: int = 3,
           **kwargs) -> MultiTaskTrainer:
    args = MultiTaskTrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, learning_rate=5e-2, weight_decay=0.1,
        optim="adamw_torch", report_to="none", use_cpu=True, save_strategy="no", logging_steps=100,
        overwrite_output_dir=True, disable_tqdm=True, **kwargs,
    )
    trainer = MultiTaskTrainer(model, args, tasks=tasks, train_dataset=train, processing_class=tok)
    trainer.train()
    return trainer


def _labelled(n: int = 8) -> datasets.Dataset:
    texts = ["good film", "bad food", "a great movie", "terrible service"] * (n // 4)
    return datasets.Dataset.from_dict({"text": texts, "label": ["pos", "neg", "pos", "neg"] * (n // 4)})


def test_adamw_weight_decay_leaves_other_task_bitwise_unchanged(tmp_path: Path) -> None:
    tasks = [Task("sent", labels=["neg", "pos"]), Task("other", labels=["neg", "pos"])]
    model, tok = build("bottleneck", {"variant": "houlsby"}, tasks)
    model.train()
    slot = model.adapter._slots
    other = {n: p.detach().clone() for n, p in model.adapter.task_adapters[slot["other"]].named_parameters()}
    mine = {n: p.detach().clone() for n, p in model.adapter.task_adapters[slot["sent"]].named_parameters()}
    _train(model, tok, tmp_path, {"sent": _labelled()}, tasks=tasks[:1])
    for n, p in model.adapter.task_adapters[slot["other"]].named_parameters():
        assert torch.equal(p, other[n]), f"task 'other' adapter {n} moved under AdamW weight decay"
    moved = [n for n, p in model.adapter.task_adapters[slot["sent"]].named_parameters() if not torch.equal(p, mine[n])]
    assert len(moved) == len(mine)  # every tensor of the trained task moved (decay alone moves them)


# ---------------------------------------------------------------------------------------------- MAD-X
def test_invertible_adapter_inverse_is_exact() -> None:
    torch.manual_seed(0)
    block = InvertibleAdapter(33, 2, "bert")  # odd size: halves of 16 and 17
    x = torch.randn(3, 5, 33)
    with torch.no_grad():
        y = coupling_forward(x, [block.tensors()], None, block.split, F.relu)
        assert not torch.allclose(y, x)
        torch.testing.assert_close(coupling_inverse(y, block.tensors(), block.split, F.relu), x, rtol=1e-5, atol=1e-5)


def test_madx_parameter_counts_and_trainable_languages() -> None:
    model, _ = build("madx", MADX, madx_tasks(), randomize=False)
    report = model.trainable_parameters()
    # tasks: 2 layers x (2*32*4 + 4 + 32); mlm_en trains the `en` adapter: 2 x (2*32*8 + 8 + 32) + NICE (16->8->16) x 2
    assert report["tasks"]["sent"]["adapter"] == model.adapter.formula_parameter_count("sent") == 2 * (256 + 36)
    nice = 2 * (16 * 8 + 8 + 8 * 16 + 16)
    assert report["tasks"]["mlm_en"]["adapter"] == model.adapter.formula_parameter_count("mlm_en") == 2 * (512 + 40) + nice
    assert report["languages"] == {"en": 2 * (512 + 40) + nice, "pt": 0}  # no masked_lm task in pt: frozen


def test_madx_mixed_tasks_and_languages_equal_row_by_row() -> None:
    model, tok = build("madx", MADX, madx_tasks())
    inputs = encode(tok)
    tasks = ["sent", "topic", "sent", "mlm_en"]
    languages = ["en", "pt", "pt", "en"]  # row 2: zero-shot `sent` over the pt adapter
    with torch.no_grad():
        mixed = model(**inputs, task=tasks, language=languages)
        for i, (name, lang) in enumerate(zip(tasks, languages)):
            single = model(**rows_of(inputs, [i]), task=name, language=lang).logits
            position = (mixed.task_rows[name] == i).nonzero().item()
            got = mixed.task_logits[name][position: position + 1]
            torch.testing.assert_close(got[:, : single.shape[1]] if got.dim() == 3 else got, single, rtol=1e-5, atol=1e-5)


def test_language_swap_changes_outputs_through_the_language_adapter_only() -> None:
    model, tok = build("madx", MADX, madx_tasks(), seed=1)
    twin, _ = build("madx", MADX, madx_tasks(), seed=1)
    # the twin's `en` slot holds the `pt` weights: language="pt" must be exactly that model with language="en"
    twin.adapter.load_language_state_dict("en", model.adapter.language_state_dict("pt"))
    inputs = encode(tok)
    with torch.no_grad():
        en = model(**inputs, task="sent").logits
        pt = model(**inputs, task="sent", language="pt").logits
        swapped = twin(**inputs, task="sent", language="en").logits
    assert not torch.allclose(en, pt)
    torch.testing.assert_close(pt, swapped, rtol=0, atol=0)


def test_madx_language_errors() -> None:
    with pytest.raises(TaskConfigError, match=r"`languages` must list"):
        build("madx", {}, sentence_tasks(), randomize=False)
    with pytest.raises(TaskConfigError, match=r"language code 'pt/br'"):
        build("madx", {"languages": ["pt/br"]}, sentence_tasks(), randomize=False)
    with pytest.raises(TaskConfigError, match=r"task 'x': its language 'de' has no MAD-X language adapter.*Fix"):
        build("madx", MADX, [Task("x", labels=["a", "b"], language="de")], randomize=False)
    model, tok = build("madx", MADX, madx_tasks(), randomize=False)
    with pytest.raises(TaskConfigError, match=r"language 'de'.*Fix: pass one of \['en', 'pt'\]"):
        model(**encode(tok), task="sent", language="de")
    with pytest.raises(TaskConfigError, match=r"masked_lm task 'mlm_en' is in language 'en'"):
        model(**encode(tok), task="mlm_en", language="pt")


def test_madx_task_training_leaves_language_adapters_unchanged(tmp_path: Path) -> None:
    model, tok = build("madx", MADX, madx_tasks())
    assert all(p.requires_grad for p in model.adapter.language_parameters("en"))  # mlm_en could train it
    model.train()
    languages = {n: p.detach().clone() for n, p in model.adapter.language_adapters.named_parameters()}
    topic = {n: p.detach().clone() for n, p in model.adapter.task_adapters[model.adapter._slots["topic"]].named_parameters()}
    _train(model, tok, tmp_path, {"sent": _labelled()}, tasks=[madx_tasks()[0]])
    for n, p in model.adapter.language_adapters.named_parameters():
        assert torch.equal(p, languages[n]), f"language adapter {n} moved while task 'sent' trained"
    for n, p in model.adapter.task_adapters[model.adapter._slots["topic"]].named_parameters():
        assert torch.equal(p, topic[n])


def _mlm_file(path: Path) -> Path:
    path.write_text("\n".join(["the film was good", "the food was bad", "i love this movie", "what a terrible story",
                               "john and mary in paris", "a very nice city"] * 4) + "\n", encoding="utf-8")
    return path


def test_masked_lm_trains_the_language_adapter_end_to_end(tmp_path: Path) -> None:
    text = _mlm_file(tmp_path / "pt.txt")
    mlm = Task("mlm_pt", kind="masked_lm", language="pt", train_file=str(text), validation_file=str(text))
    model, tok = build("madx", MADX, [Task("sent", labels=["neg", "pos"], language="en"), mlm], randomize=False)
    before = adapter_state(model)
    head = {n: p.detach().clone() for n, p in model.heads["mlm_pt"].named_parameters()}
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=8, learning_rate=1e-2,
        report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True, overwrite_output_dir=True,
        tasks=[mlm.to_dict()],
    )
    from hf_mtl.data.dataset import load_raw_splits

    trainer = MultiTaskTrainer(model, args, train_dataset=load_raw_splits([mlm], "train"),
                               eval_dataset=load_raw_splits([mlm], "validation"), processing_class=tok)
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_mlm_pt_perplexity"] > 1.0
    after = adapter_state(model)
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved and all(n.startswith("language_adapters.pt.") for n in moved)
    assert any(".invertible." in n for n in moved) and any(".layers." in n for n in moved)
    assert any(not torch.equal(p, head[n]) for n, p in model.heads["mlm_pt"].named_parameters())


def _saved_base(tmp_path: Path) -> tuple[str, object]:
    """A tiny backbone saved as a folder, so stores can rebuild the model from `base_model`."""
    torch.manual_seed(3)
    tok = tiny_tokenizer()
    cfg = tiny_bert_config(tok.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base = tmp_path / "base"
    build_backbone(cfg).save_pretrained(str(base))
    tok.save_pretrained(str(base))
    return str(base), tok


def test_madx_store_layout_and_zero_shot_reload(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base, tok = _saved_base(tmp_path)
    model = MultiTaskModel.from_backbone(base, madx_tasks(), adapter_method="madx", adapter_config=MADX).eval()
    with torch.no_grad():
        for p in model.adapter.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    store = tmp_path / "store"
    model.save_pretrained(str(store))
    for lang in ("en", "pt"):
        assert (store / "languages" / lang / "adapter_model.safetensors").is_file()
        assert json.loads((store / "languages" / lang / "adapter_config.json").read_text())["language"] == lang
    assert (store / "sent" / "adapter_model.safetensors").is_file()
    assert not (store / "mlm_en" / "adapter_model.safetensors").exists()  # its weights are the `en` language adapter
    assert json.loads((store / "mtl_config.json").read_text())["languages"] == ["en", "pt"]

    loaded = MultiTaskModel.from_pretrained(str(store))
    inputs = encode(tok)
    with torch.no_grad():
        for task, lang in [("sent", "pt"), ("sent", None), ("topic", None), ("mlm_en", None)]:
            a = model(**inputs, task=task, language=lang).logits
            b = loaded(**inputs, task=task, language=lang).logits
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    from hf_mtl.cli import main

    capsys.readouterr()
    for lang in ("pt", "en"):  # `hf-mtl predict STORE --task sent --language pt` swaps the language adapter
        assert main(["predict", str(store), "--task", "sent", "--language", lang, "good film"]) == 0
        row = json.loads(capsys.readouterr().out.strip())
        expected = model.predict(["good film"], task="sent", language=lang)[0]
        assert row["label"] == expected["label"]
        assert row["scores"] == pytest.approx(expected["scores"], abs=1e-6)


def test_madx_new_task_over_stored_languages(tmp_path: Path) -> None:
    """MAD-X step 2: load the language adapters alone, add a task, train it; the languages stay frozen."""
    base, tok = _saved_base(tmp_path)
    model = MultiTaskModel.from_backbone(base, madx_tasks(), adapter_method="madx", adapter_config=MADX)
    with torch.no_grad():
        for p in model.adapter.language_adapters.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(tmp_path / "languages_store"), tasks=["mlm_en"])
    stage2 = MultiTaskModel.from_pretrained(str(tmp_path / "languages_store"), tasks=[])
    for lang in ("en", "pt"):
        assert all(torch.equal(a, b) for a, b in zip(stage2.adapter.language_parameters(lang),
                                                     model.adapter.language_parameters(lang)))
        assert not any(p.requires_grad for p in stage2.adapter.language_parameters(lang))
    task = Task("sst", labels=["neg", "pos"], language="en")
    stage2.add_task(task)
    stage2.train()
    _train(stage2, tok, tmp_path / "run", {"sst": _labelled()}, tasks=[task])
    for lang in ("en", "pt"):
        assert all(torch.equal(a, b) for a, b in zip(stage2.adapter.language_parameters(lang),
                                                     model.adapter.language_parameters(lang)))


def test_bottleneck_store_refuses_other_options(tmp_path: Path) -> None:
    model, _ = build("bottleneck", {"reduction_factor": 8}, sentence_tasks())
    model.save_pretrained(str(tmp_path))
    other, _ = build("bottleneck", {"reduction_factor": 4}, sentence_tasks())
    from hf_mtl.io_utils import load_tensors

    with pytest.raises(StoreError, match=r"task 'sent'.*shapes.*Fix: load it with the adapter_config"):
        other.adapter.load_task_state_dict("sent", load_tensors(tmp_path / "sent" / "adapter_model.safetensors", "x"))


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_bottleneck_learns_sst2_and_upos_on_minilm(shared_data: Path, tmp_path: Path) -> None:
    """Pfeiffer adapters on the frozen all-MiniLM-L6-v2: SST-2 + UD-EWT UPOS slices, a few hundred steps."""
    from hf_mtl.data.dataset import load_raw_splits

    sst = shared_data / "glue_sst2"
    ewt = shared_data / "ud_english_ewt"
    tasks = [
        Task("sst2", text_column="sentence", train_file=str(sst / "train.tsv"), validation_file=str(sst / "dev.tsv"),
             pooling="mean", max_train_samples=1600, max_eval_samples=200, extra={"quoting": "none"}),
        Task("upos", kind="token_classification", label_column="upos", train_file=str(ewt / "en_ewt-ud-train.conllu"),
             validation_file=str(ewt / "en_ewt-ud-dev.conllu"), max_train_samples=800, max_eval_samples=100),
    ]
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone("sentence-transformers/all-MiniLM-L6-v2", tasks, adapter_method="bottleneck",
                                         adapter_config={"variant": "pfeiffer"})
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), max_steps=100, per_device_train_batch_size=16, per_device_eval_batch_size=64,
        learning_rate=3e-3, warmup_steps=10, max_seq_length=32, sampling_strategy="round_robin", report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True, overwrite_output_dir=True, seed=0,
    )
    trainer = MultiTaskTrainer(model, args, tasks=tasks, train_dataset=load_raw_splits(tasks, "train"),
                               eval_dataset=load_raw_splits(tasks, "validation"))
    trainer.train()
    metrics = trainer.evaluate()
    print({k: round(v, 4) for k, v in metrics.items() if k.endswith("accuracy")})
    # chance: 0.51 (SST-2 dev majority class), 0.17 (UPOS majority tag NOUN)
    assert metrics["eval_sst2_accuracy"] > 0.70, metrics
    assert metrics["eval_upos_accuracy"] > 0.80, metrics
