"""`MultiTaskTrainingArguments`: every knob of a multi-task run, one recipe file per run."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from .errors import TaskConfigError
from .tasks import Task, tasks_from_config


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the multi-task fields. Recipes in `training_args/` are these fields as JSON.

    Validation happens in `__post_init__`, so a bad recipe fails before any data or model is loaded. Processes
    launched together on a host without GPUs (`accelerate launch --multi_gpu --num_processes N`, `WORLD_SIZE` > 1)
    are set up as the CPU processes of one run (`use_cpu`, gloo), and pinned memory is off on the CPU.
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
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Let transformers run custom Python code that the backbone's config names (auto_map). Off: "
                          "such a model is refused with an error naming this option. Turn it on only for a model "
                          "whose code you have read."},
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
        if not self.use_cpu and _cpu_processes_of_one_run():
            # accelerate joins processes into one gloo group only when told they are CPU processes; otherwise each
            # one trains alone (world_size 1), and several models overwrite one output_dir
            self.use_cpu = True
        super().__post_init__()
        if self.device.type == "cpu":
            # pinned memory only speeds copies to an accelerator; without one torch warns on every dataloader
            self.dataloader_pin_memory = False
        self._validate_multitask()

    def _validate_multitask(self) -> None:
        from .adapters import ADAPTER_METHODS
        from .optim.plan import check_optimization_fields
        from .optim.schedulers import SAMPLING_STRATEGIES
        from .optim.surgery import GRADIENT_SURGERIES
        from .optim.weighting import LOSS_WEIGHTINGS

        # One normalization for every name ("Round-Robin" -> "round_robin"); the rest of the run sees the registry's key.
        self.sampling_strategy = SAMPLING_STRATEGIES.resolve(self.sampling_strategy)
        self.loss_weighting = LOSS_WEIGHTINGS.resolve(self.loss_weighting)
        self.gradient_surgery = GRADIENT_SURGERIES.resolve(self.gradient_surgery)
        check_optimization_fields(self.loss_weighting, self.gradient_surgery, self.sampling_strategy)
        self.adapter_method = ADAPTER_METHODS.resolve(self.adapter_method)
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


def recipe_fields_help() -> list[tuple[str, str]]:
    """hf_mtl's own recipe fields: those `MultiTaskTrainingArguments` declares on top of `TrainingArguments`.

    Every field of `transformers.TrainingArguments` (learning_rate, num_train_epochs, per_device_train_batch_size,
    eval_strategy, seed, ...) is a recipe field too; `RECIPE_FIELDS_NOTE` says so for a help text.

    Returns:
        `(name, help)` pairs in declaration order; the help ends with the field's default.
    """
    own = MultiTaskTrainingArguments.__annotations__  # this class's own fields, in declaration order
    fields = {f.name: f for f in dataclasses.fields(MultiTaskTrainingArguments)}
    return [(name, f"{fields[name].metadata.get('help', '')} (default: {_default_text(fields[name])})")
            for name in own if name in fields and fields[name].init]


RECIPE_FIELDS_NOTE = ("Every field of transformers.TrainingArguments (learning_rate, num_train_epochs, "
                      "per_device_train_batch_size, eval_strategy, seed, ...) is a recipe field too: see its documentation, "
                      "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments. "
                      "Each entry of `tasks` takes the fields of hf_mtl.Task (help(hf_mtl.Task)).")


def _default_text(item: dataclasses.Field) -> str:
    value = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
    return json.dumps(value)


def _cpu_processes_of_one_run() -> bool:
    """A launcher started several processes (`WORLD_SIZE` > 1, as `accelerate launch --multi_gpu` and torchrun set)
    on a host with no accelerator that has a distributed backend: they can train one model only as CPU processes."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False
    from accelerate.utils import get_distributed_backend, get_torch_accelerator_backend

    device_type, _ = get_torch_accelerator_backend()
    return get_distributed_backend(device_type) is None
