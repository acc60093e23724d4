"""`OptimizationPlan`: the loss weighting, gradient surgery and sampling mode of a run, checked together,
and the per-step bookkeeping the trainer delegates to them.

How a training step runs follows from the recipe:

| recipe                                                        | step                                        |
| ------------------------------------------------------------- | ------------------------------------------- |
| linear weighting (equal, static, size, uncertainty, dwa,      | the Trainer's own: Σ λ_t L_t per micro-     |
| curriculum)                                                   | batch, backward, DDP averages               |
| mixed batches with an adapter method that does not route      | one forward per task inside the micro-batch;|
| per row (lora)                                                | `no_sync` + one all-reduce of the gradients |
| `gradient_surgery`, or `tchebycheff` with gradient            | per-task gradients (`task_gradients.py`),   |
| accumulation or several ranks                                 | combined once per optimizer step            |
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import TaskConfigError
from ..registry import normalize_name
from ..tasks import Task
from .distributed import world_size
from .surgery import GRADIENT_SURGERIES, NO_SURGERY, build_gradient_surgery
from .task_gradients import StepStats, TaskGradients, all_reduce_grads, loss_coefficients
from .weighting import LOSS_WEIGHTINGS, LossWeighting, Progress, build_loss_weighting


def check_optimization_fields(loss_weighting: str, gradient_surgery: str, sampling_strategy: str) -> None:
    """Recipe-level checks (no data or model needed): known names, and what needs `all_tasks`.

    Args:
        loss_weighting, gradient_surgery, sampling_strategy: the recipe's fields.
    """
    weighting = LOSS_WEIGHTINGS.get(loss_weighting)
    needs = [f"gradient_surgery={gradient_surgery!r}"] if GRADIENT_SURGERIES.resolve(gradient_surgery) != NO_SURGERY else []
    if weighting.needs_all_tasks:
        needs.append(f"loss_weighting={loss_weighting!r}")
    if needs and normalize_name(sampling_strategy) != "all_tasks":
        raise TaskConfigError(
            f"{' and '.join(needs)} compare(s) the tasks within an optimizer step, which needs a batch of every task "
            f"in every step; sampling_strategy={sampling_strategy!r} does not put every task in every step. "
            f"Fix: set sampling_strategy='all_tasks'."
        )


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters shared between tasks: the backbone's own weights and the adapter
    method's shared parts (`adapter.shared_parameters()`, e.g. a hypernetwork)."""
    out, seen = [], set()
    for p in [*model._backbone_own_parameters(), *model.adapter.shared_parameters()]:
        if p.requires_grad and id(p) not in seen:
            out.append(p)
            seen.add(id(p))
    return out


