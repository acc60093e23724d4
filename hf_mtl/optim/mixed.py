"""Mixed-task batches (`all_tasks`, uncertainty sampling) for every adapter method.

Methods that route per row (`adapter.routes_per_row`) run a mixed batch in one forward pass. The others
(PEFT's LoRA trains one adapter per forward) get the batch split into one single-task micro-batch per
task, each trimmed to its own length, and their outputs merged: the task losses are the same as those
of the single forward of a per-row method. The per-task gradient step splits every method's batches
the same way, so that each task's backward pass runs over its own rows only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..tasks import Task


_ROW_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def take_rows(inputs: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The sub-batch of `rows` (a (n,) index tensor) of a collated batch; `task` stays per row."""
    out = {k: v[rows] if k in _ROW_KEYS and isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if isinstance(inputs.get("task"), list):
        out["task"] = [inputs["task"][i] for i in rows.tolist()]
    return out


def rows_by_task(task: str | list[str], batch_size: int) -> dict[str, torch.Tensor]:
    """{task: (n_t,) row indices} in order of first appearance."""
    if isinstance(task, str):
        return {task: torch.arange(batch_size)}
    out: dict[str, list[int]] = {}
    for i, name in enumerate(task):
        out.setdefault(name, []).append(i)
    return {name: torch.tensor(rows) for name, rows in out.items()}


def single_task_batch(inputs: dict[str, Any], rows: torch.Tensor, task: Task) -> dict[str, Any]:
    """Rows of one task of a mixed batch as that task's own batch: padding trimmed to the longest row,
    labels back in the task's layout ((n,) for sequence tasks, whose labels sit in column 0)."""
    sub = take_rows(inputs, rows.to(inputs["input_ids"].device))
    sub["task"] = task.name
    if sub.get("attention_mask") is not None:
        length = int(sub["attention_mask"].sum(dim=1).max())
        for key in _ROW_KEYS:
            if isinstance(sub.get(key), torch.Tensor) and sub[key].dim() == 2 and not (key == "labels" and not task.is_token_level):
                sub[key] = sub[key][:, :length]
    labels = sub.get("labels")
    if labels is not None and labels.dim() == 2 and not task.is_token_level:
        sub["labels"] = labels[:, 0]
    return sub


def task_batches(inputs: dict[str, Any], tasks: dict[str, Task]) -> Iterator[tuple[str, torch.Tensor, dict[str, Any]]]:
    """(task, its (n_t,) rows, its single-task batch) for every task of a batch, in order of first appearance
    (a single-task batch yields itself)."""
    batch_size = inputs["input_ids"].shape[0]
    for name, rows in rows_by_task(inputs["task"], batch_size).items():
        yield name, rows, inputs if isinstance(inputs["task"], str) else single_task_batch(inputs, rows, tasks[name])


def forward_per_task(model: torch.nn.Module, inputs: dict[str, Any], tasks: dict[str, Task]) -> dict[str, Any]:
    """Run a mixed batch as one forward per task and merge the outputs.

    Args:
        model: the (possibly wrapped) `MultiTaskModel`.
        inputs: a collated mixed batch (`task` is a list).
        tasks: the run's tasks by name.

    Returns:
        `{"task_losses", "task_logits", "task_rows", "adversarial_loss"}` as `MultiTaskModel.forward` gives
        them for a mixed batch; the adversarial loss is the row-weighted mean of the micro-batches' (the
        mean over all rows).
    """
    batch_size = inputs["input_ids"].shape[0]
    merged: dict[str, Any] = {"task_losses": {}, "task_logits": {}, "task_rows": {}, "adversarial_loss": None}
    for name, rows, batch in task_batches(inputs, tasks):
        out = model(**batch)
        if out.task_losses is not None:
            merged["task_losses"][name] = out.task_losses[name]
        merged["task_logits"][name], merged["task_rows"][name] = out.logits, rows
        if out.adversarial_loss is not None:
            share = out.adversarial_loss * (rows.numel() / batch_size)
            merged["adversarial_loss"] = share if merged["adversarial_loss"] is None else merged["adversarial_loss"] + share
    if not merged["task_losses"]:
        merged["task_losses"] = None
    return merged
