"""Recipes: read a JSON recipe (+ command-line overrides) and run a training or an evaluation."""

from __future__ import annotations

import difflib
import functools
import json
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from .errors import HfMtlError, TaskConfigError
from .field_types import type_error_message, value_matches
from .io_utils import atomic_write_json
from .tasks import Task
from .training_args import MultiTaskTrainingArguments


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> MultiTaskTrainingArguments:
    """Parse a recipe file, applying `--field value` overrides (dotted fields reach into lists/objects:
    `--tasks.0.max_train_samples 100`). Values are read as JSON when they parse, else as strings."""
    path = Path(path)
    if not path.is_file():
        raise TaskConfigError(f"Recipe {path} does not exist. Fix: give the path of a JSON recipe (see training_args/).")
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TaskConfigError(f"Recipe {path} is not valid JSON: {err}.") from err
    if not isinstance(recipe, dict):
        raise TaskConfigError(f"Recipe {path} must hold a JSON object of MultiTaskTrainingArguments fields.")
    for key, value in _pairs(overrides):
        _set_dotted(recipe, key, value)
    return parse_recipe_dict(recipe, source=str(path))


def parse_recipe_dict(recipe: dict[str, Any], source: str = "recipe") -> MultiTaskTrainingArguments:
    """Build the arguments of a recipe (a dict of `MultiTaskTrainingArguments` fields), checking every field's
    name and JSON type first, so a bad recipe is one error before any data or model is loaded.

    Args:
        recipe: the recipe's fields.
        source: how to name the recipe in messages (its path).

    Returns:
        The validated arguments.

    Raises:
        TaskConfigError: an unknown field (with a "did you mean" suggestion), a value of the wrong type, or a
            value that `MultiTaskTrainingArguments` / `Task` validation refuses.
    """
    parser = HfArgumentParser(MultiTaskTrainingArguments)
    known = {f.name for f in parser.dataclass_types[0].__dataclass_fields__.values()}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise TaskConfigError(f"{source}: unknown field(s) {unknown}{_did_you_mean(unknown, known)}. Fix: use fields "
                              f"of MultiTaskTrainingArguments (`hf-mtl train --help` lists them).")
    _check_recipe_types(recipe, source)
    if "output_dir" not in recipe:
        raise TaskConfigError(f"{source}: no `output_dir`. Fix: add \"output_dir\": \"outputs/<run name>\".")
    try:
        (args,) = parser.parse_dict(recipe)
    except HfMtlError:
        raise
    except ValueError as err:  # transformers' own checks of TrainingArguments (bf16 without a GPU, ...)
        raise TaskConfigError(f"{source}: {str(err).strip()} Fix: change that field in the recipe or on the command "
                              f"line (`--field value`).") from err
    return args


def _did_you_mean(unknown: list[str], known: set[str]) -> str:
    """" (did you mean 'learning_rate'?)" for the unknown names that are close to a known one."""
    guesses = {name: difflib.get_close_matches(name, sorted(known), n=1) for name in unknown}
    pairs = [f"{guess[0]!r} for {name!r}" if len(unknown) > 1 else repr(guess[0])
             for name, guess in guesses.items() if guess]
    return f" (did you mean {', '.join(pairs)}?)" if pairs else ""


@functools.lru_cache(maxsize=1)
def _recipe_hints() -> dict[str, Any]:
    return typing.get_type_hints(MultiTaskTrainingArguments)


def _check_recipe_types(recipe: dict[str, Any], source: str) -> None:
    """Each recipe value has its field's JSON type (`"learning_rate": "1e-3"` would otherwise fail deep inside
    the run); task entries are checked by `Task` itself."""
    hints = _recipe_hints()
    for name, value in recipe.items():
        if name in hints and not value_matches(value, hints[name]):
            raise TaskConfigError(type_error_message(source, name, value, hints[name]))


def _field_annotation(key: str) -> Any:
    """The type of a (dotted) recipe field: a top-level field, or `tasks.<i>.<field>`; None when unknown."""
    parts = key.split(".")
    if len(parts) == 1:
        return _recipe_hints().get(key)
    if len(parts) == 3 and parts[0] == "tasks":
        return typing.get_type_hints(Task).get(parts[2])
    return None


