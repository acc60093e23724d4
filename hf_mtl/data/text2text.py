"""Text-to-text examples of the generative kinds (`causal_lm`, `seq2seq`): prompt and target from a row, and tokens.

A row becomes a prompt (`Task.prompt_template` filled with the row's columns) and a target: the text of
`target_column`, `target_template` filled in, the `label_words` word of the row's label, or the text of
`label_column`. Tokens, per kind:

- `causal_lm` (decoder-only): `input_ids = [special prefix] + prompt + target + [EOS]`; `labels` are -100 on the
  prefix and the prompt, so the loss is on the target tokens and EOS only. A space separates prompt and target
  unless the prompt ends with whitespace (as lm-evaluation-harness's target delimiter).
- `seq2seq` (encoder-decoder): `input_ids = [prefix] + prompt + [suffix]` (the tokenizer's own special tokens, e.g.
  T5's closing `</s>`); `labels = [prefix] + target + [EOS]`, as `tokenizer(text_target=...)` builds them.

Too long inputs are cut to `max_seq_length` where it hurts least: the target is kept whole, and so are the
template's own words (an instruction after a long review survives); tokens come off the end of the column values
filled into the template, longest value first. Each encoded row also keeps `prompt_length` (the leading
`input_ids` that form the prompt, what generation starts from) and `reference` (the row's label for `label_words`
tasks, else the target text), which evaluation by generation scores against.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import datasets

from ..errors import DataError
from ..tasks import Task, parse_template


IGNORE_INDEX = -100
PROMPT_LENGTH_COLUMN = "prompt_length"
REFERENCE_COLUMN = "reference"
_SCALARS = (str, int, float, bool)


# ------------------------------------------------------------------------------------ columns
def template_columns(task: Task, field_name: str) -> list[str]:
    """The distinct columns a template field of the task (`prompt_template` or `target_template`) names, in order."""
    template = getattr(task, field_name)
    if template is None:
        return []
    pieces = parse_template(template, f"task {task.name!r}", field_name)
    return list(dict.fromkeys(column for _, column in pieces if column is not None))


def target_fields(task: Task) -> list[tuple[str, str]]:
    """`(field, column)` pairs the target reads."""
    if task.target_template is not None:
        return [("target_template", column) for column in template_columns(task, "target_template")]
    if task.target_column is not None:
        return [("target_column", task.target_column)]
    return [("label_column", task.label_column)]


def has_target(task: Task, column_names: Iterable[str]) -> bool:
    """Whether a split holds the columns of the task's target (a test split may lack them)."""
    columns = set(column_names)
    return all(column in columns for _, column in target_fields(task))


def check_columns(task: Task, column_names: list[str], split: str, origin: str | None = None) -> None:
    """Refuse a split that lacks a column the prompt names, or (except test splits) the target's columns.

    Raises:
        DataError: names the task, the field (`prompt_template`, `target_column`, `target_template`,
            `label_column`), the missing column, the columns present, and the fix.
    """
    where = origin or f"the {split} split"
    for column in template_columns(task, "prompt_template"):
        if column not in column_names:
            raise DataError(
                f"task {task.name!r}: `prompt_template` {task.prompt_template!r} names the column {column!r}, which "
                f"{where} lacks; its columns are {column_names}. Fix: write the template over these columns.")
    if split == "test" or has_target(task, column_names):
        return
    field, column = next((f, c) for f, c in target_fields(task) if c not in column_names)
    if field == "label_column" and task.label_words is None:
        raise DataError(
            f"task {task.name!r}: {where} has no target: no `target_column` or `target_template` is set, and "
            f"`label_column` {column!r} is not among its columns {column_names}. Fix: set `target_column` to the "
            f"column holding the target text, `label_column` (with `label_words` for classes) to the label column, "
            f"or `target_template`.")
    raise DataError(f"task {task.name!r}: `{field}` names the column {column!r}, which {where} lacks; its columns are "
                    f"{column_names}. Fix: set `{field}` to one of them.")


