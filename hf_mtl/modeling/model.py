"""`MultiTaskModel`: one backbone, an adapter method, and one head per task.

Read top to bottom: construction (backbone, adapter method, heads), routing a batch to its tasks,
the forward pass, parameter accounting. Saving and loading live in `hf_mtl.store`; inference helpers in
`hf_mtl.inference`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..adapters import AdapterMethod, Routing, build_adapter_method
from ..adapters.base import naming_method
from ..adapters.routing import call_scope, host_index, inverse_permutation, scoped_value
from ..errors import TaskConfigError, UnknownTaskError
from ..ops.attention import route_attention
from ..ops.fast_dropout import use_fast_dropout
from ..tasks import Task, check_unique_names, dependency_order
from .adversarial import TaskDiscriminator
from .arch import ARCH_SPECS, layers_of, resolve
from .backbone import backbone_forward_args, build_backbone, load_backbone_config, load_tokenizer, set_dropout
from .generative import ENCODER, ENCODER_DECODER, backbone_layout, check_backbone_kind
from .heads import IGNORE_INDEX, build_head, task_loss
from .hierarchy import prediction_features, prediction_width, with_lower_tasks


_BACKBONE_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")


@dataclass
class MultiTaskOutput(ModelOutput):
    """Output of `MultiTaskModel.forward`.

    Attributes:
        loss: mean of the per-task losses weighted by each task's share of the rows (unweighted by
            `loss_weight`: the trainer applies the loss weighting).
        logits: the task's logits when the batch holds one task: (B, C) or (B, L, C).
        task_losses: {task: mean loss of its rows}.
        task_logits: {task: logits of its rows}, for mixed-task batches.
        task_rows: {task: (n_t,) row indices of its rows in the batch}.
        adversarial_loss: in training, the task discriminator's loss L_adv when some task has
            `adversarial_weight > 0` (see `adversarial.py`); the trainer adds it to the weighted task losses.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    task_losses: dict[str, torch.Tensor] | None = None
    task_logits: dict[str, torch.Tensor] | None = None
    task_rows: dict[str, torch.Tensor] | None = None
    adversarial_loss: torch.Tensor | None = None


