"""`MultiTaskTrainer`: a thin `transformers.Trainer` subclass over its documented hooks.

Overridden: the train dataloader (task sampler), `compute_loss` (per-task losses and their weighting),
`training_step` (per-task gradients for gradient surgery, and the once-per-step work of the optimization
strategies; see `hf_mtl.optim.plan`), `create_optimizer` (a learned loss weighting's parameters),
`log` (per-task train losses, `weight_<task>`, `prob_<task>`), `evaluate` (one pass per task,
`eval_<task>_<metric>` + `eval_average`; generative tasks are scored on generated texts, see `evaluation_loop`),
`predict` (per task: logits, or generated texts), `_save` / `_load_from_checkpoint` / `_load_best_model` (the
store layout, safetensors only), and `_save_checkpoint`, the one place that orders a checkpoint's files: the
Trainer's own, then `checkpoint_state()` (the task sampler's and the optimization strategies' states, so a resumed
run continues exactly; `MTL_STATE_NAME`), then the complete marker, last (`resume_from_checkpoint=True` takes the
newest complete checkpoint; a resume from one without the extra state is refused, see `load_checkpoint_state`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import accelerate
import datasets
import numpy as np
import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import DataLoader, Sampler
from transformers import Trainer
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    EvalLoopOutput,
    EvalPrediction,
    PredictionOutput,
    enable_full_determinism,
    rotate_checkpoints,
    set_seed,
)

from .data.collators import IGNORE_INDEX, MultiTaskCollator, pad_rows, prompt_rows
from .data.dataset import MultiTaskDataset, TaskDataset, prepare_datasets
from .data.samplers import MultiTaskBatchSampler
from .data.text2text import PROMPT_LENGTH_COLUMN, REFERENCE_COLUMN
from .errors import DataError, TaskConfigError
from .generation import generate_ids
from .generation_metrics import compute_generation_metrics
from .io_utils import atomic_write_json, load_tensors, read_json, save_tensors
from .metrics import compute_task_metrics, perplexity, primary_metric_key, validate_metric_names
from .modeling.model import MultiTaskModel
from .ops.cpu_memory import keep_freed_memory
from .optim.feedback import SchedulerFeedback, build_held_out
from .optim.mixed import forward_per_task, rows_by_task, task_batches
from .optim.plan import OptimizationPlan
from .optim.schedulers import SAMPLING_STRATEGIES, TaskScheduler, build_scheduler
from .optim.weighting import Progress
from .store.layout import CONFIG_NAME
from .store.load import load_trainable_state
from .tasks import Task, check_unique_names, dependency_order
from .training_args import MultiTaskTrainingArguments


# The task sampler's and the optimization strategies' states (`MultiTaskTrainer.checkpoint_state`).
MTL_STATE_NAME = "hf_mtl_state.json"
# Written last into a checkpoint, once every rank's files are there: a folder without it was cut off mid-save.
CHECKPOINT_COMPLETE_NAME = "checkpoint_complete.json"
DISCRIMINATOR_NAME = "task_discriminator.safetensors"  # checkpoints of adversarial runs (training-only weights)
_IGNORE_OUTPUT_KEYS = ["task_losses", "task_logits", "task_rows"]

logger = logging.getLogger(__name__)


class MultiTaskTrainer(Trainer):
    """Train one `MultiTaskModel` on several datasets at once.

    Args:
        model: the `MultiTaskModel`.
        args: `MultiTaskTrainingArguments`.
        tasks: the tasks (default: `args.tasks`, else the model's tasks).
        train_dataset: `{task: datasets.Dataset}`, raw (tokenized here) or already tokenized.
        eval_dataset: `{task: datasets.Dataset}` likewise.
        processing_class: the tokenizer (default: the model's).
        kwargs: any other `Trainer` argument (callbacks, optimizers, ...).
    """

    def __init__(
        self,
        model: MultiTaskModel,
        args: MultiTaskTrainingArguments,
        tasks: Sequence[Task] | None = None,
        train_dataset: dict[str, datasets.Dataset] | None = None,
        eval_dataset: dict[str, datasets.Dataset] | None = None,
        processing_class: Any = None,
        data_collator: Any = None,
        **kwargs: Any,
    ):
        check_world_size(args)
        # Heads made here (labels read from the data) draw from the run's seed, as the Trainer's own setup does;
        # what the caller built before (backbone, adapters) is seeded by calling `transformers.set_seed` first.
        seed_everything(args)
        self.tasks = self._resolve_tasks(model, args, tasks)
        tokenizer = processing_class if processing_class is not None else model.tokenizer
        if model.tokenizer is None:
            model.tokenizer = tokenizer  # generation (evaluation of generative tasks) reads the model's tokenizer
        train = prepare_datasets(list(self.tasks.values()), train_dataset or {}, tokenizer, args.max_seq_length, "train",
                                 label_data=eval_dataset)  # labels only the evaluation data hold join inferred label sets
        self._attach_tasks(model)
        check_something_trains(model, list(train))
        evals = prepare_datasets(list(self.tasks.values()), eval_dataset or {}, tokenizer, args.max_seq_length, "validation")
        if evals:
            warn_unevaluated([name for name in self.tasks if name not in evals])
        collator = data_collator or MultiTaskCollator(tokenizer, self.tasks, args.pad_to_multiple_of)
        self.optim_plan = self._build_optimization(args, model, train)
        super().__init__(
            model=model, args=args, data_collator=collator, processing_class=tokenizer,
            train_dataset=MultiTaskDataset(train) if train else None,
            eval_dataset={name: TaskDataset(name, data) for name, data in evals.items()} or None,
            compute_metrics=self._compute_metrics, **kwargs,
        )
        self._refuse_generation_under_fsdp([name for name in evals if self.tasks[name].is_generative])
        if args.cpu_keep_freed_memory and args.device.type == "cpu":
            keep_freed_memory()
        self.state.epoch = None  # not trained yet: an evaluation now (`hf-mtl eval` of a store) has no epoch
        self.model_accepts_loss_kwargs = False  # the model returns a per-batch mean; the Trainer scales it for GA
        self.task_sampler: MultiTaskBatchSampler | None = None
        self._resume_state: dict[str, Any] | None = None  # `checkpoint_state()` of the checkpoint resumed from
        self._eval_task: str | None = None
        self._loss_sums = {name: [0.0, 0] for name in self.tasks}
        self._add_weighting_parameters(self.optimizer)
        self._add_scheduler_feedback()

    # ------------------------------------------------------------------ setup steps
    @staticmethod
    def _resolve_tasks(model: MultiTaskModel, args: MultiTaskTrainingArguments, tasks: Sequence[Task] | None) -> dict[str, Task]:
        if tasks is None:
            tasks = args.task_objects() if args.tasks else list(model.tasks.values())
        tasks = list(tasks)
        for task in tasks:  # a task the model already knows keeps the model's label list (its head's size)
            known = model.tasks.get(task.name)
            if task.labels is None and known is not None and known.labels is not None:
                task.set_labels(known.labels)
        check_unique_names(tasks)
        if not tasks:
            raise TaskConfigError("MultiTaskTrainer got no tasks. Fix: pass tasks=, or list them in the recipe.")
        for task in tasks:
            validate_metric_names(task)
        return {t.name: t for t in tasks}

    def _attach_tasks(self, model: MultiTaskModel) -> None:
        """Give every task its head now that its labels are known (inferred from the training data); tasks
        that read other tasks' predictions (`input_from_tasks`) come after them."""
        for task in dependency_order(list(self.tasks.values())):
            model.add_task(task)
            if task.name not in model.heads:
                raise DataError(
                    f"task {task.name!r}: its label list is unknown (no training data, no `labels`). "
                    f"Fix: pass its training data or set `labels`."
                )

    def _build_optimization(self, args: MultiTaskTrainingArguments, model: MultiTaskModel,
                            train: dict[str, datasets.Dataset]) -> OptimizationPlan:
        """The loss weighting, gradient surgery and sampling mode, checked together (`hf_mtl.optim.plan`)."""
        plan = OptimizationPlan(args, self.tasks, {name: len(data) for name, data in train.items()}, model,
                                SAMPLING_STRATEGIES[args.sampling_strategy])
        plan.weighting.to(args.device)
        return plan

    def _add_weighting_parameters(self, optimizer: torch.optim.Optimizer | None) -> None:
        """A learned loss weighting's parameters (log σ_t) train in their own group, without weight decay."""
        params = self.optim_plan.weighting.parameters()
        if optimizer is None or not params:
            return
        if not any(p is q for group in optimizer.param_groups for p in group["params"] for q in params):
            optimizer.add_param_group({"params": params, "weight_decay": 0.0})

    def _add_scheduler_feedback(self) -> None:
        """A dynamic scheduler (bandit, uncertainty) learns after every optimizer step (`hf_mtl.optim.feedback`);
        one that is rewarded on held-out data needs evaluation data for the tasks it reads."""
        if self.train_dataset is None or not SAMPLING_STRATEGIES[self.args.sampling_strategy].dynamic:
            return
        held_out = build_held_out(self._make_scheduler(self.train_dataset), dict(self.eval_dataset or {}),
                                  self.data_collator, self.args.per_device_eval_batch_size,
                                  self.args.process_index, self.args.world_size)
        self.add_callback(SchedulerFeedback(self, held_out))

    # ------------------------------------------------------------------ training data
    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise DataError("MultiTaskTrainer: training needs train_dataset={task: dataset}.")
        data: MultiTaskDataset = self.train_dataset
        sampler = self._build_task_sampler(data)
        loader = DataLoader(
            data, batch_sampler=sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,  # off on the CPU (MultiTaskTrainingArguments)
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
        )
        prepared = self.accelerator.prepare(loader)
        keep_rank_aware_batches(prepared, sampler)
        return prepared

    def _make_scheduler(self, data: MultiTaskDataset) -> TaskScheduler:
        args = self.args
        strategy = SAMPLING_STRATEGIES[args.sampling_strategy]
        defaults = {k: v for k, v in args.sampler_options().items() if k in strategy.option_defaults}
        options = {**defaults, **(args.sampling_options or {})}
        return build_scheduler(args.sampling_strategy, data.task_names, data.sizes, seed=args.seed, **options)

    def _build_task_sampler(self, data: MultiTaskDataset) -> MultiTaskBatchSampler:
        args = self.args
        sampler = MultiTaskBatchSampler(
            data.task_names, data.sizes, args.per_device_train_batch_size, self._make_scheduler(data), seed=args.seed,
            num_replicas=args.world_size, rank=args.process_index, steps_per_epoch=args.steps_per_epoch,
        )
        self.task_sampler = sampler
        if self._resume_state is not None:
            sampler.load_state_dict(self._resume_state["sampler"])
            self.optim_plan.load_state_dict(self._resume_state["optim"])
        return sampler

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        outputs, inputs = self._forward(model, inputs)
        task_losses = self._task_losses(outputs, inputs)
        if self._eval_task is not None and not model.training:
            # `eval_<task>_loss` is the task's own loss L_t, not the training objective's weighted share of it
            loss = task_losses[self._eval_task]
            return (loss, outputs) if return_outputs else loss
        loss = self.combine_task_losses(task_losses, inputs)
        if outputs.get("adversarial_loss") is not None:
            loss = loss + outputs["adversarial_loss"]
        if model.training:
            self._record_training_batch(task_losses, inputs)
        return (loss, outputs) if return_outputs else loss

    def combine_task_losses(self, task_losses: dict[str, torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor:
        """One loss from the per-task losses through the run's `loss_weighting` (default `static`: each task's
        `loss_weight`). A single-task batch gives λ_t L_t, an `all_tasks` batch Σ_t λ_t L_t (or the
        weighting's own W), a sampled mixed batch counts each task by its share of the rows."""
        return self.optim_plan.combine(task_losses, inputs.get("task"), self._progress())

    def _forward(self, model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The model's outputs and the inputs they are for. In training the scheduler first picks the batch from
        the drawn one (`TaskScheduler.select_batch`: uncertainty sampling keeps the most uncertain rows); a mixed
        batch runs as one forward per task for adapter methods that do not route per row."""
        if model.training and self.task_sampler is not None:
            inputs = self.task_sampler.scheduler.select_batch(self.accelerator.unwrap_model(model), inputs, self.tasks,
                                                              self.args.per_device_train_batch_size,
                                                              self.optim_plan.split_forward)
        if self.optim_plan.split_forward and isinstance(inputs.get("task"), list):
            return forward_per_task(model, inputs, self.tasks), inputs
        return model(**inputs), inputs

    @staticmethod
    def _task_losses(outputs: Any, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        task_losses = outputs.get("task_losses")
        if task_losses is None:
            raise DataError(f"Batch of task {inputs.get('task')!r} has no labels; training needs labelled data.")
        return task_losses

    def _record_training_batch(self, task_losses: dict[str, torch.Tensor], inputs: dict[str, Any]) -> None:
        values = {name: float(value.detach()) for name, value in task_losses.items()}
        for name, value in values.items():
            self._loss_sums[name][0] += value
            self._loss_sums[name][1] += 1
        rows = {name: index.numel() for name, index in rows_by_task(inputs["task"], inputs["input_ids"].shape[0]).items()}
        self.optim_plan.record(values, rows)

    def _progress(self) -> Progress:
        batches = len(self.task_sampler) if self.task_sampler is not None else 1
        return Progress(step=self.state.global_step, epoch=float(self.state.epoch or 0.0),
                        max_steps=max(1, self.state.max_steps or 1),
                        steps_per_epoch=max(1, -(-batches // self.args.gradient_accumulation_steps)))

    # ------------------------------------------------------------------ optimizer step
    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """The Trainer's step, or, with gradient surgery (or Tchebycheff over several micro-batches or ranks),
        one that keeps each task's gradient (`hf_mtl.optim.task_gradients`). When the plan syncs by hand
        (per-task gradients, split forwards) the micro-batches run under DDP's `no_sync` and the gradients are
        all-reduced once, after the step's last micro-batch, in `OptimizationPlan.finish_step`."""
        plan = self.optim_plan
        plan.begin_micro_batch()
        with self.accelerator.no_sync(model) if plan.manual_sync else contextlib.nullcontext():
            if plan.per_task_gradients:
                loss = self._task_gradient_step(model, inputs)
            else:
                loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            scaler = self.accelerator.scaler
            plan.finish_step(self._progress(), float(scaler.get_scale()) if scaler is not None else None)
        return loss

    def _task_gradient_step(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """One forward and one backward pass per task, each over the task's own rows: the backward of L_t
        through a forward of the whole mixed batch would cost a full-batch backward per task."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        scale = 1.0 / self.current_gradient_accumulation_steps
        scaler = self.accelerator.scaler
        loss_scale = scaler.scale if scaler is not None else (lambda loss: loss)
        size = inputs["input_ids"].shape[0]
        task_losses, adversarial = {}, None
        for name, rows, batch in task_batches(inputs, self.tasks):
            with self.compute_loss_context_manager():
                outputs = model(**batch)
            loss = self._task_losses(outputs, batch)[name]
            share = outputs.adversarial_loss * (rows.numel() / size) if outputs.adversarial_loss is not None else None
            self.optim_plan.task_gradients.accumulate({name: loss}, share, scale, loss_scale)
            task_losses[name] = loss.detach()
            if share is not None:
                adversarial = share.detach() if adversarial is None else adversarial + share.detach()
        self._record_training_batch(task_losses, inputs)
        # the loss the Trainer logs, as the plain step would report it
        loss = self.combine_task_losses(task_losses, inputs) + (adversarial if adversarial is not None else 0.0)
        return loss.detach() * scale

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model)
        self._add_weighting_parameters(optimizer)
        return optimizer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and any(count for _, count in self._loss_sums.values()):
            sums = torch.tensor([[s, c] for s, c in self._loss_sums.values()], dtype=torch.float64,
                                device=self.args.device)
            if self.args.world_size > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            for (name, _), (total, count) in zip(self._loss_sums.items(), sums.tolist()):
                if count:
                    logs[f"train_{name}_loss"] = round(total / count, 4)
            self._loss_sums = {name: [0.0, 0] for name in self.tasks}
        if "loss" in logs and self.task_sampler is not None:
            dynamic = self.task_sampler.scheduler.dynamic
            logs.update(self.optim_plan.logged_values(self._progress(),
                                                      self.task_sampler.current_probabilities() if dynamic else None))
        super().log(logs, start_time)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, eval_dataset: dict[str, Any] | None = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate every task on its own data: `{prefix}_{task}_{metric}` and `{prefix}_average`
        (the mean of each task's primary metric, encoder and generative tasks alike). A generative task's metrics
        score the texts it generates (`evaluation_loop`); its `{prefix}_{task}_loss` is the teacher-forced loss."""
        sets = self._eval_sets(eval_dataset, "validation")
        ignore = list(ignore_keys or []) + _IGNORE_OUTPUT_KEYS
        metrics: dict[str, float] = {}
        primaries = []
        for name, data in sets.items():
            with self._evaluating(name):
                task_metrics = super().evaluate(data, ignore, f"{metric_key_prefix}_{name}")
            self._add_loss_metrics(name, task_metrics, metric_key_prefix)
            metrics.update(task_metrics)
            value = task_metrics.get(f"{metric_key_prefix}_{name}_{primary_metric_key(self.tasks[name])}")
            if value is not None and math.isfinite(value):
                primaries.append(value)
        if primaries:
            metrics[f"{metric_key_prefix}_average"] = float(np.mean(primaries))
            self.log({f"{metric_key_prefix}_average": metrics[f"{metric_key_prefix}_average"]})
        return metrics

    def predict(self, test_dataset: dict[str, Any], ignore_keys: list[str] | None = None,
                metric_key_prefix: str = "test") -> dict[str, PredictionOutput]:
        """Predict every task on its own data.

        Args:
            test_dataset: `{task: dataset}`, raw (tokenized here as a test split: targets may be absent) or tokenized.
            ignore_keys: output keys left out of the predictions.
            metric_key_prefix: metrics are `{prefix}_{task}_{metric}`.

        Returns:
            `{task: PredictionOutput}`: an encoder task's logits and label ids; a generative task's generated texts
            (one string per row, in order) and its references (None when the data has no targets). Metrics where the
            data has labels or targets.
        """
        if not isinstance(test_dataset, dict):
            raise DataError(f"MultiTaskTrainer.predict takes {{task: dataset}}, got {type(test_dataset).__name__}. "
                            f"Fix: pass test_dataset={{task_name: dataset}}.")
        ignore = list(ignore_keys or []) + _IGNORE_OUTPUT_KEYS
        out = {}
        for name, data in self._eval_sets(test_dataset, "test").items():
            with self._evaluating(name):
                out[name] = super().predict(data, ignore, f"{metric_key_prefix}_{name}")
        return out

    @contextlib.contextmanager
    def _evaluating(self, name: str) -> Any:
        """Evaluation or prediction of task `name`: the hooks below (`compute_loss`, `prediction_step`,
        `evaluation_loop`, `_compute_metrics`) read it."""
        self._eval_task = name
        try:
            yield
        finally:
            self._eval_task = None

    def _eval_sets(self, eval_dataset: dict[str, Any] | None, split: str) -> dict[str, TaskDataset]:
        if eval_dataset is None:
            if not self.eval_dataset:
                raise DataError("No evaluation data. Fix: give eval_dataset={task: dataset} or tasks with a validation_file.")
            return dict(self.eval_dataset)
        prepared = prepare_datasets(list(self.tasks.values()), {k: v for k, v in eval_dataset.items() if not isinstance(v, TaskDataset)},
                                    self.processing_class, self.args.max_seq_length, split)
        return {name: eval_dataset[name] if isinstance(eval_dataset[name], TaskDataset) else TaskDataset(name, prepared[name])
                for name in eval_dataset}

    def _add_loss_metrics(self, name: str, task_metrics: dict[str, float], prefix: str) -> None:
        if "perplexity" in self.tasks[name].metrics and f"{prefix}_{name}_loss" in task_metrics:
            task_metrics[f"{prefix}_{name}_perplexity"] = perplexity(task_metrics[f"{prefix}_{name}_loss"])

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> Any:
        """A `masked_lm` task is scored by its loss (perplexity): its (B, L, V) logits are not gathered,
        which would hold rows x length x vocabulary floats in memory."""
        if self._eval_task is not None and self.tasks[self._eval_task].kind == "masked_lm":
            prediction_loss_only = True
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def evaluation_loop(self, dataloader: DataLoader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """The Trainer's loop over an encoder task's batches (its loss and metrics). A generative task instead gets
        `{prefix}_loss`, its teacher-forced loss (`target_loss`), then generates a text for every row
        (`generate_texts`) and is scored on them offline (`hf_mtl.generation_metrics`): the output's predictions are
        the texts, its label ids the references (None for data without targets)."""
        task = self.tasks[self._eval_task] if self._eval_task is not None else None
        if task is None or not task.is_generative:
            return super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                           metric_key_prefix)
        data: TaskDataset = dataloader.dataset
        loss = self.target_loss(task.name, data)
        texts = self.generate_texts(task.name, data)
        references = list(data.data[REFERENCE_COLUMN]) if REFERENCE_COLUMN in data.data.column_names else None
        metrics = {f"{metric_key_prefix}_loss": loss} if loss is not None else {}
        if references is not None:
            scores = compute_generation_metrics(task, texts, references)
            metrics.update({f"{metric_key_prefix}_{key}": value for key, value in scores.items()})
        return EvalLoopOutput(predictions=texts, label_ids=references, metrics=metrics, num_samples=len(texts))

    @torch.no_grad()
    def target_loss(self, name: str, data: TaskDataset) -> float | None:
        """A generative task's teacher-forced loss on a tokenized split: the mean cross-entropy over every target
        token of the set (prompt + target in, the target tokens scored, as in training), whatever the batch size and
        the number of processes: each rank sums over its own rows, the sums are added across ranks.

        Returns:
            The loss, or None when the split has no targets (or no rows).
        """
        if "labels" not in data.data.column_names:
            return None
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        rows = generation_shard(len(data), self.args.process_index, self.args.world_size, pad=False)
        size = self.args.per_device_eval_batch_size
        totals = torch.zeros(2, dtype=torch.float64, device=self.args.device)  # (Σ token losses, Σ target tokens)
        try:
            for start in range(0, len(rows), size):
                batch = self._prepare_inputs(self.data_collator(data.__getitems__(rows[start:start + size])))
                with self.compute_loss_context_manager():
                    loss = model(**batch).task_losses[name]  # the batch's mean over its target tokens
                labels = batch["labels"] if model.is_encoder_decoder else batch["labels"][:, 1:]  # decoder-only: shifted
                tokens = (labels != IGNORE_INDEX).sum()
                totals += torch.stack([loss.double() * tokens, tokens.double()])
        finally:
            model.train(was_training)
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        return float(totals[0] / totals[1]) if totals[1] > 0 else None

    def generate_texts(self, name: str, data: TaskDataset) -> list[str]:
        """A text for every row of a generative task's tokenized split: generated from the row's prompt with the
        task's settings (`hf_mtl.generation.generation_config`), in batches of `per_device_eval_batch_size`.

        Under DDP every rank generates its shard of the rows (`generation_shard`) and the new tokens are gathered, so
        every rank returns every row's text, in order, each row once.

        Raises:
            TaskConfigError: under FSDP, whose sharded weights the generation loop does not gather.
        """
        self._refuse_generation_under_fsdp([name])
        if len(data) == 0:
            return []
        model = self.accelerator.unwrap_model(self.model)
        rows = generation_shard(len(data), self.args.process_index, self.args.world_size)
        encoded = data.data.select_columns(["input_ids", PROMPT_LENGTH_COLUMN]).select(rows)
        new_tokens = generate_ids(model, prompt_rows(list(encoded)), [name] * len(rows),
                                  batch_size=self.args.per_device_eval_batch_size)
        if self.args.world_size > 1:
            new_tokens = self._gather_token_rows(new_tokens)[: len(data)]
        return [model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_tokens]

    def _refuse_generation_under_fsdp(self, names: Sequence[str]) -> None:
        """Evaluation by generation reads whole weights on every rank; under FSDP each rank holds a shard of them.
        Refused when the trainer is built (before any training step) and again when generation is asked for."""
        if self.is_fsdp_enabled and names:
            raise TaskConfigError(
                f"task {names[0]!r}: evaluation by generation does not run under FSDP (each rank holds a shard of the "
                f"weights, which generate() does not gather). Fix: train the generative tasks without validation data "
                f"(no `validation_file`, no eval_dataset), then score the saved model with `hf-mtl eval OUTPUT_DIR` "
                f"(one process, or DDP).")

    def _gather_token_rows(self, rows: list[list[int]]) -> list[list[int]]:
        """Every rank's rows of token ids, concatenated in rank order (as tensors: nothing is pickled between ranks)."""
        local = pad_rows(rows, -1).to(self.args.device)  # (n, T) with -1 after each row's tokens
        local = self.accelerator.pad_across_processes(local, dim=1, pad_index=-1)
        return [[token for token in row if token >= 0] for row in self.accelerator.gather(local).tolist()]

    def _compute_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        task = self.tasks[self._eval_task]
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return compute_task_metrics(task, logits, prediction.label_ids)

    # ------------------------------------------------------------------ train / save / load
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        resume_from_checkpoint = _resume_flag(resume_from_checkpoint)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, remove_skipped=self.args.should_save)
            self.accelerator.wait_for_everyone()  # the skipped folders are gone before any rank saves again
        elif resume_from_checkpoint:
            check_checkpoint_complete(str(resume_from_checkpoint))
        if not resume_from_checkpoint:
            check_output_dir(self.args)
        self._resume_state = load_checkpoint_state(str(resume_from_checkpoint)) if resume_from_checkpoint else None
        return super().train(resume_from_checkpoint=resume_from_checkpoint or None, **kwargs)

    def checkpoint_state(self) -> dict[str, Any]:
        """The state a resumed run needs beyond the Trainer's own files, saved as JSON with every checkpoint
        (`MTL_STATE_NAME`) and given back to the resumed run's sampler and strategies.

        Returns:
            `{"sampler": the task sampler's state_dict, "optim": the optimization plan's state_dict}`.
        """
        return {"sampler": self.task_sampler.state_dict(), "optim": self.optim_plan.state_dict()}

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint plus `checkpoint_state()`, marked complete (`CHECKPOINT_COMPLETE_NAME`) once
        every rank wrote its part; older checkpoints are rotated out (`save_total_limit`) only after that, so a run
        killed while saving always leaves a complete checkpoint to resume from.

        The extra state is written here rather than from a Trainer hook: the Trainer's own hooks inside a save
        (`_save_rng_state`) are skipped with `save_only_model`, and `TrainerCallback.on_save` runs after this
        method returns, i.e. after the complete marker, which must be the checkpoint's last file.
        """
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save and os.path.isdir(folder):
            shutil.rmtree(folder)  # what a run killed while writing this step left (partial files, *.tmp)
        self.accelerator.wait_for_everyone()
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every rank's files (rng_state_<rank>.pth) are written
        if self.args.should_save:
            atomic_write_json(os.path.join(folder, MTL_STATE_NAME), self.checkpoint_state())
            atomic_write_json(os.path.join(folder, CHECKPOINT_COMPLETE_NAME),
                              {"global_step": self.state.global_step, "world_size": self.args.world_size})
            rotate_checkpoints(run_dir, save_total_limit=limit, best_model_checkpoint=self.state.best_model_checkpoint,
                               use_mtime=True)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(output_dir)
        if model.task_discriminator is not None:
            save_tensors(os.path.join(output_dir, DISCRIMINATOR_NAME), model.task_discriminator.state_dict())
        atomic_write_json(os.path.join(output_dir, "training_args.json"), json.loads(self.args.to_json_string()))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        if not os.path.isfile(os.path.join(resume_from_checkpoint, CONFIG_NAME)):
            raise DataError(f"{resume_from_checkpoint} is not an hf_mtl checkpoint (no {CONFIG_NAME}).")
        load_trainable_state(target, resume_from_checkpoint)
        discriminator = os.path.join(resume_from_checkpoint, DISCRIMINATOR_NAME)
        if target.task_discriminator is not None and os.path.isfile(discriminator):
            target.task_discriminator.load_state_dict(load_tensors(discriminator, "checkpoint task discriminator"))

    def _load_best_model(self) -> None:
        self._load_from_checkpoint(self.state.best_model_checkpoint)


def check_something_trains(model: MultiTaskModel, names: Sequence[str]) -> None:
    """Refuse to train tasks that have no trainable parameter at all: a generative task's output layer is the
    backbone's LM head, so with `adapter_method: "none"` and a frozen backbone nothing of it would learn (the
    backward pass would fail on a loss without gradient).

    Raises:
        TaskConfigError: naming the first such task and the fix.
    """
    counts = model.trainable_parameters()
    if counts["shared"]["total"] or any(counts["languages"].values()):
        return
    idle = [name for name in names if counts["tasks"].get(name, {}).get("total", 1) == 0]
    if idle:
        raise TaskConfigError(
            f"task {idle[0]!r}: nothing would train: adapter_method {model.adapter.name!r} adds no parameters for it, "
            f"its output layer is the backbone's own LM head, and freeze_backbone is true. Fix: set adapter_method "
            f"(e.g. \"lora\") or freeze_backbone false (full fine-tuning).")


def generation_shard(rows: int, rank: int, world_size: int, pad: bool = True) -> list[int]:
    """The rows of an evaluation set that rank `rank` evaluates: a contiguous block of ceil(rows / world_size) rows.
    The blocks in rank order, cut to `rows`, are the rows in order: each row is scored once.

    Args:
        rows: the set's row count.
        rank: this process's index.
        world_size: the number of processes.
        pad: let the last blocks wrap round to the first rows, so that every rank runs as many batches (False: the
            last ranks get fewer rows, or none).
    """
    per_rank = -(-rows // world_size)
    block = range(rank * per_rank, (rank + 1) * per_rank)
    return [i % rows for i in block] if pad and rows else [i for i in block if i < rows]


def keep_rank_aware_batches(loader: DataLoader, sampler: Sampler) -> None:
    """Keep `Accelerator.prepare` from re-sharding the task sampler of `loader` (in place).

    The task sampler is rank-aware already: each rank takes its shard of the same task's batch. On several processes
    accelerate (>=1.10,<2, as setup.py allows; tests/test_trainer_seams.py checks the API used here) wraps it in a
    `BatchSamplerShard`, which would hand each rank every n-th batch instead. Made a pass-through, as the Trainer
    does for its own rank-aware samplers:
    - `num_processes=1, process_index=0`: this rank gets every batch;
    - `batch_size=None`: batches of every task (all_tasks, uncertainty pools) hold M·batch_size rows; with a batch size
      set, the shard would take them for incomplete batches and refill them from the epoch's first indices.

    Raises:
        TaskConfigError: accelerate wrapped the sampler in something else (an accelerate outside that range).
    """
    shard = loader.batch_sampler
    if shard is sampler:  # one process: accelerate left the sampler alone
        return
    if not isinstance(shard, BatchSamplerShard) or shard.batch_sampler is not sampler:
        raise TaskConfigError(
            f"accelerate {accelerate.__version__} wrapped the task sampler in {type(shard).__name__}, which hf_mtl does "
            f"not know how to keep from re-sharding its rank-aware batches. Fix: install accelerate>=1.10,<2."
        )
    shard.num_processes, shard.process_index = 1, 0
    shard.batch_size = None


def check_output_dir(args: MultiTaskTrainingArguments) -> None:
    """Refuse to write a new run over an existing one unless `overwrite_output_dir` is set."""
    out = Path(args.output_dir)
    if args.overwrite_output_dir or not out.is_dir():
        return
    markers = [p.name for p in out.iterdir() if p.name in (CONFIG_NAME, "trainer_state.json") or p.name.startswith("checkpoint-")]
    if markers:
        raise TaskConfigError(
            f"output_dir {out} already holds a run ({', '.join(sorted(markers)[:3])}). Fix: choose another output_dir, "
            f"set overwrite_output_dir=true, or resume with resume_from_checkpoint."
        )


def seed_everything(args: MultiTaskTrainingArguments) -> None:
    """Seed Python, NumPy and torch from `args.seed` as the Trainer does (`enable_full_determinism` when
    `full_determinism` is set): call it before building anything random (backbone, adapters, heads)."""
    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)


def check_world_size(args: MultiTaskTrainingArguments) -> None:
    """Refuse processes that a launcher started together (`WORLD_SIZE` > 1) but that each set up a run of their
    own (`world_size` 1): they would train separate models into one `output_dir`."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and args.world_size == 1:
        raise TaskConfigError(
            f"{launched} processes were launched together (WORLD_SIZE={launched}) but this one set up world_size 1 "
            f"(parallel mode {args.parallel_mode.value}): they would train {launched} separate models into "
            f"{args.output_dir}. Fix: launch with `accelerate launch --multi_gpu --num_processes {launched} "
            f"-m hf_mtl.cli train RECIPE.json` (on a host without GPUs they join over gloo), or run one process."
        )


def warn_unevaluated(names: Sequence[str], split: str = "validation") -> None:
    """Say once per task that a task without `split` data is left out of the evaluation."""
    for name in names:
        logger.warning("task %r has no %s data: it is not evaluated. Fix: set `%s_file` (or `dataset_name` and "
                       "`%s_split`) in the task.", name, split, split, split)


def _checkpoint_step(path: Path) -> int | None:
    match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def _is_complete(path: Path) -> bool:
    return (path / CHECKPOINT_COMPLETE_NAME).is_file()


def _newest_complete(output_dir: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """The newest complete `checkpoint-N` of `output_dir` (None if there is none) and the newer incomplete ones."""
    root = Path(output_dir)
    steps = {path: _checkpoint_step(path) for path in (root.iterdir() if root.is_dir() else [])}
    skipped = []
    for path in sorted((p for p, step in steps.items() if step is not None), key=steps.get, reverse=True):
        if _is_complete(path):
            return path, skipped
        skipped.append(path)
    return None, skipped


def _resume_flag(value: str | bool | None) -> str | bool | None:
    """`resume_from_checkpoint` as the Trainer takes it. TrainingArguments types it as a string, so a command-line
    `--resume_from_checkpoint true` arrives as "true": that means the newest complete checkpoint, as a JSON `true`
    does (a folder of that name, if one exists, is still a path)."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false") and not os.path.isdir(value):
        return value.strip().lower() == "true"
    return value


def last_complete_checkpoint(output_dir: str, remove_skipped: bool = False) -> str:
    """The newest `checkpoint-N` of `output_dir` that was written to the end. Newer ones that were cut off
    mid-save are skipped with a warning each and, with `remove_skipped` (the saving process), deleted: the
    resumed run writes those steps again.

    Raises:
        DataError: `output_dir` holds no complete checkpoint.
    """
    newest, skipped = _newest_complete(output_dir)
    if newest is None:
        detail = f" ({', '.join(p.name for p in skipped)}: cut off mid-save)" if skipped else ""
        raise DataError(f"No complete checkpoint to resume from in {output_dir}{detail}. Fix: start the run again "
                        f"without resume_from_checkpoint (with overwrite_output_dir=true).")
    for path in skipped:
        logger.warning("resuming from %s: skipped %s, which is incomplete (no %s, which is written last: the run "
                       "stopped while saving it)%s.", newest.name, path.name, CHECKPOINT_COMPLETE_NAME,
                       "; removed it" if remove_skipped else "")
        if remove_skipped:
            shutil.rmtree(path, ignore_errors=True)
    return str(newest)


def load_checkpoint_state(checkpoint: str) -> dict[str, Any]:
    """The `MultiTaskTrainer.checkpoint_state()` saved in `checkpoint`.

    Raises:
        DataError: it is missing or lacks a part: the resumed run would draw a different task sequence.
    """
    path = Path(checkpoint) / MTL_STATE_NAME
    fix = ("Fix: resume from a checkpoint that MultiTaskTrainer wrote completely (resume_from_checkpoint=true takes "
           "the newest complete one), or start the run again without resume_from_checkpoint.")
    if not path.is_file():
        raise DataError(f"resume_from_checkpoint: {checkpoint} has no {MTL_STATE_NAME} (the task sampler's and the "
                        f"optimization strategies' state): the resumed run would draw a different task sequence. {fix}")
    state = read_json(path, "checkpoint sampler state")
    missing = [key for key in ("sampler", "optim") if not isinstance(state, dict) or key not in state]
    if missing:
        raise DataError(f"resume_from_checkpoint: {path} lacks {', '.join(missing)}. {fix}")
    return state


def check_checkpoint_complete(path: str) -> None:
    """Refuse to resume from a checkpoint that was cut off mid-save, naming the newest complete one."""
    if not os.path.isdir(path):
        raise DataError(f"resume_from_checkpoint: {path} does not exist. Fix: give a checkpoint-N folder of the run, "
                        f"or true for the newest complete one.")
    if _is_complete(Path(path)):
        return
    newest, _ = _newest_complete(Path(path).parent)
    fix = (f"resume from {newest}, or with resume_from_checkpoint=true" if newest is not None
           else "start the run again without resume_from_checkpoint")
    raise DataError(f"{path} is incomplete: it has no {CHECKPOINT_COMPLETE_NAME} (written last), so the run stopped "
                    f"while saving it. Fix: {fix}.")
