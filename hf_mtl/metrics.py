"""Per-task metrics, computed here with numpy, scipy, scikit-learn and seqeval.

A metric *name* (in a recipe, a `task.json`, a pulled store) is data: it must be one of the built-in
metrics below, and is never resolved to code (no `evaluate.load`, which downloads and imports a
script). A custom metric is a Python callable the user passes in code, `Task(..., metrics=["accuracy",
my_metric])`: `my_metric(predictions, references, task)` returns a float (reported as `my_metric`) or a
dict of floats (reported as `my_metric_<key>`). A callable is never saved: `task.json` keeps only the
names of built-in metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import TaskConfigError
from .tasks import GENERATION_METRICS, Task, metric_name


IGNORE_INDEX = -100


def _accuracy(preds: np.ndarray, refs: np.ndarray, task: Task) -> float:
    return float((preds == refs).mean()) if len(refs) else float("nan")


def _f1(preds: np.ndarray, refs: np.ndarray, task: Task) -> float:
    from sklearn.metrics import f1_score

    # GLUE convention: binary F1 of the second label for two classes, macro F1 otherwise.
    if task.labels is not None and len(task.labels) == 2:
        return float(f1_score(refs, preds, average="binary", pos_label=1, zero_division=0))
    return float(f1_score(refs, preds, average="macro", zero_division=0))


def _macro_f1(preds: np.ndarray, refs: np.ndarray, task: Task) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(refs, preds, average="macro", zero_division=0))


def _mcc(preds: np.ndarray, refs: np.ndarray, task: Task) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(refs, preds))


def _pearson(preds: np.ndarray, refs: np.ndarray, task: Task) -> float:
    if len(refs) < 2 or np.std(preds) == 0 or np.std(refs) == 0:
        return 0.0
    return float(np.corrcoef(preds, refs)[0, 1])


def _spearman(preds: np.ndarray, refs: np.ndarray, task: Task) -> float:
    from scipy.stats import spearmanr

    if len(refs) < 2 or np.std(preds) == 0 or np.std(refs) == 0:
        return 0.0
    return float(spearmanr(preds, refs)[0])


def _mse(preds: np.ndarray, refs: np.ndarray, task: Task) -> float:
    return float(np.mean((preds - refs) ** 2))


# name -> (function, input type): "labels" metrics read argmax predictions, "values" read raw scores.
BUILTIN_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, Task], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "macro_f1": _macro_f1,
    "matthews_correlation": _mcc,
    "pearson": _pearson,
    "spearmanr": _spearman,
    "mse": _mse,
}
SEQUENCE_METRICS = ("entity_f1", "seqeval")
LOSS_METRICS = ("perplexity",)


def known_metric_names() -> list[str]:
    return sorted({*BUILTIN_METRICS, *SEQUENCE_METRICS, *LOSS_METRICS, *GENERATION_METRICS})


def compute_task_metrics(task: Task, logits: Any, label_ids: Any) -> dict[str, float]:
    """Compute every metric of `task` from the model's logits and the gold label ids.

    Args:
        task: the task (its kind, labels and metric names).
        logits: `(N, C)` for classification, `(N,)` or `(N, 1)` for regression, `(N, L, C)` for token
            classification (padded positions carry label -100).
        label_ids: `(N,)` or `(N, L)` gold labels; -100 marks positions that are not scored.

    Returns:
        `{metric_name: value}`; `entity_f1` also adds `entity_precision` and `entity_recall`.
    """
    logits = np.asarray(logits)
    label_ids = np.asarray(label_ids)
    never = task.never_predicted()
    if never and logits.ndim >= 2:  # labels only evaluation data has: their rows can only be errors
        logits = logits.astype(np.float64, copy=True)
        logits[..., never] = -np.inf
    results: dict[str, float] = {}
    for name in task.metrics:
        if name in LOSS_METRICS:
            continue  # needs the loss: the trainer adds it
        if name in SEQUENCE_METRICS:
            results.update(_entity_scores(task, logits, label_ids))
            continue
        preds, refs = _flatten(task, logits, label_ids)
        if callable(name):
            results.update(_custom_metric(task, name, preds, refs))
        else:
            results[name] = BUILTIN_METRICS[name](preds, refs, task)
    return results


def _flatten(task: Task, logits: np.ndarray, label_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and references as 1-D arrays, scored positions only."""
    if task.kind == "regression":
        return logits.reshape(-1).astype(np.float64), label_ids.reshape(-1).astype(np.float64)
    preds = logits.argmax(-1)
    mask = label_ids != IGNORE_INDEX
    return preds[mask], label_ids[mask]


def _entity_scores(task: Task, logits: np.ndarray, label_ids: np.ndarray) -> dict[str, float]:
    from seqeval.metrics import f1_score, precision_score, recall_score

    labels = task.labels or []
    preds = logits.argmax(-1)
    y_true, y_pred = [], []
    for pred_row, ref_row in zip(preds, label_ids):
        mask = ref_row != IGNORE_INDEX
        y_true.append([labels[i] for i in ref_row[mask]])
        y_pred.append([labels[i] for i in pred_row[mask]])
    return {
        "entity_f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "entity_precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "entity_recall": float(recall_score(y_true, y_pred, zero_division=0)),
    }


def _custom_metric(task: Task, metric: Callable[..., Any], preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """Run a user's metric callable: a float, or a dict of floats prefixed with the callable's name."""
    name = metric_name(metric)
    out = metric(preds, refs, task)
    if isinstance(out, dict):
        return {f"{name}_{key}": float(value) for key, value in out.items()}
    if isinstance(out, (int, float, np.floating, np.integer)) and not isinstance(out, bool):
        return {name: float(out)}
    raise TaskConfigError(
        f"task {task.name!r}: the metric callable {name!r} returned {type(out).__name__}. Fix: return a float or a "
        f"dict of floats."
    )


def validate_metric_names(task: Task) -> None:
    """Fail early on metric names that cannot fit the task's kind (a generative task's metrics are checked by
    `Task` itself: they score generated text, see `hf_mtl.generation_metrics`)."""
    if task.is_generative:
        return
    for name in task.metrics:
        if name in GENERATION_METRICS and name not in BUILTIN_METRICS:
            raise TaskConfigError(f"task {task.name!r}: metric {name!r} scores generated text; kind is {task.kind!r}. "
                                  f"Fix: use it with kind `causal_lm` or `seq2seq`.")
        if name in ("pearson", "spearmanr", "mse") and task.kind != "regression":
            raise TaskConfigError(f"task {task.name!r}: metric {name!r} is for regression tasks; kind is {task.kind!r}.")
        if name in SEQUENCE_METRICS and task.kind != "token_classification":
            raise TaskConfigError(f"task {task.name!r}: metric {name!r} is for token_classification tasks.")
        if name in ("accuracy", "f1", "macro_f1", "matthews_correlation") and task.kind == "regression":
            raise TaskConfigError(f"task {task.name!r}: metric {name!r} needs class labels; the task is a regression.")


def primary_metric_key(task: Task) -> str:
    """The key whose value represents the task in `eval_average`."""
    name = task.primary_metric
    return "entity_f1" if name in SEQUENCE_METRICS else name


def perplexity(loss: float) -> float:
    return float(math.exp(min(loss, 50.0)))