class MultiTaskModel(nn.Module):
    """A frozen (or trained) backbone shared by many tasks.

    The backbone is an encoder (`AutoModel`, no pooler) for encoder tasks, or a generative LM with its LM head
    (`AutoModelForCausalLM` / `AutoModelForSeq2SeqLM`) for `causal_lm` / `seq2seq` tasks, which train only their
    adapters and read the backbone's LM head; `generate` runs rows of several generative tasks in one call.

    Args:
        backbone: an encoder built by `AutoModel` (no pooler), or a generative LM with its LM head.
        tasks: the tasks; a task without a known label list gets its head when `add_task` is called
            again with labels (the trainer does this after reading the training data).
        adapter_method: name of an adapter method (`hf_mtl.adapters.ADAPTER_METHODS`), `"none"` for
            head-only (frozen backbone) or full fine-tuning.
        adapter_config: the method's options.
        freeze_backbone: freeze every backbone weight (the adapter method's own weights stay trainable).
        base_model: the backbone's Hub id or path, saved so a store can rebuild the model.
        base_model_revision: the backbone's revision, saved likewise.
        head_dropout: dropout of the heads (default: the backbone's hidden dropout).
        tokenizer: the backbone's tokenizer (kept for `predict`, not a module).
        fast_dropout: on the CPU in training, draw the dropout masks of the backbone (hidden states and,
            for families with an architecture spec, attention probabilities) and of the heads the cheap way of
            `hf_mtl.ops.fast_dropout` (same distribution, p rounded to a multiple of 2⁻¹⁶);
            False keeps torch's. Eval and GPUs are unaffected either way.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tasks: Sequence[Task],
        *,
        adapter_method: str = "none",
        adapter_config: dict[str, Any] | None = None,
        freeze_backbone: bool = True,
        base_model: str | None = None,
        base_model_revision: str | None = None,
        head_dropout: float | None = None,
        tokenizer: Any = None,
        fast_dropout: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.config: PretrainedConfig = backbone.config
        self.layout = backbone_layout(self.config)  # encoder, decoder-only or encoder-decoder
        self.base_model = base_model
        self.base_model_revision = base_model_revision
        self.freeze_backbone = freeze_backbone
        self.head_dropout = head_dropout if head_dropout is not None else _hidden_dropout(self.config)
        self.tokenizer = tokenizer
        self.tasks: dict[str, Task] = {}
        self.heads = nn.ModuleDict()
        self._default_task: str | None = None  # set_task's; task_scope's wins in its thread
        self.task_discriminator: TaskDiscriminator | None = None  # built once two tasks have adversarial_weight > 0
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.fast_dropout = fast_dropout
        if fast_dropout:  # before the adapter method hooks any dropout module
            _use_fast_dropout(self.backbone)
        self.adapter: AdapterMethod = build_adapter_method(adapter_method, self.config, adapter_config)
        with naming_method(self.adapter.name):
            self.adapter.attach(self)
        self._forward_args = backbone_forward_args(self.backbone)
        check_unique_names(list(tasks))
        for task in dependency_order(list(tasks)):  # lower tasks first: their sizes shape the heads that read them
            self.add_task(task)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        tasks: Sequence[Task],
        *,
        revision: str | None = None,
        backbone_dropout: float | None = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> MultiTaskModel:
        """Load a pretrained backbone (a Hub id or a folder) and its tokenizer, then add the tasks.

        Weights are read from safetensors only; `trust_remote_code=True` lets transformers run custom code
        named by the model's config (off by default: such a model is refused with an error naming it).
        """
        hub_kwargs: dict[str, Any] = {"revision": revision} if revision else {}
        hub_kwargs["trust_remote_code"] = trust_remote_code
        config = load_backbone_config(name_or_path, backbone_dropout, **hub_kwargs)
        backbone = build_backbone(config, name_or_path, **hub_kwargs)
        tokenizer = kwargs.pop("tokenizer", None) or load_tokenizer(name_or_path, **hub_kwargs)
        return cls(backbone, tasks, base_model=name_or_path, base_model_revision=revision, tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_config(
        cls, config: PretrainedConfig, tasks: Sequence[Task], *, backbone_dropout: float | None = None, **kwargs: Any
    ) -> MultiTaskModel:
        """A randomly initialised backbone from a config (tests, experiments)."""
        return cls(build_backbone(set_dropout(config, backbone_dropout)), tasks, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_repo: str, tasks: Sequence[str] | None = None, **kwargs: Any) -> MultiTaskModel:
        """Load a saved store (an output folder, a local adapter store or a Hub repo id); see `hf_mtl.store.load`."""
        from ..store.load import load_model

        return load_model(cls, path_or_repo, tasks=tasks, **kwargs)

    def save_pretrained(self, save_directory: str, tasks: Sequence[str] | None = None, **kwargs: Any) -> None:
        """Write the store layout (DESIGN.md) for all tasks or a subset; see `hf_mtl.store.save`."""
        from ..store.save import save_model

        save_model(self, save_directory, tasks=tasks, **kwargs)

    def push_to_hub(self, repo_id: str, tasks: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Push all tasks or a subset to a Hub repo, keeping the repo's other tasks: the model is saved to a
        temporary store, which `hf_mtl.hub.push` sends.

        Args:
            repo_id: `user/name`.
            tasks: the tasks to push (default: every task with a head).
            kwargs: `private`, `revision`, `create_pr`, `token`, `commit_message`.

        Returns:
            A `hf_mtl.hub.PushResult`.
        """
        from ..hub import push

        with tempfile.TemporaryDirectory(prefix="hf_mtl-push-") as tmp:
            self.save_pretrained(tmp, tasks=tasks)
            return push(tmp, repo_id, tasks=tasks, **kwargs)

    def add_task(self, task: Task) -> None:
        """Register a task: its head (once its labels, and those of the tasks it reads, are known) and its
        adapter parameters. Tasks that read other tasks (`input_from_tasks`) must come after them."""
        known = self.tasks.get(task.name)
        if known is not None and task.name in self.heads:
            _check_same_head(known, task)
            return
        check_backbone_kind(self.config, task.kind, task.name)  # e.g. a classification head on a decoder-only LM
        self.tasks[task.name] = task
        if task.is_generative:  # the backbone's LM head serves it: only the adapter is the task's own
            self.heads[task.name] = build_head(task, 0, 0.0)
            self.adapter.add_task(task)
            return
        self._sync_discriminator()
        if task.kind != "masked_lm" and task.kind != "regression" and task.labels is None:
            return  # labels come from the training data; the trainer calls add_task again
        if task.head_layer is not None and task.head_layer > self.config.num_hidden_layers:
            raise TaskConfigError(
                f"task {task.name!r}: head_layer={task.head_layer} but the backbone has "
                f"{self.config.num_hidden_layers} layers. Fix: use a layer between 1 and {self.config.num_hidden_layers}."
            )
        extra_width = self._lower_tasks_width(task)
        if extra_width is None:
            return  # a task it reads has no head yet; the trainer adds tasks again in dependency order
        head = build_head(task, self.config.hidden_size + extra_width, self.head_dropout, self.config.vocab_size)
        if task.kind == "masked_lm":
            head.tie(self.backbone.get_input_embeddings())
        if self.fast_dropout:
            use_fast_dropout(head)
        self.heads[task.name] = head.to(_device_of(self.backbone))
        self.adapter.add_task(task)

    def _lower_tasks_width(self, task: Task) -> int | None:
        """Σ C_u over the tasks `task` reads (0 for none), or None while one of them has no head yet."""
        width = 0
        for name in task.input_from_tasks or []:
            lower = self.tasks.get(name)
            if lower is None:
                raise TaskConfigError(
                    f"task {task.name!r}: `input_from_tasks` names {name!r}, which this model does not have. "
                    f"Fix: add (or load) task {name!r} before {task.name!r}."
                )
            if name not in self.heads:
                return None
            width += prediction_width(lower)
        return width

    def _sync_discriminator(self) -> None:
        """(Re)build the task discriminator over the tasks with `adversarial_weight > 0` (at least two)."""
        names = [n for n, t in self.tasks.items() if t.adversarial_weight > 0]
        current = self.task_discriminator.task_names if self.task_discriminator is not None else []
        if len(names) < 2 or names == current:
            return
        weights = [self.tasks[n].adversarial_weight for n in names]
        self.task_discriminator = TaskDiscriminator(self.config.hidden_size, names, weights).to(_device_of(self.backbone))

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    @property
    def is_generative(self) -> bool:
        """The backbone is a generative LM (decoder-only or encoder-decoder) with its LM head."""
        return self.layout != ENCODER

    @property
    def is_encoder_decoder(self) -> bool:
        return self.layout == ENCODER_DECODER

    def set_task(self, task: str) -> None:
        """Make `task` the default of `forward`/`predict` calls that name none. O(1): no weights move.

        The default is the model's, seen by every thread; threads serving different tasks pass `task=` per
        call, or each set their own default with `task_scope`.
        """
        self._check_tasks([task])
        self._default_task = task

    @contextlib.contextmanager
    def task_scope(self, task: str) -> Iterator[None]:
        """Make `task` the default of this thread's calls that name none, inside the with-block only (other
        threads, and this one after the block, keep theirs)."""
        self._check_tasks([task])
        with call_scope(self, task):
            yield

    @property
    def active_task(self) -> str | None:
        """The task of calls that name none: this thread's `task_scope`, else the `set_task` default."""
        return scoped_value(self) or self._default_task

    # ------------------------------------------------------------------ routing
    def routing(self, task: str | Sequence[str] | None, batch_size: int, device: torch.device) -> Routing:
        """Turn the `task` argument (one name, or one per row) into the batch's routing (per call: nothing of it
        is kept on the model)."""
        names = self.tasks_per_row(task, batch_size)
        return Routing.of(names, device, languages=[self.tasks[n].language for n in names])

    def tasks_per_row(self, task: str | Sequence[str] | None, rows: int, caller: str = "forward()") -> list[str]:
        """Each row's task from a call's `task` argument: one name for every row, one name per row, or None for the
        default (`active_task`, or the model's only task); every name checked.

        Raises:
            UnknownTaskError: no task given and no default, or a task the model does not have.
            TaskConfigError: a list of names whose length is not the row count.
        """
        if task is None:
            task = self.active_task or (self.task_names[0] if len(self.tasks) == 1 else None)
            if task is None:
                raise UnknownTaskError(
                    f"{caller} needs task=... (one name or one per row); known tasks: {self.task_names}. "
                    f"Fix: pass task=, or call set_task()."
                )
        names = [task] * rows if isinstance(task, str) else list(task)
        if len(names) != rows:
            raise TaskConfigError(f"`task` has {len(names)} entries for {rows} rows. Fix: one task per row.")
        self._check_tasks(dict.fromkeys(names))
        return names

    def _check_tasks(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.heads:
                state = "has no head yet (its labels are unknown)" if name in self.tasks else "is not a task of this model"
                raise UnknownTaskError(f"Task {name!r} {state}. Known tasks: {sorted(self.heads)}.")

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task: str | Sequence[str] | None = None,
        language: str | Sequence[str] | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> MultiTaskOutput:
        """Run the backbone once for the whole batch, then each task's head on its rows.

        Args:
            input_ids, attention_mask, token_type_ids: (B, L) as the tokenizer gives them.
            labels: (B,) class ids or float targets, or (B, L) tag ids with -100 on unscored positions.
                In a mixed-task batch, sequence-level labels sit in column 0 of a (B, L) tensor.
            task: one task name, or one per row (a mixed-task batch).
            language: overrides the tasks' languages for language adapters (zero-shot transfer).
            decoder_input_ids, decoder_attention_mask: encoder-decoder LMs: the decoder's inputs (default: the
                labels shifted right, as the backbone builds them).

        Generative tasks: `labels` are (B, T) target token ids with -100 where nothing is scored (the prompt, the
        padding); for a decoder-only LM they align with `input_ids` (the model shifts them), for an encoder-decoder
        they are the decoder's targets. `logits` are the LM head's (B, T, V); a task's loss is the mean cross-entropy
        over its rows' target tokens.
        """
        reference = input_ids if input_ids is not None else inputs_embeds
        batch_size = reference.shape[0]
        routing = self.routing(task, batch_size, reference.device)
        if language is not None:
            routing.languages = [language] * batch_size if isinstance(language, str) else list(language)
        if self.is_generative:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                      "inputs_embeds": inputs_embeds, "decoder_input_ids": decoder_input_ids,
                      "decoder_attention_mask": decoder_attention_mask}
            return self._generative_forward(routing, inputs, labels)
        hidden_by_layer = self._encode(routing, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        if routing.single_task is not None:
            name = routing.single_task
            logits = self._head(name, hidden_by_layer, attention_mask)
            losses = {name: task_loss(self.tasks[name], logits, labels)} if labels is not None else None
            output = MultiTaskOutput(loss=losses[name] if losses else None, logits=logits, task_losses=losses)
        else:
            output = self._mixed_forward(routing, hidden_by_layer, attention_mask, labels)
        if self.task_discriminator is not None and self.training:
            output.adversarial_loss = self.task_discriminator.loss(hidden_by_layer[None], attention_mask,
                                                                   routing.names_per_row())
        return output

    def _generative_forward(self, routing: Routing, inputs: dict[str, torch.Tensor | None],
                            labels: torch.Tensor | None) -> MultiTaskOutput:
        """The LM's logits over the whole batch (one forward, rows routed to their tasks' adapters) and each task's
        mean token cross-entropy over its rows' scored targets."""
        kwargs = {k: v for k, v in inputs.items() if v is not None}
        if self.is_encoder_decoder and "decoder_input_ids" not in kwargs:
            if labels is None:
                raise TaskConfigError("An encoder-decoder forward needs `labels` or `decoder_input_ids` (the decoder's "
                                      "inputs). Fix: pass one of them, or call generate() for new text.")
            kwargs["decoder_input_ids"] = self.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
        with self.adapter.route(routing):
            logits = self.backbone(**kwargs, use_cache=False, return_dict=True).logits  # (B, T, V)
        single = routing.single_task
        if labels is None:
            if single is not None:
                return MultiTaskOutput(logits=logits)
            rows = {name: routing.rows_of(name) for name in routing.batch_tasks}
            return MultiTaskOutput(task_logits={n: logits[r] for n, r in rows.items()}, task_rows=rows)
        # decoder-only: position t predicts token t+1, so the labels shift left (the last position scores nothing);
        # shifting the labels, not slicing the (B, T, V) logits, saves a copy of them and of their gradient
        targets = labels if self.is_encoder_decoder else F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        token_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1).long(),
                                     ignore_index=IGNORE_INDEX, reduction="none").view(targets.shape)
        counts = (targets != IGNORE_INDEX).sum(dim=1)  # (B,) scored tokens per row
        if single is not None:
            loss = token_loss.sum() / counts.sum().clamp(min=1)
            return MultiTaskOutput(loss=loss, logits=logits, task_losses={single: loss})
        task_losses, task_logits, task_rows, total = {}, {}, {}, None
        for name in routing.batch_tasks:
            rows = routing.rows_of(name)
            task_losses[name] = token_loss[rows].sum() / counts[rows].sum().clamp(min=1)
            task_logits[name], task_rows[name] = logits[rows], rows
            share = task_losses[name] * (rows.numel() / routing.size)
            total = share if total is None else total + share
        return MultiTaskOutput(loss=total, task_losses=task_losses, task_logits=task_logits, task_rows=task_rows)

    def _encode(self, routing: Routing, *inputs: torch.Tensor | None) -> dict[int | None, torch.Tensor]:
        """Backbone hidden states: {None: last layer} plus {k: layer k} for heads that read layer k."""
        layers = {self.tasks[t].head_layer for t in with_lower_tasks(self.tasks, routing.batch_tasks)} - {None}
        kwargs = {k: v for k, v in zip(_BACKBONE_INPUTS, inputs) if v is not None and k in self._forward_args}
        order = self._task_order(routing)
        if order is not None:  # the backbone sees the rows grouped by task; the heads see them in batch order
            rows, inverse = host_index(order, routing.device), host_index(inverse_permutation(order), routing.device)
            kwargs = {k: v.index_select(0, rows) if v.shape[0] == len(order) else v for k, v in kwargs.items()}
            routing = routing.reordered(order)
        with self.adapter.route(routing):
            out = self.backbone(**kwargs, output_hidden_states=bool(layers), return_dict=True)
        hidden = {None: out.last_hidden_state}  # (B, L, H)
        for layer in layers:
            hidden[layer] = out.hidden_states[layer]
        if order is not None:
            hidden = {k: v.index_select(0, inverse) for k, v in hidden.items()}
        return hidden

    def _task_order(self, routing: Routing) -> list[int] | None:
        """For a method with `groups_rows`, on the CPU: the row order that groups a mixed batch's rows by task
        (stable; in order of the tasks' first appearance); None when there is nothing to reorder.

        Such methods run each task's range of rows through plain matmuls instead of gathering per-row weights
        (measured on the 2-core CPU, one Hyperformer adapter's forward + backward at B=32, L=128, H=384, 4 tasks
        interleaved: single task 10.8 ms, per-row gathers 16.2, ranges 13.1; a whole MiniLM step, 10 paired
        rounds: a 4-task batch 1.034x a one-task batch before, 1.010x with the ranges); moving the rows costs
        one copy of the inputs and of the hidden states the heads read (and its backward). Training batches
        from the multi-task sampler come grouped already (all tasks' slices in task order).
        """
        if (not self.adapter.groups_rows or routing.single_task is not None or routing.device.type != "cpu"
                or routing.segments is not None):  # segments: the rows are grouped already
            return None
        keys = routing.owner_of_row  # owners in order of first appearance
        return sorted(range(len(keys)), key=keys.__getitem__)

    def _head(self, name: str, hidden: dict[int | None, torch.Tensor], attention_mask: torch.Tensor | None,
              rows: torch.Tensor | None = None) -> torch.Tensor:
        """Task `name`'s logits on `rows` (all rows by default), from the layer its head reads (`head_layer`)."""
        states = hidden[self.tasks[name].head_layer]  # (B, L, H)
        mask = attention_mask
        if rows is not None:
            states = states[rows]
            mask = attention_mask[rows] if attention_mask is not None else None
        lower = self.tasks[name].input_from_tasks
        if lower:  # hierarchical pipeline: (B, L, H) -> (B, L, H + Σ C_u), see hierarchy.py
            blocks = [prediction_features(self.tasks[u], self._head(u, hidden, attention_mask, rows), states.shape[1])
                      for u in lower]
            states = torch.cat([states, *(b.to(states.dtype) for b in blocks)], dim=-1)
        return self.heads[name](states, mask)

    def _mixed_forward(self, routing: Routing, hidden: dict[int | None, torch.Tensor],
                       attention_mask: torch.Tensor | None, labels: torch.Tensor | None) -> MultiTaskOutput:
        task_logits, task_rows, task_losses = {}, {}, {}
        total = None
        batch_size = routing.size
        for name in routing.batch_tasks:
            rows = routing.rows_of(name)
            logits = self._head(name, hidden, attention_mask, rows)
            task_logits[name], task_rows[name] = logits, rows
            if labels is not None:
                task_labels = _labels_for(self.tasks[name], labels[rows])
                task_losses[name] = task_loss(self.tasks[name], logits, task_labels)
                share = task_losses[name] * (rows.numel() / batch_size)
                total = share if total is None else total + share
        return MultiTaskOutput(loss=total, task_losses=task_losses or None, task_logits=task_logits, task_rows=task_rows)

    # ------------------------------------------------------------------ parameters
    def trainable_parameters(self) -> dict[str, Any]:
        """Trainable parameter counts: per task (head + the task's adapter parameters), shared, per language adapter."""
        per_task = {}
        for name in self.heads:
            head = sum(p.numel() for p in self.heads[name].parameters() if p.requires_grad)
            adapter = sum(p.numel() for p in self.adapter.task_parameters(name) if p.requires_grad)
            per_task[name] = {"head": head, "adapter": adapter, "total": head + adapter}
        backbone = sum(p.numel() for p in self._backbone_own_parameters() if p.requires_grad)
        shared_adapter = sum(p.numel() for p in self.adapter.shared_parameters() if p.requires_grad)
        total_backbone = sum(p.numel() for p in self._backbone_own_parameters())
        languages = {lang: sum(p.numel() for p in self.adapter.language_parameters(lang) if p.requires_grad)
                     for lang in self.adapter.adapter_languages()}
        return {
            "tasks": per_task,
            "shared": {"backbone": backbone, "adapter": shared_adapter, "total": backbone + shared_adapter},
            "languages": languages,  # trainable weights of language adapters (0 while they are frozen)
            "backbone_parameters": total_backbone,
        }

    def _backbone_own_parameters(self) -> list[nn.Parameter]:
        """Backbone weights, without the modules an adapter method inserted into it."""
        inserted = {id(p) for p in self.adapter.parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in inserted]

    @property
    def backbone_trained(self) -> bool:
        return any(p.requires_grad for p in self._backbone_own_parameters())

    def predict(self, texts: Sequence[Any], task: str | Sequence[str] | None = None, **kwargs: Any) -> list[dict]:
        """Predictions for raw texts; see `hf_mtl.inference.predict`."""
        from ..inference import predict

        return predict(self, texts, task=task, **kwargs)

    def generate(self, inputs: Sequence[Any], task: str | Sequence[str] | None = None, **kwargs: Any) -> list[str]:
        """Generated texts of generative tasks, rows of several tasks in one call; see `hf_mtl.generation.generate`."""
        from ..generation import generate

        return generate(self, inputs, task=task, **kwargs)


