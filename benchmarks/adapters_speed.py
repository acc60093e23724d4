"""Train-step time and peak memory of every adapter method, next to full fine-tuning, the floor, PEFT and AdapterHub.

One training step = forward + backward + AdamW step + zero_grad on one batch (default 32 rows x 128
tokens, all-MiniLM-L6-v2, 2 threads). Rows of the table:

- hf_mtl: full fine-tuning; the floor (the frozen backbone, the embeddings' output requiring grad so
  the backward runs through every layer, as it must for any adapter, but computes no weight gradient;
  only the head trains); every adapter method with a single-task batch, with a batch mixing 4 tasks
  (8 rows each, interleaved) for the methods that route per row, and with `backbone_dropout=0.0`.
  hf_mtl's models draw dropout masks the fast CPU way (`fast_dropout`, the default;
  hf_mtl.ops.fast_dropout); `floor_torch_dropout` is the floor with torch's masks.
- PEFT 0.21: LoRA (r=8, alpha=8, query+value: hf_mtl's default), IA3 (PEFT's BERT defaults), and
  prefix tuning (20 flat prefixes) where it runs: PEFT passes the prefixes as `past_key_values`, which
  transformers 5.24 still maps to `cache` on BERT (deprecated, removal announced for 5.40); where it
  fails, or the prefixes get no gradient, the table reports why instead.
- AdapterHub `adapters` 1.3 in its own venv (it pins transformers 4.57): the floor, Pfeiffer (SeqBn),
  Houlsby (DoubleSeqBn), parallel (ParBn), prefix tuning, LoRA, MAD-X (Stack(lang, task)) and a
  BatchSplit batch of 4 Pfeiffer adapters. The venv is created once under
  ~/.cache/hf_mtl_bench/adapterhub-venv; `benchmarks/adapterhub_runner.py` runs in it as a
  subprocess that times its steps when this process asks, so only one process computes at a time.

Where the steps run: by default (`--local-in runner`) hf_mtl's and PEFT's configurations are timed in a
runner process per library too (this script's `--serve`, the same protocol as AdapterHub's runner), each
holding only its own library's models, so the three libraries are timed alike. `--local-in main` times
them in this process instead, which holds every local model; benchmarks/process_control.py measured the
same floor step 2.4-3.8% slower there than in a light second process on the 2-core VM, enough to tilt a
1-3% comparison with AdapterHub. Even two identical fresh processes time the same step 2-5% apart for as
long as they live (benchmarks/process_placebo.py), so every runner restarts every `--restart-every` rounds
(default 5) and a process's own speed averages out over the run.

Memory between steps: on the CPU every timing process (hf_mtl's, PEFT's and AdapterHub's alike) runs with the malloc
thresholds that MultiTaskTrainer sets there (`hf_mtl.ops.cpu_memory.keep_freed_memory`, given to the runners as
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_), so freed activations are reused instead of faulted in anew each step;
`--malloc default` keeps glibc's own (the runs before 2026-11-28 used those).

Timing (single timings swing +-10-30% on a shared machine, ../shared/STACK.md): the configurations
are grouped by method, each group preceded and followed by a floor step, and every round runs all
groups (order reversed every other round). A configuration's ratio to the floor is its step time over
the mean of the two floor steps around its group, taken per round; the table gives medians over
rounds of these paired ratios. Ratios between two configurations (hf_mtl vs PEFT/AdapterHub, mixed vs
single task, no dropout vs dropout, vs full FT) are paired per round too. Peak memory is measured
afterwards in separate probe processes (see `adapterhub_runner.peak_rss_delta_mib`), which also count each
configuration's matmul and attention FLOPs over one step (`adapterhub_runner.step_gflop`): the "FLOPs x floor"
column says what the arithmetic alone would cost, without the timings' noise.

The quality side of `backbone_dropout` and `fast_dropout`: a Pfeiffer bottleneck trained on 2,000 SST-2
examples for 200 steps with backbone dropout (fast masks, and torch's) and without, dev accuracy (needs
../shared/data/glue_sst2).

    python benchmarks/adapters_speed.py [--rounds 10] [--steps 1] [--batch 32] [--seq 128] [--threads 2]
    python benchmarks/adapters_speed.py --quick      # 2 rounds on an 8 x 32 batch: a smoke run
    python benchmarks/adapters_speed.py --device cuda --bf16 --no-adapterhub --phases timing,memory

On a GPU (`--device cuda`) each step is timed between two `torch.cuda.synchronize()`, `--bf16` runs the
forward under `torch.autocast(bfloat16)` (weights and AdamW stay float32, as the Trainer's bf16 does), and
peak memory is the GPU allocator's peak (`torch.cuda.max_memory_allocated`) over a configuration's first
training step above what was allocated before it, instead of the process's RSS.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapterhub_runner import PROTOCOL, Bench, answer_commands, count, emit, make_inputs, peak_rss_delta_mib, step_gflop  # noqa: E402  (no hf_mtl inside)

from hf_mtl import Task  # noqa: E402
from hf_mtl.modeling import MultiTaskModel  # noqa: E402
from hf_mtl.ops import cpu_memory  # noqa: E402
from hf_mtl.modeling.backbone import build_backbone, load_backbone_config, load_tokenizer, resolve_model_path  # noqa: E402
from hf_mtl.modeling.heads import SequenceHead  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNNER = HERE / "adapterhub_runner.py"
VENV = Path.home() / ".cache" / "hf_mtl_bench" / "adapterhub-venv"
VENV_REQUIREMENTS = ["adapters==1.3.*", "transformers==4.57.6"]
DATA = HERE.parent.parent / "shared" / "data"
TASKS = [Task(f"t{i}", labels=["neg", "pos"]) for i in range(4)]
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # fixed threshold: freed tensors return to the OS
# every timing process (hf_mtl's, PEFT's and AdapterHub's runners) with the malloc settings that MultiTaskTrainer applies
# on the CPU (hf_mtl.ops.cpu_memory.keep_freed_memory), as environment variables so that all three get them alike
KEEP_FREED_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(cpu_memory.MMAP_THRESHOLD),
                         "MALLOC_TRIM_THRESHOLD_": str(cpu_memory.TRIM_THRESHOLD)}

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
PER_ROW = {"prefix_tuning", "bottleneck/pfeiffer", "bottleneck/houlsby", "bottleneck/parallel", "madx",
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
    ["hf_mtl/lora", "peft/lora", "adapterhub/lora", "hf_mtl/lora@nodrop", "peft/ia3"],
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


# ---------------------------------------------------------------------------------------------- hf_mtl + PEFT
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
                model.backbone.embeddings.register_forward_hook(lambda m, a, out: out.requires_grad_(True))
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


# ---------------------------------------------------------------------------------------------- AdapterHub
def ensure_venv() -> Path:
    """The AdapterHub venv (created once): system site-packages for torch, adapters 1.3 + transformers 4.57."""
    python = VENV / "bin" / "python"
    marker = VENV / ".hf_mtl_bench_ready"
    if marker.exists():
        return python
    print(f"creating {VENV} (once): {' '.join(VENV_REQUIREMENTS)}", flush=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    # pin the system's torch so pip never downloads another one (the CUDA build is GBs)
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *VENV_REQUIREMENTS, torch_pin], check=True)
    check = subprocess.run([str(python), "-c", "import torch, adapters; print(torch.__file__)"],
                           check=True, capture_output=True, text=True)
    if str(VENV) in check.stdout:
        raise RuntimeError(f"pip installed a second torch into {VENV}: {check.stdout.strip()}; delete the venv and pin torch.")
    marker.write_text(" ".join(VENV_REQUIREMENTS) + "\n")
    return python


def _protocol_line(process: subprocess.Popen) -> dict[str, Any]:
    for line in process.stdout:
        if line.startswith(PROTOCOL):
            return json.loads(line[len(PROTOCOL):])
    raise RuntimeError(f"the runner {process.args[:3]} ended without an answer (exit code {process.wait()}); "
                       "see its stderr above")


class Runner:
    """A process that builds one library's configurations, warms each up, and times them when asked.

    The protocol of `adapterhub_runner.py --serve` (stdin: `{"cmd": "run", "configs": [...], "steps": k}` /
    `{"cmd": "quit"}`; stdout: `@@JSON` lines), spoken by AdapterHub's runner in its venv and by this script's
    `--serve` for hf_mtl and PEFT. Only one process computes at a time: the parent waits for each answer.
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None):
        self.command, self.env = command, env or {}
        self._start()
        self.info = _protocol_line(self.process)

    def _start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **self.env, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"},
        )

    def run(self, names: list[str], steps: int) -> dict[str, list[float]]:
        self.process.stdin.write(json.dumps({"cmd": "run", "configs": names, "steps": steps}) + "\n")
        self.process.stdin.flush()
        return _protocol_line(self.process)["times"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)

    @staticmethod
    def restart(runners: list["Runner"]) -> None:
        """End these runners and start each anew (all building at once: nothing is timed meanwhile)."""
        for runner in runners:
            runner.close()
            runner._start()
        for runner in runners:
            runner.info = _protocol_line(runner.process)


