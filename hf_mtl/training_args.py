"""`MultiTaskTrainingArguments`: every knob of a multi-task run, one recipe file per run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from .errors import TaskConfigError
from .tasks import Task, tasks_from_config


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the multi-task fields. Recipes in `training_args/` are these fields as JSON.

    Validation happens in `__post_init__`, so a bad recipe fails before any data or model is loaded.
    """

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Backbone: a Hub id or a local folder (e.g. sentence-transformers/all-MiniLM-L6-v2)."}
    )
    model_revision: str | None = field(default=None, metadata={"help": "Revision of the backbone on the Hub."})
    tasks: list[dict] | None = field(
        default=None,
        metadata={"help": "The tasks: a list of objects with the fields of hf_mtl.Task (name, kind, data source, columns, ...)."},
    )
    adapter_method: str = field(
        default="none",
        metadata={"help": "Adapter method on the backbone: 'none' (heads only, or full fine-tuning with freeze_backbone=false) "
                          "or a method of hf_mtl.adapters (lora, prefix_tuning, bottleneck, madx, pals, hyperformer, ca_mtl)."},
    )
    adapter_config: dict | None = field(default=None, metadata={"help": "Options of the adapter method (a JSON object)."})
    freeze_backbone: bool = field(
        default=True, metadata={"help": "Freeze the backbone's own weights (adapters and heads still train)."}
    )
    backbone_dropout: float | None = field(
        default=None, metadata={"help": "Override every dropout probability of the backbone (default: the model's own)."}
    )
    fast_dropout: bool = field(
        default=True,
        metadata={"help": "On the CPU, draw the backbone's dropout masks from 16-bit random numbers (about 4x "
                          "cheaper than torch's; same distribution, p rounded to a multiple of 2^-16). GPUs are unaffected."},
    )
    cpu_keep_freed_memory: bool = field(
        default=True,
        metadata={"help": "Training on the CPU under Linux (glibc): keep freed tensor memory in the process for the next "
                          "step instead of returning it to the OS (mallopt; see hf_mtl.ops.cpu_memory). Saves the "
                          "page faults of re-allocating the same activations every step; the process keeps its peak heap."},
    )
    head_dropout: float | None = field(default=None, metadata={"help": "Dropout of the heads (default: the backbone's)."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated to this many tokens."})
    pad_to_multiple_of: int | None = field(default=None, metadata={"help": "Pad batches to a multiple of this length."})
    sampling_strategy: str = field(
        default="proportional",
        metadata={"help": "Which task each step trains: proportional, temperature, annealed, uniform, round_robin, "
                          "sequential (option `stages` for a curriculum of task sets), all_tasks (a batch of every "
                          "task in every step), bandit (Boltzmann bandit rewarded by held-out loss decrease), "
                          "uncertainty (CA-MTL: the most uncertain rows of a pool of every task)."},
    )
    sampling_temperature: float = field(default=2.0, metadata={"help": "T of the temperature strategy: p_t ∝ |D_t|^(1/T)."})
    sampling_options: dict | None = field(
        default=None, metadata={"help": "Extra options of the sampling strategy (e.g. {'task_order': [...]} for sequential, "
                                         "{'tau': 0.1, 'reward_every': 10} for bandit)."}
    )
    loss_weighting: str = field(
        default="static",
        metadata={"help": "How the task losses become one loss: static (each task's loss_weight), equal (1/M), size "
                          "(∝ 1/|D_t|), uncertainty (learned log σ_t, Kendall et al. 2018), dwa (dynamic weight "
                          "average, Liu et al. 2019), tchebycheff (max_t λ_t L_t, Mao et al. 2020; needs all_tasks), "
                          "curriculum (sigmoid or linear ramps per task). See hf_mtl/optim/weighting/."},
    )
    loss_weighting_options: dict | None = field(
        default=None, metadata={"help": "Options of the loss weighting (e.g. {'temperature': 2.0, 'window_steps': 50} for dwa)."}
    )
    gradient_surgery: str = field(
        default="none",
        metadata={"help": "Gradient surgery on the parameters shared between tasks: none, pcgrad (Yu et al. 2020) or "
                          "gradvac (Wang et al. 2021). Needs sampling_strategy=all_tasks and trainable shared weights."},
    )
    gradient_surgery_options: dict | None = field(
        default=None, metadata={"help": "Options of the gradient surgery (e.g. {'beta': 0.01, 'granularity': 'parameter'} for gradvac)."}
    )
    steps_per_epoch: int | None = field(
        default=None, metadata={"help": "Optimizer micro-steps per epoch (default: enough to see each task's data once)."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds a run."}
    )

    def __post_init__(self) -> None:
        for name in ("tasks", "adapter_config", "sampling_options", "loss_weighting_options", "gradient_surgery_options"):
            value = getattr(self, name)
            if isinstance(value, str):  # from the command line: a JSON string
                try:
                    setattr(self, name, json.loads(value))
                except json.JSONDecodeError as err:
                    raise TaskConfigError(f"`{name}` is not valid JSON: {err}.") from err
        self.remove_unused_columns = False  # batches carry a `task` field the Trainer must keep
        if not self.label_names:
            self.label_names = ["labels"]
        super().__post_init__()
        self._validate_multitask()

    def _validate_multitask(self) -> None:
        from .adapters import ADAPTER_METHODS, load_builtin_methods
        from .data.samplers import SAMPLING_STRATEGIES
        from .optim.plan import check_optimization_fields

        load_builtin_methods()
        if self.sampling_strategy not in SAMPLING_STRATEGIES:
            raise TaskConfigError(
                f"Unknown sampling_strategy {self.sampling_strategy!r}. Fix: use one of {sorted(SAMPLING_STRATEGIES)}."
            )
        check_optimization_fields(self.loss_weighting, self.gradient_surgery, self.sampling_strategy)
        if self.adapter_method not in ADAPTER_METHODS:
            raise TaskConfigError(f"Unknown adapter_method {self.adapter_method!r}. Fix: use one of {sorted(ADAPTER_METHODS)}.")
        if self.sampling_temperature <= 0:
            raise TaskConfigError(f"sampling_temperature must be > 0, got {self.sampling_temperature}.")
        if self.max_seq_length < 8:
            raise TaskConfigError(f"max_seq_length must be at least 8, got {self.max_seq_length}.")
        if self.tasks is not None:
            self.task_objects()  # validates names, kinds, duplicates

    def task_objects(self) -> list[Task]:
        """The recipe's tasks as validated `Task` objects (new objects on every call)."""
        if not self.tasks:
            raise TaskConfigError("The recipe lists no `tasks`. Fix: add at least one task object.")
        return tasks_from_config([dict(t) for t in self.tasks])

    def sampler_options(self) -> dict[str, Any]:
        options = {"temperature": self.sampling_temperature, "num_epochs": max(1, int(round(self.num_train_epochs)))}
        options.update(self.sampling_options or {})
        return options