def _labels_for(task: Task, labels: torch.Tensor) -> torch.Tensor:
    """A task's labels from a mixed batch's (n, L) label tensor (sequence labels sit in column 0)."""
    if task.is_token_level or labels.dim() == 1:
        return labels
    return labels[:, 0]


def _check_same_head(known: Task, new: Task) -> None:
    if known.kind != new.kind or (known.labels is not None and new.labels is not None and known.labels != new.labels):
        raise TaskConfigError(
            f"task {new.name!r}: the model's head was built for kind={known.kind!r} with labels {known.labels}, "
            f"but the task now has kind={new.kind!r} with labels {new.labels} ({len(new.labels or [])} labels). "
            f"Fix: use the same label list as the saved head, or give the task a new name."
        )


def _use_fast_dropout(backbone: nn.Module) -> None:
    """FastDropout for the backbone's dropout modules, and hf_mtl's attention function (fast dropout
    on the CPU) for each layer's self-attention whose dropout is on, where the family has a spec."""
    use_fast_dropout(backbone)
    spec = ARCH_SPECS.get(getattr(backbone.config, "model_type", None))
    if spec is None:
        return  # no spec, no known attention modules: their dropout stays torch's
    for layer in layers_of(backbone, spec):
        attention = resolve(layer, spec.attention)
        if getattr(getattr(attention, "dropout", None), "p", 1.0) > 0:
            route_attention(backbone, attention, fast_dropout=True)


def _hidden_dropout(config: PretrainedConfig) -> float:
    for name in ("hidden_dropout_prob", "dropout", "hidden_dropout"):
        value = getattr(config, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.1


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