def _shape_args(args: argparse.Namespace) -> list[str]:
    return ["--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads), "--warmup", str(args.warmup)]


def start_adapterhub(python: Path, model_path: str, args: argparse.Namespace) -> Runner:
    """AdapterHub's configurations, in its venv (transformers 4.57)."""
    return Runner([str(python), str(RUNNER), "--serve", "--model", model_path, *_shape_args(args)], runner_env(args))


def start_local(names: list[str], args: argparse.Namespace) -> Runner:
    """hf_mtl's or PEFT's configurations `names`, in a process of this venv (`--serve`)."""
    return Runner([sys.executable, str(Path(__file__).resolve()), "--serve", json.dumps(names), "--model", args.model,
                   *_shape_args(args), "--device", args.device] + (["--bf16"] if args.bf16 else []), runner_env(args))


def runner_env(args: argparse.Namespace) -> dict[str, str]:
    """The malloc settings of the timing processes: `--malloc keep` (default) those of MultiTaskTrainer on the CPU."""
    return KEEP_FREED_MEMORY_ENV if args.malloc == "keep" and args.device == "cpu" else {}


class InlineSource:
    """Configurations timed in this process (`--local-in main`), built at their first use."""

    def __init__(self, benches: "LazyBenches"):
        self.benches = benches

    def run(self, names: list[str], steps: int) -> dict[str, list[float]]:
        return {name: self.benches[name].run(steps) for name in names}


def serve_local(args: argparse.Namespace) -> None:
    """`--serve NAMES`: the runner of hf_mtl's or PEFT's configurations, answering like AdapterHub's runner."""
    names = json.loads(args.serve)
    inputs = make_inputs(args.batch, args.seq, load_backbone_config(args.model).vocab_size)
    benches = LazyBenches(build_local(args.model, inputs, set(names), placement_of(args)), args.warmup)
    built = [benches[name] for name in names]  # every model built and warmed up before the first timed step
    built[0].run(1)  # the process's one-time initialisations
    emit({"ready": True, "configs": {b.name: {"trainable_per_task": b.trainable_per_task,
                                             "shared_trainable": b.shared_trainable, **b.info} for b in built}})
    answer_commands(benches)


def _probe(command: list[str], on_result: Callable[[str, dict], None]) -> None:
    """Run a memory probe process; it prints one protocol line per configuration (`{"config": .., "mib": ..,
    "gflop": ..}`) and a last one `{"done": true}`, so an interrupted probe still leaves the configurations it measured."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, **MALLOC_ENV, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"})
    while True:
        answer = _protocol_line(process)
        if answer.get("done"):
            break
        on_result(answer["config"], answer)
    process.wait()


def adapterhub_memory(python: Path, model_path: str, args: argparse.Namespace, on_result: Callable[[str, dict], None]) -> None:
    _probe([str(python), str(RUNNER), "--memory", "--model", model_path, "--batch", str(args.batch), "--seq", str(args.seq),
            "--threads", str(args.threads)], on_result)


# ---------------------------------------------------------------------------------------------- measuring
def wanted_configs(args: argparse.Namespace) -> list[list[str]]:
    groups = []
    for group in GROUPS:
        group = [c for c in group if (args.adapterhub or not c.startswith("adapterhub/"))
                 and (not args.only or any(o in c for o in args.only))
                 and not any(x in c for x in args.skip or [])]
        if group:
            groups.append(group)
    return groups


def build_local(model_id: str, inputs: dict, names: set[str], where: Placement = Placement(),
                fast_dropout: bool = True) -> dict[str, Callable[[], list[Bench]]]:
    return {**build_hf_mtl(model_id, inputs, names, where, fast_dropout), **build_peft(model_id, inputs, names, where)}


def peak_cuda_delta_mib(bench: Bench, steps: int = 1) -> float:
    """GPU counterpart of `peak_rss_delta_mib`: the allocator's peak over `steps` training steps above what was
    allocated before them (AdamW's state is created inside, as on the CPU probe with warmup=0)."""
    gc.collect()
    if bench.activate is not None:
        bench.activate()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    for _ in range(steps):
        bench.step()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


class LazyBenches:
    """The local configurations, each model built (untimed) the first time one of its configurations runs,
    so a run stopped by --max-minutes never pays for models it does not reach."""

    def __init__(self, factories: dict[str, Callable[[], list[Bench]]], warmup: int):
        self.factories, self.warmup = factories, warmup
        self.built: dict[str, Bench] = {}

    def __getitem__(self, name: str) -> Bench:
        if name not in self.built:
            key = name.removesuffix("/mixed") if name.endswith("/mixed") else name
            for bench in self.factories[key]():
                self.built[bench.name] = bench
                bench.run(self.warmup)  # AdamW creates its state at the first step
        return self.built[name]


def time_aba(new: Bench, old: Bench, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Two ways of the same step, paired in this process: per round `new`, `old`, `new`, one step each.

    Returns:
        per round: the mean of the two `new` steps over the `old` one (drift within a round cancels), the
        `new` time (that mean) and the `old` time, in seconds.
    """
    ratios, new_times, old_times = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        new.run(1)
        t1 = time.perf_counter()
        old.run(1)
        t2 = time.perf_counter()
        new.run(1)
        t3 = time.perf_counter()
        new_times.append((t1 - t0 + t3 - t2) / 2)
        old_times.append(t2 - t1)
        ratios.append(new_times[-1] / old_times[-1])
    return ratios, new_times, old_times


def library_of(name: str) -> str:
    return name.split("/", 1)[0]


def time_rounds(args: argparse.Namespace, sources: dict[str, "Runner | InlineSource"], groups: list[list[str]],
                on_round: Callable[[dict], None], deadline: float | None = None) -> dict[str, list[dict[str, float]]]:
    """Per round: {config: median step time} and {config: ratio to the floor steps around its group}.

    `sources` maps a library (the first part of a configuration's name) to what times its configurations."""
    times: list[dict[str, float]] = []
    ratios: list[dict[str, float]] = []

    def run(names: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for library, chunk in itertools.groupby(names, key=library_of):  # in order, a request per run of one library
            out.update({k: statistics.median(v) for k, v in sources[library].run(list(chunk), args.steps).items()})
        return out

    def floor_step() -> float:
        return run([FLOOR])[FLOOR]

    runners = [s for s in sources.values() if isinstance(s, Runner)]  # one per library (InlineSource may serve two)
    for r in range(args.rounds):
        if deadline is not None and r >= 1 and time.perf_counter() > deadline:
            print(f"--max-minutes reached: stopping after {r} rounds", flush=True)
            break
        if args.restart_every and r and r % args.restart_every == 0 and runners:
            Runner.restart(runners)  # a process's own speed (layout, allocator) averages out over restarts
        order = groups if r % 2 == 0 else [list(reversed(g)) for g in reversed(groups)]
        round_times: dict[str, float] = {}
        round_ratios: dict[str, float] = {}
        floors = [floor_step()]
        for group in order:
            if deadline is not None and time.perf_counter() > deadline:
                break  # a partial round: the groups done are paired with their own floor steps
            group_times = run(group)
            floors.append(floor_step())
            reference = (floors[-2] + floors[-1]) / 2
            for name, value in group_times.items():
                round_times[name] = value
                round_ratios[name] = value / reference
        round_times[FLOOR] = statistics.median(floors)
        round_ratios[FLOOR] = 1.0
        times.append(round_times)
        ratios.append(round_ratios)
        round_times["_loadavg"] = os.getloadavg()[0]
        print(f"round {r + 1}/{args.rounds} ({len(round_ratios) - 1} configurations, load average "
              f"{round_times['_loadavg']:.1f}): floor {round_times[FLOOR]:.3f}s; "
              + ", ".join(f"{n} {round_ratios[n]:.2f}x" for n in round_ratios if n != FLOOR), flush=True)
        on_round({"times": times, "ratios": ratios})
    return {"times": times, "ratios": ratios}


def memory_probe(args: argparse.Namespace) -> None:
    """`--memory-probe`: in a fresh process (MALLOC_ENV set), the peak RSS delta of each local configuration."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = set(json.loads(args.memory_probe))
    model_id = args.model
    where = placement_of(args)
    inputs = make_inputs(args.batch, args.seq, load_backbone_config(model_id).vocab_size)
    tiny = {k: v[:2, :16] if v.dim() == 2 else v[:2] for k, v in inputs.items()}
    build_hf_mtl(model_id, tiny, {FLOOR}, where)[FLOOR]()[0].run(1)  # the process's one-time initialisations
    factories = build_local(model_id, inputs, names, where)
    for key in sorted(factories, key=lambda k: k.endswith("@nodrop")):  # the no-dropout variants last
        benches = factories[key]()
        for bench in benches:
            if bench.name in names:
                if where.device.startswith("cuda"):
                    mib = peak_cuda_delta_mib(bench, steps=1)
                else:
                    mib = peak_rss_delta_mib(bench, steps=1, warmup=0)
                print(PROTOCOL + json.dumps({"config": bench.name, "mib": mib, "gflop": step_gflop(bench)}), flush=True)
        del benches, bench
        gc.collect()
    print(PROTOCOL + json.dumps({"done": True}), flush=True)


def local_memory(args: argparse.Namespace, names: list[str], on_result: Callable[[str, dict], None]) -> None:
    _probe([sys.executable, str(Path(__file__).resolve()), "--memory-probe", json.dumps(names), "--model", args.model,
            "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads), "--device", args.device]
           + (["--bf16"] if args.bf16 else []), on_result)


# ---------------------------------------------------------------------------------------------- quality
QUALITY_VARIANTS = ((None, True), (None, False), (0.0, True))  # (backbone_dropout, fast_dropout); None: the model's own
def quality(args: argparse.Namespace, part: Path | None = None) -> dict[str, Any] | str:
    """Dev accuracy of a Pfeiffer bottleneck trained on an SST-2 slice: backbone dropout with the fast masks,
    with torch's masks (`fast_dropout=False`), and without dropout."""
    folder = Path(args.data_dir) / "glue_sst2"
    if not (folder / "train.tsv").exists():
        message = f"skipped: {folder}/train.tsv not found (the quality check needs ../shared/data/glue_sst2)"
        print(f"quality: {message}", flush=True)
        return message

    def read(path: Path) -> tuple[list[str], list[int]]:
        rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
        return [r[0] for r in rows], [int(r[1]) for r in rows]

    train_texts, train_labels = read(folder / "train.tsv")
    dev_texts, dev_labels = read(folder / "dev.tsv")
    pick = torch.randperm(len(train_texts), generator=torch.Generator().manual_seed(0))[: args.quality_examples].tolist()
    train_texts, train_labels = [train_texts[i] for i in pick], [train_labels[i] for i in pick]
    tokenizer = load_tokenizer(args.model)
    task = Task("sst2", labels=["0", "1"])
    setup = {"method": "bottleneck/pfeiffer", "train_examples": args.quality_examples, "steps": args.quality_steps,
             "batch": args.quality_batch, "lr": args.quality_lr, "seeds": args.quality_seeds,
             "dev_examples": len(dev_texts), "max_length": 64, "threads": args.threads}
    runs = []
    for seed in range(args.quality_seeds):
        for dropout, fast in QUALITY_VARIANTS:
            torch.manual_seed(seed)
            model = MultiTaskModel.from_backbone(args.model, [task], adapter_method="bottleneck",
                                                 adapter_config={"variant": "pfeiffer"}, backbone_dropout=dropout,
                                                 tokenizer=tokenizer, fast_dropout=fast)
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.quality_lr)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / 20, 1.0) * (1 - s / args.quality_steps))
            g = torch.Generator().manual_seed(seed)
            model.train()
            start = time.perf_counter()
            for step in range(args.quality_steps):
                rows = torch.randint(len(train_texts), (args.quality_batch,), generator=g).tolist()
                enc = tokenizer([train_texts[i] for i in rows], truncation=True, max_length=64, padding=True, return_tensors="pt")
                loss = model(**enc, labels=torch.tensor([train_labels[i] for i in rows]), task="sst2").loss
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            train_s = time.perf_counter() - start
            model.eval()
            correct = 0
            with torch.no_grad():
                for i in range(0, len(dev_texts), 64):
                    enc = tokenizer(dev_texts[i:i + 64], truncation=True, max_length=128, padding=True, return_tensors="pt")
                    correct += (model(**enc, task="sst2").logits.argmax(-1) == torch.tensor(dev_labels[i:i + 64])).sum().item()
            run = {"seed": seed, "backbone_dropout": 0.1 if dropout is None else dropout, "fast_dropout": fast,
                   "dev_accuracy": correct / len(dev_texts), "train_seconds": train_s}
            runs.append(run)
            if part is not None:  # partial results survive an interrupted run
                part.write_text(json.dumps({"runs": runs, "setup": setup, "partial": True}, indent=2))
            print(f"quality: seed {seed}, backbone dropout {quality_variant(run)}: dev accuracy "
                  f"{run['dev_accuracy']:.4f}, {train_s:.1f}s for {args.quality_steps} steps", flush=True)
            del model, optimizer
    return summarize_quality(runs, setup)


def quality_variant(run: dict[str, Any]) -> str:
    """"0.1", "0.1 (torch masks)" or "0.0": the backbone dropout, and whose masks it drew."""
    torch_masks = run["backbone_dropout"] > 0 and not run.get("fast_dropout", True)
    return f"{run['backbone_dropout']}" + (" (torch masks)" if torch_masks else "")


def summarize_quality(runs: list[dict[str, Any]], setup: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    summary = {}
    for variant in dict.fromkeys(quality_variant(r) for r in runs):
        accs = [r["dev_accuracy"] for r in runs if quality_variant(r) == variant]
        secs = [r["train_seconds"] for r in runs if quality_variant(r) == variant]
        if accs:
            summary[variant] = {"dev_accuracy_mean": statistics.mean(accs), "dev_accuracy_min": min(accs),
                               "dev_accuracy_max": max(accs), "train_seconds_median": statistics.median(secs),
                               "seeds": len(accs)}
    return {"setup": setup, "runs": runs, "summary": summary, "partial": partial}


# ---------------------------------------------------------------------------------------------- report
def _ratios(rounds: list[dict[str, float]], a: str, b: str) -> list[float]:
    """rounds[r][a] / rounds[r][b] for every round that has both."""
    return [r[a] / r[b] for r in rounds if a in r and b in r]


def paired(rounds: list[dict[str, float]], a: str, b: str) -> float | None:
    """Median over rounds of rounds[r][a] / rounds[r][b] (None when either is missing)."""
    values = _ratios(rounds, a, b)
    return statistics.median(values) if values else None


def paired_ci(rounds: list[dict[str, float]], a: str, b: str, level: float = 0.90,
              resamples: int = 2000) -> tuple[float, float] | None:
    """Bootstrap `level` interval of `paired(rounds, a, b)`: rounds resampled with replacement (seeded)."""
    import random

    values = _ratios(rounds, a, b)
    if len(values) < 3:
        return None
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1 - tail) * resamples))]


