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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import TaskConfigError
from .field_types import type_error_message, value_matches


GENERATIVE_KINDS = ("causal_lm", "seq2seq")
TASK_KINDS = ("classification", "regression", "token_classification", "masked_lm", *GENERATIVE_KINDS)
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
# Metrics of generated texts (scored offline by `hf_mtl.generation_metrics`); `perplexity` also works (from the loss).
GENERATION_METRICS = ("accuracy", "exact_match", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "pearson", "spearmanr")
LABEL_WORD_METRICS = ("accuracy",)  # need `label_words`
SCORE_METRICS = ("pearson", "spearmanr")  # a number written as text: need a free-text target
# Generative kinds: `accuracy` with label words, `exact_match` for free text (set `metrics` for e.g. chrf or rougeL).
GENERATIVE_DEFAULT_METRICS = {True: ["accuracy"], False: ["exact_match"]}
# Fields only generative kinds read, and encoder-only fields a generative task must leave unset (its LM head is the
# backbone's own: no pooling head, no hidden layer choice, no feature pipeline, no task discriminator).
GENERATIVE_FIELDS = ("prompt_template", "target_column", "target_template", "label_words", "generation")


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
            `token_classification` (a tag per word), `masked_lm` (unlabeled text, used to train
            language adapters), or a generative (text-to-text) kind: `causal_lm` (decoder-only backbones:
            Llama, Qwen2, GPT-2, ...) or `seq2seq` (encoder-decoder backbones: T5, BART). A generative task
            reads a prompt built from `prompt_template` and learns a target text (`target_column`,
            `target_template`, or `label_column` + `label_words`), with the loss on the target tokens only.
        text_column: column holding the text (for token tasks: the list of words, `tokens`).
        text_pair_column: optional second text column for sentence-pair tasks.
        label_column: column holding the label (for CoNLL-U files: `upos`, `xpos` or `deprel`).
        labels: the label list; inferred from the training split when not given, then saved.
        metrics: built-in metric names: `accuracy`, `f1`, `macro_f1`, `matthews_correlation`, `pearson`,
            `spearmanr`, `mse`, `seqeval`/`entity_f1` (entity F1 for IOB tags), `perplexity`; any other name is
            an error (a name is never resolved to code). In Python code a custom metric is a callable
            `fn(predictions, references, task) -> float | dict[str, float]` in this list (see
            `hf_mtl.metrics`); it is not saved in `task.json`. The first metric is the task's primary metric. Generative kinds
            score generated texts (`hf_mtl.generation_metrics`): `accuracy` (with `label_words`; the default then),
            `exact_match` (the default otherwise), `rouge1`, `rouge2`, `rougeL`, `bleu`, `chrf`, and `pearson` /
            `spearmanr` of numbers written as text; `perplexity` too.
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
        evaluation_only_labels: labels that occur in evaluation data but never in the training split (set when
            the label list is inferred; saved). The head has an output for each that no row teaches; it is never
            predicted, so their rows count as errors.
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
        prompt_template: (generative kinds) the prompt, with `{column}` placeholders filled from the row's
            columns, e.g. `"Review: {review}\nIs this review positive or negative? Answer:"`; `{{` and `}}` stand
            for literal braces. Default: the text column (and `text_pair_column`) as `"<column>: {<column>}"`, one
            per line for `causal_lm`, and after the task name as a prefix for `seq2seq` as T5 and Hyperformer do
            (`"sst2 sentence: {sentence}"`). Inputs longer than `max_seq_length` lose tokens from the end of the
            filled-in column values, longest first; the template's own words and the target are kept whole.
        target_column: (generative kinds) the column holding the target text.
        target_template: (generative kinds) the target as a template over the row's columns (as `prompt_template`).
        label_words: (generative kinds) classification as generation: `{label: word}` for every label of the data,
            e.g. `{"0": "negative", "1": "positive"}`; the target is the word of the row's `label_column` value,
            and a generated text maps back to its label (compared stripped, lower-cased, first line only; a text
            that matches no word counts as wrong). Without `target_column`, `target_template` or `label_words`,
            a generative task's target is the text of its `label_column` (e.g. a score written as "3.8").
        generation: (generative kinds) this task's generation settings: any `transformers.GenerationConfig`
            field, e.g. `{"max_new_tokens": 3}` or `{"max_new_tokens": 64, "num_beams": 2}`.
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
    evaluation_only_labels: list[str] | None = None
    head_layer: int | None = None
    adversarial_weight: float = 0.0
    input_from_tasks: list[str] | None = None
    prompt_template: str | None = None
    target_column: str | None = None
    target_template: str | None = None
    label_words: dict[str, str] | None = None
    generation: dict[str, Any] | None = None
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
        self._check_generative_fields(where)
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
        if self.metrics is None and self.is_generative:
            self.metrics = list(GENERATIVE_DEFAULT_METRICS[self.label_words is not None])
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
        if self.is_generative:
            self._check_generative_metrics(where)

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

    # ------------------------------------------------------------------ generative kinds
    def _check_generative_fields(self, where: str) -> None:
        """The generative fields fit the kind and each other; fills the default `prompt_template` and, with
        `label_words`, the label list."""
        if not self.is_generative:
            given = [name for name in GENERATIVE_FIELDS if getattr(self, name) is not None]
            if given:
                raise TaskConfigError(
                    f"{where}: field(s) {given} are for the generative kinds {list(GENERATIVE_KINDS)}; kind is "
                    f"{self.kind!r}. Fix: set `kind` to `causal_lm` or `seq2seq`, or remove {given}.")
            return
        encoder_only = {"head_layer": self.head_layer is not None, "input_from_tasks": self.input_from_tasks is not None,
                        "adversarial_weight": self.adversarial_weight != 0}
        for name, is_set in encoder_only.items():
            if is_set:
                raise TaskConfigError(f"{where}: `{name}` is for encoder heads; a {self.kind} task generates text with "
                                      f"the backbone's own LM head. Fix: remove `{name}`.")
        targets = [name for name in ("target_column", "target_template", "label_words") if getattr(self, name) is not None]
        if len(targets) > 1:
            raise TaskConfigError(f"{where}: {targets} each define the target; give only one. Fix: keep `target_column` "
                                  f"(a text column), `target_template` (a template), or `label_words` (classes).")
        if self.target_column is not None and not self.target_column:
            raise TaskConfigError(f"{where}: `target_column` is empty. Fix: name the column holding the target text.")
        if self.prompt_template is None:
            self.prompt_template = self._default_prompt_template()
        pieces = parse_template(self.prompt_template, where, "prompt_template")
        if self.text_pair_column and self.text_pair_column not in {column for _, column in pieces}:
            raise TaskConfigError(
                f"{where}: `text_pair_column` {self.text_pair_column!r} is read only through `prompt_template`, which "
                f"does not name it. Fix: add {{{self.text_pair_column}}} to `prompt_template`, or remove "
                f"`text_pair_column`.")
        if self.target_template is not None:
            parse_template(self.target_template, where, "target_template")
        if self.label_words is not None:
            self._check_label_words(where)
        elif self.labels is not None:
            raise TaskConfigError(f"{where}: `labels` of a generative task come from `label_words`. Fix: remove "
                                  f"`labels`, and give `label_words` ({{label: word}}) for classification.")
        if self.generation is not None:
            check_generation_options(self.generation, where)

    def _default_prompt_template(self) -> str:
        columns = [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])
        fields = [f"{column}: {{{column}}}" for column in columns]
        if self.kind == "seq2seq":  # the task-name prefix of T5 and Hyperformer: "rte sentence1: ... sentence2: ..."
            return " ".join([self.name, *fields])
        return "\n".join(fields)

    def _check_label_words(self, where: str) -> None:
        words = {str(label): word for label, word in self.label_words.items()}
        if len(words) < 2:
            raise TaskConfigError(f"{where}: `label_words` needs a word for each of at least 2 labels, got "
                                  f"{self.label_words}. Fix: list every label of the data.")
        seen: dict[str, str] = {}
        for label, word in words.items():
            # generated texts are compared stripped, lower-cased and on their first line: so are the words
            key = word.strip().lower()
            if not key or "\n" in key:
                raise TaskConfigError(f"{where}: `label_words` gives label {label!r} the word {word!r}; a word must be "
                                      f"non-blank and on one line. Fix: give {label!r} a one-line word.")
            if key in seen:
                raise TaskConfigError(
                    f"{where}: `label_words` maps labels {seen[key]!r} and {label!r} to the same word {word.strip()!r} "
                    f"(compared lower-cased), so a generated word could not tell them apart. Fix: give each label "
                    f"its own word.")
            seen[key] = label
        if self.labels is not None and set(self.labels) != set(words):
            raise TaskConfigError(f"{where}: `labels` {self.labels} and the labels of `label_words` {sorted(words)} "
                                  f"differ. Fix: remove `labels` (they are taken from `label_words`).")
        self.label_words = words
        self.labels = list(self.labels or words)

    def _check_generative_metrics(self, where: str) -> None:
        allowed = (*GENERATION_METRICS, "perplexity")
        for name in self.metrics:
            if name not in allowed:
                raise TaskConfigError(f"{where}: metric {name!r} does not score generated text. Fix: use metrics "
                                      f"among {list(allowed)}.")
            if name in LABEL_WORD_METRICS and self.label_words is None:
                raise TaskConfigError(f"{where}: metric {name!r} compares the label a generated word maps to; the task "
                                      f"has no `label_words`. Fix: give `label_words`, or use `exact_match`.")
            if name in SCORE_METRICS and self.label_words is not None:
                raise TaskConfigError(f"{where}: metric {name!r} correlates numbers written as text; the task has "
                                      f"`label_words` (classes). Fix: use `accuracy`.")

    @property
    def is_generative(self) -> bool:
        """Whether the task generates text (`causal_lm` or `seq2seq`)."""
        return self.kind in GENERATIVE_KINDS

    @property
    def answer_column(self) -> str | None:
        """The column holding what the task learns (a label, tags, or a target text), or None (`masked_lm`, and a
        `target_template`, which reads several columns)."""
        if self.kind == "masked_lm" or self.target_template is not None:
            return None
        return self.target_column or self.label_column

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

    def never_predicted(self) -> list[int]:
        """Ids of the labels the model must never predict: those only evaluation data has (it cannot learn them)."""
        if not self.evaluation_only_labels:  # the common case, asked for every predicted row
            return []
        index = {label: i for i, label in enumerate(self.labels or [])}
        return [index[label] for label in self.evaluation_only_labels if label in index]

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
    def from_dict(cls, data: dict[str, Any]) -> Task:
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


