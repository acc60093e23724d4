"""Export one task as a standalone transformers model that loads and predicts without hf_mtl.

    hf-mtl export OUTPUT_DIR --task T OUT
    AutoModelForSequenceClassification.from_pretrained(OUT)   # or AutoModelForTokenClassification
    AutoModelForCausalLM.from_pretrained(OUT).generate(...)   # causal_lm tasks (AutoModelForSeq2SeqLM: seq2seq)

What can be exported (the backbone must become a plain transformers backbone): the methods whose class says
`exportable = True`, after their `merge_for_export`:

| adapter method | how |
| --- | --- |
| `none` (head-only, full fine-tuning) | the backbone's weights as they are |
| `lora` | each LoRA update merged into its weight, W = W0 + (α/r)·B·A (the language adapter too) |
| bottleneck, madx, pals, prefix_tuning, hyperformer(++), ca_mtl | refused: they add modules or change the attention, which transformers' classes have no place for |

and the task's head must be one that transformers' class computes exactly:

| task kind | transformers head | hf_mtl head |
| --- | --- | --- |
| token_classification | `classifier` (dropout, linear) | every model type; `head_layer` unset |
| classification, regression | BERT: pooler (dense, tanh on [CLS]) + `classifier`; RoBERTa/XLM-R: `classifier.dense`, tanh, `classifier.out_proj` | `head_hidden_layers=1`, `pooling="cls"`, `head_layer` unset |
| causal_lm, seq2seq | the LM's own head (`AutoModelForCausalLM` / `AutoModelForSeq2SeqLM`) | the backbone's LM head: every generative family |

A generative task's folder also holds its `generation_config.json`: the settings the task generates with in hf_mtl
(greedy unless its `generation` says otherwise, its EOS, `max_new_tokens`, beams), so a plain `generate(input_ids)`
gives the task's output.

The export is checked before it is moved into place: the saved folder is loaded back with `AutoModelFor...` and
must give the logits of the hf_mtl model on a probe batch, and for a generative task the same generated tokens.
"""

from __future__ import annotations

import copy
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from ..adapters import ADAPTER_METHODS
from ..data.text2text import template_columns
from ..errors import StoreError, TaskConfigError
from ..generation import generate_ids, generation_config, prompt_ids
from ..io_utils import normal_mode
from ..modeling import MultiTaskModel
from ..tasks import Task


# model_type -> (target of our head's dense layer, target of its output layer), relative to the model
SEQUENCE_HEADS = {
    "bert": ("{base}.pooler.dense", "classifier"),
    "roberta": ("classifier.dense", "classifier.out_proj"),
    "xlm-roberta": ("classifier.dense", "classifier.out_proj"),
}
PROBE = ["hf_mtl export check: the quick brown fox", "a b c"]
TOLERANCE = 1e-4
DETERMINISTIC = {"do_sample": False}  # the generation check compares tokens: a task that samples is checked greedily


def export_task(store: str | os.PathLike, task: str, output_dir: str | os.PathLike, *, revision: str | None = None,
                token: str | None = None) -> str:
    """Write `task` of a store as a transformers model (+ tokenizer) into the new folder `output_dir`.

    Args:
        store: a store folder or a Hub repo id.
        task: the task to export.
        output_dir: a folder that does not exist yet (or is empty).
        revision: Hub revision of the store.
        token: Hub token for a private repo.

    Returns:
        `output_dir`, loadable with `AutoModelForSequenceClassification` (classification, regression),
        `AutoModelForTokenClassification` (token classification), `AutoModelForCausalLM` (causal_lm) or
        `AutoModelForSeq2SeqLM` (seq2seq).
    """
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"export: {out} already exists and is not empty. Fix: choose a new folder, or remove it.")
    model = MultiTaskModel.from_pretrained(str(store), tasks=[task], revision=revision, token=token)
    spec = model.tasks[task]
    check_exportable(model, spec)
    if spec.is_generative:
        _export_generative(model, spec, out)
        return str(out)
    probe = _probe(model)
    expected = model(**probe, task=task).logits
    model.adapter.merge_for_export(model, task)
    hf_model = to_transformers(model, spec)
    auto = AutoModelForTokenClassification if spec.kind == "token_classification" else AutoModelForSequenceClassification
    _save_checked(hf_model, model.tokenizer, out, spec, lambda folder: _check_logits(auto, folder, probe, expected, spec))
    return str(out)