def verdict(value: float, ci: tuple[float, float] | None, goal: float) -> str:
    """'yes' / 'NO' when the whole interval is on one side of the goal, else which side the median is on."""
    if ci is None:
        return "yes" if value <= goal else "NO"
    if ci[1] <= goal:
        return "yes"
    if ci[0] > goal:
        return "NO"
    return f"within noise ({'median meets it' if value <= goal else 'median misses it'})"


def split_name(name: str) -> tuple[str, str, bool, bool]:
    """'hf_mtl/bottleneck/pfeiffer/mixed@nodrop' -> ('hf_mtl', 'bottleneck/pfeiffer', mixed, nodrop)."""
    nodrop = name.endswith("@nodrop")
    name = name.removesuffix("@nodrop")
    mixed = name.endswith("/mixed")
    name = name.removesuffix("/mixed")
    library, method = name.split("/", 1)
    return library, method, mixed, nodrop


COUNTERPARTS = {"lora": ["peft/lora", "adapterhub/lora"], "prefix_tuning": ["peft/prefix_tuning", "adapterhub/prefix_tuning"],
                "bottleneck/pfeiffer": ["adapterhub/bottleneck/pfeiffer"], "bottleneck/houlsby": ["adapterhub/bottleneck/houlsby"],
                "bottleneck/parallel": ["adapterhub/bottleneck/parallel"], "madx": ["adapterhub/madx"]}


