"""Generative tasks at inference and in stores (issue 22): generation checks at Task construction, `predict` and
`hf-mtl predict` for generative tasks (a text, and a label for label words), and stores: save, load, push and pull
per task through the test Hub server with the same generations, and the model card of generative tasks."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import ByT5Tokenizer, LlamaConfig

from hf_mtl.errors import TaskConfigError
from hf_mtl.tasks import Task


def sentiment(**generation) -> Task:
    return Task("sent", kind="causal_lm", prompt_template="Review: {text} Answer:", label_column="label",
                label_words={"0": "neg", "1": "pos"}, generation=generation or None)


# ------------------------------------------------------------------------------------------------ Task checks
@pytest.mark.parametrize("generation, field", [
    ({"num_return_sequences": 2, "num_beams": 4}, "num_return_sequences"),
    ({"num_return_sequences": 3, "do_sample": True}, "num_return_sequences"),
    ({"num_beams": 0}, "num_beams"),
    ({"num_beams": -1}, "num_beams"),
])
def test_generation_options_each_row_cannot_serve_are_refused_at_construction(generation, field):
    with pytest.raises(TaskConfigError, match=rf"task 'sent'.*{field}.*Fix:"):
        sentiment(**generation)


def test_generation_options_within_limits_are_kept():
    task = sentiment(num_beams=2, num_return_sequences=1, max_new_tokens=3)
    assert task.generation == {"num_beams": 2, "num_return_sequences": 1, "max_new_tokens": 3}
    assert Task.from_dict(json.loads(task.to_json())).generation == task.generation


# ------------------------------------------------------------------------------------------------ predict
def tiny_llama() -> LlamaConfig:
    return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, vocab_size=len(TOKENIZER),
                       pad_token_id=0, eos_token_id=1)


TOKENIZER = ByT5Tokenizer()  # needs no files: bytes are tokens (id = byte + 3), pad 0, eos 1
TEXTS = ["a fine film", "dull", "the plot drags on and on"]


def echo() -> Task:
    return Task("echo", kind="causal_lm", prompt_template="Copy: {text}", target_column="out",
                generation={"max_new_tokens": 7})


def pair() -> Task:  # a template over two columns: inputs are rows ({column: value}) or (text, text_pair) pairs
    return Task("nli", kind="causal_lm", text_pair_column="hyp", prompt_template="P: {text} H: {hyp} ->",
                label_column="label", label_words={"yes": "y", "no": "n"})


@pytest.fixture(scope="module")
def model():
    from hf_mtl.modeling import MultiTaskModel

    torch.manual_seed(0)
    built = MultiTaskModel.from_config(tiny_llama(), [sentiment(), echo(), pair()], tokenizer=TOKENIZER,
                                       adapter_method="none", freeze_backbone=False)
    with torch.no_grad():  # random weights far from the init, so that different prompts generate differently
        for p in built.backbone.parameters():
            p.normal_(0, 0.5)
    return built.eval()


def token_of(char: str) -> int:
    return ord(char) + 3


def only(chars: str) -> list[int]:
    """`suppress_tokens` that leave only `chars` to generate."""
    keep = {token_of(c) for c in chars}
    return [t for t in range(len(TOKENIZER)) if t not in keep]


def test_predict_mixes_generative_tasks_in_one_call_as_each_alone(model):
    names = ["sent", "echo", "sent"]
    rows = model.predict(TEXTS, task=names)
    alone = [model.generate([text], task=name)[0] for text, name in zip(TEXTS, names)]
    assert [r["text"] for r in rows] == alone and [r["task"] for r in rows] == names
    assert set(rows[1]) == {"task", "text"}  # free text: no label
    from hf_mtl.generation_metrics import output_to_label

    assert [r["label"] for r in rows[::2]] == [output_to_label(model.tasks["sent"], r["text"]) for r in rows[::2]]
    # beams and a limit from the call reach every generative row
    beams = model.predict(TEXTS, task=names, num_beams=2, max_new_tokens=3)
    assert [r["text"] for r in beams] == model.generate(TEXTS, task=names, num_beams=2, max_new_tokens=3)


def test_predict_maps_a_generated_label_word_back_to_its_label(model):
    # only 'y' (the word of label "yes") can be generated, and the rows stop at one new token
    rows = model.predict([("a", "b"), ("c", "d")], task="nli", max_new_tokens=1, suppress_tokens=only("y"))
    assert rows == [{"task": "nli", "text": "y", "label": "yes"}] * 2
    rows = model.predict(TEXTS[:2], task="sent", max_new_tokens=1, suppress_tokens=only("p"))
    assert rows == [{"task": "sent", "text": "p", "label": None}] * 2  # 'p' is no label word ('pos' is)
    from hf_mtl.inference import generated_result

    assert generated_result(model.tasks["sent"], " POS\nbecause it is good")["label"] == "1"
    assert generated_result(model.tasks["sent"], "neutral")["label"] is None


def test_predict_reads_rows_and_pairs_for_templates_over_two_columns(model):
    by_row = model.predict([{"text": "it rains", "hyp": "it is wet"}], task="nli")
    by_pair = model.predict([("it rains", "it is wet")], task="nli")
    assert by_row == by_pair and by_row[0]["text"] == model.generate([{"text": "it rains", "hyp": "it is wet"}],
                                                                     task="nli")[0]
    from hf_mtl.errors import DataError

    with pytest.raises(DataError, match=r"task 'nli'.*reads the columns \['text', 'hyp'\].*Fix"):
        model.predict(["it rains"], task="nli")


def test_predict_all_generates_for_every_generative_task(model):
    (row,) = model.predict([{"text": "ok", "hyp": "fine"}], task="all", max_new_tokens=2)
    assert set(row) == {"sent", "echo", "nli"}
    assert row["echo"]["text"] == model.generate([{"text": "ok"}], task="echo", max_new_tokens=2)[0]


def test_predict_refuses_options_no_row_reads(model):
    from hf_mtl.errors import DataError

    with pytest.raises(DataError, match=r"language='de'.*task 'sent' is generative.*Fix"):
        model.predict(TEXTS, task="sent", language="de")
    with pytest.raises(TaskConfigError, match=r"unknown generation option 'num_beam'.*did you mean 'num_beams'"):
        model.predict(TEXTS, task="sent", num_beam=2)
    with pytest.raises(TaskConfigError, match=r"num_beams=0.*Fix"):
        model.predict(TEXTS, task="sent", num_beams=0)


def test_generation_options_without_a_generative_row_are_refused():
    from helpers import tiny_bert_config, tiny_tokenizer
    from hf_mtl.errors import DataError
    from hf_mtl.modeling import MultiTaskModel

    tok = tiny_tokenizer()
    encoder = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [Task("cls", labels=["a", "b"])], tokenizer=tok)
    with pytest.raises(DataError, match=r"generation options \['num_beams'\].*no input is for a generative task"):
        encoder.predict(["good"], task="cls", num_beams=2)


# ------------------------------------------------------------------------------------------------ hf-mtl predict
@pytest.fixture(scope="module")
def saved(model, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("store") / "run"
    model.save_pretrained(str(folder))
    return str(folder)


def cli_rows(capsys, *argv: str) -> list[dict]:
    from hf_mtl.cli import main

    assert main(["predict", *argv]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_cli_predict_generates_with_a_label_and_generation_options(model, saved, capsys):
    assert cli_rows(capsys, saved, "--task", "sent", *TEXTS[:2]) == model.predict(TEXTS[:2], task="sent")
    assert cli_rows(capsys, saved, "--task", "echo", "--num-beams", "2", "--max-new-tokens", "3", TEXTS[2]) == \
        model.predict(TEXTS[2:], task="echo", num_beams=2, max_new_tokens=3)


def test_cli_predict_input_file_with_a_task_per_line(model, saved, tmp_path, capsys):
    lines = [{"task": "sent", "text": TEXTS[0]}, {"task": "nli", "text": "it rains", "text_pair": "it is wet"},
             {"task": "nli", "columns": {"text": "sun", "hyp": "dry"}}, {"text": TEXTS[1]}]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    # lines without a task take --task's
    rows = cli_rows(capsys, saved, "--task", "echo", "--input", str(path))
    inputs = [TEXTS[0], ("it rains", "it is wet"), {"text": "sun", "hyp": "dry"}, TEXTS[1]]
    assert rows == model.predict(inputs, task=["sent", "nli", "nli", "echo"])


@pytest.mark.parametrize("lines, argv, message", [
    ([{"text": "a"}], [], "No task. Fix: give --task"),
    ([{"task": "sent", "text": "a"}, {"text": "b"}], [], "input 2 (counting non-blank lines) names no `task`"),
    ([{"task": "sent", "text": "a"}], ["--task", "all"], "--task all asks every task"),
    ([{"task": 3, "text": "a"}], [], "line 1: `task` must be a task name, got 3"),
    ([{"task": "nli", "columns": {"text": "a"}, "text": "b"}], [], "line 1: give `columns` alone"),
    ([{"task": "nli", "columns": {"text": 1}}], [], "line 1: `columns` must be an object of strings"),
    ([{"task": "nli", "columns": {"text": "a"}}], [], "lacks the column(s) ['hyp']"),
    ([{"task": "nope", "text": "a"}], [], "nope"),
    ([{"task": "sent", "text": "a"}], ["--num-beams", "0"], "'0' is not a positive integer"),
])
def test_cli_predict_input_errors_are_one_line(saved, tmp_path, capsys, lines, argv, message):
    from hf_mtl.cli import main

    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    assert main(["predict", saved, "--input", str(path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' own loading progress bar
    assert err.startswith("error: ") and message in err, err


# ------------------------------------------------------------------------------------------------ store, card, Hub
try:  # tests/ as a package, or tests/ on sys.path (rootdir conftest)
    from tests.hub_server import ALICE_TOKEN, hub, hub_api  # noqa: F401
except ImportError:
    from hub_server import ALICE_TOKEN, hub, hub_api  # noqa: F401

REPO = "alice/tiny-generative"


def test_generative_store_pushes_and_pulls_per_task_with_the_same_generations(model, saved, hub, tmp_path):
    from hf_mtl.hub import pull, push
    from hf_mtl.modeling import MultiTaskModel

    texts, names = [TEXTS[0], TEXTS[1], ("it rains", "it is wet")], ["sent", "echo", "nli"]
    before = model.predict(texts, task=names, num_beams=2)
    push(saved, REPO, tasks=["sent", "echo"], token=ALICE_TOKEN)
    push(saved, REPO, tasks=["nli"], token=ALICE_TOKEN)  # a second task pushed later keeps the first ones
    files = set(hub.list_files(REPO))
    assert {f"{t}/task.json" for t in names} <= files and "backbone/model.safetensors" in files

    card = hub.read_file(REPO, "README.md").decode()
    meta = card.split("---")[1]
    assert "pipeline_tag: text-generation" in meta and "- text-generation" in meta
    assert '- prompt template: `"Review: {text} Answer:"`' in card
    assert "- label words (2, label column `label`): `0` → `neg`, `1` → `pos`" in card
    assert "- target column: `out`" in card and '- generation: `{"max_new_tokens": 7}`' in card
    assert "- generation: greedy" in card

    one = MultiTaskModel.from_pretrained(pull(REPO, tasks=["nli"], local_dir=tmp_path / "nli"))
    assert one.task_names == ["nli"] and one.predict(texts[2:], task="nli", num_beams=2) == before[2:]
    every = MultiTaskModel.from_pretrained(pull(REPO, local_dir=tmp_path / "all"))
    assert every.predict(texts, task=names, num_beams=2) == before


def test_card_shows_peft_loading_on_the_lm_class_of_the_task_kind():
    """A LoRA task of a generative store is a PEFT adapter of the LM (with its head), not of the bare AutoModel."""
    from hf_mtl.store.card import render_card

    config = {"tasks": ["sent"], "adapter_method": "lora", "peft_adapters": True, "base_model": "org/lm"}
    causal = render_card(config, {"sent": {"name": "sent", "kind": "causal_lm"}}, "alice/lm-tasks")
    assert 'base = AutoModelForCausalLM.from_pretrained("org/lm")' in causal
    seq2seq = render_card(config, {"sent": {"name": "sent", "kind": "seq2seq"}}, "alice/t5-tasks")
    assert "AutoModelForSeq2SeqLM.from_pretrained" in seq2seq
    encoder = render_card(config, {"sent": {"name": "sent", "kind": "classification", "labels": ["a", "b"]}}, "a/b")
    assert 'base = AutoModel.from_pretrained("org/lm")' in encoder
