"""Per-task metrics that work offline.

`evaluate.load("accuracy")` fetches its script from the Hub, which is not reachable everywhere, so the
built-in metrics are computed here with numpy, scipy, scikit-learn and seqeval. Any other metric name
is an `evaluate` id (or a local path to an evaluate module) and is loaded with `evaluate.load`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from .errors import TaskConfigError
from .tasks import GENERATION_METRICS, Task

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
    results: dict[str, float] = {}
    for name in task.metrics:
        if name in LOSS_METRICS:
            continue  # needs the loss: the trainer adds it
        if name in SEQUENCE_METRICS:
            results.update(_entity_scores(task, logits, label_ids))
            continue
        preds, refs = _flatten(task, logits, label_ids)
        if name in BUILTIN_METRICS:
            results[name] = BUILTIN_METRICS[name](preds, refs, task)
        else:
            results.update(_evaluate_metric(task, name, preds, refs))
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


@lru_cache(maxsize=None)
def _load_evaluate_module(name: str) -> Any:
    import evaluate

    return evaluate.load(name)


def _evaluate_metric(task: Task, name: str, preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    try:
        module = _load_evaluate_module(name)
    except Exception as err:  # evaluate raises many types (FileNotFoundError, ConnectionError, ...)
        raise TaskConfigError(
            f"task {task.name!r}: metric {name!r} is not built in ({', '.join(known_metric_names())}) and "
            f"`evaluate.load({name!r})` failed: {err}. Fix: use a built-in metric, or a local path to an evaluate "
            f"module when the Hub is not reachable."
        ) from err
    out = module.compute(predictions=preds.tolist(), references=refs.tolist())
    values = {k: float(v) for k, v in out.items() if isinstance(v, (int, float, np.floating, np.integer))}
    if len(values) == 1:
        return {name: next(iter(values.values()))}
    return {f"{name}_{k}": v for k, v in values.items()}


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