def summarize(measured: dict, params: dict[str, dict], memory: dict[str, float],
              gflop: dict[str, float] | None = None) -> list[dict[str, Any]]:
    gflop = gflop or {}
    times, ratios = measured["times"], measured["ratios"]
    names = [n for n in dict.fromkeys(n for r in times for n in r) if not n.startswith("_")]
    rows = []
    for name in names:
        library, method, mixed, nodrop = split_name(name)
        if mixed:
            continue
        floor_ref = "hf_mtl/floor@nodrop" if nodrop else FLOOR
        own_floor = "adapterhub/floor" if library == "adapterhub" else floor_ref
        row = {
            "config": name, "method": method, "library": library, "backbone_dropout": 0.0 if nodrop else 0.1,
            "floor_ref": floor_ref,
            "step_s": statistics.median(r[name] for r in times if name in r),
            "ratio_floor": paired(ratios, name, floor_ref) if name != floor_ref else 1.0,
            "ratio_own_floor": paired(ratios, name, own_floor) if name != own_floor else 1.0,
            "ratio_full_ft": paired(ratios, name, "hf_mtl/full_ft"),
            "peak_mib": memory.get(name),
            "gflop": gflop.get(name),
            "flops_floor": gflop[name] / gflop[floor_ref] if name in gflop and floor_ref in gflop else None,
            "trainable_per_task": params.get(name, {}).get("trainable_per_task"),
            "shared_trainable": params.get(name, {}).get("shared_trainable", 0),
            "mixed_ratio": paired(times, name.removesuffix("@nodrop") + "/mixed", name) if not nodrop else None,
            "mixed_peak_mib": memory.get(name + "/mixed"),
            "vs_with_dropout": paired(times, name, name.removesuffix("@nodrop")) if nodrop else None,
        }
        if library == "hf_mtl" and not nodrop and method in COUNTERPARTS:
            row["vs_counterparts"] = {c: paired(times, name, c) for c in COUNTERPARTS[method] if c in names}
        rows.append(row)
    return rows


