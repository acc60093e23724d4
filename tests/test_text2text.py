"""Generative task kinds (issue 22, parts 1 and the data-side bad inputs): Task fields, prompt/target building,
tokens with the prompt masked, truncation that keeps the target and the template's words, padding for training and
for generation. Tokenizers need no files: `ByT5Tokenizer()` (bytes, T5-style EOS suffix) and a word-level fast
tokenizer built in memory (Llama-style BOS prefix, no pad token)."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import ByT5Tokenizer, PreTrainedTokenizerFast

from hf_mtl.data.collators import GenerativeCollator, MultiTaskCollator, PromptCollator
from hf_mtl.data.preprocess import encode_task, handle_unlabeled
from hf_mtl.data.readers import load_task_split
from hf_mtl.data.text2text import (
    IGNORE_INDEX,
    build_prompt,
    build_target,
    cut_longest_first,
    encode_prompt,
)
from hf_mtl.errors import DataError, TaskConfigError
from hf_mtl.metrics import known_metric_names, validate_metric_names
from hf_mtl.tasks import Task


SENTIMENT = {"name": "sentiment", "kind": "causal_lm", "prompt_template": "Review: {review}\nIs it good? Answer:",
             "label_words": {"0": "no", "1": "yes"}}
WORDS = ["<s>", "</s>", "<unk>", "Review", ":", "Is", "it", "good", "?", "Answer", "yes", "no", "great", "film", "dull", "the", "cat"]


@pytest.fixture(scope="module")
def byt5() -> ByT5Tokenizer:
    return ByT5Tokenizer()


@pytest.fixture(scope="module")
def words() -> PreTrainedTokenizerFast:
    """A decoder-only style fast tokenizer: one token per word or punctuation mark, BOS before every text, no pad."""
    model = models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>")
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def rows(**columns) -> datasets.Dataset:
    return datasets.Dataset.from_dict(columns)


# ------------------------------------------------------------------------------------ Task fields
def test_task_defaults_for_generative_kinds() -> None:
    seq = Task(name="rte", kind="seq2seq", text_column="sentence1", text_pair_column="sentence2", target_column="t")
    assert seq.prompt_template == "rte sentence1: {sentence1} sentence2: {sentence2}"  # T5/Hyperformer prefix
    assert seq.metrics == ["exact_match"]
    causal = Task(name="c", kind="causal_lm")
    assert causal.prompt_template == "text: {text}" and causal.answer_column == "label"
    sentiment = Task.from_dict(SENTIMENT)
    assert sentiment.labels == ["0", "1"] and sentiment.metrics == ["accuracy"]
    assert Task.from_dict(json.loads(sentiment.to_json())) == sentiment  # a saved task.json reloads the same


@pytest.mark.parametrize("fields, words", [
    ({"kind": "classification", "prompt_template": "{text}"}, ["prompt_template", "causal_lm"]),
    ({"target_column": "de", "target_template": "{de}"}, ["target_column", "target_template"]),
    ({"label_words": {"0": "Yes", "1": "yes "}}, ["label_words", "same word", "'0'", "'1'"]),
    ({"label_words": {"0": "yes"}}, ["label_words", "at least 2"]),
    ({"label_words": {"0": "a", "1": "b"}, "labels": ["0", "2"]}, ["labels", "label_words"]),
    ({"generation": {"max_new_token": 3}}, ["generation", "'max_new_token'", "max_new_tokens"]),
    ({"generation": {"max_new_tokens": -1}}, ["generation", "max_new_tokens"]),
    ({"prompt_template": "{text:.2f}"}, ["prompt_template", "{column}"]),
    ({"prompt_template": "{text"}, ["prompt_template", "template"]),
    ({"metrics": ["accuracy"]}, ["accuracy", "label_words"]),
    ({"metrics": ["f1"]}, ["f1", "does not score generated text"]),
    ({"label_words": {"0": "a", "1": "b"}, "metrics": ["pearson"]}, ["pearson", "label_words"]),
    ({"head_layer": 2}, ["head_layer"]),
    ({"text_pair_column": "b", "prompt_template": "{a}"}, ["text_pair_column", "prompt_template"]),
])
def test_bad_generative_fields_name_task_field_and_fix(fields: dict, words: list[str]) -> None:
    entry = {"name": "gen", "kind": "causal_lm", **fields}
    with pytest.raises(TaskConfigError) as err:
        Task.from_dict(entry)
    message = str(err.value)
    assert "task 'gen'" in message and "Fix:" in message
    for word in words:
        assert word in message


def test_generation_metric_names_are_built_in_and_refused_on_encoder_kinds() -> None:
    assert {"exact_match", "rouge1", "rouge2", "rougeL", "bleu", "chrf"} <= set(known_metric_names())
    validate_metric_names(Task(name="t", kind="seq2seq", target_column="y", metrics=["chrf", "bleu", "rougeL"]))
    with pytest.raises(TaskConfigError, match="'rouge1' scores generated text"):
        validate_metric_names(Task(name="t", metrics=["rouge1"]))


# ------------------------------------------------------------------------------------ texts and tokens
def test_prompt_and_target_from_a_row() -> None:
    task = Task.from_dict(SENTIMENT)
    assert build_prompt(task, {"review": "great film", "label": 1}) == "Review: great film\nIs it good? Answer:"
    assert build_target(task, {"review": "x", "label": 1}) == "yes"
    template = Task(name="t", kind="seq2seq", prompt_template="{a} {{literal}}", target_template="{b}-{a}")
    assert build_prompt(template, {"a": "x", "b": 2}) == "x {literal}" and build_target(template, {"a": "x", "b": 2}) == "2-x"


def test_causal_lm_masks_prompt_and_appends_eos(words: PreTrainedTokenizerFast) -> None:
    task = Task.from_dict(SENTIMENT)
    out = encode_task(task, rows(review=["great film", "dull"], label=[1, 0]), words, 32, "train")
    example = out[0]
    prompt = encode_prompt(task, {"review": "great film"}, words, 32)
    assert prompt[0] == words.bos_token_id and example["input_ids"][: len(prompt)] == prompt
    assert example["prompt_length"] == len(prompt) and example["reference"] == "1"
    target = example["input_ids"][len(prompt):]
    assert words.convert_ids_to_tokens(target) == ["yes", "</s>"]
    assert example["labels"] == [IGNORE_INDEX] * len(prompt) + target  # -100 on exactly the prompt
    batch = MultiTaskCollator(words, [task])([{**e, "task": "sentiment"} for e in out])
    labels, mask = batch["labels"], batch["attention_mask"]
    assert batch["task"] == "sentiment" and set(batch) == {"input_ids", "attention_mask", "labels", "task"}
    assert (labels[mask == 0] == IGNORE_INDEX).all()  # padding is never scored
    assert (batch["input_ids"][mask == 0] == words.eos_token_id).all()  # no pad token: EOS pads
    scored = (labels != IGNORE_INDEX).sum(1).tolist()
    assert scored == [2, 2] and labels[1, mask[1].sum() - 1] == words.eos_token_id


def test_seq2seq_encoder_gets_prompt_decoder_labels_get_target(byt5: ByT5Tokenizer) -> None:
    task = Task(name="tr", kind="seq2seq", text_column="en", target_column="de")
    example = encode_task(task, rows(en=["the cat"], de=["die Katze"]), byt5, 64, "train")[0]
    assert byt5.decode(example["input_ids"]) == "tr en: the cat</s>"  # T5's own EOS suffix on the encoder input
    assert example["labels"] == byt5("die Katze", add_special_tokens=False)["input_ids"] + [byt5.eos_token_id]
    assert example["prompt_length"] == len(example["input_ids"]) and example["reference"] == "die Katze"


def test_truncation_keeps_instruction_after_long_review_and_the_target(byt5: ByT5Tokenizer) -> None:
    task = Task.from_dict(SENTIMENT)
    review = "a long and winding review " * 20
    example = encode_task(task, rows(review=[review], label=[0]), byt5, 64, "train")[0]
    assert len(example["input_ids"]) == 64
    text = byt5.decode(example["input_ids"])
    assert text.endswith("\nIs it good? Answer: no</s>") and text.startswith("Review: a long and winding")
    prompt = byt5.decode(example["input_ids"][: example["prompt_length"]])
    assert prompt == "Review: " + review[: 64 - len("Review: \nIs it good? Answer:") - 4] + "\nIs it good? Answer:"


def test_truncation_cuts_whole_tokens_of_a_fast_tokenizer(words: PreTrainedTokenizerFast) -> None:
    task = Task.from_dict(SENTIMENT)
    example = encode_task(task, rows(review=["great film " * 20], label=[1]), words, 20, "train")[0]
    tokens = words.convert_ids_to_tokens(example["input_ids"])
    # BOS + "Review :" + 9 review words + "Is it good ? Answer :" + "yes" + EOS = 20
    assert tokens == ["<s>", "Review", ":", *(["great", "film"] * 5)[:9], "Is", "it", "good", "?", "Answer", ":",
                      "yes", "</s>"]


def test_truncation_cuts_the_longest_value_first(byt5: ByT5Tokenizer) -> None:
    assert cut_longest_first({"a": 10, "b": 4}, 3) == {"a": 7, "b": 4}
    assert cut_longest_first({"a": 10, "b": 4}, 8) == {"a": 3, "b": 3}
    task = Task(name="t", kind="seq2seq", prompt_template="A: {a} B: {b}", target_column="y")
    ids = encode_prompt(task, {"a": "x" * 40, "b": "y" * 10}, byt5, 40)
    assert byt5.decode(ids) == "A: " + "x" * 22 + " B: " + "y" * 10 + "</s>"  # 7 template bytes + 22 + 10 + EOS
    ids = encode_prompt(task, {"a": "x" * 40, "b": "y" * 10}, byt5, 20)
    assert byt5.decode(ids) == "A: " + "x" * 6 + " B: " + "y" * 6 + "</s>"


def test_test_split_without_target_encodes_the_prompt_only(byt5: ByT5Tokenizer) -> None:
    task = Task.from_dict(SENTIMENT)
    out = encode_task(task, rows(review=["dull"]), byt5, 64, "test")
    assert set(out.column_names) == {"input_ids", "attention_mask", "prompt_length"}
    assert out[0]["prompt_length"] == len(out[0]["input_ids"])


# ------------------------------------------------------------------------------------ padding
def test_prompt_collator_pads_left_for_decoder_only_right_for_seq2seq(byt5: ByT5Tokenizer) -> None:
    task = Task.from_dict(SENTIMENT)
    out = encode_task(task, rows(review=["great film", "dull"], label=[1, 0]), byt5, 64, "train")
    features = [out[0], out[1]]
    batch = PromptCollator(byt5, "causal_lm")(features)
    lengths = [f["prompt_length"] for f in features]
    width = max(lengths)
    assert batch["input_ids"].shape == (2, width) and batch["references"] == ["1", "0"]
    for i, feature in enumerate(features):
        pad = width - lengths[i]
        assert batch["input_ids"][i, pad:].tolist() == feature["input_ids"][: lengths[i]]  # prompt only, at the end
        assert batch["attention_mask"][i].tolist() == [0] * pad + [1] * lengths[i]
        assert (batch["input_ids"][i, :pad] == byt5.pad_token_id).all()
    right = PromptCollator(byt5, "seq2seq")(features)
    assert right["attention_mask"][1].tolist() == [1] * lengths[1] + [0] * (width - lengths[1])


def test_generative_collator_pads_seq2seq_labels_and_mixes_generative_tasks(byt5: ByT5Tokenizer) -> None:
    a = Task(name="a", kind="seq2seq", text_column="x", target_column="y")
    b = Task(name="b", kind="seq2seq", text_column="x", target_column="y")
    enc = {t.name: encode_task(t, rows(x=["one", "three"], y=["1", "333"]), byt5, 32, "train") for t in (a, b)}
    batch = MultiTaskCollator(byt5, [a, b])([{**enc["a"][0], "task": "a"}, {**enc["b"][1], "task": "b"}])
    assert batch["task"] == ["a", "b"]
    assert batch["labels"].tolist() == [enc["a"][0]["labels"] + [IGNORE_INDEX] * 2, enc["b"][1]["labels"]]
    assert batch["labels"].dtype == torch.long
    plain = GenerativeCollator(byt5, pad_to_multiple_of=8)([enc["a"][0]])
    assert plain["input_ids"].shape[1] == 16 and (plain["input_ids"][0, len(enc["a"][0]["input_ids"]):] == 0).all()
    encoder = Task(name="c", kind="classification")
    with pytest.raises(TaskConfigError, match="mixes generative tasks"):
        MultiTaskCollator(byt5, [a, encoder])([{**enc["a"][0], "task": "a"},
                                               {"input_ids": [5], "attention_mask": [1], "labels": 0, "task": "c"}])


# ------------------------------------------------------------------------------------ bad data
def test_template_naming_a_missing_column_is_refused(byt5: ByT5Tokenizer, tmp_path) -> None:
    task = Task.from_dict({**SENTIMENT, "prompt_template": "Review: {reveiw}"})
    with pytest.raises(DataError, match=r"`prompt_template` .* names the column 'reveiw'.*Fix"):
        encode_task(task, rows(review=["x"], label=[0]), byt5, 64, "train")
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"review": "x", "label": 0}) + "\n" + json.dumps({"review": "y", "label": 1}) + "\n")
    task.train_file = str(path)
    with pytest.raises(DataError, match=r"task 'sentiment': `prompt_template` .*'reveiw'.*train_file"):
        load_task_split(task, "train")
    task.prompt_template = "{review}"
    assert len(load_task_split(task, "train")) == 2  # readers take the template's columns, not `text_column`


def test_target_template_column_missing_is_refused(byt5: ByT5Tokenizer) -> None:
    task = Task(name="t", kind="seq2seq", prompt_template="{a}", target_template="{b} {c}")
    with pytest.raises(DataError, match=r"task 't': `target_template` names the column 'c'.*Fix"):
        encode_task(task, rows(a=["x"], b=["y"]), byt5, 64, "train")


def test_no_target_column_at_all_is_refused(byt5: ByT5Tokenizer) -> None:
    task = Task(name="t", kind="causal_lm", prompt_template="{en}")
    with pytest.raises(DataError) as err:
        encode_task(task, rows(en=["the cat"], de=["die Katze"]), byt5, 64, "train")
    assert "task 't'" in str(err.value) and "`target_column`" in str(err.value) and "`label_column`" in str(err.value)


def test_label_words_missing_a_label_of_the_data_is_refused(byt5: ByT5Tokenizer) -> None:
    task = Task.from_dict(SENTIMENT)
    with pytest.raises(DataError, match=r"task 'sentiment': the validation split has label\(s\) \['2'\].*label_words"):
        encode_task(task, rows(review=["a", "b", "c"], label=[0, 2, 1]), byt5, 64, "validation")


def test_prompt_that_leaves_no_room_for_the_target_is_refused(byt5: ByT5Tokenizer) -> None:
    task = Task.from_dict(SENTIMENT)  # the template's own words are 29 bytes, the target 4 with EOS
    encode_task(task, rows(review=["a"], label=[1]), byt5, 33, "train")  # room for the words and the target only
    with pytest.raises(DataError, match=r"task 'sentiment': row 0 .*`max_seq_length` 32.*Fix: raise `max_seq_length`"):
        encode_task(task, rows(review=["a"], label=[1]), byt5, 32, "train")
    long_target = Task(name="t", kind="seq2seq", prompt_template="{a}", target_column="b")
    with pytest.raises(DataError, match="max_seq_length"):
        encode_task(long_target, rows(a=["x"], b=["y" * 40]), byt5, 32, "train")


def test_blank_targets_are_refused_or_dropped(byt5: ByT5Tokenizer) -> None:
    task = Task(name="t", kind="causal_lm", prompt_template="{en}", target_column="de")
    data = rows(en=["a", "b"], de=["x", " "], label=[" ", " "])  # a blank `label` column is not this task's target
    with pytest.raises(DataError, match=r"task 't': 1 row\(s\) .* blank target in column 'de'.*drop_unlabeled"):
        handle_unlabeled(task, data, "train")
    task.drop_unlabeled = True
    with pytest.warns(UserWarning, match="dropped 1 row"):
        assert handle_unlabeled(task, data, "train")["en"] == ["a"]
    templated = Task(name="t", kind="causal_lm", prompt_template="{en}", target_template="{de}")
    with pytest.raises(DataError, match="blank target"):
        encode_task(templated, data, byt5, 64, "train")


def test_issue_recipe_tasks_load_and_tokenize_from_files(byt5: ByT5Tokenizer, tmp_path) -> None:
    from hf_mtl.data.dataset import load_raw_splits, prepare_datasets
    from hf_mtl.tasks import tasks_from_config

    reviews, pairs = tmp_path / "reviews.jsonl", tmp_path / "pairs.jsonl"
    reviews.write_text("".join(json.dumps({"review": r, "label": y}) + "\n" for r, y in [("fine", 1), ("dull", 0)]))
    pairs.write_text(json.dumps({"en": "The cat sleeps.", "de": "Die Katze schläft."}) + "\n")
    tasks = tasks_from_config([
        {"name": "sentiment", "kind": "causal_lm", "train_file": str(reviews), "validation_file": str(reviews),
         "prompt_template": "Review: {review}\nIs this review positive or negative? Answer:", "label_column": "label",
         "label_words": {"0": "negative", "1": "positive"}, "metrics": ["accuracy"], "generation": {"max_new_tokens": 3}},
        {"name": "translate_de", "kind": "causal_lm", "train_file": str(pairs), "prompt_template": "English: {en}\nGerman:",
         "target_column": "de", "metrics": ["chrf", "bleu"], "generation": {"max_new_tokens": 64, "num_beams": 2}},
    ])
    train = prepare_datasets(tasks, load_raw_splits(tasks, "train"), byt5, 128, "train")
    validation = prepare_datasets(tasks, load_raw_splits(tasks, "validation"), byt5, 128, "validation")
    assert validation["sentiment"]["reference"] == ["1", "0"] and set(validation) == {"sentiment"}
    example = train["translate_de"][0]
    assert byt5.decode(example["input_ids"]) == "English: The cat sleeps.\nGerman: Die Katze schläft.</s>"
    assert example["reference"] == "Die Katze schläft."


def test_inference_input_to_row() -> None:
    from hf_mtl.data.text2text import row_from_input

    task = Task(name="translate_de", kind="causal_lm", prompt_template="English: {en}\nGerman:", target_column="de")
    assert row_from_input(task, "The cat sleeps.") == {"en": "The cat sleeps."}
    assert row_from_input(task, {"en": "x", "other": 1}) == {"en": "x", "other": 1}
    pair = Task(name="rte", kind="seq2seq", text_column="a", text_pair_column="b")
    with pytest.raises(DataError, match=r"task 'rte': .*reads the columns \['a', 'b'\].*Fix: give each input"):
        row_from_input(pair, "one text")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['b'\]"):
        row_from_input(pair, {"a": "x"})
