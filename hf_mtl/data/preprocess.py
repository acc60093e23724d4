"""From raw task examples to model inputs: label lists, label ids, and tokenization per task kind."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError
from ..tasks import Task
from .text2text import PROMPT_LENGTH_COLUMN, REFERENCE_COLUMN, encode_text2text


IGNORE_INDEX = -100
ENCODED_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels", PROMPT_LENGTH_COLUMN, REFERENCE_COLUMN)


def tokens_column(task: Task) -> str:
    """Token tasks read a list of words; a task that keeps the default `text` column reads `tokens`."""
    return "tokens" if task.text_column == "text" else task.text_column


LABEL_KINDS = ("classification", "token_classification")


def label_values(task: Task, data: datasets.Dataset) -> list[Any]:
    """The distinct values of the label column (of every tag, for token tasks), read from that column only."""
    values = data.with_format("arrow")[task.label_column]
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if task.kind == "token_classification" and _is_list(values.type):
        values = pc.list_flatten(values)
    return pc.unique(values).to_pylist()


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def sorted_labels(task: Task, values: Any) -> list[str]:
    """Labels in the order of the transformers examples: sorted unique values (integers by value); tag sets
    put "O" first."""
    values = set(values)
    if task.kind == "token_classification":
        names = {str(v) for v in values}
        return (["O"] if "O" in names else []) + sorted(names - {"O"})
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values)


def training_labels(task: Task, train: datasets.Dataset) -> list[str]:
    """The label set of the training split, blanks left out (see `sorted_labels`)."""
    return sorted_labels(task, [v for v in label_values(task, train) if not _is_blank(v)])


def infer_labels(task: Task, train: datasets.Dataset) -> list[str]:
    """The label set of the training split (see `sorted_labels`); a classification task needs two labels."""
    labels = training_labels(task, train)
    if task.kind == "classification" and len(labels) < 2:
        raise DataError(
            f"task {task.name!r}: the training data has a single label {labels} in column {task.label_column!r}. "
            f"Fix: check the column, or give `labels` explicitly."
        )
    return labels


def ensure_labels(task: Task, train: datasets.Dataset | None, evaluation: Iterable[datasets.Dataset] = ()) -> None:
    """Fill `task.labels` from the training data when the task does not list them; labels found only in the
    `evaluation` splits are appended after them (see `add_evaluation_labels`)."""
    if task.kind not in LABEL_KINDS or task.labels is not None:
        return
    if train is None:
        raise DataError(f"task {task.name!r}: no label list and no training data to infer it from. Fix: set `labels`.")
    task.set_labels(infer_labels(task, train))
    add_evaluation_labels(task, evaluation)


def add_evaluation_labels(task: Task, evaluation: Iterable[datasets.Dataset]) -> None:
    """Append the labels that occur only in evaluation data to a label list inferred from the training data,
    with one warning naming them. As in the transformers examples the label list is the training split's; a
    label it lacks is no reason to stop a run: the head gets an output for it that no training row teaches,
    so its rows count as errors. Call this only before the task's head is built (its size is the label count)."""
    index = {label: i for i, label in enumerate(task.labels or [])}
    new = set()
    for data in evaluation:
        if task.label_column in data.column_names:
            new.update(v for v in label_values(task, data) if not _is_blank(v) and _label_id(index, v) is None)
    if not new:
        return
    added = sorted_labels(task, new)
    task.set_labels(list(task.labels) + added)
    task.evaluation_only_labels = added
    warnings.warn(
        f"task {task.name!r}: label(s) {added} occur in the evaluation data but never in the training split; they "
        f"are added to the label set after the training labels, the model cannot learn them, and their rows are "
        f"scored as errors. Fix: give `labels` to fix the label set, or check the data.", UserWarning, stacklevel=2)


def _label_id(index: dict[str, int], value: Any) -> int | None:
    """The id of a raw label value, or None when the label set lacks it."""
    key = str(value)
    if key in index:
        return index[key]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(index):
        return value  # integer class ids of a dataset whose `labels` are names (e.g. GLUE's 0/1)
    return None


def label_to_id(task: Task, split: str):
    """A function mapping a raw label value to its id, with a clear error for unknown values."""
    index = {label: i for i, label in enumerate(task.labels or [])}

    def convert(value: Any, row: int) -> int:
        label_id = _label_id(index, value)
        if label_id is not None:
            return label_id
        raise DataError(
            f"task {task.name!r}: label {value!r} in the {split} split (row {row}, column {task.label_column!r}) "
            f"is not in the task's label set {task.labels}. Fix: add it to `labels`, or clean the {split} data."
        )

    return convert


# ------------------------------------------------------------------------------------ blank labels
def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def unlabeled_rows(task: Task, data: datasets.Dataset) -> list[int]:
    """Indices of the rows whose label is blank (null, empty or whitespace); for token tasks, rows with a
    blank tag (or no tag list); for generative tasks, blank targets (`Task.answer_column`). Reads that column only."""
    values = data.with_format("arrow")[task.answer_column]
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if task.kind == "token_classification" and _is_list(values.type):
        rows = pc.filter(pc.list_parent_indices(values), _blank_mask(pc.list_flatten(values))).to_pylist()
        rows += pc.indices_nonzero(pc.is_null(values)).to_pylist()
        return sorted(set(rows))
    return pc.indices_nonzero(_blank_mask(values)).to_pylist()


def _blank_mask(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True)
    return pc.is_null(values)


def handle_unlabeled(task: Task, data: datasets.Dataset, split: str, origin: str | None = None) -> datasets.Dataset:
    """Refuse rows with a blank label (they would become a class "" or a null target), naming them; with the
    task's `drop_unlabeled`, drop them with a warning instead. Splits without the label column pass; so do generative
    tasks with a `target_template` (`encode_text2text` refuses a blank target)."""
    column = task.answer_column
    if column is None or column not in data.column_names:
        return data
    rows = unlabeled_rows(task, data)
    if not rows:
        return data
    where = origin or f"the {split} data"
    shown = ", ".join(str(r) for r in rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
    what = {"token_classification": "a blank tag", "causal_lm": "a blank target", "seq2seq": "a blank target"}.get(
        task.kind, "a blank label")
    if not task.drop_unlabeled:
        raise DataError(
            f"task {task.name!r}: {len(rows)} row(s) of {where} have {what} in column {column!r} "
            f"(rows {shown}, counting the first data row as 0). Fix: fill in their labels, or set "
            f"`drop_unlabeled: true` in the task to drop such rows."
        )
    warnings.warn(f"task {task.name!r}: dropped {len(rows)} row(s) of {where} with {what} in column "
                  f"{column!r} (rows {shown}; `drop_unlabeled` is set).", UserWarning, stacklevel=2)
    blank = set(rows)
    return data.select([i for i in range(len(data)) if i not in blank])


def encode_task(task: Task, data: datasets.Dataset, tokenizer: Any, max_length: int, split: str) -> datasets.Dataset:
    """Tokenize one split of one task; output columns are `input_ids`, `attention_mask`,
    (`token_type_ids`) and `labels` (when the split has labels)."""
    if len(data) == 0:
        raise DataError(f"task {task.name!r}: the {split} split is empty. Fix: check the file or `max_*_samples`.")
    if task.is_generative:  # prompt + target text, tokens of its own layout
        return encode_text2text(task, data, tokenizer, max_length, split)
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