def goal_checks(rows: list[dict[str, Any]], measured: dict | None = None) -> list[dict[str, Any]]:
    """Each goal of the issues, with a bootstrap 90% interval of the paired median when `measured` is given."""
    checks = []
    for row in rows:
        if row["library"] != "hf_mtl" or row["method"] in REFERENCE_METHODS:
            continue
        tag = f"hf_mtl/{row['method']}" + (" (backbone_dropout=0)" if row["backbone_dropout"] == 0.0 else "")
        goal = FLOOR_GOALS.get(HF_METHODS[row["method"]][0], DEFAULT_FLOOR_GOAL)
        if row["ratio_floor"] is not None:
            checks.append(_check(f"{tag} / floor", row["ratio_floor"], goal, measured, "ratios", row["config"],
                                 row["floor_ref"]))
        if row["backbone_dropout"] == 0.1:
            for c, v in (row.get("vs_counterparts") or {}).items():
                if v is not None:
                    checks.append(_check(f"{tag} / {c}", v, 1.0, measured, "times", row["config"], c))
            if row["mixed_ratio"] is not None:
                checks.append(_check(f"{tag}: 4-task batch / 1-task batch", row["mixed_ratio"], MIXED_GOAL, measured,
                                     "times", row["config"] + "/mixed", row["config"]))
    return checks