def check_exportable(model: MultiTaskModel, task: Task) -> None:
    """Raise a `TaskConfigError` saying why `task` has no exact transformers counterpart, if it has none."""
    method, model_type = model.adapter.name, model.config.model_type
    where = f"export of task {task.name!r}"
    if not model.adapter.exportable:
        raise TaskConfigError(
            f"{where}: adapter_method {method!r} adds modules or changes the attention, and transformers' "
            f"AutoModelFor... classes have no place for them. Exportable methods: {exportable_methods()} (LoRA is "
            f"merged into the weights). Fix: use the task through hf_mtl (MultiTaskModel.from_pretrained)."
        )
    if task.is_generative:
        return  # the backbone's own LM head is the task's output layer
    if task.kind not in ("classification", "regression", "token_classification"):
        raise TaskConfigError(f"{where}: kind {task.kind!r} is not exported (only classification, regression, "
                              f"token_classification, causal_lm and seq2seq).")
    if task.head_layer is not None:
        raise TaskConfigError(f"{where}: its head reads layer {task.head_layer}, but transformers' heads read the last "
                              f"layer. Fix: train it without head_layer to export it.")
    if task.kind == "token_classification":
        return
    if model_type not in SEQUENCE_HEADS:
        raise TaskConfigError(
            f"{where}: no AutoModelForSequenceClassification of model type {model_type!r} computes hf_mtl's head "
            f"(dense + tanh + linear on the first token); exportable sequence heads: {sorted(SEQUENCE_HEADS)}. "
            f"Token classification tasks export for every model type."
        )
    if task.pooling != "cls" or task.head_hidden_layers != 1:
        raise TaskConfigError(
            f"{where}: its head is pooling={task.pooling!r} with head_hidden_layers={task.head_hidden_layers}, but "
            f"{model_type}'s sequence classifier applies dense + tanh to the first token, then a linear layer (BERT's "
            f"pooler + classifier), so it cannot hold this head exactly. Fix: train the task with pooling='cls' and "
            f"head_hidden_layers=1 (the default) to export it, or use it through hf_mtl."
        )


def exportable_methods() -> list[str]:
    """The registered adapter methods whose class says `exportable` (imports every method's module)."""
    return [name for name in ADAPTER_METHODS.names() if ADAPTER_METHODS.get(name).exportable]