def parse_template(template: str, where: str, field_name: str) -> list[tuple[str, str | None]]:
    """Split a template into `(literal text, column or None)` pieces.

    `{column}` names a column of the row; `{{` and `}}` are literal braces. Format specs (`{x:.1f}`),
    conversions (`{x!r}`) and empty `{}` are refused: a column value is always filled in as text.

    Args:
        template: e.g. `"Review: {review}\nAnswer:"`.
        where: names the task in messages.
        field_name: the task field holding the template (named in messages).

    Returns:
        The pieces in order; `"".join(literal + value ...)` rebuilds the filled template.
    """
    import string

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise TaskConfigError(f"{where}: `{field_name}` {template!r} is not a valid template ({err}). Fix: write "
                              f"columns as {{column}} and literal braces as {{{{ and }}}}.") from err
    pieces: list[tuple[str, str | None]] = []
    for literal, column, spec, conversion in parsed:
        if column is not None and (not column or spec or conversion):
            raise TaskConfigError(f"{where}: `{field_name}` {template!r} has a placeholder other than {{column}} "
                                  f"(empty, a format spec or a conversion). Fix: write each column as {{column}}.")
        pieces.append((literal, column))
    return pieces


def check_generation_options(options: dict[str, Any], where: str) -> None:
    """Check a task's `generation` settings against `transformers.GenerationConfig`.

    Args:
        options: `{field: value}` of `GenerationConfig` fields.
        where: names the task in messages.

    Raises:
        TaskConfigError: an option that `GenerationConfig` does not have (named, with the closest field), values
            that `GenerationConfig.validate(strict=True)` refuses, `num_return_sequences` other than 1 (each row
            yields one text: scored, predicted, pushed) or `num_beams` below 1.
    """
    import difflib

    from transformers import GenerationConfig

    known = sorted(k for k in GenerationConfig().to_dict() if not k.startswith("_") and k != "transformers_version")
    for option in options:
        if option not in known:
            close = difflib.get_close_matches(option, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TaskConfigError(
                f"{where}: unknown generation option {option!r} in `generation`{hint}. Fix: use fields of "
                f"transformers.GenerationConfig, e.g. max_new_tokens, num_beams, do_sample, temperature.")
    _check_one_text_per_row(options, where)
    try:
        GenerationConfig(**options).validate(strict=True)
    except (ValueError, TypeError) as err:
        raise TaskConfigError(f"{where}: `generation` {options} is invalid: {err} Fix: correct these settings.") from err


def _check_one_text_per_row(options: dict[str, Any], where: str) -> None:
    """Refuse settings under which a row would not yield exactly one text. GenerationConfig accepts both below
    (beam search may return several beams; `num_beams=0` only fails deep inside `generate`)."""
    returned = options.get("num_return_sequences")
    if returned is not None and returned != 1:
        raise TaskConfigError(f"{where}: `generation` sets num_return_sequences={returned!r}, but each row yields one "
                              f"text (scored, predicted, pushed). Fix: remove num_return_sequences (or set it to 1).")
    beams = options.get("num_beams")
    if beams is not None and (isinstance(beams, bool) or not isinstance(beams, int) or beams < 1):
        raise TaskConfigError(f"{where}: `generation` sets num_beams={beams!r}; it must be a whole number of at "
                              f"least 1 (1 is greedy search). Fix: set num_beams to 1 or more, or remove it.")


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
