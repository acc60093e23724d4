"""The configurations the speed benchmarks time: their names, groups and goals, and the factories that build them.

A configuration is named `library/method[/mixed][@nodrop]`: `hf_mtl/bottleneck/pfeiffer/mixed` is hf_mtl's Pfeiffer
bottleneck on a batch mixing 4 tasks, `hf_mtl/lora@nodrop` hf_mtl's LoRA with `backbone_dropout=0.0`,
`peft/lora` PEFT's LoRA. `hf_mtl/floor` is the frozen backbone with the backward run through every layer and
no weight gradient: the least any adapter can cost. AdapterHub's configurations (`adapterhub/...`) are built by
`adapterhub_runner.py` in its own venv; the factories here build hf_mtl's and PEFT's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.adapterhub_runner import Bench, count
from hf_mtl import Task
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.backbone import build_backbone, load_backbone_config, load_tokenizer
from hf_mtl.modeling.heads import SequenceHead


TASKS = [Task(f"t{i}", labels=["neg", "pos"]) for i in range(4)]

# hf_mtl method name in the table -> (adapter_method, adapter_config)
HF_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "lora": ("lora", {}),
    "prefix_tuning": ("prefix_tuning", {}),
    "bottleneck/pfeiffer": ("bottleneck", {"variant": "pfeiffer"}),
    "bottleneck/houlsby": ("bottleneck", {"variant": "houlsby"}),
    "bottleneck/parallel": ("bottleneck", {"variant": "parallel"}),
    "madx": ("madx", {"languages": ["en"]}),
    "pals": ("pals", {}),
    "pals_d66": ("pals", {"pal_size": 66}),  # ~2/3 of the paper's d_s (102 at H=384), a multiple of its 6 heads
    "pals_h3": ("pals", {"pal_heads": 3}),  # the paper's d_s, half its heads: half the (L x L) attention maps
    "hyperformer": ("hyperformer", {}),
    "hyperformer++": ("hyperformer++", {}),
    "ca_mtl": ("ca_mtl", {}),
}
PER_ROW = {"lora", "prefix_tuning", "bottleneck/pfeiffer", "bottleneck/houlsby", "bottleneck/parallel", "madx",
           "pals", "hyperformer", "hyperformer++", "ca_mtl"}
# goal on the ratio to the floor (the issues "Adapter methods I" and "II")
FLOOR_GOALS = {"pals": 1.10, "ca_mtl": 1.10, "hyperformer": 1.15, "hyperformer++": 1.15}  # by adapter_method
DEFAULT_FLOOR_GOAL = 1.05
MIXED_GOAL = 1.05
# configurations timed next to each other, each group between two floor steps. Names: library/method[/mixed][@nodrop]
# In order of priority: a run stopped by --max-minutes keeps the groups it finished.
GROUPS: list[list[str]] = [
    ["hf_mtl/bottleneck/pfeiffer", "hf_mtl/bottleneck/pfeiffer/mixed", "adapterhub/bottleneck/pfeiffer",
     "adapterhub/bottleneck/pfeiffer/mixed", "hf_mtl/bottleneck/pfeiffer@nodrop"],
    ["hf_mtl/full_ft", "hf_mtl/floor@nodrop", "hf_mtl/floor_torch_dropout", "adapterhub/floor"],
    ["hf_mtl/lora", "hf_mtl/lora/mixed", "peft/lora", "adapterhub/lora", "hf_mtl/lora@nodrop", "peft/ia3"],
    ["hf_mtl/pals", "hf_mtl/pals/mixed", "hf_mtl/pals@nodrop", "hf_mtl/pals_d66", "hf_mtl/pals_h3"],
    ["hf_mtl/hyperformer", "hf_mtl/hyperformer/mixed", "hf_mtl/hyperformer@nodrop"],
    ["hf_mtl/ca_mtl", "hf_mtl/ca_mtl/mixed", "hf_mtl/ca_mtl@nodrop"],
    ["hf_mtl/prefix_tuning", "hf_mtl/prefix_tuning/mixed", "peft/prefix_tuning", "adapterhub/prefix_tuning",
     "hf_mtl/prefix_tuning@nodrop"],
    ["hf_mtl/bottleneck/houlsby", "hf_mtl/bottleneck/houlsby/mixed", "adapterhub/bottleneck/houlsby", "hf_mtl/bottleneck/houlsby@nodrop"],
    ["hf_mtl/bottleneck/parallel", "hf_mtl/bottleneck/parallel/mixed", "adapterhub/bottleneck/parallel",
     "hf_mtl/bottleneck/parallel@nodrop"],
    ["hf_mtl/madx", "hf_mtl/madx/mixed", "adapterhub/madx", "hf_mtl/madx@nodrop"],
    ["hf_mtl/hyperformer++", "hf_mtl/hyperformer++/mixed", "hf_mtl/hyperformer++@nodrop"],
]
FLOOR = "hf_mtl/floor"
TORCH_DROPOUT_FLOOR = "hf_mtl/floor_torch_dropout"  # the floor with torch's dropout masks (fast_dropout=False)
REFERENCE_METHODS = ("floor", "full_ft", "floor_torch_dropout")
COUNTERPARTS = {"lora": ["peft/lora", "adapterhub/lora"], "prefix_tuning": ["peft/prefix_tuning", "adapterhub/prefix_tuning"],
                "bottleneck/pfeiffer": ["adapterhub/bottleneck/pfeiffer"], "bottleneck/houlsby": ["adapterhub/bottleneck/houlsby"],
                "bottleneck/parallel": ["adapterhub/bottleneck/parallel"], "madx": ["adapterhub/madx"]}


@dataclass(frozen=True)
class Placement:
    """Where the configurations run: the device, and bf16 autocast of the forward (float32 weights and optimizer)."""

    device: str = "cpu"
    bf16: bool = False

    def model(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device)

    def inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in inputs.items()}

    def loss(self, fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        if not self.bf16:
            return fn
        device_type = torch.device(self.device).type

        def autocast_loss() -> torch.Tensor:
            with torch.autocast(device_type, dtype=torch.bfloat16):
                return fn()
        return autocast_loss

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.startswith("cuda") else "CPU"
        return f"{name}, {'bf16 autocast' if self.bf16 else 'float32'}"


def placement_of(args: argparse.Namespace) -> Placement:
    return Placement(getattr(args, "device", "cpu"), getattr(args, "bf16", False))


def split_name(name: str) -> tuple[str, str, bool, bool]:
    """'hf_mtl/bottleneck/pfeiffer/mixed@nodrop' -> ('hf_mtl', 'bottleneck/pfeiffer', mixed, nodrop)."""
    nodrop = name.endswith("@nodrop")
    name = name.removesuffix("@nodrop")
    mixed = name.endswith("/mixed")
    name = name.removesuffix("/mixed")
    library, method = name.split("/", 1)
    return library, method, mixed, nodrop


def library_of(name: str) -> str:
    """'peft/lora' -> 'peft'."""
    return name.split("/", 1)[0]


def wanted_configs(args: argparse.Namespace) -> list[list[str]]:
    """GROUPS filtered by `--no-adapterhub`, `--only` and `--skip`; empty groups dropped."""
    groups = []
    for group in GROUPS:
        group = [c for c in group if (args.adapterhub or not c.startswith("adapterhub/"))
                 and (not args.only or any(o in c for o in args.only))
                 and not any(x in c for x in args.skip or [])]
        if group:
            groups.append(group)
    return groups


def make_floor(model: torch.nn.Module) -> torch.nn.Module:
    """The floor: the embeddings' output requires grad, so the backward runs through every frozen layer (as it must
    for any adapter) but computes no weight gradient."""
    model.backbone.embeddings.register_forward_hook(lambda m, a, out: out.requires_grad_(True))
    return model


def _hf_bench(name: str, model: MultiTaskModel, inputs: dict, task: Any, optimizer=None,
              where: Placement = Placement()) -> Bench:
    params = [p for p in model.parameters() if p.requires_grad]
    counts = model.trainable_parameters()
    per_task = counts["tasks"]["t0"]["total"]
    shared = counts["shared"]["total"]
    x = where.inputs(inputs)
    return Bench(name, where.loss(lambda: model(**x, task=task).loss), params, per_task, shared, optimizer=optimizer,
                 info={"attn_implementation": model.backbone.config._attn_implementation}, device=where.device)


def build_hf_mtl(model_id: str, inputs: dict, names: set[str], where: Placement = Placement(),
                 fast_dropout: bool = True) -> dict[str, Callable[[], list[Bench]]]:
    """Factories of hf_mtl's configurations; each builds one model and the configurations that share it.
    `fast_dropout=False` builds every model (the floor too) with torch's dropout masks."""
    mixed_tasks = [TASKS[i % len(TASKS)].name for i in range(inputs["input_ids"].shape[0])]
    tokenizer = load_tokenizer(model_id)  # loaded once, not once per model
    factories: dict[str, Callable[[], list[Bench]]] = {}

    def reference(name: str, dropout: float | None, full: bool, fast_dropout: bool = fast_dropout) -> Callable[[], list[Bench]]:
        def build() -> list[Bench]:
            model = where.model(MultiTaskModel.from_backbone(model_id, TASKS, freeze_backbone=not full,
                                                             backbone_dropout=dropout, tokenizer=tokenizer,
                                                             fast_dropout=fast_dropout).train())
            if not full:  # the floor: backward through every frozen layer, no weight gradient
                make_floor(model)
            return [_hf_bench(name, model, inputs, "t0", where=where)]
        return build

    factories["hf_mtl/full_ft"] = reference("hf_mtl/full_ft", None, True)
    factories[FLOOR] = reference(FLOOR, None, False)
    factories["hf_mtl/floor@nodrop"] = reference("hf_mtl/floor@nodrop", 0.0, False)
    factories[TORCH_DROPOUT_FLOOR] = reference(TORCH_DROPOUT_FLOOR, None, False, fast_dropout=False)
    for method, (adapter_method, adapter_config) in HF_METHODS.items():
        for dropout, suffix in ((None, ""), (0.0, "@nodrop")):
            def build(method=method, adapter_method=adapter_method, adapter_config=adapter_config, dropout=dropout,
                      suffix=suffix) -> list[Bench]:
                model = where.model(MultiTaskModel.from_backbone(model_id, TASKS, adapter_method=adapter_method,
                                                                 adapter_config=adapter_config, backbone_dropout=dropout,
                                                                 tokenizer=tokenizer, fast_dropout=fast_dropout).train())
                single = _hf_bench(f"hf_mtl/{method}{suffix}", model, inputs, "t0", where=where)
                benches = [single]
                if method in PER_ROW and not suffix:  # one model, one optimizer for both batch kinds
                    benches.append(_hf_bench(f"hf_mtl/{method}/mixed", model, inputs, mixed_tasks, single.optimizer,
                                             where=where))
                return benches
            factories[f"hf_mtl/{method}{suffix}"] = build
    return {k: v for k, v in factories.items() if k in names or k == FLOOR}


