"""From raw task examples to model inputs: label lists, label ids, and tokenization per task kind."""

from __future__ import annotations

import math
from typing import Any

import datasets

from ..errors import DataError
from ..tasks import Task

IGNORE_INDEX = -100
ENCODED_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def tokens_column(task: Task) -> str:
    """Token tasks read a list of words; a task that keeps the default `text` column reads `tokens`."""
    return "tokens" if task.text_column == "text" else task.text_column


def infer_labels(task: Task, train: datasets.Dataset) -> list[str]:
    """The sorted label set of the training split (tags: "O" first, then sorted)."""
    if task.kind == "token_classification":
        values = {str(tag) for row in train[task.label_column] for tag in row}
        return (["O"] if "O" in values else []) + sorted(values - {"O"})
    values = set(train[task.label_column])
    if None in values:
        raise DataError(f"task {task.name!r}: column {task.label_column!r} of the training data has empty labels.")
    if all(isinstance(v, (int,)) and not isinstance(v, bool) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values)


def ensure_labels(task: Task, train: datasets.Dataset | None) -> None:
    """Fill `task.labels` from the training data when the task does not list them."""
    if task.kind in ("regression", "masked_lm") or task.labels is not None:
        return
    if train is None:
        raise DataError(f"task {task.name!r}: no label list and no training data to infer it from. Fix: set `labels`.")
    labels = infer_labels(task, train)
    if task.kind == "classification" and len(labels) < 2:
        raise DataError(
            f"task {task.name!r}: the training data has a single label {labels} in column {task.label_column!r}. "
            f"Fix: check the column, or give `labels` explicitly."
        )
    task.set_labels(labels)


def label_to_id(task: Task, split: str):
    """A function mapping a raw label value to its id, with a clear error for unknown values."""
    index = {label: i for i, label in enumerate(task.labels or [])}

    def convert(value: Any, row: int) -> int:
        key = str(value)
        if key in index:
            return index[key]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(index) and key not in index:
            return value  # integer class ids of a dataset whose `labels` are names (e.g. GLUE's 0/1)
        raise DataError(
            f"task {task.name!r}: label {value!r} in the {split} split (row {row}, column {task.label_column!r}) "
            f"is not in the task's label set {task.labels}. Fix: add it to `labels`, or clean the {split} data."
        )

    return convert


def encode_task(task: Task, data: datasets.Dataset, tokenizer: Any, max_length: int, split: str) -> datasets.Dataset:
    """Tokenize one split of one task; output columns are `input_ids`, `attention_mask`,
    (`token_type_ids`) and `labels` (when the split has labels)."""
    if len(data) == 0:
        raise DataError(f"task {task.name!r}: the {split} split is empty. Fix: check the file or `max_*_samples`.")
    if task.kind == "token_classification":
        fn, has_labels = _token_encoder(task, tokenizer, max_length, split), task.label_column in data.column_names
    elif task.kind == "masked_lm":
        fn, has_labels = _mlm_encoder(task, tokenizer, max_length), False
    else:
        _check_columns(task, data, split)
        fn, has_labels = _sequence_encoder(task, tokenizer, max_length, split), task.label_column in data.column_names
    out = data.map(
        fn, batched=True, with_indices=True, remove_columns=data.column_names,
        desc=f"Tokenizing {task.name}/{split}", load_from_cache_file=False, keep_in_memory=True,
    )
    if not has_labels and "labels" in out.column_names:
        out = out.remove_columns("labels")
    return out


def _check_columns(task: Task, data: datasets.Dataset, split: str) -> None:
    needed = [task.text_column] + ([task.text_pair_column] if task.text_pair_column else [])
    for column in needed:
        if column not in data.column_names:
            field = "text_pair_column" if column == task.text_pair_column else "text_column"
            raise DataError(
                f"task {task.name!r}: the {split} split has no column {column!r} (field `{field}`). "
                f"Columns present: {data.column_names}. Fix: set `{field}` to one of them."
            )


def _sequence_encoder(task: Task, tokenizer: Any, max_length: int, split: str):
    to_id = label_to_id(task, split) if task.kind == "classification" else None

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        pair = batch[task.text_pair_column] if task.text_pair_column else None
        enc = tokenizer(_as_text(batch[task.text_column], task, indices), _as_text(pair, task, indices) if pair else None,
                        truncation=True, max_length=max_length)
        if task.label_column in batch:
            values = batch[task.label_column]
            if to_id is not None:
                enc["labels"] = [to_id(v, i) for v, i in zip(values, indices)]
            else:
                enc["labels"] = [_as_float(task, v, i, split) for v, i in zip(values, indices)]
        return dict(enc)

    return encode


def _as_text(values: list[Any], task: Task, indices: list[int]) -> list[str]:
    for value, row in zip(values, indices):
        if not isinstance(value, str):
            raise DataError(
                f"task {task.name!r}: row {row} has a non-text value {value!r} in a text column. "
                f"Fix: clean the data or choose another `text_column`."
            )
    return values


def _as_float(task: Task, value: Any, row: int, split: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or math.isinf(number):
        raise DataError(
            f"task {task.name!r}: regression target {value!r} in the {split} split (row {row}, column "
            f"{task.label_column!r}) is not a finite number. Fix: clean the data or choose another `label_column`."
        )
    return number


def _token_encoder(task: Task, tokenizer: Any, max_length: int, split: str):
    column = tokens_column(task)
    to_id = label_to_id(task, split)
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"task {task.name!r}: token classification needs a fast tokenizer (word alignment).")

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        enc = tokenizer(batch[column], is_split_into_words=True, truncation=True, max_length=max_length)
        if task.label_column in batch:
            enc["labels"] = [
                _align(enc.word_ids(i), [to_id(tag, row) for tag in tags])
                for i, (tags, row) in enumerate(zip(batch[task.label_column], indices))
            ]
        return dict(enc)

    return encode


def _align(word_ids: list[int | None], tag_ids: list[int]) -> list[int]:
    """The first sub-word of each word carries its tag; other pieces and special tokens get -100."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(tag_ids[word] if word is not None and word != previous else IGNORE_INDEX)
        previous = word
    return labels


def _mlm_encoder(task: Task, tokenizer: Any, max_length: int):
    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        texts = batch[task.text_column]
        if texts and isinstance(texts[0], list):
            texts = [" ".join(words) for words in texts]
        enc = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
        return dict(enc)

    return encode
