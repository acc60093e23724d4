"""Task-tagged views over tokenized datasets, and the per-task loading pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
from torch.utils.data import Dataset

from ..errors import DataError
from ..tasks import Task
from .preprocess import ENCODED_COLUMNS, encode_task, ensure_labels, handle_unlabeled


class TaskDataset(Dataset):
    """One task's tokenized split; every example carries `task`."""

    def __init__(self, task: str, data: datasets.Dataset):
        self.task = task
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.data[int(index)], "task": self.task}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        columns = self.data[[int(i) for i in indices]]  # one Arrow read for the whole batch
        return [{**{k: v[j] for k, v in columns.items()}, "task": self.task} for j in range(len(indices))]


class MultiTaskDataset(Dataset):
    """The concatenation of the tasks' training sets: global index = offset of the task + local index."""

    def __init__(self, parts: dict[str, datasets.Dataset]):
        self.task_names = list(parts)
        self.parts = [TaskDataset(name, parts[name]) for name in self.task_names]
        self.sizes = [len(p) for p in self.parts]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]

    def __len__(self) -> int:
        return sum(self.sizes)

    def _locate(self, index: int) -> tuple[int, int]:
        for t in range(len(self.offsets) - 1, -1, -1):
            if index >= self.offsets[t]:
                return t, index - self.offsets[t]
        raise IndexError(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        t, local = self._locate(int(index))
        return self.parts[t][local]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        located = [self._locate(int(i)) for i in indices]
        if len({t for t, _ in located}) == 1:  # the usual single-task batch: one Arrow read
            return self.parts[located[0][0]].__getitems__([local for _, local in located])
        return [self.parts[t][local] for t, local in located]


def is_encoded(data: Any) -> bool:
    return isinstance(data, datasets.Dataset) and "input_ids" in data.column_names


def prepare_split(task: Task, data: datasets.Dataset, tokenizer: Any, max_length: int, split: str) -> datasets.Dataset:
    """Tokenize a raw split (already tokenized splits pass through, keeping only the encoded columns)."""
    if is_encoded(data):
        keep = [c for c in data.column_names if c in ENCODED_COLUMNS or c == "special_tokens_mask"]
        return data.select_columns(keep)
    if tokenizer is None:
        raise DataError(f"task {task.name!r}: the {split} data is not tokenized and no tokenizer was given.")
    return encode_task(task, data, tokenizer, max_length, split)


def prepare_datasets(
    tasks: Sequence[Task],
    raw: dict[str, datasets.Dataset | None],
    tokenizer: Any,
    max_length: int,
    split: str,
    label_data: dict[str, Any] | None = None,
) -> dict[str, datasets.Dataset]:
    """Tokenize `{task: raw split}` for the tasks that have one.

    Args:
        tasks: the tasks; a task without `labels` gets them from its training split here.
        raw: `{task: split}`, raw or already tokenized.
        tokenizer: the tokenizer of raw splits.
        max_length: longer inputs are truncated.
        split: "train", "validation" or "test" (names it in messages; "train" infers label lists).
        label_data: with `split="train"`, the raw evaluation splits `{task: split}`: a label list inferred here
            also takes the labels that occur only there (after the training labels, with a warning), before any
            head is built.

    Returns:
        `{task: tokenized split}`.
    """
    known = {t.name for t in tasks}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DataError(f"{split} data given for unknown task(s) {unknown}. Known tasks: {sorted(known)}.")
    out = {}
    for task in tasks:
        data = raw.get(task.name)
        if data is None:
            continue
        if not is_encoded(data):
            data = handle_unlabeled(task, data, split)
        if split == "train":
            if len(data) == 0:
                raise DataError(f"task {task.name!r} has no training examples. Fix: check `train_file` or `max_train_samples`.")
            if not is_encoded(data):
                ensure_labels(task, data, _raw_splits_of(task, label_data))
        out[task.name] = prepare_split(task, data, tokenizer, max_length, split)
    return out


def _raw_splits_of(task: Task, data: dict[str, Any] | None) -> list[datasets.Dataset]:
    """The task's raw (untokenized) split among `data`, as a list of zero or one."""
    split = (data or {}).get(task.name)
    return [split] if isinstance(split, datasets.Dataset) and not is_encoded(split) else []


def load_raw_splits(tasks: Sequence[Task], split: str) -> dict[str, datasets.Dataset]:
    """Read one split of every task from its source (files or a Hub dataset)."""
    from .readers import load_task_split

    out = {}
    for task in tasks:
        data = load_task_split(task, split)
        if data is not None:
            out[task.name] = data
        elif split == "train":
            raise DataError(f"task {task.name!r} has no training data. Fix: set `train_file` or `dataset_name`.")
    return out