def _peft_model(model_id: str, peft_config, where: Placement = Placement()) -> tuple[torch.nn.Module, SequenceHead]:
    from peft import get_peft_model

    backbone = build_backbone(load_backbone_config(model_id), model_id)
    model = where.model(get_peft_model(backbone, peft_config).train())
    config = backbone.config
    head = where.model(SequenceHead(config.hidden_size, 2, "cls", 1, config.hidden_dropout_prob).train())  # hf_mtl's head
    return model, head


def _peft_bench(name: str, model_id: str, inputs: dict, peft_config, where: Placement = Placement()) -> Bench:
    model, head = _peft_model(model_id, peft_config, where)
    inputs = where.inputs(inputs)
    x = {k: v for k, v in inputs.items() if k != "labels"}
    labels = inputs["labels"]

    def loss() -> torch.Tensor:
        hidden = model(**x).last_hidden_state
        return F.cross_entropy(head(hidden, x["attention_mask"]), labels)

    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    return Bench(name, where.loss(loss), params, count(params), device=where.device)


def build_peft(model_id: str, inputs: dict, names: set[str],
               where: Placement = Placement()) -> dict[str, Callable[[], list[Bench]]]:
    from peft import IA3Config, LoraConfig, PrefixTuningConfig

    factories = {
        "peft/lora": lambda: [_peft_bench("peft/lora", model_id, inputs,
                                          LoraConfig(r=8, lora_alpha=8, target_modules=["query", "value"]), where)],
        "peft/ia3": lambda: [_peft_bench("peft/ia3", model_id, inputs, IA3Config(), where)],
        # 20 flat prefixes, hf_mtl's default; runs only where `peft_prefix_tuning_status` says so
        "peft/prefix_tuning": lambda: [_peft_bench("peft/prefix_tuning", model_id, inputs,
                                                   PrefixTuningConfig(num_virtual_tokens=20, task_type="FEATURE_EXTRACTION"),
                                                   where)],
    }
    return {k: v for k, v in factories.items() if k in names}