def _check(name: str, value: float, goal: float, measured: dict | None, kind: str, a: str, b: str) -> dict[str, Any]:
    ci = paired_ci(measured[kind], a, b) if measured else None
    return {"check": name, "value": value, "goal": f"<= {goal:.2f}", "met": value <= goal, "ci90": ci,
            "verdict": verdict(value, ci, goal)}


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    gpu = a.get("device", "cpu") != "cpu"
    memory = ("GPU allocator peak (torch.cuda.max_memory_allocated) of a configuration's first training step above "
              "what was allocated before it (AdamW's state, activations, gradients), in a probe process"
              if gpu else
              "RSS high-water mark (/proc VmHWM) of a configuration's first training step above the RSS "
              "before it (AdamW's state, activations, gradients), in a probe process with the malloc mmap threshold fixed "
              "and one tiny warm-up step for the process")
    lines = [f"all-MiniLM-L6-v2, batch {a['batch']} x {a['seq']} tokens, "
             + (f"{result.get('device')}, " if gpu else f"{a['threads']} threads, ")
             + f"{result['rounds_done']} interleaved rounds x {a['steps']} step(s); step = forward + backward + AdamW step. "
             + ("Each library's configurations ran in a process of their own (hf_mtl's and PEFT's in runner processes of this "
                "venv, AdapterHub's in its venv), one process computing at a time"
                + (f", every process started anew every {a['restart_every']} rounds. " if a.get("restart_every") else ". ")
                if result.get("local_in", "main") == "runner" else
                "hf_mtl's and PEFT's configurations ran in the main process (which holds all their models), AdapterHub's "
                "in its runner process. ")
             + f"Ratios are paired medians over rounds (each configuration against the floor steps around its group). "
             + ("hf_mtl's models (the floor and full FT included) draw the backbone's dropout masks the fast way on the CPU "
                "(`fast_dropout`, the default; `floor_torch_dropout` is the floor with torch's masks); PEFT's and "
                "AdapterHub's use torch's. " if not gpu else "")
             + ("Every timing process kept freed memory for the next step (malloc thresholds of MultiTaskTrainer on the "
                "CPU, `--malloc keep`). " if not gpu and a.get("malloc") == "keep" else "")
             + f"Peak memory: {memory}. Load average over the timed rounds: "
             f"{result.get('loadavg_rounds', '-')} on {result['machine']['cpus']} CPUs.", "",
             "FLOPs x floor: the matmul and attention work of one step (forward + backward) over the floor's, counted by "
             "torch.utils.flop_counter in the probe process: deterministic, it is what the arithmetic alone would cost "
             "(elementwise work such as dropout is not counted).", "",
             "| method | library | backbone dropout | step time (s) | x floor | FLOPs x floor | x own library's floor | x full FT | "
             f"peak memory (MiB {'GPU' if gpu else 'RSS'}) | trainable params per task (+ shared) | mixed 4-task / 1-task |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        params = fmt(row["trainable_per_task"]) + (f" (+ {row['shared_trainable']:,})" if row.get("shared_trainable") else "")
        lines.append(f"| {row['method']} | {row['library']} | {row['backbone_dropout']} | {fmt(row['step_s'], 3)} | "
                     f"{fmt(row['ratio_floor'], 3)} | {fmt(row.get('flops_floor'), 3)} | {fmt(row['ratio_own_floor'], 3)} | "
                     f"{fmt(row['ratio_full_ft'], 3)} | "
                     f"{fmt(row['peak_mib'], 0)} | {params} | {fmt(row['mixed_ratio'], 3)} |")
    if result.get("peft_prefix_tuning", "runs") != "runs":
        lines.append(f"| prefix_tuning | peft | 0.1 | {result['peft_prefix_tuning']} | | | | | | | |")
    lines += ["", "Goal checks: the paired median, its bootstrap 90% interval over rounds, and the verdict: `yes` / `NO` "
                  "when the whole interval is on one side of the goal, `within noise` when the interval straddles it.", "",
              "| goal check | value | 90% interval | goal | met |", "|---|---|---|---|---|"]
    for check in result["goal_checks"]:
        ci = check.get("ci90")
        interval = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
        met = check.get("verdict") or ("yes" if check["met"] else "NO")
        lines.append(f"| {check['check']} | {check['value']:.3f} | {interval} | {check['goal']} | {met} |")
    q = result.get("quality")
    if isinstance(q, dict):
        s = q["setup"]
        lines += ["", f"Backbone dropout, quality: {s.get('method')} on {s.get('train_examples', 0):,} SST-2 training examples, "
                      f"{s.get('steps')} steps of {s.get('batch')}, lr {s.get('lr')}, {s.get('threads')} thread(s); dev accuracy on "
                      f"{s.get('dev_examples')}" + (" (interrupted: the seeds that finished)" if q.get("partial") else "") + ".", "",
                  "| backbone dropout | seeds | dev accuracy (mean) | min | max | train time (s, median; shared machine) |",
                  "|---|---|---|---|---|---|"]
        for d, v in q["summary"].items():
            lines.append(f"| {d} | {v['seeds']} | {v['dev_accuracy_mean']:.4f} | {v['dev_accuracy_min']:.4f} | "
                         f"{v['dev_accuracy_max']:.4f} | {v['train_seconds_median']:.1f} |")
    elif q:
        lines += ["", f"Backbone dropout, quality: {q}"]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [r["method"] for r in rows if r["library"] == "hf_mtl" and r["backbone_dropout"] == 0.1 and r["method"] != "floor"]
    methods += [m for m in dict.fromkeys(r["method"] for r in rows) if m not in methods and m != "floor"]
    series = [("hf_mtl", 0.1, "hf_mtl"), ("hf_mtl", 0.0, "hf_mtl, backbone_dropout=0 (x its floor)"),
              ("peft", 0.1, "PEFT"), ("adapterhub", 0.1, "AdapterHub (x hf_mtl floor)")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, len(methods) * 0.9), 4.5))
    for i, (library, dropout, label) in enumerate(series):
        xs, ys = [], []
        for j, method in enumerate(methods):
            row = next((r for r in rows if r["library"] == library and r["method"] == method and r["backbone_dropout"] == dropout), None)
            if row and row["ratio_floor"] is not None:
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                ys.append(row["ratio_floor"])
        ax.bar(xs, ys, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(DEFAULT_FLOOR_GOAL, color="red", linestyle="--", linewidth=0.8, label="goal 1.05x floor")
    ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right")
    ax.set_ylabel("train step time / floor (paired median)")
    ax.set_ylim(0.8, max(1.3, max((r["ratio_floor"] or 0) for r in rows) + 0.05))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1, help="measured steps per configuration per round (their median)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, batch 8 x 32, 20 quality steps")
    parser.add_argument("--only", nargs="*", help="keep the configurations whose name contains one of these strings")
    parser.add_argument("--skip", nargs="*", help="drop the configurations whose name contains one of these strings")
    parser.add_argument("--no-adapterhub", dest="adapterhub", action="store_false")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:N]: time the local configurations on that GPU "
                        "(AdapterHub's runner is CPU-only: use --no-adapterhub)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast of the forward (float32 weights and optimizer)")
    parser.add_argument("--phases", default="timing,memory,quality",
                        help="comma-separated subset of timing,memory,quality; each writes <output>_<phase>.json and every "
                             "run ends by assembling the parts that exist into <output>.json/.md/.png ('report' alone: only that)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed steps per configuration before the rounds (the floor always gets one; a "
                             "configuration's first step differs only by creating AdamW's state)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop starting new timing rounds after this many minutes (setup included)")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--quality-examples", type=int, default=2000)
    parser.add_argument("--quality-steps", type=int, default=200)
    parser.add_argument("--quality-batch", type=int, default=16)
    parser.add_argument("--quality-lr", type=float, default=1e-3)
    parser.add_argument("--quality-seeds", type=int, default=3)
    parser.add_argument("--output", default=None, help="results prefix (default benchmarks/results/adapters_speed[_quick])")
    parser.add_argument("--local-in", choices=["runner", "main"], default="runner",
                        help="where hf_mtl's and PEFT's configurations are timed: 'runner' (default), a process per "
                             "library holding only that library's models, as AdapterHub's runner does; 'main': this "
                             "process, which holds every local model (up to 4%% slower per step on a 2-core VM, "
                             "benchmarks/process_control.py)")
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="on the CPU, every timing process (all three libraries) keeps freed memory for the next step, "
                             "as MultiTaskTrainer does (hf_mtl.ops.cpu_memory); `default`: glibc's own thresholds")
    parser.add_argument("--restart-every", type=int, default=5,
                        help="start every runner process anew after this many rounds (0: never). Two processes timing "
                             "the same step differ by 1-3%% for as long as they live (benchmarks/process_placebo.py), "
                             "which restarts average out; with --local-in main only AdapterHub's runner restarts")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device != "cpu" and args.adapterhub and not (args.memory_probe or args.serve):
        parser.error("AdapterHub's runner times on the CPU only: add --no-adapterhub with --device " + args.device)
    if args.quick:
        args.rounds, args.batch, args.seq = 2, 8, 32
        args.quality_examples, args.quality_steps, args.quality_seeds = 200, 20, 1
    return args


