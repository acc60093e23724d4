"""The AdapterHub half of `adapters_speed.py`: runs inside its own venv (adapters 1.3 pins transformers 4.57).

This file imports neither hf_mtl, nor transformers at module level, nor the rest of the `benchmarks` package (it
runs as a file in AdapterHub's venv), so the package imports its shared pieces from here (the batch, the timed
training step, the peak-memory probe): both processes time exactly the same step on exactly the same tensors.

Two modes, both started by `adapters_speed.py`:

    python benchmarks/adapterhub_runner.py --serve  --model PATH --batch 32 --seq 128 --threads 2
    python benchmarks/adapterhub_runner.py --memory --model PATH --batch 32 --seq 128 --threads 2

`--serve` builds every configuration, warms each up with one step, prints one protocol line
(`@@JSON {...}`: versions, attention implementation, trainable parameters) and then answers commands
read from stdin, one JSON object per line: `{"cmd": "run", "configs": [...], "steps": k}` runs those
configurations k steps each and answers their step times, so the parent can interleave these steps
with its own (only one process computes at a time). `{"cmd": "quit"}` ends it.
`--memory` builds each configuration in turn and answers its peak RSS delta over its first training step and
the GFLOP of a second one (`step_gflop`),
one protocol line per configuration, then `{"done": true}`.
Only protocol lines start with `@@JSON`; libraries may print anything else.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


PROTOCOL = "@@JSON "
NUM_TASKS = 4
LR = 1e-4


# ---------------------------------------------------------------------------------------------- shared
def make_inputs(batch: int, seq: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The benchmark batch: random token ids (B, L), the second half of the rows padded over their
    last quarter (so masks matter), binary labels (B,). Same seed, same torch -> same tensors in both venvs."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(min(1000, vocab_size // 2), vocab_size, (batch, seq), generator=g)
    input_ids[:, 0] = 101 if vocab_size > 101 else 2  # [CLS] of BERT (of the tests' tiny tokenizer)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    attention_mask[batch // 2:, seq * 3 // 4:] = 0
    labels = torch.randint(0, 2, (batch,), generator=g)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@dataclass
class Bench:
    """One configuration to time: a loss closure over a fixed batch and the optimizer of its trainable weights.

    `step()` is what every row of the table times: forward, backward, AdamW step, zero_grad.
    `activate` runs (untimed) before a configuration's steps when it shares a model with another one.
    """

    name: str
    loss_fn: Callable[[], torch.Tensor]
    params: list[torch.nn.Parameter]
    trainable_per_task: int
    shared_trainable: int = 0
    activate: Callable[[], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    optimizer: torch.optim.Optimizer | None = None
    device: str = "cpu"  # on a GPU the step is timed between two synchronizations (kernels run asynchronously)

    def __post_init__(self) -> None:
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.params, lr=LR)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def step(self) -> float:
        self._sync()
        start = time.perf_counter()
        loss = self.loss_fn()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._sync()
        return time.perf_counter() - start

    def run(self, steps: int) -> list[float]:
        if self.activate is not None:
            self.activate()
        return [self.step() for _ in range(steps)]


def rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def peak_rss_delta_mib(bench: Bench, steps: int = 1, warmup: int = 1) -> float:
    """Peak resident memory of `steps` training steps above the resident memory before them (MiB).

    `warmup` steps run first and are not measured: they create AdamW's state (2 x the trainable
    weights, which then sit in the baseline) and the process's lazily allocated buffers.
    The kernel's high-water mark (VmHWM) is reset to the current RSS through /proc/self/clear_refs, so
    the probe can measure configurations one after another in one process. The probe process runs with
    MALLOC_MMAP_THRESHOLD_ fixed (set by the parent), so freed tensors go back to the OS and the next
    configuration's peak is not hidden by memory the allocator kept. What is measured: the activations
    kept for backward, the gradients and the optimizer's temporaries.
    """
    gc.collect()
    if bench.activate is not None:
        bench.activate()
    for _ in range(warmup):
        bench.step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = rss_kib("VmRSS")
    for _ in range(steps):
        bench.step()
    return (rss_kib("VmHWM") - before) / 1024


def step_gflop(bench: Bench) -> float:
    """The matmul and attention work of one training step (forward + backward), in GFLOP, counted by
    `torch.utils.flop_counter` (deterministic: what the arithmetic alone would cost, where timings are noisy).

    Elementwise work (dropout, softmax, layer norm, activations) is not counted. PyTorch's counter has no
    formula for the CPU's flash attention kernels (PALs' projected attention runs there); they get the
    formula of the GPU's scaled-dot-product attention.
    """
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = forward
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward
    if bench.activate is not None:
        bench.activate()
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        bench.step()
    return counter.get_total_flops() / 1e9


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(obj) + "\n")
    sys.stdout.flush()


def answer_commands(benches: Any) -> None:
    """The serving loop: time the configurations `benches[name]` the parent asks for, until it says quit."""
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        if command["cmd"] == "run":
            emit({"times": {name: benches[name].run(command["steps"]) for name in command["configs"]}})


def count(params) -> int:
    return sum(p.numel() for p in params)


# ---------------------------------------------------------------------------------------------- AdapterHub
def adapterhub_versions() -> dict[str, str]:
    import transformers

    import adapters

    return {"adapters": adapters.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


def _model(path: str, heads: list[str]):
    from adapters import AutoAdapterModel

    model = AutoAdapterModel.from_pretrained(path)
    for head in heads:
        # layers=2: dropout, dense H->H, tanh, dropout, out H->2 on the [CLS] vector, as hf_mtl's head
        model.add_classification_head(head, num_labels=2, layers=2, activation_function="tanh")
    return model.train()


def _trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _head_params(model, head: str) -> int:
    return count(model.heads[head].parameters())


def build_adapterhub(path: str, inputs: dict[str, torch.Tensor]) -> dict[str, Callable[[], Bench]]:
    """Factories of AdapterHub's configurations (built lazily so the memory probe holds one at a time).

    Configurations match hf_mtl's defaults: Pfeiffer = SeqBnConfig (r = H/16, relu), Houlsby =
    DoubleSeqBnConfig (H/16, swish), parallel = ParBnConfig (H/2, scaling 4), prefix tuning with 20
    flat (not reparameterized) prefixes = hf_mtl's default, LoRA r=8 alpha=8 on query and value =
    PEFT's and hf_mtl's default; MAD-X = Stack(language SeqBnInv r=H/2, task SeqBn r=H/16) with the
    language adapter frozen.
    """
    from adapters.composition import BatchSplit, Stack

    import adapters
    from adapters import DoubleSeqBnConfig, LoRAConfig, ParBnConfig, PrefixTuningConfig, SeqBnConfig, SeqBnInvConfig

    tasks = [f"t{i}" for i in range(NUM_TASKS)]
    labels = inputs["labels"]
    x = {k: v for k, v in inputs.items() if k != "labels"}

    def loss_of(model) -> Callable[[], torch.Tensor]:
        return lambda: model(**x, labels=labels).loss

    def floor() -> Bench:
        model = _model(path, ["t0"])
        model.base_model.requires_grad_(False)
        # the backward must run through every frozen layer, as it does for any adapter
        model.base_model.embeddings.register_forward_hook(lambda m, a, out: out.requires_grad_(True))
        model.active_head = "t0"
        return Bench("adapterhub/floor", loss_of(model), _trainable(model), _head_params(model, "t0"),
                     info={"attn_implementation": model.config._attn_implementation})

    def single(name: str, config_fn: Callable[[], Any]) -> Callable[[], Bench]:
        def build() -> Bench:
            model = _model(path, ["t0"])
            model.add_adapter("t0", config=config_fn())
            model.train_adapter("t0")
            model.active_head = "t0"
            adapter = count(p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads."))
            return Bench(name, loss_of(model), _trainable(model), adapter + _head_params(model, "t0"))
        return build

    def seq_bn_four() -> tuple[Any, Callable[[], Bench], Callable[[], Bench]]:
        """Four SeqBn task adapters and heads in one model: single-task batches and BatchSplit batches."""
        model = _model(path, tasks)
        for t in tasks:
            model.add_adapter(t, config=SeqBnConfig())
        split = BatchSplit(*tasks, batch_sizes=[x["input_ids"].shape[0] // NUM_TASKS] * NUM_TASKS)

        def single_task() -> None:
            model.train_adapter("t0")
            model.active_head = "t0"

        def mixed() -> None:
            model.train_adapter(split)
            model.active_head = split

        model.train_adapter(tasks)  # every adapter trainable so the optimizer holds all of them
        params = _trainable(model)
        per_task = count(p for n, p in model.named_parameters() if ".t0." in n and "heads." not in n) + _head_params(model, "t0")
        optimizer = torch.optim.AdamW(params, lr=LR)
        a = Bench("adapterhub/bottleneck/pfeiffer", loss_of(model), params, per_task, activate=single_task, optimizer=optimizer)
        b = Bench("adapterhub/bottleneck/pfeiffer/mixed", loss_of(model), params, per_task, activate=mixed, optimizer=optimizer)
        return model, a, b

    def madx() -> Bench:
        model = _model(path, ["t0"])
        model.add_adapter("en", config=SeqBnInvConfig(reduction_factor=2))
        model.add_adapter("t0", config=SeqBnConfig())
        model.train_adapter("t0")  # the language adapter stays frozen, as in MAD-X's task training
        model.active_adapters = Stack("en", "t0")
        model.active_head = "t0"
        adapter = count(p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads."))
        return Bench("adapterhub/madx", loss_of(model), _trainable(model), adapter + _head_params(model, "t0"))

    del adapters
    return {
        "adapterhub/floor": floor,
        "adapterhub/bottleneck/pfeiffer+mixed": seq_bn_four,  # builds two configurations sharing one model
        "adapterhub/bottleneck/houlsby": single("adapterhub/bottleneck/houlsby", DoubleSeqBnConfig),
        "adapterhub/bottleneck/parallel": single("adapterhub/bottleneck/parallel", ParBnConfig),
        "adapterhub/prefix_tuning": single("adapterhub/prefix_tuning", lambda: PrefixTuningConfig(prefix_length=20, flat=True)),
        "adapterhub/lora": single("adapterhub/lora", lambda: LoRAConfig(r=8, alpha=8)),
        "adapterhub/madx": madx,
    }


def build_all(factories: dict[str, Callable]) -> dict[str, Bench]:
    benches: dict[str, Bench] = {}
    for factory in factories.values():
        built = factory()
        for bench in (built[1:] if isinstance(built, tuple) else (built,)):
            benches[bench.name] = bench
    return benches


def serve(args: argparse.Namespace) -> None:
    from transformers import AutoConfig

    inputs = make_inputs(args.batch, args.seq, AutoConfig.from_pretrained(args.model).vocab_size)
    benches = build_all(build_adapterhub(args.model, inputs))
    for bench in benches.values():
        bench.run(args.warmup)  # AdamW creates its state at the first step
    benches["adapterhub/floor"].run(1)  # the process's one-time initialisations
    emit({"ready": True, "versions": adapterhub_versions(),
          "configs": {n: {"trainable_per_task": b.trainable_per_task, **b.info} for n, b in benches.items()}})
    answer_commands(benches)


def memory(args: argparse.Namespace) -> None:
    from transformers import AutoConfig

    inputs = make_inputs(args.batch, args.seq, AutoConfig.from_pretrained(args.model).vocab_size)
    tiny = {k: v[:2, :16] if v.dim() == 2 else v[:2] for k, v in inputs.items()}
    build_adapterhub(args.model, tiny)["adapterhub/floor"]().run(1)  # the process's one-time initialisations
    for factory in build_adapterhub(args.model, inputs).values():
        built = factory()
        for bench in (built[1:] if isinstance(built, tuple) else (built,)):
            emit({"config": bench.name, "mib": peak_rss_delta_mib(bench, steps=1, warmup=0), "gflop": step_gflop(bench)})
        del built, bench
        gc.collect()
    emit({"done": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--serve", action="store_true")
    mode.add_argument("--memory", action="store_true")
    parser.add_argument("--model", required=True, help="a local folder of all-MiniLM-L6-v2 (or another BERT)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps per configuration before serving")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    serve(args) if args.serve else memory(args)


if __name__ == "__main__":
    main()
