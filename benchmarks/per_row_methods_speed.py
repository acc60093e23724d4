"""Per-step cost of the per-row methods (pals, hyperformer, hyperformer++, ca_mtl) vs the frozen floor.

The floor is one training step (train-mode forward + backward) through the frozen backbone with no
adapter: the `none` method with the embeddings' output requiring grad, so the backward runs through
every layer as it must for any adapter. Each method's step is forward + backward of a single-task
batch, and of a batch mixing 4 tasks (8 rows each). Configurations run interleaved in one process;
the table gives the median over rounds of each ratio taken within a round (paired), as STACK.md advises.

    python benchmarks/per_row_methods_speed.py [--rounds 10] [--batch 32] [--length 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/per_row_methods_speed.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import MODEL
from benchmarks.configs import make_floor
from benchmarks.stats import paired_median
from hf_mtl import Task
from hf_mtl.modeling import MultiTaskModel


METHODS = ["pals", "hyperformer", "hyperformer++", "ca_mtl"]
TASKS = [Task(f"t{i}", kind="classification", labels=["a", "b"]) for i in range(4)]


def build(method: str) -> MultiTaskModel:
    model = MultiTaskModel.from_backbone(MODEL, TASKS, adapter_method=method)
    if method == "none":  # the floor: make the backward run through the frozen layers
        make_floor(model)
    return model.train()


def step(model: MultiTaskModel, inputs: dict, task) -> float:
    start = time.perf_counter()
    out = model(**inputs, task=task)
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {m: build(m) for m in ["none", *args.methods]}
    vocab = models["none"].config.vocab_size
    inputs = {
        "input_ids": torch.randint(1000, vocab, (args.batch, args.length)),
        "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long),
        "labels": torch.randint(0, 2, (args.batch,)),
    }
    inputs["attention_mask"][: args.batch // 2, args.length * 3 // 4:] = 0  # some padding
    mixed = [TASKS[i % 4].name for i in range(args.batch)]
    times: dict[str, list[float]] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, model in models.items():
            for kind, task in (("single", "t0"), ("mixed", mixed)):
                if name == "none" and kind == "mixed":
                    continue
                elapsed = step(model, inputs, task)
                if round_:
                    times.setdefault(f"{name}/{kind}", []).append(elapsed)
    floor = times["none/single"]
    print(f"floor (none, frozen backbone, fwd+bwd): median {statistics.median(floor):.3f} s/step "
          f"(B={args.batch}, L={args.length}, {args.threads} threads)")
    print(f"{'method':15s} {'single s':>9s} {'x floor':>8s} {'mixed s':>8s} {'mixed/single':>12s}")
    for name in args.methods:
        single, mix = times[f"{name}/single"], times[f"{name}/mixed"]
        vs_floor = paired_median(single, floor)
        vs_single = paired_median(mix, single)
        print(f"{name:15s} {statistics.median(single):9.3f} {vs_floor:8.3f} {statistics.median(mix):8.3f} {vs_single:12.3f}")


if __name__ == "__main__":
    main()