def peft_prefix_tuning_status(model_id: str, inputs: dict) -> str:
    """PEFT's prefix tuning on BERT: "runs", or why not. PEFT passes the prefixes as `past_key_values`, which
    transformers 5 renamed `cache` (5.24 still maps the old name, with a FutureWarning, until 5.40)."""
    from peft import PrefixTuningConfig

    try:
        bench = _peft_bench("peft/prefix_tuning", model_id, {k: v[:2, :16] if v.dim() == 2 else v[:2] for k, v in inputs.items()},
                            PrefixTuningConfig(num_virtual_tokens=20, task_type="FEATURE_EXTRACTION"))
        loss = bench.loss_fn()
        loss.backward()
    except Exception as err:  # noqa: BLE001 - the message is the result
        return f"not supported: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    # transformers 5's attention takes `cache`, not `past_key_values`: the prefixes may be dropped silently
    prefix = [p for p in bench.params[:-4]]  # the PEFT model's trainable tensors (the head's 4 come last)
    if all(p.grad is None or not p.grad.abs().sum() for p in prefix):
        return ("not supported: the step runs but the prefixes get no gradient (PEFT passes them as past_key_values, "
                "which transformers 5's BERT ignores)")
    return "runs"



def build_local(model_id: str, inputs: dict, names: set[str], where: Placement = Placement(),
                fast_dropout: bool = True) -> dict[str, Callable[[], list[Bench]]]:
    return {**build_hf_mtl(model_id, inputs, names, where, fast_dropout), **build_peft(model_id, inputs, names, where)}