def check_label_words(task: Task, data: datasets.Dataset, split: str) -> None:
    """Every label of the split has a word in `label_words` (all missing labels named at once)."""
    if task.label_words is None or task.label_column not in data.column_names:
        return
    missing = sorted({str(v) for v in data.unique(task.label_column) if v is not None} - set(task.label_words))
    if missing:
        raise DataError(
            f"task {task.name!r}: the {split} split has label(s) {missing} in column {task.label_column!r} that "
            f"`label_words` {task.label_words} has no word for. Fix: add a word for each of them to `label_words`.")


# ------------------------------------------------------------------------------------ texts
def _value(task: Task, row: dict[str, Any], column: str, field_name: str, index: int | None) -> str:
    value = row.get(column)
    if not isinstance(value, _SCALARS):
        at = "" if index is None else f" (row {index})"
        raise DataError(f"task {task.name!r}: column {column!r}{at}, which `{field_name}` reads, holds {value!r}, not "
                        f"a text or a number. Fix: clean the data, or change `{field_name}`.")
    return str(value)


def _fill(pieces: list[tuple[str, str | None]], values: dict[str, str]) -> str:
    return "".join(literal + (values[column] if column is not None else "") for literal, column in pieces)


def prompt_values(task: Task, row: dict[str, Any], index: int | None = None) -> dict[str, str]:
    """`{column: text}` of the columns `prompt_template` names, read from a row."""
    return {c: _value(task, row, c, "prompt_template", index) for c in template_columns(task, "prompt_template")}


def build_prompt(task: Task, row: dict[str, Any], index: int | None = None) -> str:
    """The row's prompt: `prompt_template` filled with the row's columns (no truncation)."""
    return _fill(parse_template(task.prompt_template, f"task {task.name!r}", "prompt_template"),
                 prompt_values(task, row, index))


def build_target(task: Task, row: dict[str, Any], index: int | None = None) -> str:
    """The row's target text: `target_template` filled in, `target_column`, the label's word, or the label's text.

    Raises:
        DataError: the label has no word in `label_words`, or the target is blank.
    """
    if task.target_template is not None:
        pieces = parse_template(task.target_template, f"task {task.name!r}", "target_template")
        text = _fill(pieces, {c: _value(task, row, c, "target_template", index) for _, c in pieces if c is not None})
    else:
        field_name = "target_column" if task.target_column is not None else "label_column"
        text = _value(task, row, task.answer_column, field_name, index)
        if task.label_words is not None:
            if text not in task.label_words:
                raise DataError(f"task {task.name!r}: label {text!r} (row {index}) has no word in `label_words` "
                                f"{task.label_words}. Fix: add a word for it to `label_words`.")
            text = task.label_words[text]
    if not text.strip():
        fix = ("fill in the columns `target_template` reads" if task.target_template is not None else
               "fill it in, or set `drop_unlabeled: true` to drop rows with a blank target")
        raise DataError(f"task {task.name!r}: row {index} has a blank target. Fix: {fix}.")
    return text


def row_from_input(task: Task, value: str | dict[str, Any]) -> dict[str, Any]:
    """The row an inference input stands for: a text fills the one column `prompt_template` names; a dict is a row.

    Raises:
        DataError: a text for a template over several columns (or none), or a dict lacking one of its columns.
    """
    columns = template_columns(task, "prompt_template")
    if isinstance(value, dict):
        missing = [column for column in columns if column not in value]
        if missing:
            raise DataError(f"task {task.name!r}: the input {value!r} lacks the column(s) {missing} that "
                            f"`prompt_template` {task.prompt_template!r} names. Fix: give every one of {columns}.")
        return value
    if len(columns) != 1:
        raise DataError(f"task {task.name!r}: `prompt_template` {task.prompt_template!r} reads the columns {columns}, "
                        f"so a single text cannot fill it. Fix: give each input as a JSON object with these columns.")
    return {columns[0]: value}


# ------------------------------------------------------------------------------------ tokens
def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (e.g. `[BOS]` / `[]` for Llama, `[]` / `[EOS]`
    for T5, `[<s>]` / `[</s>]` for BART), found by tokenizing a probe with and without them."""
    probe = "a"
    full = list(tokenizer(probe)["input_ids"])
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    return [], []


def eos_token_id(task: Task, tokenizer: Any) -> int:
    """The tokenizer's EOS id, which ends every target (generation stops on it)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError(f"task {task.name!r}: the tokenizer has no EOS token, which ends every target of a {task.kind} "
                        f"task. Fix: use a tokenizer with an `eos_token`, or set `tokenizer.eos_token`.")
    return int(eos)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _cut_text(tokenizer: Any, text: str, keep: int) -> str:
    """The start of `text` that holds its first `keep` tokens."""
    if keep <= 0:
        return ""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return text if keep >= len(offsets) else text[:offsets[keep - 1][1]]
    return tokenizer.decode(_ids(tokenizer, text)[:keep], skip_special_tokens=True)  # slow tokenizers: no offsets


