"""Inference on raw text: one task, or a task per row, with the backbone loaded once."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .errors import DataError
from .tasks import Task


def predict(
    model: Any,
    texts: Sequence[Any],
    task: str | Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    max_length: int = 128,
    language: str | None = None,
    tokenizer: Any = None,
) -> list[dict[str, Any]]:
    """Predict labels for raw inputs.

    Args:
        model: a `MultiTaskModel`.
        texts: strings; `(text, text_pair)` pairs for pair tasks; for token tasks a string (split on
            whitespace) or a list of words.
        task: one task name for all rows, or one per row (default: the model's active task).
        batch_size: rows per forward pass.
        max_length: inputs are truncated to this many tokens.
        language: language adapter to use (MAD-X / language adapters), overriding the tasks' own.
        tokenizer: defaults to `model.tokenizer`.

    Returns:
        One dict per row: `{"task", "label", "score", "scores"}` for classification,
        `{"task", "score"}` for regression, `{"task", "tokens", "tags", "scores"}` for token tasks.
    """
    tokenizer = tokenizer or model.tokenizer
    if tokenizer is None:
        raise DataError("predict() needs a tokenizer: the model has none. Fix: pass tokenizer=.")
    names = _per_row_tasks(model, task, len(texts))
    results: list[dict[str, Any] | None] = [None] * len(texts)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    was_training = model.training
    model.eval()
    try:
        for name, rows in groups.items():
            spec = model.tasks[name]
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                outputs = _predict_chunk(model, tokenizer, spec, [texts[i] for i in chunk], max_length, language)
                for i, out in zip(chunk, outputs):
                    results[i] = out
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _per_row_tasks(model: Any, task: str | Sequence[str] | None, n: int) -> list[str]:
    if task is None:
        task = model.active_task or (model.task_names[0] if len(model.heads) == 1 else None)
        if task is None:
            raise DataError(f"predict() needs task=...; known tasks: {sorted(model.heads)}.")
    names = [task] * n if isinstance(task, str) else list(task)
    if len(names) != n:
        raise DataError(f"predict() got {len(names)} task names for {n} inputs: give one per input, or a single name.")
    model._check_tasks(dict.fromkeys(names))
    return names


@torch.no_grad()
def _predict_chunk(model: Any, tokenizer: Any, task: Task, texts: list[Any], max_length: int,
                   language: str | None) -> list[dict[str, Any]]:
    device = next(model.parameters()).device
    if task.kind == "token_classification":
        words = [t.split() if isinstance(t, str) else list(t) for t in texts]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
    else:
        firsts, seconds = _split_pairs(task, texts)
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    logits = model(**inputs, task=task.name, language=language).logits.float().cpu()
    if task.kind == "regression":
        return [{"task": task.name, "score": float(v)} for v in logits.view(-1)]
    probs = logits.softmax(-1)
    if task.kind == "classification":
        return [_class_result(task, p) for p in probs]
    return [_token_result(task, words[i], enc.word_ids(i), probs[i]) for i in range(len(words))]


def _split_pairs(task: Task, texts: list[Any]) -> tuple[list[str], list[str] | None]:
    if task.text_pair_column:
        pairs = [t if isinstance(t, (list, tuple)) else (t, "") for t in texts]
        if any(len(p) != 2 for p in pairs):
            raise DataError(f"task {task.name!r} reads sentence pairs: give each input as (text, text_pair).")
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return [t if isinstance(t, str) else " ".join(t) for t in texts], None


def _class_result(task: Task, probs: torch.Tensor) -> dict[str, Any]:
    best = int(probs.argmax())
    labels = task.labels or [str(i) for i in range(len(probs))]
    return {"task": task.name, "label": labels[best], "score": float(probs[best]),
            "scores": {label: float(p) for label, p in zip(labels, probs)}}


def _token_result(task: Task, words: list[str], word_ids: list[int | None], probs: torch.Tensor) -> dict[str, Any]:
    labels = task.labels or []
    tags, scores, seen = [], [], set()
    for position, word in enumerate(word_ids):
        if word is None or word in seen:
            continue
        seen.add(word)
        best = int(probs[position].argmax())
        tags.append(labels[best])
        scores.append(float(probs[position, best]))
    return {"task": task.name, "tokens": words[: len(tags)], "tags": tags, "scores": scores}
