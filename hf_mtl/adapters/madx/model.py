"""The `madx` adapter method: language adapters under task adapters, and invertible adapters.

Source: Pfeiffer et al. 2020, "MAD-X: An Adapter-Based Framework for Multi-Task Cross-Lingual Transfer".

1. Train a language adapter per language with a `masked_lm` task on unlabeled text
   (`{"name": "mlm_pt", "kind": "masked_lm", "language": "pt", "train_file": "pt.txt"}`).
2. Train task adapters on top of the (now frozen) adapter of the training data's language (`en`).
3. Predict in another language: `model(..., language="pt")` or `hf-mtl predict ... --language pt`
   swaps the language adapter under the same task adapter (zero-shot cross-lingual transfer).

On generative backbones (Llama, GPT-2, T5, BART) a language adapter learns its language with the LM loss: a
`causal_lm` (or `seq2seq`) task with an empty `prompt_template` is plain language modelling on its target text
(`{"name": "lm_pt", "kind": "causal_lm", "language": "pt", "prompt_template": "", "target_column": "text"}`) and
trains its language's adapters, as a `masked_lm` task does on an encoder. Adapters sit after the feed-forward block
of every layer of every stack (an encoder-decoder's encoder and decoder); the invertible adapter runs on each
stack's embeddings and its inverse on the input of the LM head, for every row with the row's language (the
generative LM's own head serves every task). On an encoder-decoder, a language-modelling task's encoder input is
the empty prompt, so its loss teaches mostly the decoder's language adapters.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import TaskConfigError
from ...modeling.arch import config_value, get_generative_spec, resolve
from ...modeling.generative import ENCODER, backbone_layout
from ...store.weights import load_exact
from ...tasks import Task
from ..base import AdapterMethod, register_method
from ..bottleneck.config import NON_LINEARITIES, bottleneck_size
from ..bottleneck.layer import AdapterTensors, BottleneckAdapter, routed_adapter
from ..bottleneck.model import strip_prefix, to_backbone
from ..bottleneck.sites import Site, hook_sites, not_routed_error, stack_specs, total_layers
from ..routing import RoutedCall, Routing
from .config import MadXConfig
from .invertible import InvertibleAdapter, coupling_forward, coupling_inverse, routed_coupling_inverse


class LanguageAdapters(nn.Module):
    """One language's weights: a bottleneck adapter per layer (r = H // 2) and its invertible adapter."""

    def __init__(self, hidden_size: int, num_layers: int, rank: int, options: MadXConfig, embedding_size: int):
        super().__init__()
        self.layers = nn.ModuleList(BottleneckAdapter(hidden_size, rank, init=options.init) for _ in range(num_layers))
        self.invertible = (InvertibleAdapter(embedding_size, options.invertible_reduction_factor, options.init)
                           if options.invertible else None)


def is_language_task(task: Task) -> bool:
    """A task that trains its language's adapters instead of having a task adapter: `masked_lm` (encoders), or a
    generative task with an empty `prompt_template`, i.e. plain language modelling on its target text."""
    return task.kind == "masked_lm" or (task.is_generative and task.prompt_template == "")


@dataclass
class MadXRows:
    """Per-row owners for one forward: language adapters keyed (language, trainable), task adapters
    keyed by task name (None for rows of language tasks, which have no task adapter)."""

    languages: Routing
    tasks: Routing