def cut_longest_first(lengths: dict[str, int], excess: int) -> dict[str, int]:
    """New lengths after removing `excess` tokens one at a time from the currently longest value (ties: the first).

    Args:
        lengths: `{column: token count}`.
        excess: how many tokens must go (at most the sum of `lengths`).
    """
    kept = dict(lengths)
    for _ in range(min(excess, sum(kept.values()))):
        longest = max(kept, key=lambda column: kept[column])
        kept[longest] -= 1
    return kept


def fit_prompt(task: Task, pieces: list[tuple[str, str | None]], values: dict[str, str], tokenizer: Any,
               budget: int) -> tuple[list[int], str] | None:
    """The prompt's tokens (no special tokens) within `budget`, cutting the column values longest first.

    The template's own words are never cut. The values are cut as text (at token boundaries) and the prompt is
    tokenized again whole, so a cut prompt is tokenized as naturally as a short one; when a boundary merges
    differently, the loop cuts again.

    Returns:
        `(token ids, prompt text)`, or None when even empty values leave the template's words over `budget`.
    """
    text = _fill(pieces, values)
    ids = _ids(tokenizer, text)
    while len(ids) > budget:
        lengths = {column: len(_ids(tokenizer, value)) for column, value in values.items()}
        if not any(lengths.values()):
            return None
        kept = cut_longest_first(lengths, len(ids) - budget)
        for column, value in values.items():
            if kept[column] < lengths[column]:
                cut = _cut_text(tokenizer, value, kept[column])
                values[column] = cut if len(cut) < len(value) else value[:-1]  # always progress
        text = _fill(pieces, values)
        ids = _ids(tokenizer, text)
    return ids, text


def _no_room(task: Task, index: int | None, split: str, max_length: int, target_tokens: int) -> DataError:
    at = f"row {index} of the {split} split" if index is not None else "the input"
    room = f" and its target ({target_tokens} tokens with EOS)" if target_tokens else ""
    return DataError(
        f"task {task.name!r}: {at}: the words of `prompt_template`{room} do not fit in `max_seq_length` {max_length}, "
        f"even with every column value cut out, so the target would have no room. Fix: raise `max_seq_length`, or "
        f"shorten `prompt_template` or the target.")