def timing_phase(args: argparse.Namespace, groups: list[list[str]], part: Path) -> None:
    """Build every configuration, warm each up, then run the interleaved rounds; saves `part` after each round."""
    import peft
    import transformers

    inputs = make_inputs(args.batch, args.seq, load_backbone_config(args.model).vocab_size)
    where = placement_of(args)
    peft_prefix = peft_prefix_tuning_status(args.model, inputs)
    if peft_prefix != "runs":  # reported in the table instead of timed
        groups = [[n for n in g if n != "peft/prefix_tuning"] for g in groups]
    names = [n for g in groups for n in g]
    timing: dict[str, Any] = {
        "args": vars(args), "groups": groups, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                          "loadavg_start": os.getloadavg()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "device": where.describe(),
    }
    start = time.perf_counter()
    timing["peft_prefix_tuning"] = peft_prefix
    timing["params"], timing["attn_implementation"] = {}, {}
    timing["local_in"] = args.local_in
    sources: dict[str, Runner | InlineSource] = {}
    benches = None

    def started(library: str, source: Runner | InlineSource) -> None:
        sources[library] = source
        for n, c in getattr(source, "info", {}).get("configs", {}).items():
            timing["params"][n] = {"trainable_per_task": c["trainable_per_task"], "shared_trainable": c.get("shared_trainable", 0)}
            timing["attn_implementation"][n] = c.get("attn_implementation")

    try:
        if args.local_in == "runner":  # one process per library, each holding only its own models
            for library in ("hf_mtl", "peft"):
                local = [n for n in names + ([FLOOR] if library == "hf_mtl" else []) if library_of(n) == library]
                if local:
                    started(library, start_local(list(dict.fromkeys(local)), args))
        else:
            if runner_env(args):  # this process times hf_mtl's and PEFT's steps: the runners' malloc settings
                cpu_memory.keep_freed_memory()
            benches = LazyBenches(build_local(args.model, inputs, set(names), where), args.warmup)
            benches[FLOOR].run(1)  # the process's one-time initialisations, before the first measured step
            started("hf_mtl", InlineSource(benches))
            started("peft", sources["hf_mtl"])
        if args.adapterhub:
            started("adapterhub", start_adapterhub(ensure_venv(), resolve_model_path(args.model), args))
            timing["versions"]["adapterhub"] = sources["adapterhub"].info["versions"]
        timing["setup_seconds"] = time.perf_counter() - start
        print(f"ready in {timing['setup_seconds']:.0f}s: " + ", ".join(
            f"{library} {'in a runner process' if isinstance(source, Runner) else 'in this process (built at first use)'}"
            for library, source in sources.items()) + f"; PEFT prefix tuning: {timing['peft_prefix_tuning']}", flush=True)

        def save(measured: dict) -> None:
            for n, b in (benches.built.items() if benches is not None else ()):
                timing["params"][n] = {"trainable_per_task": b.trainable_per_task, "shared_trainable": b.shared_trainable}
                timing["attn_implementation"][n] = b.info.get("attn_implementation")
            timing["per_round"] = measured
            timing["timing_seconds"] = time.perf_counter() - start
            timing["machine"]["loadavg_end"] = os.getloadavg()
            part.write_text(json.dumps(timing, indent=2))

        time_rounds(args, sources, groups, save, deadline=start + args.max_minutes * 60 if args.max_minutes else None)
    finally:
        for source in set(sources.values()):
            if isinstance(source, Runner):
                source.close()