@register_method
class MadXMethod(AdapterMethod):
    """MAD-X: in every layer, after the feed-forward block, a language adapter then a task adapter.

    Both are Pfeiffer bottlenecks, stacked as AdapterHub's `Stack(lang, task)`: with f the
    feed-forward branch, x its input and LN the layer's own norm,

        f <- f + A_lang(LN(f + x))        A(h) = f(h W_down + b_down) W_up + b_up,  r_lang = H // 2
        f <- f + A_task(LN(f + x))        r_task = H // 16
        (the layer then computes LN(f + x); pre-LN layers (Llama, GPT-2, T5) have no LN there: f + x instead)

    and the embeddings pass through the language's invertible adapter (see `invertible.py`), whose
    inverse runs in the `masked_lm` heads (a generative LM: its LM head) before the output projection.

    Training: a row of a language task (`masked_lm`, or a generative task with an empty prompt: plain LM loss)
    trains its language's adapters (`train_language_adapters`); rows of every other task use them detached,
    so no gradient of a task loss reaches a language adapter, and language adapters without a language task
    in the model are frozen
    (`requires_grad=False`). Rows route per task and per language: one batch may mix both.

    Args:
        backbone_config: the backbone's config.
        config: options, see `MadXConfig` (languages, language_reduction_factor=2,
            task_reduction_factor=16, invertible=True, invertible_reduction_factor=2,
            train_language_adapters=True, non_linearity=relu, init=identity).
    """

    name = "madx"
    groups_rows = True
    routes_per_row = True

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        options = MadXConfig.from_options(config, self.name)
        super().__init__(backbone_config, options.to_dict())
        self.options = options
        self.specs = stack_specs(backbone_config)  # one stack, or an encoder-decoder's encoder then decoder
        self.generative = backbone_layout(backbone_config) != ENCODER
        self.hidden_size = config_value(backbone_config, self.specs[0], "hidden_size")
        self.num_layers = total_layers(backbone_config, self.specs)
        self.embedding_size = int(getattr(backbone_config, "embedding_size", None) or self.hidden_size)
        self.language_rank = bottleneck_size(self.hidden_size, options.language_reduction_factor)
        self.task_rank = bottleneck_size(self.hidden_size, options.task_reduction_factor)
        self.act = NON_LINEARITIES[options.non_linearity]
        self.language_adapters = nn.ModuleDict({
            lang: LanguageAdapters(self.hidden_size, self.num_layers, self.language_rank, options, self.embedding_size)
            for lang in options.languages
        })
        self.task_adapters = nn.ModuleList()  # slot -> ModuleList over layers of BottleneckAdapter
        self._slots: dict[str, int] = {}
        self._tasks: dict[str, Task] = {}
        self._heads: tuple[nn.ModuleDict, ...] = ()  # the model's heads, kept out of this module's parameters
        self._handles: list[Any] = []
        self._backbone: tuple[nn.Module, ...] = ()  # kept out of this module's children
        self._refresh_trainable()

    @property
    def default_language(self) -> str:
        return self.options.languages[0]

    # ------------------------------------------------------------------ lifecycle
    def attach(self, model: nn.Module) -> None:
        """Hook the feed-forward sites and (with `invertible`) each stack's embedding output and, on a generative
        LM, the input of its LM head (the inverse)."""
        _, self._handles = hook_sites(model.backbone, self.specs, ("ffn",), True, self._site_forward, self._call_inputs)
        if self.options.invertible:
            # T5's stacks share one embedding module: hook it once
            embeddings = {id(m): m for m in (resolve(model.backbone, spec.embeddings) for spec in self.specs)}
            self._handles += [m.register_forward_hook(self._embed) for m in embeddings.values()]
            if self.generative:
                lm_head = resolve(model.backbone, get_generative_spec(self.backbone_config).lm_head)
                self._handles.append(lm_head.register_forward_pre_hook(self._invert_rows))
        self._heads = (model.heads,)
        self._backbone = (model.backbone,)
        to_backbone(self.language_adapters, self._backbone)

    def add_task(self, task: Task) -> None:
        """A task adapter for every task but language tasks (`is_language_task`), which train their language's adapters."""
        language = self.task_language(task)
        self._tasks[task.name] = task
        if is_language_task(task):
            if task.kind == "masked_lm":
                self._tie_inverse(task, language)
        elif task.name not in self._slots:
            layers = nn.ModuleList(BottleneckAdapter(self.hidden_size, self.task_rank, init=self.options.init)
                                   for _ in range(self.num_layers))
            self._slots[task.name] = len(self.task_adapters)
            self.task_adapters.append(to_backbone(layers, self._backbone))
        self._refresh_trainable()

    def task_language(self, task: Task) -> str:
        language = task.language or self.default_language
        if language not in self.language_adapters:
            raise TaskConfigError(
                f"task {task.name!r}: its language {language!r} has no MAD-X language adapter "
                f"(adapter_config languages: {list(self.options.languages)}). Fix: add {language!r} to "
                f"adapter_config['languages'], or set the task's `language` to one of them."
            )
        return language

    def _tie_inverse(self, task: Task, language: str) -> None:
        """Run the language's inverse invertible adapter in the task's MLM head, before its output projection."""
        if not self.options.invertible or not self._heads or task.name not in self._heads[0]:
            return
        if self.embedding_size != self.hidden_size:
            raise TaskConfigError(
                f"task {task.name!r}: invertible adapters need embedding_size == hidden_size for the MLM head's inverse "
                f"(here {self.embedding_size} vs {self.hidden_size}). Fix: set adapter_config invertible=false."
            )
        self._heads[0][task.name].set_output_transform(functools.partial(self._invert, language))

    def _refresh_trainable(self) -> None:
        """A language adapter trains only when a language task of its language is in the model."""
        for language, adapters in self.language_adapters.items():
            trainable = self.options.train_language_adapters and any(
                is_language_task(t) and self.task_language(t) == language for t in self._tasks.values())
            adapters.requires_grad_(trainable)

    # ------------------------------------------------------------------ routing
    @contextlib.contextmanager
    def route(self, routing: Routing) -> Iterator[None]:
        """Tell the sites which task adapter and which language adapter each row uses."""
        call = RoutedCall(routing, values={"rows": self._rows(routing)})
        with call.scope(self):
            yield

    def _call_inputs(self) -> dict | None:
        call = self.current_call()
        return call.inputs if call is not None else None

    def _rows(self, routing: Routing) -> MadXRows:
        device = routing.device
        names = routing.names_per_row()
        languages = list(routing.languages) if routing.languages is not None else [None] * len(names)
        lang_keys = [self._language_key(name, lang, row) for row, (name, lang) in enumerate(zip(names, languages))]
        task_keys: list[Hashable] = [None if is_language_task(self._task(name)) else name for name in names]
        return MadXRows(Routing.of(lang_keys, device), Routing.of(task_keys, device))

    def _task(self, name: str) -> Task:
        if name not in self._tasks:
            raise TaskConfigError(f"task {name!r} is not a task of this MAD-X model (known: {sorted(self._tasks)}). "
                                  f"Fix: add it with model.add_task(...).")
        return self._tasks[name]

    def _language_key(self, name: str, language: str | None, row: int) -> tuple[str, bool]:
        """(language, trainable) of one row: only rows of language tasks train their language's adapters."""
        task = self._task(name)
        own = self.task_language(task)
        language = language or own
        if language not in self.language_adapters:
            raise TaskConfigError(
                f"row {row} (task {name!r}) asks for language {language!r}, which has no MAD-X language adapter. "
                f"Fix: pass one of {list(self.options.languages)} as language=, or train an adapter for {language!r}."
            )
        if task.kind == "masked_lm" and self.options.invertible and language != own:
            raise TaskConfigError(
                f"row {row}: masked_lm task {name!r} is in language {own!r}, but language={language!r} was asked; its "
                f"MLM head inverts the {own!r} invertible adapter. Fix: drop language= for masked_lm tasks."
            )
        trainable = is_language_task(task) and self.options.train_language_adapters
        return language, trainable

    # ------------------------------------------------------------------ forward (called by hooks and heads)
    def _site_forward(self, site: Site, f: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Language adapter, then task adapter, after the feed-forward block of one layer."""
        active = self._require_active()
        langs = [self.language_adapters[lang].layers[site.layer].tensors(detach=not trainable)
                 for lang, trainable in active.languages.owners]
        f = f + routed_adapter(site.norm(f + x), langs, active.languages, self.act)
        if active.tasks.owners == [None]:
            return f  # only rows of language tasks: no task adapter
        tasks = [self.task_adapters[self._slots[t]][site.layer].tensors() if t is not None else None
                 for t in active.tasks.owners]
        template = next(t for t in tasks if t is not None)
        tasks = [t if t is not None else AdapterTensors.zeros_like(template) for t in tasks]
        return f + routed_adapter(site.norm(f + x), tasks, active.tasks, self.act)

    def _embed(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """The invertible adapter of each row's language on the embeddings (B, L, D)."""
        active = self._require_active()
        blocks = [self.language_adapters[lang].invertible.tensors(detach=not trainable)
                  for lang, trainable in active.languages.owners]
        split = self.embedding_size // 2
        return coupling_forward(output, blocks, active.languages, split, self.act)

    def _invert_rows(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Before a generative LM's head: the inverse of each row's invertible adapter on its states (B, T, H)."""
        active = self._require_active()
        blocks = [self.language_adapters[lang].invertible.tensors(detach=not trainable)
                  for lang, trainable in active.languages.owners]
        hidden = routed_coupling_inverse(args[0], blocks, active.languages, self.embedding_size // 2, self.act)
        return (hidden, *args[1:])

    def _invert(self, language: str, hidden: torch.Tensor) -> torch.Tensor:
        """The inverse of `language`'s invertible adapter (the MLM head calls it before its output projection)."""
        block = self.language_adapters[language].invertible.tensors()
        return coupling_inverse(hidden, block, self.embedding_size // 2, self.act)

    def _require_active(self) -> MadXRows:
        call = self.current_call()
        if call is None:
            raise not_routed_error(self.name)
        return call.values["rows"]

    # ------------------------------------------------------------------ parameters and state
    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """A task's adapter; for a language task, its language's adapters when it trains them."""
        if task in self._slots:
            return list(self.task_adapters[self._slots[task]].parameters())
        spec = self._tasks.get(task)
        if spec is not None and is_language_task(spec) and self.options.train_language_adapters:
            return self.language_parameters(self.task_language(spec))
        return []

    def formula_parameter_count(self, task: str) -> int:
        """Task: layers x (2 H r_task + r_task + H). Language task training its language:
        layers x (2 H r_lang + r_lang + H) + the invertible adapter's F and G (D/2 -> D/2 // 2 -> D/2 each).
        layers counts every stack's (an encoder-decoder's encoder and decoder layers)."""
        spec = self._tasks.get(task)
        if spec is not None and is_language_task(spec):
            if not self.options.train_language_adapters:
                return 0
            count = self.num_layers * BottleneckAdapter.parameter_count(self.hidden_size, self.language_rank)
            if self.options.invertible:
                count += InvertibleAdapter.parameter_count(self.embedding_size, self.options.invertible_reduction_factor)
            return count
        return self.num_layers * BottleneckAdapter.parameter_count(self.hidden_size, self.task_rank)

    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        """Keys `layers.<i>.<down|down_bias|up|up_bias>`; empty for language tasks (no task adapter)."""
        if task not in self._slots:
            return {}
        return {f"layers.{k}": v for k, v in self.task_adapters[self._slots[task]].state_dict().items()}

    def load_task_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        if task not in self._slots:
            if state:
                raise TaskConfigError(f"task {task!r} has no MAD-X task adapter (a language task?), but weights were given.")
            return
        load_exact(self.task_adapters[self._slots[task]].state_dict(), strip_prefix(state, "layers."),
                   f"MAD-X task adapter of task {task!r}")

    def adapter_languages(self) -> list[str]:
        return list(self.options.languages)

    def language_parameters(self, language: str) -> list[nn.Parameter]:
        return list(self._language(language).parameters())

    def language_state_dict(self, language: str) -> dict[str, torch.Tensor]:
        """Keys `layers.<i>.<down|...>` and `invertible.<F|G>.<down|...>`."""
        return dict(self._language(language).state_dict())

    def load_language_state_dict(self, language: str, state: dict[str, torch.Tensor]) -> None:
        load_exact(self._language(language).state_dict(), state, f"MAD-X language adapter {language!r}")

    def _language(self, language: str) -> LanguageAdapters:
        if language not in self.language_adapters:
            raise TaskConfigError(f"language {language!r} has no MAD-X language adapter. "
                                  f"Fix: use one of {list(self.options.languages)}.")
        return self.language_adapters[language]