class TextToTextEncoder:
    """Tokenizes the rows of one generative task (see the module docstring); the tokenizer's special tokens, its EOS
    and the parsed template are looked up once.

    Args:
        task: a `causal_lm` or `seq2seq` task.
        tokenizer: the backbone's tokenizer.
        max_length: `max_seq_length`; for `causal_lm` prompt + target + EOS fit in it, for `seq2seq` the encoder
            input does, and so does the target with EOS.

    Raises:
        DataError: the tokenizer has no EOS token.
    """

    def __init__(self, task: Task, tokenizer: Any, max_length: int):
        self.task, self.tokenizer, self.max_length = task, tokenizer, max_length
        self.eos = eos_token_id(task, tokenizer)
        self.prefix, suffix = special_tokens(tokenizer)
        self.suffix = suffix if task.kind == "seq2seq" else []  # a decoder-only prompt goes on into its target
        self.pieces = parse_template(task.prompt_template, f"task {task.name!r}", "prompt_template")

    def prompt(self, row: dict[str, Any], reserve: int = 0, index: int | None = None,
               split: str = "input") -> tuple[list[int], str]:
        """A row's prompt tokens as generation reads them (with the special prefix, and for `seq2seq` the suffix), cut
        to `max_length - reserve` tokens (see `fit_prompt`), and the prompt text they hold.

        Args:
            row: `{column: value}` holding at least the columns `prompt_template` names.
            reserve: tokens kept free for what follows the prompt (`causal_lm`: the target and EOS).
            index, split: name the row in error messages.

        Raises:
            DataError: a column is missing or not text, or the template's own words leave no room.
        """
        budget = self.max_length - reserve - len(self.prefix) - len(self.suffix)
        fitted = fit_prompt(self.task, self.pieces, prompt_values(self.task, row, index), self.tokenizer, budget)
        if fitted is None:
            raise _no_room(self.task, index, split, self.max_length, reserve)
        return self.prefix + fitted[0] + self.suffix, fitted[1]

    def example(self, row: dict[str, Any], index: int | None = None, split: str = "train",
                with_target: bool = True) -> dict[str, Any]:
        """Tokenize one row: `input_ids`, `attention_mask`, `prompt_length`, and with a target `labels` (-100 on the
        prompt for `causal_lm`) and `reference`. `with_target=False` (a test split): the prompt only."""
        task, tokenizer = self.task, self.tokenizer
        if not with_target:
            ids, _ = self.prompt(row, 0, index, split)
            return {"input_ids": ids, "attention_mask": [1] * len(ids), PROMPT_LENGTH_COLUMN: len(ids)}
        target = build_target(task, row, index)
        reference = _value(task, row, task.label_column, "label_column", index) if task.label_words else target
        if task.kind == "seq2seq":
            labels = self.prefix + _ids(tokenizer, target) + [self.eos]  # as tokenizer(text_target=...) builds them
            if len(labels) > self.max_length:
                raise _no_room(task, index, split, self.max_length, len(labels))
            ids, _ = self.prompt(row, 0, index, split)
            return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels,
                    PROMPT_LENGTH_COLUMN: len(ids), REFERENCE_COLUMN: reference}
        # causal_lm: the prompt is cut to leave the target room, and the delimiter depends on the (cut) prompt's
        # end: reserve room for the longer of the two forms, then pick the form.
        spaced, bare = _ids(tokenizer, " " + target) + [self.eos], _ids(tokenizer, target) + [self.eos]
        prompt, text = self.prompt(row, max(len(spaced), len(bare)), index, split)
        answer = bare if text[-1:].isspace() else spaced
        ids = prompt + answer
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [IGNORE_INDEX] * len(prompt) + answer,
                PROMPT_LENGTH_COLUMN: len(prompt), REFERENCE_COLUMN: reference}


def encode_prompt(task: Task, row: dict[str, Any], tokenizer: Any, max_length: int, reserve: int = 0) -> list[int]:
    """A row's prompt tokens, as generation reads them (see `TextToTextEncoder.prompt`).

    Args:
        task: a generative task.
        row: `{column: value}` holding at least the columns `prompt_template` names.
        tokenizer: the backbone's tokenizer.
        max_length: the task's maximum sequence length (`max_seq_length`).
        reserve: tokens kept free after the prompt.
    """
    return TextToTextEncoder(task, tokenizer, max_length).prompt(row, reserve)[0]


def encode_text2text(task: Task, data: datasets.Dataset, tokenizer: Any, max_length: int, split: str) -> datasets.Dataset:
    """Tokenize one split of a generative task (see the module docstring).

    Args:
        task: a `causal_lm` or `seq2seq` task.
        data: the raw split.
        tokenizer: the backbone's tokenizer.
        max_length: `max_seq_length`.
        split: "train", "validation" or "test" (a test split may lack the target).

    Returns:
        Columns `input_ids`, `attention_mask`, `prompt_length`, and when the split has a target, `labels` (-100 on
        the prompt) and `reference`.

    Raises:
        DataError: a missing column, a label without a word, a blank target, a value that is not text, a prompt
            that leaves the target no room, or a tokenizer without EOS.
    """
    check_columns(task, data.column_names, split)
    check_label_words(task, data, split)
    with_target = has_target(task, data.column_names)
    encoder = TextToTextEncoder(task, tokenizer, max_length)

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        rows = [{column: batch[column][i] for column in batch} for i in range(len(indices))]
        encoded = [encoder.example(row, index, split, with_target) for row, index in zip(rows, indices)]
        return {key: [example[key] for example in encoded] for key in encoded[0]}

    return data.map(encode, batched=True, with_indices=True, remove_columns=data.column_names,
                    desc=f"Tokenizing {task.name}/{split}", load_from_cache_file=False, keep_in_memory=True)
