"""Export one task as a standalone transformers model that loads and predicts without hf_mtl.

    hf-mtl export OUTPUT_DIR --task T OUT
    AutoModelForSequenceClassification.from_pretrained(OUT)   # or AutoModelForTokenClassification

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

The export is checked before it is moved into place: the saved folder is loaded back with
`AutoModelFor...` and must give the logits of the hf_mtl model on a probe batch.
"""

from __future__ import annotations

import copy
import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from ..adapters import ADAPTER_METHODS
from ..errors import StoreError, TaskConfigError
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
        `output_dir`, loadable with `AutoModelForSequenceClassification` (classification, regression)
        or `AutoModelForTokenClassification` (token classification).
    """
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"export: {out} already exists and is not empty. Fix: choose a new folder, or remove it.")
    model = MultiTaskModel.from_pretrained(str(store), tasks=[task], revision=revision, token=token)
    spec = model.tasks[task]
    check_exportable(model, spec)
    probe = _probe(model)
    expected = model(**probe, task=task).logits
    model.adapter.merge_for_export(model, task)
    hf_model = to_transformers(model, spec)
    _save_checked(hf_model, model.tokenizer, probe, expected, out, spec)
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
    if task.kind not in ("classification", "regression", "token_classification"):
        raise TaskConfigError(f"{where}: kind {task.kind!r} is not exported (only classification, regression and token_classification).")
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


def _save_checked(hf_model: torch.nn.Module, tokenizer: Any, probe: dict[str, torch.Tensor], expected: torch.Tensor,
                  out: Path, task: Task) -> None:
    """Save into a staging folder, load it back with AutoModelFor..., compare, then move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        hf_model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        _normal_modes(staging)
        auto = AutoModelForTokenClassification if task.kind == "token_classification" else AutoModelForSequenceClassification
        loaded = auto.from_pretrained(staging, use_safetensors=True, trust_remote_code=False).eval()
        accepted = inspect.signature(loaded.forward).parameters
        with torch.no_grad():
            got = loaded(**{k: v.cpu() for k, v in probe.items() if k in accepted}).logits
        diff = float((got - expected.detach().cpu()).abs().max())
        if diff > TOLERANCE:
            raise StoreError(f"export of task {task.name!r}: the exported model's logits differ from hf_mtl's by {diff:.2e} "
                             f"on a probe batch; nothing was written to {out}.")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
