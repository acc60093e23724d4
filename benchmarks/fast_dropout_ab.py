"""Each hf_mtl method's train step with the fast CPU dropout masks (`fast_dropout=True`, the default) against
the same step with torch's (`fast_dropout=False`), paired in one process: per round fast, torch, fast; the ratio
is the mean of the two fast steps over the torch one, so drift within a round cancels. One method at a time
(two models in memory), `--rounds` rounds each.

    python benchmarks/fast_dropout_ab.py --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/fast_dropout_ab.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import MODEL
from benchmarks.adapterhub_runner import make_inputs
from benchmarks.configs import FLOOR, build_local
from benchmarks.runner import LazyBenches, add_shape_args, time_aba
from benchmarks.stats import quartiles
from hf_mtl.modeling.backbone import load_backbone_config


METHODS = [FLOOR, "hf_mtl/full_ft", "hf_mtl/bottleneck/pfeiffer", "hf_mtl/bottleneck/houlsby", "hf_mtl/lora",
           "hf_mtl/prefix_tuning", "hf_mtl/madx", "hf_mtl/pals", "hf_mtl/ca_mtl", "hf_mtl/hyperformer",
           "hf_mtl/hyperformer++"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(parser, rounds=10)
    parser.add_argument("--only", nargs="*", help="methods whose name contains one of these strings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    inputs = make_inputs(args.batch, args.seq, load_backbone_config(MODEL).vocab_size)
    methods = [m for m in METHODS if not args.only or any(s in m for s in args.only)]
    print(f"{args.rounds} rounds, batch {args.batch} x {args.seq}, {args.threads} threads; ratio = fast-mask step / "
          f"torch-mask step (median over rounds, quartiles)", flush=True)
    print("| configuration | torch-mask step (s) | fast-mask step (s) | fast / torch | quartiles |\n|---|---|---|---|---|")
    for name in methods:
        fast = LazyBenches(build_local(MODEL, inputs, {name}, fast_dropout=True), 1)[name]
        stock = LazyBenches(build_local(MODEL, inputs, {name}, fast_dropout=False), 1)[name]
        ratios, fast_times, stock_times = time_aba(fast, stock, args.rounds)
        low, high = quartiles(ratios)
        print(f"| {name} | {statistics.median(stock_times):.3f} | {statistics.median(fast_times):.3f} | "
              f"{statistics.median(ratios):.3f} | {low:.3f}-{high:.3f} |", flush=True)
        del fast, stock


if __name__ == "__main__":
    main()