class OptimizationPlan:
    """Built by the trainer from its arguments, tasks, training sizes and model.

    Args:
        args: `MultiTaskTrainingArguments`.
        tasks: the run's tasks by name.
        sizes: training examples per task.
        model: the `MultiTaskModel` (before any wrapping).
        scheduler_class: the sampling strategy's scheduler class.
    """

    def __init__(self, args: Any, tasks: dict[str, Task], sizes: dict[str, int], model: nn.Module,
                 scheduler_class: type):
        check_optimization_fields(args.loss_weighting, args.gradient_surgery, args.sampling_strategy)
        self.task_names = list(tasks)
        self.tasks = tasks
        self.mixed_batches = scheduler_class.draws_all_tasks  # every step's pool holds every task
        self.selects_rows = scheduler_class.selects_rows  # ... of which the trainer keeps the most uncertain rows
        self.all_tasks = self.mixed_batches and not self.selects_rows  # W = Σ λ_t L_t over every task
        self.feeds_scheduler = scheduler_class.dynamic  # the step's rows per task go to the scheduler
        self.weighting: LossWeighting = build_loss_weighting(args.loss_weighting, tasks, sizes, args.loss_weighting_options)
        self.surgery = (None if args.gradient_surgery == NO_SURGERY
                        else build_gradient_surgery(args.gradient_surgery, len(tasks), args.seed, args.gradient_surgery_options))
        self._check_tasks_and_model(model)
        self.split_forward = self.mixed_batches and not model.adapter.routes_per_row
        steps_span = args.gradient_accumulation_steps > 1 or args.world_size > 1
        self.per_task_gradients = self.surgery is not None or (not self.weighting.linear and steps_span)
        self.manual_sync = self.per_task_gradients or self.split_forward
        if self.per_task_gradients and (args.deepspeed or args.fsdp):
            raise TaskConfigError(
                "gradient_surgery (and tchebycheff over several micro-batches or ranks) needs each rank's full "
                "per-task gradients, which DeepSpeed and FSDP shard. Fix: train with DDP (accelerate launch "
                "--multi_gpu), or drop gradient_surgery."
            )
        trainable = [p for p in model.parameters() if p.requires_grad]
        shared = shared_parameters(model)
        if self.surgery is not None and not shared:
            raise TaskConfigError(
                f"gradient_surgery={args.gradient_surgery!r} acts on the parameters shared between tasks, and this "
                f"model has none that train (frozen backbone, adapter method {model.adapter.name!r} without shared "
                f"weights). Fix: set freeze_backbone=false, use a method with shared parts (hyperformer), or "
                f"set gradient_surgery='none'."
            )
        self.task_gradients = TaskGradients(self.task_names, trainable, shared, self.surgery) if self.per_task_gradients else None
        self.model_parameters = trainable  # reduced by hand when `manual_sync`
        self.stats = StepStats(self.task_names)
        self.last_step_rows: dict[str, float] = {}
        self._in_step = False

    def _check_tasks_and_model(self, model: nn.Module) -> None:
        if self.mixed_batches:
            mlm = [n for n, t in self.tasks.items() if t.kind == "masked_lm"]
            if mlm:
                raise TaskConfigError(
                    f"task(s) {mlm}: masked_lm tasks are masked by their own collator and train in single-task "
                    f"batches; the chosen sampling strategy builds mixed-task batches. Fix: use a single-task "
                    f"sampling strategy (e.g. 'temperature'), or train the masked_lm task(s) separately."
                )
        adversarial = [n for n, t in self.tasks.items() if t.adversarial_weight > 0]
        if len(adversarial) == 1:
            raise TaskConfigError(
                f"task {adversarial[0]!r}: adversarial_weight > 0 on a single task; the task discriminator tells "
                f"tasks apart, so at least two tasks need adversarial_weight > 0. Fix: set it on another task too, "
                f"or set it to 0."
            )

    # ------------------------------------------------------------------ per micro-batch
    def begin_micro_batch(self) -> None:
        """Before each micro-batch: the first one of a step clears the weighting's gradients, which the
        Trainer's `model.zero_grad()` does not reach."""
        if not self._in_step:
            for param in self.weighting.parameters():
                param.grad = None
            self._in_step = True
    def combine(self, task_losses: dict[str, torch.Tensor], batch_task: str | list[str], progress: Progress) -> torch.Tensor:
        """W of one batch. An `all_tasks` batch gives W(L_1, ..., L_M); in any other mixed batch (uncertainty
        sampling) each task's loss first counts by its share of the rows, so W is a mean over rows."""
        if isinstance(batch_task, list) and not self.all_tasks:
            task_losses = {n: loss * (batch_task.count(n) / len(batch_task)) for n, loss in task_losses.items()}
        return self.weighting.combine(task_losses, progress)

    def record(self, losses: dict[str, float], rows: dict[str, int]) -> None:
        self.stats.add(losses, rows)

    # ------------------------------------------------------------------ once per optimizer step
    def finish_step(self, progress: Progress, loss_scale: float | None) -> None:
        """After the last micro-batch of a step, before gradient clipping and the optimizer step: reduce what
        the strategies read, write the per-task-gradient result, sync by hand where DDP did not, update
        the weighting.

        Args:
            progress: `step` is this step's index.
            loss_scale: the mixed-precision loss scale, or None without a loss scaler.
        """
        self._in_step = False
        needs_losses = self.weighting.uses_step_losses or self.per_task_gradients
        needs_reduce = world_size() > 1 and (needs_losses or self.feeds_scheduler)
        step_losses, self.last_step_rows = self.stats.pop(reduce=needs_reduce)
        weighting_params = self.weighting.parameters()
        if self.per_task_gradients:
            coefficients, param_grads = loss_coefficients(self.weighting, step_losses, progress, self.task_names)
            self.task_gradients.finish(coefficients, progress.step, check_finite=loss_scale is not None)
            for param, grad in zip(weighting_params, param_grads):  # already global: from reduced losses
                param.grad = None if grad is None else grad * (loss_scale or 1.0)
        else:
            if self.manual_sync:
                all_reduce_grads(self.model_parameters)
            all_reduce_grads(weighting_params)  # not inside the DDP module
        if needs_losses:
            self.weighting.update(step_losses, progress)

    def logged_values(self, progress: Progress, probabilities: dict[str, float] | None) -> dict[str, float]:
        """`weight_<task>` (unless the weighting is `static`) and `prob_<task>` (dynamic schedulers)."""
        out = {}
        if self.weighting.name != "static":
            out.update({f"weight_{n}": round(float(v), 6) for n, v in self.weighting.weights(progress).items()})
        if probabilities is not None:
            out.update({f"prob_{n}": round(float(v), 6) for n, v in probabilities.items()})
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"loss_weighting": self.weighting.state_dict(),
                "gradient_surgery": self.surgery.state_dict() if self.surgery is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; a checkpoint written before these strategies existed has none."""
        if not state:
            return
        self.weighting.load_state_dict(state["loss_weighting"])
        saved = state.get("gradient_surgery")
        if (saved is None) != (self.surgery is None):
            raise TaskConfigError(
                f"gradient_surgery state mismatch: the checkpoint was trained with "
                f"{saved['name'] if saved else NO_SURGERY!r}, this run uses "
                f"{self.surgery.name if self.surgery else NO_SURGERY!r}. Fix: resume with the checkpoint's gradient_surgery."
            )
        if self.surgery is not None:
            self.surgery.load_state_dict(saved)

