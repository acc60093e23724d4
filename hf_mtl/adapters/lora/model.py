"""`lora`: one PEFT LoRA adapter per task (and per language) inside the shared frozen backbone.

Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models". A frozen weight W₀ (out × in)
gets a low-rank update:

    h = W₀x + (α / r) · B A x,    A: r × in (Kaiming-uniform init),  B: out × r (zeros: starts as W₀)

Defaults are PEFT's: r = 8, lora_alpha = 8, lora_dropout = 0; `target_modules` defaults to the
attention's query and value projections of the architecture spec (the paper's W_q, W_v). Every other
`peft.LoraConfig` field passes through `adapter_config`, e.g. `use_dora` (Liu et al., 2024, DoRA:
W = m · (W₀ + BA) / ‖W₀ + BA‖_c, one magnitude per output unit) or `use_rslora` (Kalajdzievski, 2023:
scaling α / √r).

Mechanics:
- injection: `peft.inject_adapter_in_model` wraps each targeted `nn.Linear` in place (`query` becomes
  `query.base_layer` + `query.lora_A.<task>` ...), so `MultiTaskModel.backbone` stays the same model
  object. The adapter name is the task name (DESIGN.md, one key); a language adapter is named
  `language:<code>` (`:` cannot occur in a task name, so the two never collide).
- compute: the wrapped Linear layers are `fast.FastLoraLinear`, PEFT's own `lora.Linear` registered through
  PEFT's custom-module API, whose plain-LoRA forward runs one product with W₀ + s·BA and a hand-written
  backward (about 1.7% off a MiniLM train step on the CPU, 40% of LoRA's extra cost per layer); DoRA,
  dropout while training, `lora_bias` and autocast take PEFT's forward unchanged.
- routing: a batch's single task (with its language adapter under it, when `language_adapters` is on) is made
  active; a mixed-task batch of plain LoRA adapters runs each row through its own stack in one forward, in
  training as at inference (`layer.row_batch`: the stacks' factors gathered per row, two batched products;
  `routes_per_row` is then True). With DoRA, another variant, `lora_bias` or GPT-2's Conv1D layers, a mixed
  batch runs at inference only, through PEFT's own mixed-batch code (`layer.mixed_batch`), and the trainer splits
  it per task. The active adapters are state of PEFT's layers, so routed forwards of one model run one at a time
  (`layer.CallLock`): threads serving different tasks each get their own answers.
- saving: `<task>/adapter_model.safetensors` and `<task>/adapter_config.json` are PEFT's own format (a plain
  `LoraConfig`, with `task_type` CAUSAL_LM / SEQ_2_SEQ_LM on generative backbones), so
  `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "<store>/<task>")` (`AutoModel` for an
  encoder's tasks) loads a task alone, and servers of LoRA adapters (vLLM, LoRAX) read the folder as it is.
  hf_mtl's own keys (`adapter_method`, `hf_mtl_adapter_config`, `base_model_config`) go next to it, in
  `<task>/hf_mtl_adapter.json` (`hf_mtl.store.save`).
- architectures: the default `target_modules` are the query and value projections of every stack of the
  architecture spec, the decoder's cross-attention ones included (T5's `q`/`v` in `SelfAttention` and
  `EncDecAttention`, BART's `q_proj`/`v_proj` in `self_attn` and `encoder_attn`: what PEFT's own defaults match).
  GPT-2's fused `c_attn` is a `Conv1D` (weight (in, out)): it gets `fan_in_fan_out=True`, as in PEFT, and PEFT's
  own `lora.Linear` (FastLoraLinear is registered for `nn.Linear` only).
- language adapters (`language_adapters: true`): one LoRA adapter per language (the tasks' `language`
  fields plus `languages`), stacked under the task's adapter (PEFT sums the active adapters). They are
  frozen while task adapters train; a `masked_lm` task with a `language` trains that language's
  adapter instead of an adapter of its own (MAD-X's recipe, Pfeiffer et al., 2020). Saved under
  `languages/<lang>/` in PEFT's format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import check_target_module_exists
from peft.utils.other import get_pattern_key
from torch import nn
from transformers.pytorch_utils import Conv1D

from ...errors import StoreError, TaskConfigError
from ...modeling.arch import ArchSpec, get_generative_spec, get_spec, layers_of
from ...modeling.generative import DECODER_ONLY, ENCODER, ENCODER_DECODER, backbone_layout
from ...tasks import Task, validate_task_name
from ..base import AdapterMethod, register_method
from ..routing import Routing, host_index
from .config import build_lora_config, default_target_modules, parse_lora_options
from .fast import FastLoraLinear
from .layer import CallLock, activate, adapter_parameters, lora_layers, mixed_batch, row_batch, row_batch_dropout


PEFT_PREFIX = "base_model.model."  # key prefix of PEFT's saved LoRA weights for a PeftModel around the backbone
LANGUAGE_PREFIX = "language:"
PEFT_TASK_TYPES = {DECODER_ONLY: "CAUSAL_LM", ENCODER_DECODER: "SEQ_2_SEQ_LM"}  # backbone layout -> PEFT's task_type
RESERVED_NAMES = {"weight", "bias", "base_layer", "__base__"}  # would clash with PEFT's state-dict keys


def language_adapter_name(language: str) -> str:
    return f"{LANGUAGE_PREFIX}{language}"


@register_method
class LoraMethod(AdapterMethod):
    """One named PEFT LoRA adapter per task (and per language); see the module docstring.

    Args:
        backbone_config: the backbone's config (its model type selects the architecture spec).
        config: `adapter_config`: `peft.LoraConfig` fields plus `language_adapters`, `languages`,
            `language_lora` (LoraConfig overrides for language adapters).
    """

    name = "lora"
    exportable = True  # each LoRA update merges into its weight (`merge_for_export`)
    saves_peft_format = True
    routes_per_row = False  # not for every model: an instance with plain LoRA adapters says True (`_register_layers`)

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        super().__init__(backbone_config, config)
        self.stacks = _stacks_of(backbone_config)  # every stack of layers: the encoder, a decoder, or both
        self.options = parse_lora_options(self.config, self.stacks)
        self.peft_layers = nn.ModuleDict()  # the LoRA weights of each wrapped layer, owned here (not the base weights)
        self.task_adapters: list[str] = []  # tasks with an adapter of their own
        self.languages: list[str] = []
        self.language_tasks: dict[str, str] = {}  # masked_lm task -> the language adapter it trains
        self._layers: list[LoraLayer] = []
        self._backbone: nn.Module | None = None
        self._base_model_name: str | None = None
        self._call_lock = CallLock()  # PEFT's active adapters are layer state: one routed forward at a time

    def merge_for_export(self, model: nn.Module, task: str) -> None:
        """Merge the task's active LoRA stack (its language's adapter too) into the base weights, W = W0 + (α/r)·B·A,
        then replace every LoRA layer by its base layer."""
        routing = model.routing(task, 1, next(model.parameters()).device)
        with torch.no_grad(), self.route(routing):  # activates the task's stack (language + task)
            for module in model.backbone.modules():
                if isinstance(module, LoraLayer) and module.active_adapters:
                    module.merge(adapter_names=list(module.active_adapters))
        for name, module in [(n, m) for n, m in model.backbone.named_modules() if isinstance(m, LoraLayer)]:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.backbone.get_submodule(parent_name) if parent_name else model.backbone, attr, module.get_base_layer())

    # ------------------------------------------------------------------ lifecycle
    def attach(self, model: nn.Module) -> None:
        """Remember the backbone (not as a submodule: its weights are not this method's) and add the
        configured languages' adapters."""
        object.__setattr__(self, "_backbone", model.backbone)
        self._base_model_name = getattr(model, "base_model", None)
        for language in self.options.languages:
            self._add_language(language)

    def add_task(self, task: Task) -> None:
        """Inject the task's LoRA adapter (named after the task) into every targeted layer.

        With language adapters on, the task's language gets its adapter too; a `masked_lm` task with a
        language trains that language adapter and gets none of its own.
        """
        _check_adapter_name(task.name)
        language = task.language if self.options.language_adapters else None
        if language is not None:
            self._add_language(language)
        if task.kind == "masked_lm" and language is not None:
            self.language_tasks[task.name] = language
        elif task.name not in self.task_adapters:
            self._inject(task.name, build_lora_config(self.options.lora, f"task {task.name!r}"), f"task {task.name!r}")
            self.task_adapters.append(task.name)
        self._set_trainable()

    def _add_language(self, language: str) -> None:
        validate_task_name(language, what="language code")
        if language in self.languages:
            return
        owner = f"language {language!r}"
        config = build_lora_config({**self.options.lora, **self.options.language_lora}, owner)
        self._inject(language_adapter_name(language), config, owner)
        self.languages.append(language)

    def _inject(self, adapter: str, config: LoraConfig, owner: str) -> None:
        """`peft.inject_adapter_in_model`, keeping the backbone's own `requires_grad` flags (PEFT freezes
        everything that is not LoRA, which would silently undo `freeze_backbone=False`)."""
        backbone = self._backbone
        if backbone is None:
            raise TaskConfigError(f"{owner}: the lora method was not attached to a model. Fix: build it through MultiTaskModel.")
        flags = {id(p): p.requires_grad for p in backbone.parameters()}
        config._register_custom_module({nn.Linear: FastLoraLinear})  # PEFT's Linear, faster plain-LoRA step
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*peft_config.*")  # several adapters are the point
                inject_adapter_in_model(config, backbone, adapter_name=adapter)
        except (ValueError, TypeError) as err:
            first = layers_of(backbone, self.stacks[-1])[0]
            linears = [n for n, m in first.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and ".lora_" not in n]
            raise TaskConfigError(
                f"{owner}: PEFT could not add a LoRA adapter ({err}). Fix: correct that adapter_config option; "
                f"target_modules defaults to {default_target_modules(self.stacks)}, and a {self.stacks[-1].stack} "
                f"layer's Linear modules are {linears}."
            ) from err
        for p in backbone.parameters():
            if id(p) in flags:
                p.requires_grad_(flags[id(p)])
        self._register_layers()
        activate(self._layers, [])

    def _register_layers(self) -> None:
        """Own each LoRA layer's adapter containers (never its base layer) for parameter accounting."""
        found = lora_layers(self._backbone)
        for path, layer in found:
            key = path.replace(".", "-")
            if key not in self.peft_layers:
                holder = nn.Module()
                for attr in layer.adapter_layer_names:
                    holder.add_module(attr, getattr(layer, attr))
                self.peft_layers[key] = holder
        self._layers = [layer for _, layer in found]
        # an instance's answer (the class says False: a model whose layers or adapters cannot run per row exists):
        # a batch mixing every task and language runs in one forward, in training too, with plain LoRA adapters
        names = {name for layer in self._layers for name in layer.lora_A}
        self.routes_per_row = row_batch_dropout(self._layers, [(n,) for n in names], training=False) is not None

    def _set_trainable(self) -> None:
        """Task adapters train; a language adapter trains only when a masked_lm task of its language exists."""
        for task in self.task_adapters:
            for p in adapter_parameters(self._layers, task):
                p.requires_grad_(True)
        trained = set(self.language_tasks.values())
        for language in self.languages:
            for p in adapter_parameters(self._layers, language_adapter_name(language)):
                p.requires_grad_(language in trained)

    # ------------------------------------------------------------------ routing
    @contextlib.contextmanager
    def route(self, routing: Routing) -> Iterator[None]:
        """Activate the adapters of the batch's task (and language) for one backbone forward.

        Rows needing different adapter stacks (several tasks or languages) run through
        `layer.mixed_batch` at inference; in training that raises, because PEFT trains one adapter per
        batch. On exit no adapter is active: the backbone alone is the base model again. The active adapters
        live on PEFT's layers, so the whole forward holds the model's `CallLock` (other threads wait).
        """
        with self._call_lock:
            with self._route(routing):
                yield

    @contextlib.contextmanager
    def _route(self, routing: Routing) -> Iterator[None]:
        groups = self._stacks(routing)
        training = self.training and torch.is_grad_enabled()
        if len(groups) > 1:
            stacks = list(groups)
            rows = [groups[s] for s in stacks]
            dropout = row_batch_dropout(self._layers, stacks, training)
            if dropout is not None:
                with self._languages_frozen(routing), row_batch(self._layers, stacks, rows, dropout):
                    yield
                return
            if training:
                raise TaskConfigError(
                    f"adapter_method 'lora': this batch mixes tasks/languages {routing.batch_tasks}, and its adapters "
                    f"are not all plain LoRA with one dropout (DoRA or another variant, lora_bias, or different "
                    f"lora_dropout values), which PEFT's layers train one adapter stack per forward. Fix: use "
                    f"single-task batches (every sampling strategy gives them), or plain LoRA adapters."
                )
            with mixed_batch(self._layers, stacks, rows):
                yield
            return
        with self._languages_frozen(routing):
            activate(self._layers, next(iter(groups)))
            try:
                yield
            finally:
                activate(self._layers, [])

    def _stacks(self, routing: Routing) -> dict[tuple[str, ...], torch.Tensor]:
        """{adapter stack: (n,) row indices}, the stack being (language adapter?, task adapter?)."""
        names = routing.names_per_row()
        languages = routing.languages or [None] * len(names)
        rows: dict[tuple[str, ...], list[int]] = {}
        for i, (task, language) in enumerate(zip(names, languages)):
            rows.setdefault(self._stack(task, language), []).append(i)
        return {stack: host_index(idx, routing.device) for stack, idx in rows.items()}

    def _stack(self, task: str, language: str | None) -> tuple[str, ...]:
        stack: list[str] = []
        if self.options.language_adapters and language is not None:
            if language not in self.languages:
                raise TaskConfigError(
                    f"task {task!r}: language {language!r} has no LoRA language adapter (this model has {self.languages}). "
                    f"Fix: add it to adapter_config.languages and train it with a masked_lm task of that language, "
                    f"or pass language= one of {self.languages}."
                )
            stack.append(language_adapter_name(language))
        if task in self.task_adapters:
            stack.append(task)
        return tuple(stack)

    @contextlib.contextmanager
    def _languages_frozen(self, routing: Routing) -> Iterator[None]:
        """Language adapters that this batch does not train get no gradient (their flags are restored
        on exit, so optimizers built with them keep them)."""
        trains = {self.language_tasks[t] for t in routing.batch_tasks if t in self.language_tasks}
        frozen = []
        for language in set(self.language_tasks.values()) - trains:
            for p in adapter_parameters(self._layers, language_adapter_name(language)):
                if p.requires_grad:
                    p.requires_grad_(False)
                    frozen.append(p)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    # ------------------------------------------------------------------ parameters
    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return adapter_parameters(self._layers, task) if task in self.task_adapters else []

    def adapter_languages(self) -> list[str]:
        return list(self.languages)

    def language_parameters(self, language: str) -> list[nn.Parameter]:
        return adapter_parameters(self._layers, language_adapter_name(language)) if language in self.languages else []

    def formula_parameter_count(self, task: str) -> int:
        """Σ over the targeted Linear layers of r·(in + out) (Embedding layers: r·(vocabulary + dimension)),
        + out per layer for DoRA's magnitude vector
        (`use_dora`) and for LoRA's bias (`lora_bias`); r from `rank_pattern` where it matches.
        A masked_lm task that trains a language adapter has no adapter of its own: 0."""
        if task not in self.task_adapters:
            return 0
        config = self._backbone.peft_config[task]
        total = 0
        for path, in_features, out_features in _targeted_layers(self._backbone, config):
            key = get_pattern_key(list(config.rank_pattern), path) if config.rank_pattern else None
            r = config.rank_pattern.get(key, config.r) if key is not None else config.r
            total += r * (in_features + out_features) + out_features * (int(config.use_dora) + int(config.lora_bias))
        return total

    # ------------------------------------------------------------------ saving and loading (PEFT's format)
    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        return self._adapter_state(task) if task in self.task_adapters else {}

    def load_task_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        if task not in self.task_adapters:
            return super().load_task_state_dict(task, state)
        self._load_adapter(task, state, f"task {task!r}")

    def language_state_dict(self, language: str) -> dict[str, torch.Tensor]:
        return self._adapter_state(language_adapter_name(language)) if language in self.languages else {}

    def load_language_state_dict(self, language: str, state: dict[str, torch.Tensor]) -> None:
        if language not in self.languages:
            return super().load_language_state_dict(language, state)
        self._load_adapter(language_adapter_name(language), state, f"language adapter {language!r}")

    def task_config(self, task: str) -> dict[str, Any]:
        return self._peft_config_dict(task)

    def language_config(self, language: str) -> dict[str, Any]:
        return {**self._peft_config_dict(language_adapter_name(language)), "language": language}

    def _adapter_state(self, adapter: str) -> dict[str, torch.Tensor]:
        # save_embedding_layers=False: the shared embedding matrix is the base model's, never a task's
        state = get_peft_model_state_dict(self._backbone, adapter_name=adapter, save_embedding_layers=False)
        return {PEFT_PREFIX + key: value for key, value in state.items()}

    def _load_adapter(self, adapter: str, state: dict[str, torch.Tensor], owner: str) -> None:
        """Strict load of PEFT-format weights (keys and shapes must match exactly)."""
        saved = {key.removeprefix(PEFT_PREFIX): value for key, value in state.items()}
        expected = get_peft_model_state_dict(self._backbone, adapter_name=adapter, save_embedding_layers=False)
        missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
        wrong = [f"{k}: saved {tuple(saved[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in saved and saved[k].shape != v.shape]
        if missing or unexpected or wrong:
            raise StoreError(
                f"{owner}: the saved LoRA weights do not fit this model (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}, shapes {wrong[:3]}). They were saved for another base model or other LoRA "
                f"options (r, target_modules, use_dora). Fix: load them with the adapter_config they were trained with."
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*missing.*")  # the other adapters' keys are 'missing'
            set_peft_model_state_dict(self._backbone, saved, adapter_name=adapter)

    def _peft_config_dict(self, adapter: str) -> dict[str, Any]:
        """PEFT's `adapter_config.json` content (as `LoraConfig.save_pretrained` writes it) + hf_mtl's keys."""
        config = dataclasses.replace(self._backbone.peft_config[adapter], base_model_name_or_path=self._base_model_name)
        out = config.to_dict()
        for key, value in out.items():
            if isinstance(value, set):
                out[key] = sorted(value)
        out["peft_type"] = str(getattr(out["peft_type"], "value", out["peft_type"]))
        out.pop("runtime_config", None)
        # PEFT's model class for the folder: `PeftModelForCausalLM` / `...Seq2SeqLM` (their `generate`), and what
        # `AutoPeftModelForCausalLM` checks; None (the bare `PeftModel`) for an encoder's tasks, whose heads are ours
        out["task_type"] = PEFT_TASK_TYPES.get(backbone_layout(self.backbone_config))
        return {**out, "adapter_method": self.name, "hf_mtl_adapter_config": self.config}


def _stacks_of(backbone_config: Any) -> tuple[ArchSpec, ...]:
    """The architecture specs of the backbone's stacks: an encoder's, or a generative LM's (`GenerativeSpec.stacks`)."""
    if backbone_layout(backbone_config) == ENCODER:
        return (get_spec(backbone_config),)
    return get_generative_spec(backbone_config).stacks


def _check_adapter_name(name: str) -> None:
    if "." in name or name in RESERVED_NAMES:
        raise TaskConfigError(
            f"task {name!r}: adapter_method 'lora' names each PEFT adapter after its task, and PEFT adapter names "
            f"cannot contain '.' nor be one of {sorted(RESERVED_NAMES)}. Fix: rename the task, e.g. "
            f"{name.replace('.', '_') + ('_task' if name in RESERVED_NAMES else '')!r}."
        )


def _targeted_layers(backbone: nn.Module, config: LoraConfig) -> list[tuple[str, int, int]]:
    """(path, in, out) of every Linear or Conv1D (in/out features) or Embedding (vocabulary/dimension) layer that
    `config` targets, LoRA-wrapped or not."""
    found, wrapped = [], []
    for path, module in backbone.named_modules():
        if any(path.startswith(prefix) for prefix in wrapped):
            continue  # the inside of a LoRA layer (its base layer and adapters)
        if isinstance(module, LoraLayer):
            wrapped.append(path + ".")
            module = module.get_base_layer()
        if not check_target_module_exists(config, path):
            continue
        if isinstance(module, nn.Linear):
            found.append((path, module.in_features, module.out_features))
        elif isinstance(module, Conv1D):  # GPT-2's projections: weight (in, out)
            found.append((path, *module.weight.shape))
        elif isinstance(module, nn.Embedding):
            found.append((path, module.num_embeddings, module.embedding_dim))
    return found
