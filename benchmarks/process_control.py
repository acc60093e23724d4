"""How much of an hf_mtl / AdapterHub gap is the process, not the library: the same hf_mtl floor step timed in
`adapters_speed.py`'s main process and in a second, light process of the same venv, next to AdapterHub's floor
in its runner process (transformers 4.57.6), interleaved round by round.

    python benchmarks/process_control.py --rounds 24

If hf_mtl's floor runs faster in the second process than in the main one, the main-vs-runner comparisons of
`adapters_speed.py` carry that process effect; compare AdapterHub against hf_mtl's second process instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/process_control.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import MODEL
from benchmarks.adapterhub_runner import make_inputs
from benchmarks.configs import FLOOR, build_local
from benchmarks.runner import LazyBenches, add_shape_args, ensure_venv, runner_namespace, start_adapterhub, start_local
from benchmarks.stats import describe
from hf_mtl.modeling.backbone import load_backbone_config, resolve_model_path


def floor_bench(args: argparse.Namespace):
    inputs = make_inputs(args.batch, args.seq, load_backbone_config(MODEL).vocab_size)
    return LazyBenches(build_local(MODEL, inputs, {FLOOR}), 1)[FLOOR]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(parser, rounds=24)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    main_floor = floor_bench(args)
    runner_args = runner_namespace(args)
    adapterhub = start_adapterhub(ensure_venv(), resolve_model_path(MODEL), runner_args)
    second = start_local([FLOOR], runner_args)  # adapters_speed.py's runner of hf_mtl's configurations
    ratios: dict[str, list[float]] = {"hf_mtl floor, second process / main process": [],
                                      "AdapterHub floor / hf_mtl floor, main process": [],
                                      "AdapterHub floor / hf_mtl floor, second process": []}
    try:
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            main_floor.run(1)
            first = time.perf_counter() - t0
            other = second.run([FLOOR], 1)[FLOOR][0]
            theirs = adapterhub.run(["adapterhub/floor"], 1)["adapterhub/floor"][0]
            t0 = time.perf_counter()
            main_floor.run(1)
            ours = (first + time.perf_counter() - t0) / 2
            for key, value in zip(ratios, (other / ours, theirs / ours, theirs / other)):
                ratios[key].append(value)
    finally:
        adapterhub.close()
        second.close()
    print(f"{args.rounds} rounds, batch {args.batch} x {args.seq}, {args.threads} threads")
    for name, values in ratios.items():
        print(f"{name}: {describe(values)}")


if __name__ == "__main__":
    main()
