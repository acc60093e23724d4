"""How far two identical processes disagree: the same hf_mtl floor step in two fresh runner processes.

Both processes run `adapters_speed.py --serve` with the same configuration and nothing else; they take
turns, one step each, round after round, and a batch of rounds ends by starting both anew. If process
instances differ by more than the noise of their median (memory layout, where the allocator put the
activations, which cores the threads landed on), a comparison of two libraries, each in one process,
carries that difference too, and only restarting the processes averages it out.

    python benchmarks/process_placebo.py --pairs 4 --rounds 16

Prints, per pair of processes, the median of the paired ratios B / A and its quartiles; A starts first in
odd pairs, B in even ones, so an effect of the start order flips the ratio from pair to pair.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/process_placebo.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.configs import FLOOR
from benchmarks.runner import runner_namespace, start_local
from benchmarks.stats import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4, help="pairs of processes started one after the other")
    parser.add_argument("--rounds", type=int, default=16, help="paired steps per pair of processes")
    parser.add_argument("--config", default=FLOOR, help="the configuration both processes time")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runner_args = runner_namespace(args)
    print(f"{args.config}: {args.pairs} pairs of processes x {args.rounds} rounds, batch {args.batch} x {args.seq}, "
          f"{args.threads} threads", flush=True)
    medians = []
    for pair in range(args.pairs):
        if pair % 2 == 0:  # which of the two starts first alternates by pair
            a, b = start_local([args.config], runner_args), start_local([args.config], runner_args)
        else:
            b, a = start_local([args.config], runner_args), start_local([args.config], runner_args)
        ratios = []
        try:
            for r in range(args.rounds):
                first, second = (a, b) if r % 2 == 0 else (b, a)  # who goes first alternates
                times = {id(p): p.run([args.config], 1)[args.config][0] for p in (first, second)}
                ratios.append(times[id(b)] / times[id(a)])
        finally:
            a.close()
            b.close()
        medians.append(statistics.median(ratios))
        print(f"pair {pair + 1} ({'A' if pair % 2 == 0 else 'B'} started first): B / A {describe(ratios)}", flush=True)
    print(f"medians over pairs: {', '.join(f'{m:.3f}' for m in medians)}; spread {max(medians) - min(medians):.3f}")


if __name__ == "__main__":
    main()