def _pairs(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    pairs, items = [], list(overrides)
    while items:
        key = items.pop(0)
        if not key.startswith("--"):
            raise TaskConfigError(f"Override {key!r} must look like --field value.")
        key = key[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
        elif items and not items[0].startswith("--"):
            raw = items.pop(0)
        else:
            raw = "true"  # a bare flag
        key = key.replace("-", "_") if "." not in key else key
        pairs.append((key, _parse_value(key, raw)))
    return pairs


def _parse_value(key: str, raw: str) -> Any:
    """JSON when the text parses, else the text; a field that takes text keeps it (`--run_name 2024`)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    annotation = _field_annotation(key)
    if annotation is not None and not value_matches(value, annotation) and value_matches(raw, annotation):
        return raw
    return value


def _set_dotted(recipe: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    target: Any = recipe
    for i, part in enumerate(parts[:-1]):
        try:
            target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
        except (IndexError, ValueError) as err:
            raise TaskConfigError(f"Override --{key}: {'.'.join(parts[: i + 1])} does not exist in the recipe.") from err
    last = parts[-1]
    if isinstance(target, list):
        try:
            target[int(last)] = value
        except (IndexError, ValueError) as err:
            raise TaskConfigError(f"Override --{key}: index {last} does not exist in the recipe.") from err
    else:
        target[last] = value


def build_model(args: MultiTaskTrainingArguments, tasks: list) -> Any:
    from .modeling import MultiTaskModel

    if not args.model_name_or_path:
        raise TaskConfigError("The recipe has no `model_name_or_path`. Fix: name a backbone, e.g. "
                              "\"sentence-transformers/all-MiniLM-L6-v2\".")
    return MultiTaskModel.from_backbone(
        args.model_name_or_path, tasks, revision=args.model_revision, backbone_dropout=args.backbone_dropout,
        adapter_method=args.adapter_method, adapter_config=args.adapter_config or {},
        freeze_backbone=args.freeze_backbone, head_dropout=args.head_dropout, fast_dropout=args.fast_dropout,
        trust_remote_code=args.trust_remote_code,
    )


def check_backbone_fits(args: MultiTaskTrainingArguments, tasks: Sequence[Task]) -> None:
    """Refuse, before any data or weights are read, a task whose kind the recipe's backbone cannot serve (only its
    config is read). Encoder tasks and generative tasks sit in one run only if they share the backbone, which no
    backbone layout allows: a recipe that mixes them names the task the backbone cannot serve, and the other side.

    Raises:
        TaskConfigError: naming the task, its kind, the backbone's layout and the fix.
    """
    from .modeling.backbone import load_backbone_config
    from .modeling.generative import ENCODER, GENERATIVE_KINDS, backbone_layout, check_backbone_kind

    if not args.model_name_or_path:
        return  # `build_model` says what is missing
    config = load_backbone_config(args.model_name_or_path, revision=args.model_revision,
                                  trust_remote_code=args.trust_remote_code)
    generative = sorted(t.name for t in tasks if t.is_generative)
    encoder = sorted(t.name for t in tasks if not t.is_generative)
    layout = backbone_layout(config)
    misfit = next((t for t in tasks if GENERATIVE_KINDS.get(t.kind, ENCODER) != layout), None)
    if generative and encoder and misfit is not None:
        if misfit.is_generative:
            fix = (f"train the generative tasks {generative} in a separate run on a decoder-only LM (kind causal_lm) "
                   f"or an encoder-decoder (kind seq2seq), or give them encoder kinds")
        else:
            kind = next(k for k, v in GENERATIVE_KINDS.items() if v == layout)  # the backbone is an LM
            fix = (f"give {misfit.name!r} kind {kind!r} (classification as generation: label_column + label_words), or "
                   f"train the encoder tasks {encoder} in a separate run on an encoder backbone (BERT family)")
        raise TaskConfigError(
            f"task {misfit.name!r}: kind={misfit.kind!r} cannot run on the backbone {args.model_name_or_path} (layout "
            f"{layout!r}): the recipe mixes encoder tasks {encoder} with generative tasks {generative}, which sit in "
            f"one run only if they share the backbone. Fix: {fix}.")
    for task in tasks:
        check_backbone_kind(config, task.kind, task.name)


def run_training(args: MultiTaskTrainingArguments) -> dict[str, Any]:
    """Train the recipe's tasks, save the store into `output_dir`, evaluate, write the result files."""
    from .data.dataset import load_raw_splits
    from .trainer import MultiTaskTrainer, check_output_dir, check_world_size, seed_everything, warn_unevaluated

    check_world_size(args)  # before any data or model is loaded
    resume = args.resume_from_checkpoint
    if not resume:
        check_output_dir(args)
    tasks = args.task_objects()
    check_backbone_fits(args, tasks)
    train_raw = load_raw_splits(tasks, "train")
    eval_raw = load_raw_splits(tasks, "validation")
    if not eval_raw:  # the trainer names the tasks a partial evaluation leaves out
        warn_unevaluated([task.name for task in tasks])
    seed_everything(args)  # the same seed gives the same backbone, adapters and heads
    model = build_model(args, tasks)
    trainer = MultiTaskTrainer(model=model, args=args, tasks=tasks, train_dataset=train_raw, eval_dataset=eval_raw or None)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    out: dict[str, Any] = {"train": dict(result.metrics), "trainable_parameters": model.trainable_parameters()}
    if trainer.is_world_process_zero():
        atomic_write_json(Path(args.output_dir) / "train_results.json", out["train"])
    if eval_raw:
        out["eval"] = trainer.evaluate()
        if trainer.is_world_process_zero():
            atomic_write_json(Path(args.output_dir) / "eval_results.json", out["eval"])
    return out


def run_evaluation(store: str, split: str = "validation", tasks: Sequence[str] | None = None,
                   batch_size: int = 32, max_seq_length: int = 128, max_samples: int | None = None,
                   data_files: dict[str, str] | None = None) -> dict[str, float]:
    """Evaluate a saved store on its tasks' `validation` or `test` data (sources saved in `task.json`).

    `max_samples`: None keeps each task's saved `max_eval_samples`; 0 evaluates every row; N > 0 the first N.
    `data_files`: `{task: path}` read instead of the task's saved `<split>_file` (relative paths are relative
    to the current folder; the saved ones are absolute).
    """
    import dataclasses
    import tempfile

    from .data.dataset import load_raw_splits
    from .errors import DataError, UnknownTaskError
    from .inference import check_max_length
    from .modeling import MultiTaskModel
    from .trainer import MultiTaskTrainer, warn_unevaluated

    model = MultiTaskModel.from_pretrained(store, tasks=tasks)
    check_max_length(model.config, max_seq_length)
    task_list = list(model.tasks.values())
    if max_samples is not None:
        if max_samples < 0:
            raise DataError(f"max_samples={max_samples}: use 0 for every row or a positive row count.")
        task_list = [dataclasses.replace(t, max_eval_samples=max_samples or None) for t in task_list]
    unknown = sorted(set(data_files or {}) - {t.name for t in task_list})
    if unknown:
        raise UnknownTaskError(f"data_files names task(s) {unknown} that {store} does not hold (loaded: "
                               f"{[t.name for t in task_list]}). Fix: use the store's task names.")
    task_list = [dataclasses.replace(t, **{f"{split}_file": data_files[t.name]}) if t.name in (data_files or {}) else t
                 for t in task_list]
    raw = load_raw_splits(task_list, split)
    if not raw:
        raise DataError(f"No task of {store} has {split} data (set `{split}_file` or `dataset_name` in the task).")
    warn_unevaluated([t.name for t in task_list if t.name not in raw], split)
    task_list = [t for t in task_list if t.name in raw]
    with tempfile.TemporaryDirectory() as tmp:
        args = MultiTaskTrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size,
                                          max_seq_length=max_seq_length, report_to=[])
        trainer = MultiTaskTrainer(model=model, args=args, tasks=task_list, eval_dataset=raw)
        prefix = "eval" if split == "validation" else split
        return trainer.evaluate(metric_key_prefix=prefix)
