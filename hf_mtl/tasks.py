"""`Task`: the one description of a task.

The task name is the single key of the library (DESIGN.md, "One key"): it is the value of a batch's
``task`` field, the adapter name, the head's key, the folder of the task in a store or Hub repo, the
metric prefix (``eval_<task>_<metric>``) and the log prefix. It is validated once, here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import TaskConfigError
from .field_types import type_error_message, value_matches

TASK_KINDS = ("classification", "regression", "token_classification", "masked_lm")
SEQUENCE_KINDS = ("classification", "regression")
POOLING_CHOICES = ("cls", "mean")
TOKEN_LABEL_COLUMNS = ("upos", "xpos", "deprel", "tags")

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

# Built-in metrics per kind; the first one is the task's primary metric (used for `eval_average`).
DEFAULT_METRICS = {
    "classification": ["accuracy", "f1"],
    "regression": ["pearson", "spearmanr"],
    "token_classification": ["accuracy"],
    "masked_lm": ["perplexity"],
}


def validate_task_name(name: Any, what: str = "task name") -> str:
    """Check that `name` can be a folder, a dict key and a metric prefix.

    The name becomes a folder of a store (and of a folder a pull writes into), so it may not start with a
    dot (`.git`, `.ssh`, the pull's own files), nor be one of the store's own top-level names in any case
    (a case-insensitive file system would merge them), nor be longer than a file name may be.

    Args:
        name: the candidate name.
        what: how to call it in the error message.

    Returns:
        The name, unchanged.
    """
    reserved = ("mtl_config.json", "README.md", "backbone", "shared", "languages")
    max_length = 100
    if not isinstance(name, str) or not name:
        raise TaskConfigError(f"Invalid {what} {name!r}: it must be a non-empty string. Fix: give each task a `name`.")
    is_reserved = {r.lower() for r in reserved}.__contains__
    # fullmatch: `$` would also match before a trailing newline
    if _NAME_RE.fullmatch(name) and ".." not in name and not name.startswith(".") and not is_reserved(name.lower()) \
            and len(name) <= max_length:
        return name
    suggestion = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).replace("..", "_").strip("._")[:max_length] or "task"
    if is_reserved(suggestion.lower()):
        suggestion = f"task_{suggestion.replace('.', '_')}"
    shown = repr(name) if len(name) <= max_length else f"{name[:40]!r}... ({len(name)} characters)"
    raise TaskConfigError(
        f"Invalid {what} {shown}: use only letters, digits, '_', '.', '-' (at most {max_length} characters, no "
        f"'..', no leading '.', and not one of the store's own names {', '.join(reserved)}, in any case), because "
        f"the name becomes a folder and a metric prefix. Fix: rename it, e.g. {suggestion}."
    )


@dataclass
class Task:
    """One task trained by the multi-task model.

    Args:
        name: the task's key (see module docstring); `[A-Za-z0-9_.-]+`, no `..`.
        kind: `classification` (one sentence or a pair), `regression` (one sentence or a pair),
            `token_classification` (a tag per word), or `masked_lm` (unlabeled text, used to train
            language adapters).
        text_column: column holding the text (for token tasks: the list of words, `tokens`).
        text_pair_column: optional second text column for sentence-pair tasks.
        label_column: column holding the label (for CoNLL-U files: `upos`, `xpos` or `deprel`).
        labels: the label list; inferred from the training split when not given, then saved.
        metrics: built-in metric names: `accuracy`, `f1`, `macro_f1`, `matthews_correlation`, `pearson`,
            `spearmanr`, `mse`, `seqeval`/`entity_f1` (entity F1 for IOB tags), `perplexity`; any other name is
            an error (a name is never resolved to code). In Python code a custom metric is a callable
            `fn(predictions, references, task) -> float | dict[str, float]` in this list (see
            `hf_mtl.metrics`); it is not saved in `task.json`. The first metric is the task's primary metric.
        loss_weight: static weight of the task's loss.
        language: language code of the task's data (MAD-X language adapters, zero-shot transfer).
        pooling: `cls` or `mean` pooling for sequence-level heads.
        head_hidden_layers: 0 (a linear head) or 1 (dense + tanh + linear, as RoBERTa's head) for
            sequence-level heads. Token heads are linear.
        dataset_name, dataset_config: a Hub dataset id (or a `datasets` builder name such as `csv`) and
            its config.
        train_file, validation_file, test_file: local files (csv, tsv, json, jsonl, parquet, txt,
            CoNLL-U `.conllu`, or `token<TAB>tag` column files for token tasks).
        train_split, validation_split, test_split: split names for `dataset_name`.
        max_train_samples, max_eval_samples: keep only the first N examples of a split (the convention of the
            transformers examples). A task without `labels` reads its label list from the whole training split first.
        sample_seed: with `max_train_samples` / `max_eval_samples`, draw that many rows at random with this seed
            instead of taking the first ones (for a file sorted by label, whose first rows hold a single class).
        drop_unlabeled: drop the rows whose label is blank (empty, whitespace or null; for token tasks, a row with
            a blank tag) with a warning, instead of refusing the data.
        head_layer: read the hidden states of layer k (1-based; the embeddings are layer 0) instead of the
            last one: parallel multi-level supervision, e.g. a low-level task such as POS tagging supervises a
            lower layer than a semantic task (Søgaard & Goldberg, 2016). Must not exceed the backbone's depth.
        adversarial_weight: weight w_t of this task's rows in the adversarial loss of shared-private training
            (Liu et al., 2017, "Adversarial Multi-task Learning for Text Classification"): a task discriminator
            D reads the pooled shared representation h through a gradient-reversal layer R (Ganin & Lempitsky,
            2015) and the loss gains mean_rows w_t · CE(D(R(h)), t); D learns to tell the tasks apart while
            the encoder, receiving the reversed gradient, makes h task-invariant. 0 (default) keeps the task out
            of the discriminator; at least two tasks need a weight > 0.
        input_from_tasks: hierarchical feature pipeline (Søgaard & Goldberg, 2016; Hashimoto et al., 2017):
            this task's head also reads the predicted label distributions of these lower tasks (e.g. NER reads
            UPOS), concatenated to the hidden states: softmax(logits) of a classification or token task, the
            predicted value of a regression task, broadcast over the tokens for sequence-level tasks. The
            dependency graph must be acyclic; lower tasks get their heads first.
        extra: method- or strategy-specific fields (kept and saved as they are).
    """

    name: str
    kind: str = "classification"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    labels: list[str] | None = None
    metrics: list[str | Callable[..., Any]] | None = None
    loss_weight: float = 1.0
    language: str | None = None
    pooling: str = "cls"
    head_hidden_layers: int | None = None
    dataset_name: str | None = None
    dataset_config: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    sample_seed: int | None = None
    drop_unlabeled: bool = False
    head_layer: int | None = None
    adversarial_weight: float = 0.0
    input_from_tasks: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_task_name(self.name)
        where = f"task {self.name!r}"
        for name in ("metrics", "input_from_tasks"):  # one name stands for a list of one
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        self._check_types(where)
        if self.kind not in TASK_KINDS:
            raise TaskConfigError(f"{where}: unknown kind {self.kind!r}. Fix: set `kind` to one of {list(TASK_KINDS)}.")
        if self.pooling not in POOLING_CHOICES:
            raise TaskConfigError(f"{where}: unknown pooling {self.pooling!r}. Fix: use one of {list(POOLING_CHOICES)}.")
        if self.head_hidden_layers is None:
            self.head_hidden_layers = 1 if self.kind in SEQUENCE_KINDS else 0
        if self.head_hidden_layers not in (0, 1):
            raise TaskConfigError(f"{where}: `head_hidden_layers` must be 0 or 1, got {self.head_hidden_layers!r}.")
        if self.kind == "regression" and self.labels is not None:
            raise TaskConfigError(f"{where}: a regression task has no `labels` list. Fix: remove `labels`.")
        if self.labels is not None:
            if not isinstance(self.labels, (list, tuple)):
                raise TaskConfigError(
                    f"{where}: `labels` must be a list of label names, got {type(self.labels).__name__} "
                    f"{self.labels!r}. Fix: write it as a JSON list, e.g. [\"negative\", \"positive\"]."
                )
            self.labels = [str(label) for label in self.labels]
            if len(set(self.labels)) != len(self.labels):
                raise TaskConfigError(f"{where}: `labels` has duplicates: {self.labels}.")
            if self.kind == "classification" and len(self.labels) < 2:
                raise TaskConfigError(f"{where}: a classification task needs at least 2 labels, got {self.labels}.")
        if self.metrics is None:
            self.metrics = list(DEFAULT_METRICS[self.kind])
            if self.kind == "token_classification" and _looks_like_iob(self.labels):
                self.metrics = ["seqeval", "accuracy"]
        if not self.metrics:
            raise TaskConfigError(f"{where}: `metrics` is empty. Fix: name at least one metric or leave it unset.")
        self._check_metrics(where)
        self._check_language(where)
        for field_name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, field_name)
            if value is not None and value <= 0:
                raise TaskConfigError(f"{where}: `{field_name}` must be a positive integer, got {value!r}.")
        if self.sample_seed is not None and self.sample_seed < 0:
            raise TaskConfigError(f"{where}: `sample_seed` must be an integer >= 0, got {self.sample_seed!r}.")
        if self.head_layer is not None and self.head_layer < 1:
            raise TaskConfigError(f"{where}: `head_layer` must be a layer number >= 1, got {self.head_layer!r}.")
        if not self.loss_weight >= 0:  # also refuses NaN
            raise TaskConfigError(f"{where}: `loss_weight` must be a number >= 0, got {self.loss_weight!r}.")
        if not self.adversarial_weight >= 0:  # also refuses NaN
            raise TaskConfigError(f"{where}: `adversarial_weight` must be a number >= 0, got {self.adversarial_weight!r}.")
        self._check_input_from_tasks(where)

    def _check_types(self, where: str) -> None:
        """Every field holds the JSON type it needs (a recipe's `"labels": "pos"` or `"max_train_samples": true`
        would otherwise be taken apart or read as 1 later)."""
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name != "name" and not value_matches(value, hints[item.name]):  # the name has its own check
                raise TaskConfigError(type_error_message(where, item.name, value, hints[item.name]))

    def _check_metrics(self, where: str) -> None:
        """Metric names must be built in: a name from a recipe or a store is data, never code."""
        from .metrics import known_metric_names  # metrics.py imports this module

        if not isinstance(self.metrics, (list, tuple)):
            raise TaskConfigError(f"{where}: `metrics` must be a list of metric names, got {self.metrics!r}.")
        known = known_metric_names()
        for metric in self.metrics:
            if callable(metric):
                if not metric_name(metric).isidentifier():
                    raise TaskConfigError(f"{where}: the metric callable {metric!r} has no usable name. Fix: define "
                                          f"it with `def` (its __name__ names the score).")
            elif metric not in known:
                raise TaskConfigError(
                    f"{where}: unknown metric {metric!r} in `metrics`. Metric names are never loaded as code. "
                    f"Fix: use built-in metrics ({', '.join(known)}), or pass a Python callable in code."
                )
        self.metrics = list(self.metrics)

    def _check_language(self, where: str) -> None:
        if self.language is None:
            return
        if not isinstance(self.language, str):
            raise TaskConfigError(f"{where}: `language` must be a language code such as \"en\", got {self.language!r}.")
        validate_task_name(self.language, what=f"`language` of {where}")  # it becomes a folder (languages/<code>)

    def _check_input_from_tasks(self, where: str) -> None:
        lower = self.input_from_tasks
        if lower is None:
            return
        if not lower:
            raise TaskConfigError(f"{where}: `input_from_tasks` must be a non-empty list of task names, got {lower!r}.")
        for name in lower:
            validate_task_name(name, f"task name in `input_from_tasks` of {where}")
        if self.name in lower:
            raise TaskConfigError(f"{where}: `input_from_tasks` names the task itself. Fix: list only lower tasks.")
        if len(set(lower)) != len(lower):
            raise TaskConfigError(f"{where}: `input_from_tasks` lists a task twice: {list(lower)}.")
        if self.kind == "masked_lm":
            raise TaskConfigError(f"{where}: a masked_lm head is tied to the embeddings and cannot read other tasks' "
                                  f"predictions. Fix: remove `input_from_tasks`.")
        self.input_from_tasks = list(lower)

    # ------------------------------------------------------------------ derived properties
    @property
    def is_token_level(self) -> bool:
        return self.kind in ("token_classification", "masked_lm")

    @property
    def num_labels(self) -> int:
        """Output size of the task's head (1 for regression)."""
        if self.kind == "regression":
            return 1
        if self.kind == "masked_lm":
            raise TaskConfigError(f"task {self.name!r}: a masked_lm task has the vocabulary as its labels.")
        if self.labels is None:
            raise TaskConfigError(
                f"task {self.name!r}: the label list is not known yet. Fix: give `labels`, or prepare the task "
                f"with its training data first (the labels are inferred from it)."
            )
        return len(self.labels)

    def set_labels(self, labels: list[str]) -> None:
        """Record the label list (inferred from training data); IOB tag sets switch to entity F1."""
        self.labels = [str(label) for label in labels]
        if self.kind == "token_classification" and self.metrics == ["accuracy"] and _looks_like_iob(self.labels):
            self.metrics = ["seqeval", "accuracy"]

    @property
    def primary_metric(self) -> str:
        return metric_name(self.metrics[0])

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """The task as plain JSON data; metric callables are left out (code is never saved as a name)."""
        data = dataclasses.asdict(self)
        names = [m for m in self.metrics if not callable(m)]
        data["metrics"] = names or None  # only callables: the kind's defaults when the task is read back
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Task":
        """Build a task from a recipe entry or a saved `task.json`, rejecting unknown fields."""
        if not isinstance(data, dict):
            raise TaskConfigError(
                f"A task must be a JSON object with at least a `name`, got {type(data).__name__} {data!r}. Fix: write "
                f"it as {{\"name\": ..., \"kind\": ...}}."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            name = data.get("name", "?")
            raise TaskConfigError(
                f"task {name!r}: unknown field(s) {unknown}. Fix: use the fields {sorted(known)}, or put "
                f"method-specific options under `extra`."
            )
        if "name" not in data:
            raise TaskConfigError(f"A task entry has no `name`: {data!r}. Fix: add a `name`.")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def metric_name(metric: str | Callable[..., Any]) -> str:
    """The name a metric's scores are reported under: the built-in name, or a callable's `__name__`."""
    return metric if isinstance(metric, str) else getattr(metric, "__name__", repr(metric))


def _looks_like_iob(labels: list[str] | None) -> bool:
    return bool(labels) and all(lab == "O" or re.match(r"^[BIES]-.+", lab) for lab in labels) and "O" in labels


def check_unique_names(tasks: list[Task]) -> None:
    """Raise when two tasks share a name (the name is the one key)."""
    seen: set[str] = set()
    for task in tasks:
        if task.name in seen:
            raise TaskConfigError(
                f"Duplicate task name {task.name!r}: every task needs its own name because it keys the head, the "
                f"adapter, the store folder and the metrics. Fix: rename one of them."
            )
        seen.add(task.name)


def tasks_from_config(entries: list[dict[str, Any] | Task]) -> list[Task]:
    """Turn recipe entries (dicts) or tasks into a validated list of tasks."""
    if not entries:
        raise TaskConfigError("No tasks given. Fix: list at least one task under `tasks`.")
    tasks = [entry if isinstance(entry, Task) else Task.from_dict(entry) for entry in entries]
    check_unique_names(tasks)
    dependency_order(tasks)  # unknown or cyclic `input_from_tasks`
    return tasks


def dependency_order(tasks: list[Task]) -> list[Task]:
    """The tasks ordered so that every task comes after the tasks of its `input_from_tasks`.

    Tasks without dependencies keep their relative order (a stable depth-first topological sort).

    Args:
        tasks: tasks with unique names.

    Returns:
        The same `Task` objects, reordered.

    Raises:
        TaskConfigError: a task reads an unknown task, or the dependencies form a cycle (the cycle is named).
    """
    by_name = {t.name: t for t in tasks}
    order: list[Task] = []
    state: dict[str, str] = {}  # "visiting" while on the current path, "done" once placed

    def visit(task: Task, path: list[str]) -> None:
        if state.get(task.name) == "done":
            return
        if state.get(task.name) == "visiting":
            cycle = path[path.index(task.name):] + [task.name]
            raise TaskConfigError(
                f"task {task.name!r}: `input_from_tasks` forms a cycle {' -> '.join(cycle)}. Fix: a task may read only "
                f"lower tasks; remove one of these dependencies."
            )
        state[task.name] = "visiting"
        for lower in task.input_from_tasks or []:
            if lower not in by_name:
                raise TaskConfigError(
                    f"task {task.name!r}: `input_from_tasks` names {lower!r}, which is not among the tasks "
                    f"{sorted(by_name)}. Fix: add task {lower!r} too, or remove it from `input_from_tasks`."
                )
            visit(by_name[lower], path + [task.name])
        state[task.name] = "done"
        order.append(task)

    for task in tasks:
        visit(task, [])
    return order