def _probe(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    enc = model.tokenizer(PROBE, padding=True, truncation=True, max_length=32, return_tensors="pt")
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def to_transformers(model: MultiTaskModel, task: Task) -> torch.nn.Module:
    """A transformers model holding the (plain) backbone and `task`'s head."""
    token_level = task.kind == "token_classification"
    auto = AutoModelForTokenClassification if token_level else AutoModelForSequenceClassification
    config = copy.deepcopy(model.config)
    labels = task.labels if task.kind != "regression" else ["score"]
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.problem_type = "regression" if task.kind == "regression" else ("single_label_classification" if not token_level else None)
    hf_model = auto.from_config(config).eval()
    base = getattr(hf_model, hf_model.base_model_prefix)
    result = base.load_state_dict(model.backbone.state_dict(), strict=False)
    allowed = {k for k in result.missing_keys if k.startswith("pooler.")} if not token_level else set()
    if set(result.missing_keys) - allowed or result.unexpected_keys:
        raise StoreError(f"export of task {task.name!r}: the backbone does not fit {type(hf_model).__name__} "
                         f"(missing {sorted(set(result.missing_keys) - allowed)[:5]}, unexpected {result.unexpected_keys[:5]}).")
    head = model.heads[task.name]
    targets = ({"out": "classifier"} if token_level else
               dict(zip(("dense", "out"), (t.format(base=hf_model.base_model_prefix) for t in SEQUENCE_HEADS[config.model_type]))))
    for ours, theirs in targets.items():
        hf_model.get_submodule(theirs).load_state_dict(getattr(head, ours).state_dict())
    return hf_model


def _normal_modes(folder: Path) -> None:
    """The modes a normal write gives (mkdtemp makes the folder 0700, transformers its weights 0600)."""
    os.chmod(folder, normal_mode(directory=True))
    for path in folder.rglob("*"):
        os.chmod(path, normal_mode(directory=path.is_dir()))


def _save_checked(hf_model: PreTrainedModel, tokenizer: Any, out: Path, task: Task, check: Callable[[Path], None]) -> None:
    """Save into a staging folder, `check` it (it loads the folder back with AutoModelFor... and compares), then move
    it into place; nothing is written to `out` when the check fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        hf_model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        _normal_modes(staging)
        check(staging)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_exported(auto: Any, folder: Path) -> PreTrainedModel:
    return auto.from_pretrained(folder, use_safetensors=True, trust_remote_code=False).eval()


def _check_logits(auto: Any, folder: Path, probe: dict[str, torch.Tensor], expected: torch.Tensor, task: Task,
                  loaded: PreTrainedModel | None = None) -> None:
    """The exported model's logits on the probe batch equal hf_mtl's (up to `TOLERANCE`)."""
    loaded = loaded if loaded is not None else _load_exported(auto, folder)
    accepted = inspect.signature(loaded.forward).parameters
    with torch.no_grad():
        got = loaded(**{k: v.cpu() for k, v in probe.items() if k in accepted}).logits
    diff = float((got - expected.detach().cpu()).abs().max())
    if diff > TOLERANCE:
        raise StoreError(f"export of task {task.name!r}: the exported model's logits differ from hf_mtl's by {diff:.2e} "
                         f"on a probe batch; nothing was written.")


# ------------------------------------------------------------------------------------------- generative tasks
def _export_generative(model: MultiTaskModel, task: Task, out: Path) -> None:
    """The backbone (its LM head included) with the task's adapter merged, and the task's generation settings."""
    prompts = [prompt_ids(model, task, {column: text for column in template_columns(task, "prompt_template")}, None)
               for text in PROBE]
    expected_ids = generate_ids(model, prompts, [task.name] * len(prompts), **DETERMINISTIC)
    config = generation_config(model, task)
    probe = _generative_probe(model, prompts[0], config.decoder_start_token_id)
    with torch.no_grad():
        expected = model(**probe, task=task.name).logits
    model.adapter.merge_for_export(model, task.name)
    auto = AutoModelForSeq2SeqLM if model.is_encoder_decoder else AutoModelForCausalLM
    dtype = next(model.backbone.parameters()).dtype
    hf_model = auto.from_config(copy.deepcopy(model.config), dtype=dtype).eval()  # plain: no hook of hf_mtl's survives
    hf_model.load_state_dict(model.backbone.state_dict(), strict=True)
    hf_model.generation_config = copy.deepcopy(config)

    def check(folder: Path) -> None:
        loaded = _load_exported(auto, folder)
        _check_logits(auto, folder, probe, expected, task, loaded)
        got = [_generate_alone(loaded, prompt, model.is_encoder_decoder) for prompt in prompts]
        if got != expected_ids:
            raise StoreError(f"export of task {task.name!r}: the exported model generates {got} where hf_mtl generates "
                             f"{expected_ids} on probe prompts; nothing was written.")

    _save_checked(hf_model, model.tokenizer, out, task, check)


def _generative_probe(model: MultiTaskModel, prompt: list[int], start: int | None) -> dict[str, torch.Tensor]:
    """A one-row forward batch: the prompt, and for an encoder-decoder a few decoder tokens after its `start` token."""
    device = next(model.parameters()).device
    probe = {"input_ids": torch.tensor([prompt], device=device)}
    if model.is_encoder_decoder:
        probe["decoder_input_ids"] = torch.tensor([[start, *prompt[:4]]], device=device)
    return probe


def _generate_alone(loaded: PreTrainedModel, prompt: list[int], encoder_decoder: bool) -> list[int]:
    """What a user of the exported folder gets from `generate(input_ids)` with its saved generation config: the new
    tokens, up to the first EOS (as hf_mtl returns them)."""
    with torch.no_grad():
        sequence = loaded.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                   **DETERMINISTIC)
    new = sequence[0, 1 if encoder_decoder else len(prompt):].tolist()
    eos = loaded.generation_config.eos_token_id
    stops = set(eos) if isinstance(eos, list) else {eos}
    return new[:next((i for i, token in enumerate(new) if token in stops), len(new))]
