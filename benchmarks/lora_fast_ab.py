"""hf_mtl's LoRA train step with `FastLoraLinear` (the merged product) against the same step with PEFT's own
`lora.Linear`, paired in one process: per round new, old, new; the ratio is the mean of the two new steps
over the old one, so drift within a round cancels.

    python benchmarks/lora_fast_ab.py --rounds 20
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/lora_fast_ab.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from peft import LoraConfig

from benchmarks import MODEL
from benchmarks.adapterhub_runner import make_inputs
from benchmarks.configs import build_local
from benchmarks.runner import LazyBenches, add_shape_args, time_aba
from benchmarks.stats import describe
from hf_mtl.modeling.backbone import load_backbone_config


@contextlib.contextmanager
def peft_own_layers():
    """Build with PEFT's own `lora.Linear`: the custom-module registration the `lora` method makes is skipped."""
    register = LoraConfig._register_custom_module
    LoraConfig._register_custom_module = lambda self, mapping: None
    try:
        yield
    finally:
        LoraConfig._register_custom_module = register


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(parser, rounds=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inputs = make_inputs(args.batch, args.seq, load_backbone_config(MODEL).vocab_size)
    fast = LazyBenches(build_local(MODEL, inputs, {"hf_mtl/lora"}), 1)["hf_mtl/lora"]
    with peft_own_layers():
        peft_layers = LazyBenches(build_local(MODEL, inputs, {"hf_mtl/lora"}), 1)["hf_mtl/lora"]
    ratios, _, times = time_aba(fast, peft_layers, args.rounds)
    print(f"{args.rounds} rounds, batch {args.batch} x {args.seq}, {args.threads} threads; PEFT-layer step median "
          f"{statistics.median(times):.3f} s; FastLoraLinear / PEFT's lora.Linear: {describe(ratios)}")


if __name__ == "__main__":
    main()
