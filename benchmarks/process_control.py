"""How much of an hf_mtl / AdapterHub gap is the process, not the library: the same hf_mtl floor step timed in
`adapters_speed.py`'s main process and in a second, light process of the same venv, next to AdapterHub's floor
in its runner process (transformers 4.57.6), interleaved round by round.

    python benchmarks/process_control.py --rounds 24

If hf_mtl's floor runs faster in the second process than in the main one, the main-vs-runner comparisons of
`adapters_speed.py` carry that process effect; compare AdapterHub against hf_mtl's second process instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapters_speed import (MODEL, LazyBenches, build_local, ensure_venv, make_inputs, resolve_model_path,  # noqa: E402
                            start_adapterhub, start_local)

from hf_mtl.modeling.backbone import load_backbone_config  # noqa: E402


def floor_bench(args: argparse.Namespace):
    inputs = make_inputs(args.batch, args.seq, load_backbone_config(MODEL).vocab_size)
    return LazyBenches(build_local(MODEL, inputs, {"hf_mtl/floor"}), 1)["hf_mtl/floor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    main_floor = floor_bench(args)
    runner_args = argparse.Namespace(**vars(args), warmup=1, model=MODEL, device="cpu", bf16=False)
    adapterhub = start_adapterhub(ensure_venv(), resolve_model_path(MODEL), runner_args)
    second = start_local(["hf_mtl/floor"], runner_args)  # adapters_speed.py's runner of hf_mtl's configurations
    ratios: dict[str, list[float]] = {"hf_mtl floor, second process / main process": [],
                                      "AdapterHub floor / hf_mtl floor, main process": [],
                                      "AdapterHub floor / hf_mtl floor, second process": []}
    try:
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            main_floor.run(1)
            first = time.perf_counter() - t0
            other = second.run(["hf_mtl/floor"], 1)["hf_mtl/floor"][0]
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
        q = statistics.quantiles(values, n=4)
        print(f"{name}: median {statistics.median(values):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")


if __name__ == "__main__":
    main()
