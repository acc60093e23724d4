"""Inference: task switching, mixed-task batches (one forward for per-row methods), every task on one
backbone pass, language swaps, and the export of a task as a standalone transformers model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, RobertaConfig

from helpers import tiny_bert_config, tiny_tokenizer
from hf_mtl import DataError, StoreError, Task, TaskConfigError, UnknownTaskError
from hf_mtl.adapters import ADAPTER_METHODS, load_builtin_methods
from hf_mtl.cli import main
from hf_mtl.inference import encode_rows
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.backbone import build_backbone
from hf_mtl.store.export import export_task


TEXTS = ["good film", "john smith in paris", "a terrible movie", "the city"]
load_builtin_methods()


def tasks() -> list[Task]:
    return [
        Task("sent", labels=["neg", "pos"]),
        Task("ner", kind="token_classification", labels=["O", "B-PER", "I-PER"]),
        Task("topic", labels=["a", "b", "c"], pooling="mean", head_layer=1),
        Task("sim", kind="regression", text_pair_column="b"),
    ]


def available(*methods: str) -> list:
    return [m if m in ADAPTER_METHODS else pytest.param(m, marks=pytest.mark.skip(reason=f"{m} not available"))
            for m in methods]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    folder = tmp_path_factory.mktemp("base") / "tiny-bert"
    cfg = tiny_bert_config(tok.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    build_backbone(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def build(method: str = "none", task_list: list[Task] | None = None, seed: int = 0, config: dict | None = None,
          base: str | None = None) -> MultiTaskModel:
    torch.manual_seed(seed)
    if base is None:
        tok = tiny_tokenizer()
        cfg = tiny_bert_config(tok.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = MultiTaskModel.from_config(cfg, task_list or tasks(), tokenizer=tok, adapter_method=method,
                                           adapter_config=config)
    else:
        model = MultiTaskModel.from_backbone(base, task_list or tasks(), adapter_method=method, adapter_config=config)
    with torch.no_grad():  # adapters start as the identity (or zero updates): make them matter
        for p in [*model.heads.parameters(), *model.adapter.parameters()]:
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


class ForwardCounter:
    """Counts backbone forward passes."""

    def __init__(self, model: MultiTaskModel):
        self.calls = 0
        self.handle = model.backbone.register_forward_hook(self._hook)

    def _hook(self, *args) -> None:
        self.calls += 1


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a.get("label") == b.get("label") and a.get("tags") == b.get("tags")
    for key in ("score", "scores"):
        if key in a:
            def values(d):
                return (list(d.values()) if isinstance(d, dict) else d)
            torch.testing.assert_close(torch.tensor(values(a[key])), torch.tensor(values(b[key])), rtol=1e-4, atol=1e-5)


def inputs_for(names: list[str]) -> list:
    return [("good film", "a fine movie") if n == "sim" else t for n, t in zip(names, TEXTS)]


# ------------------------------------------------------------------------------------------------ switching
def test_set_task_switches_without_moving_weights():
    model = build()
    before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    model.set_task("ner")
    assert model.predict(["john smith"])[0]["task"] == "ner"
    model.set_task("sent")
    assert model.predict(["john smith"])[0]["task"] == "sent"
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == before
    with pytest.raises(UnknownTaskError, match="'nope' is not a task of this model"):
        model.set_task("nope")


# ------------------------------------------------------------------------------------------------ mixed batches
@pytest.mark.parametrize("method", available("none", "bottleneck", "pals", "prefix_tuning"))
def test_per_row_methods_answer_a_mixed_batch_in_one_forward(method):
    model = build(method)
    names = ["sent", "ner", "sim", "topic"]
    texts = inputs_for(names)
    alone = [model.predict([t], task=n)[0] for t, n in zip(texts, names)]
    counter = ForwardCounter(model)
    mixed = model.predict(texts, task=names)
    assert counter.calls == 1
    for a, b in zip(mixed, alone):
        assert_same(a, b)


@pytest.mark.parametrize("config, forwards", [({}, 1), ({"use_dora": True}, 3)])
def test_lora_runs_mixed_rows_in_one_forward_or_one_per_task_group(config: dict, forwards: int):
    """Plain LoRA routes per row (one forward for the mixed rows); DoRA runs one forward per task group."""
    model = build("lora", config={"init_lora_weights": False, **config})
    assert model.adapter.routes_per_row is (forwards == 1)
    names = ["sent", "ner", "sent", "topic"]
    alone = [model.predict([t], task=n)[0] for t, n in zip(TEXTS, names)]
    counter = ForwardCounter(model)
    mixed = model.predict(TEXTS, task=names)
    assert counter.calls == forwards
    for a, b in zip(mixed, alone):
        assert_same(a, b)


def test_left_padding_keeps_the_word_alignment():
    tok = tiny_tokenizer()
    rows = [Task("ner", kind="token_classification", labels=["O"]), Task("sent", labels=["a", "b"])] * 2
    right = encode_rows(tok, rows, TEXTS, 32)
    tok.padding_side = "left"
    left = encode_rows(tok, rows, TEXTS, 32)
    for i in range(len(TEXTS)):
        ids_right = right.inputs["input_ids"][i][right.inputs["attention_mask"][i].bool()]
        ids_left = left.inputs["input_ids"][i][left.inputs["attention_mask"][i].bool()]
        assert torch.equal(ids_left, ids_right)
        if right.word_ids[i] is not None:
            words_at = [(w, int(left.inputs["input_ids"][i][p])) for p, w in enumerate(left.word_ids[i]) if w is not None]
            assert words_at == [(w, int(right.inputs["input_ids"][i][p])) for p, w in enumerate(right.word_ids[i]) if w is not None]
            assert left.inputs["attention_mask"][i][0] == 0  # rows 0 and 2 are shorter than row 1: padded on the left


# ------------------------------------------------------------------------------------------------ task="all"
def test_all_tasks_share_the_backbone_pass_of_a_head_only_model():
    model = build()
    counter = ForwardCounter(model)
    rows = model.predict(TEXTS, task="all")
    # sent, ner and topic tokenize the same (one pass); the pair task sim reads "text [SEP] [SEP]" (a second one)
    assert counter.calls == 2
    assert [set(r) for r in rows] == [{"sent", "ner", "topic", "sim"}] * len(TEXTS)
    for name in ("sent", "ner", "topic", "sim"):
        for row, alone in zip(rows, model.predict(TEXTS, task=name)):
            assert_same(row[name], alone)
    single = build(task_list=tasks()[:3])
    counter = ForwardCounter(single)
    single.predict(TEXTS, task="all")
    assert counter.calls == 1


@pytest.mark.parametrize("method", available("bottleneck"))
def test_all_tasks_of_an_adapter_model(method):
    model = build(method, task_list=tasks()[:3])
    rows = model.predict(TEXTS[:2], task="all")
    for name in ("sent", "ner", "topic"):
        for row, alone in zip(rows, model.predict(TEXTS[:2], task=name)):
            assert_same(row[name], alone)


@pytest.mark.parametrize("method", available("madx"))
def test_language_swap_uses_the_other_language_adapter(method):
    madx_tasks = [Task("sent", labels=["neg", "pos"], language="en")]
    model = build(method, task_list=madx_tasks, config={"languages": ["en", "pt"]})
    enc = model.tokenizer(["good film"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc, task="sent", language="pt").logits.softmax(-1)[0]
    swapped = model.predict(["good film"], task="sent", language="pt")[0]
    own = model.predict(["good film"], task="sent")[0]
    torch.testing.assert_close(torch.tensor(list(swapped["scores"].values())), expected, rtol=1e-5, atol=1e-6)
    assert swapped["scores"] != own["scores"]


def test_predict_errors_name_the_fix():
    model = build()
    with pytest.raises(Exception, match="give one per input"):
        model.predict(TEXTS, task=["sent"])
    with pytest.raises(UnknownTaskError, match="Known tasks"):
        model.predict(TEXTS[:1], task=["nope"])
    with pytest.raises(Exception, match=r"needs task=\.\.\."):
        model.predict(TEXTS[:1])


def test_cli_predict_all_prints_one_line_per_input(tmp_path, base, capsys):
    build(base=base).save_pretrained(str(tmp_path / "run"))
    assert main(["predict", str(tmp_path / "run"), "--task", "all", "good film", "john smith"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and set(lines[1]) == {"sent", "ner", "topic", "sim"}
    assert lines[1]["ner"]["tokens"] == ["john", "smith"]


# ------------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("method", available("none", "lora"))
def test_export_loads_with_auto_classes_and_predicts_the_same(tmp_path, base, method):
    model = build(method, task_list=tasks()[:2] + tasks()[3:], base=base,
                  config={"init_lora_weights": False} if method == "lora" else None)
    model.save_pretrained(str(tmp_path / "run"))
    enc = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    for name, auto in (("sent", AutoModelForSequenceClassification), ("ner", AutoModelForTokenClassification),
                       ("sim", AutoModelForSequenceClassification)):
        out = export_task(tmp_path / "run", name, tmp_path / f"export-{name}")
        exported = auto.from_pretrained(out).eval()
        with torch.no_grad():
            torch.testing.assert_close(exported(**enc).logits, model(**enc, task=name).logits, rtol=1e-4, atol=1e-5)
        assert list(exported.config.id2label.values()) == (model.tasks[name].labels or ["score"])
        assert not any("lora" in k for k in exported.state_dict())
    assert exported.config.problem_type == "regression"


def test_export_of_a_roberta_sequence_head(tmp_path):
    tok = tiny_tokenizer()
    cfg = RobertaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=80, pad_token_id=tok.pad_token_id, type_vocab_size=1)
    torch.manual_seed(0)
    build_backbone(cfg).save_pretrained(str(tmp_path / "base"))
    tok.save_pretrained(str(tmp_path / "base"))
    model = build(task_list=[Task("sent", labels=["neg", "pos"])], base=str(tmp_path / "base"))
    model.save_pretrained(str(tmp_path / "run"))
    out = export_task(tmp_path / "run", "sent", tmp_path / "export")
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    exported = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(**enc).logits, model(**enc, task="sent").logits, rtol=1e-4, atol=1e-5)


def test_export_refusals_say_why(tmp_path, base):
    heads = [Task("linear", labels=["a", "b"], head_hidden_layers=0), Task("mean", labels=["a", "b"], pooling="mean"),
             Task("deep", kind="token_classification", labels=["O", "X"], head_layer=1)]
    build(task_list=heads, base=base).save_pretrained(str(tmp_path / "run"))
    with pytest.raises(TaskConfigError, match=r"head_hidden_layers=0.*BERT's pooler \+ classifier.*Fix: train the task"):
        export_task(tmp_path / "run", "linear", tmp_path / "out")
    with pytest.raises(TaskConfigError, match="pooling='mean'"):
        export_task(tmp_path / "run", "mean", tmp_path / "out")
    with pytest.raises(TaskConfigError, match="reads layer 1"):
        export_task(tmp_path / "run", "deep", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(StoreError, match="already exists and is not empty"):
        export_task(tmp_path / "run", "linear", tmp_path / "full")
    if "bottleneck" in ADAPTER_METHODS:
        build("bottleneck", task_list=tasks()[:1], base=base).save_pretrained(str(tmp_path / "adapters"))
        with pytest.raises(TaskConfigError, match="adapter_method 'bottleneck' adds modules"):
            export_task(tmp_path / "adapters", "sent", tmp_path / "out")
        assert main(["export", str(tmp_path / "adapters"), "--task", "sent", str(tmp_path / "out")]) == 2


def test_cli_export(tmp_path, base, capsys):
    build(task_list=tasks()[:1], base=base).save_pretrained(str(tmp_path / "run"))
    assert main(["export", str(tmp_path / "run"), "--task", "sent", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).config.id2label == {0: "neg", 1: "pos"}
    assert (tmp_path / "out" / "tokenizer.json").is_file()


# ------------------------------------------------------------------------------------------------ long inputs, bad sizes
def test_a_long_token_input_gets_a_tag_for_every_word():
    """A token-task input far longer than max_length runs in windows of whole words: one tag per word."""
    model = build(task_list=tasks()[:2])
    words = [w for _ in range(200) for w in ("john", "smith", "lives", "in", "paris")]  # 1000 words
    row = model.predict([" ".join(words)], task="ner", max_length=32)[0]
    assert row["tokens"] == words and len(row["tags"]) == len(words) == len(row["scores"])
    # each window is exactly what the same words give alone
    first = model.predict([words[:30]], task="ner", max_length=32)[0]
    assert row["tags"][:30] == first["tags"]
    short = model.predict(["john smith"], task="ner", max_length=32)[0]
    both = model.predict([words, "john smith"], task="ner", max_length=32, batch_size=4)
    assert len(both[0]["tags"]) == 1000 and both[1]["tags"] == short["tags"]
    every = model.predict([" ".join(words)], task="all", max_length=32)[0]
    assert len(every["ner"]["tags"]) == 1000 and every["sent"]["task"] == "sent"


def test_predict_refuses_bad_sizes_and_inputs():
    model = build()
    for kwargs, message in [({"batch_size": 0}, r"batch_size=0\): batch_size must be a positive integer"),
                            ({"max_length": -5}, r"max_length=-5\): max_length must be a positive integer"),
                            ({"max_length": 129}, r"max_length=129 is above the 128 tokens .*Fix: .*128 or less")]:
        with pytest.raises(DataError, match=message):
            model.predict(["good film"], task="sent", **kwargs)
    for text in (5, None, ["good", 3]):
        with pytest.raises(DataError, match=r"input 0 for task 'sent' is .*give a string"):
            model.predict([text], task="sent")
    assert model.predict(["good film"], task="sent", max_length=128)[0]["task"] == "sent"


def test_roberta_positions_skip_the_padding_offset():
    from hf_mtl.inference import max_input_length

    assert max_input_length(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert max_input_length(tiny_bert_config(10, max_position_embeddings=512)) == 512


# ------------------------------------------------------------------------------------------------ CLI predict input checks
@pytest.fixture()
def saved_run(tmp_path, base) -> str:
    build(base=base, task_list=tasks()[:2]).save_pretrained(str(tmp_path / "run"))
    return str(tmp_path / "run")


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "caf\\u00e9"}\n\xff\xfe bad bytes\n', "line 2 is not UTF-8 (byte 0xff at column 1). Fix: save the file as UTF-8"),
        (b'{"text": 5}\n', "line 1: `text` must be a string, got 5."),
        (b'good film\n{"text": null}\n', "line 2: `text` must be a string, got null."),
        (b'{"text": "a", "text_pair": 3}\n', "`text_pair` must be a string"),
        (b'{"tokens": ["a", 1]}\n', "`tokens` must be a list of strings"),
        (b'{"txt": "a"}\n', "unknown field(s) ['txt']"),
    ],
)
def test_cli_predict_input_file_errors_are_one_line(saved_run, tmp_path, capsys, content: bytes, message: str):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    assert main(["predict", saved_run, "--task", "sent", "--input", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --input {path} line") and "\n" not in err and message in err, err


def test_cli_predict_max_seq_length_above_the_model(saved_run, capsys):
    assert main(["predict", saved_run, "--task", "sent", "--max-seq-length", "1000", "good film"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' own loading progress bar
    assert err.startswith("error: max_length=1000 is above the 128 tokens") and "\n" not in err


def test_cli_eval_max_seq_length_above_the_model(saved_run, capsys):
    assert main(["eval", saved_run, "--max-seq-length", "1000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: max_length=1000 is above the 128 tokens") and "\n" not in err


def test_cli_predict_prints_strict_json_for_nan_scores(tmp_path, base, capsys):
    model = build(base=base, task_list=tasks()[:2])
    with torch.no_grad():
        for p in model.heads["sent"].parameters():
            p.fill_(float("nan"))
    model.save_pretrained(str(tmp_path / "run"))
    assert main(["predict", str(tmp_path / "run"), "--task", "sent", "good film"]) == 0
    row = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert row["score"] is None and set(row["scores"].values()) == {None}


def test_cli_predict_a_long_token_input(saved_run, tmp_path, capsys):
    path = tmp_path / "long.txt"
    path.write_text(" ".join(["john"] * 3000) + "\n", encoding="utf-8")
    assert main(["predict", saved_run, "--task", "ner", "--input", str(path), "--max-seq-length", "64"]) == 0
    assert len(json.loads(capsys.readouterr().out)["tags"]) == 3000