def memory_phase(args: argparse.Namespace, groups: list[list[str]], part: Path) -> None:
    names = [n for g in groups for n in g]
    if "peft/prefix_tuning" in names:
        tiny = make_inputs(2, 16, load_backbone_config(args.model).vocab_size)
        if peft_prefix_tuning_status(args.model, tiny) != "runs":
            names.remove("peft/prefix_tuning")
    local = [n for n in names + [FLOOR] if not n.startswith("adapterhub/")]
    memory: dict[str, float] = {}
    gflop: dict[str, float] = {}
    lock = threading.Lock()

    def record(config: str, answer: dict) -> None:  # written after each configuration
        with lock:
            memory[config] = answer["mib"]
            if answer.get("gflop") is not None:
                gflop[config] = answer["gflop"]
            part.write_text(json.dumps({"peak_rss_delta_mib": memory, "gflop": gflop, "loadavg": os.getloadavg()},
                                       indent=2))
            print(f"memory: {config}: {answer['mib']:.0f} MiB, {answer.get('gflop') or 0:.1f} GFLOP", flush=True)

    probes = [threading.Thread(target=local_memory, args=(args, local, record))]
    if args.adapterhub:  # the two probe processes run side by side: memory does not need a quiet machine
        probes.append(threading.Thread(target=adapterhub_memory, args=(ensure_venv(), resolve_model_path(args.model), args, record)))
    for probe in probes:
        probe.start()
    for probe in probes:
        probe.join()


def report(prefix: Path) -> None:
    """Assemble the parts that exist into `<prefix>.json`, `.md` and `.png`."""
    parts = {p: prefix.with_name(f"{prefix.name}_{p}.json") for p in ("timing", "memory", "quality")}
    if not parts["timing"].exists():
        print(f"no {parts['timing']} yet: nothing to report")
        return
    result = json.loads(parts["timing"].read_text())
    memory_part = json.loads(parts["memory"].read_text()) if parts["memory"].exists() else {}
    memory, gflop = memory_part.get("peak_rss_delta_mib", {}), memory_part.get("gflop", {})
    result["quality"] = json.loads(parts["quality"].read_text()) if parts["quality"].exists() else None
    if isinstance(result["quality"], dict) and result["quality"].get("partial"):  # an interrupted quality phase
        a = result["args"]  # a quality part written before `setup` was saved with it: the defaults it ran with
        setup = result["quality"].get("setup") or {"method": "bottleneck/pfeiffer", "train_examples": a["quality_examples"],
                                                   "steps": a["quality_steps"], "batch": a["quality_batch"], "lr": a["quality_lr"]}
        result["quality"] = summarize_quality(result["quality"]["runs"], setup, partial=True)
    measured = result["per_round"]
    result["rounds_done"] = len(measured["times"])
    loads = [r["_loadavg"] for r in measured["times"] if "_loadavg" in r]
    result["loadavg_rounds"] = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
    result["rows"] = summarize(measured, result["params"], memory, gflop)
    result["goal_checks"] = goal_checks(result["rows"], measured)
    prefix.with_suffix(".json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    print("\n" + table)
    prefix.with_suffix(".md").write_text(table + "\n")
    a = result["args"]
    where = result.get("device") if a.get("device", "cpu") != "cpu" else f"{a['threads']} threads"
    plot(result["rows"], prefix.with_suffix(".png"),
         f"Train step / floor, all-MiniLM-L6-v2, {a['batch']}x{a['seq']}, {where}, {result['rounds_done']} rounds")
    print(f"\nwrote {prefix.with_suffix('.json')}, {prefix.with_suffix('.md')}, {prefix.with_suffix('.png')}")


def main() -> None:
    args = parse_args()
    if args.memory_probe:
        return memory_probe(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.serve:
        return serve_local(args)
    prefix = Path(args.output) if args.output else RESULTS / ("adapters_speed_quick" if args.quick else "adapters_speed")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    groups = wanted_configs(args)
    phases = args.phases.split(",")
    part = lambda phase: prefix.with_name(f"{prefix.name}_{phase}.json")  # noqa: E731
    if "timing" in phases:
        timing_phase(args, groups, part("timing"))
    if "memory" in phases:
        memory_phase(args, groups, part("memory"))
    if "quality" in phases:
        part("quality").write_text(json.dumps(quality(args, part("quality")), indent=2))
    report(prefix)


if __name__ == "__main__":
    main()
