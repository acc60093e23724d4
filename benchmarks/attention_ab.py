"""One attention forward + backward on the CPU with dropout: hf_mtl's fused function against the composite ops.

`composite` is what hf_mtl ran before (and what SDPA's math path runs): masked_fill of the scores, softmax,
masked_fill of the dropped probabilities, matmul, with autograd through each. `fused` is
`hf_mtl.ops.attention._DroppedAttention` (mask and softmax in place, the dropped probabilities one
`where`, the dropout folded into the softmax gradient). Both draw the same fast dropout mask. Shapes are those
of all-MiniLM-L6-v2 at batch 32 x 128 tokens (12 heads of 32); `--keys` sets the key count (128 + 20 prefix
keys = 148). Half the rows have their last quarter of keys padded, as in adapters_speed.py's batch. Rounds
interleave every (mode, keys) pair, order reversed every other round; the table gives medians.

    python benchmarks/attention_ab.py --keys 128 148 --rounds 12 [--malloc default]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/attention_ab.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import RESULTS
from benchmarks.report import write_json
from benchmarks.stats import paired_median
from hf_mtl.ops import cpu_memory
from hf_mtl.ops.attention import _DroppedAttention
from hf_mtl.ops.fast_dropout import _LEVELS, drop_mask, fast_threshold


P_DROP = 0.1


def composite(query, key, value, mask, scaling, levels):
    weights = torch.matmul(query * scaling, key.transpose(2, 3)).masked_fill(~mask, torch.finfo(query.dtype).min)
    weights = weights.softmax(dim=-1).masked_fill(drop_mask(weights.shape, levels), 0.0)
    return torch.matmul(weights, value) * (_LEVELS / (_LEVELS - levels))


MODES = {"composite": composite, "fused": _DroppedAttention.apply}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, nargs="+", default=[128, 148])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="keep: the malloc thresholds MultiTaskTrainer sets on the CPU (hf_mtl.ops.cpu_memory)")
    parser.add_argument("--output", default=str(RESULTS / "attention_ab" / "attention_ab.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.malloc == "keep":
        cpu_memory.keep_freed_memory()
    torch.manual_seed(0)
    levels, scaling = fast_threshold(P_DROP), args.head_size ** -0.5
    tensors = {}
    for keys in args.keys:
        q = torch.randn(args.batch, args.heads, args.queries, args.head_size, requires_grad=True)
        k, v = (torch.randn(args.batch, args.heads, keys, args.head_size, requires_grad=True) for _ in range(2))
        mask = torch.ones(args.batch, 1, args.queries, keys, dtype=torch.bool)
        mask[args.batch // 2:, ..., keys - args.queries // 4:] = False
        tensors[keys] = (q, k, v, mask)

    def step(mode: str, keys: int) -> float:
        q, k, v, mask = tensors[keys]
        start = time.perf_counter()
        MODES[mode](q, k, v, mask, scaling, levels).sum().backward()
        return time.perf_counter() - start

    pairs = [(mode, keys) for keys in args.keys for mode in MODES]
    for pair in pairs * 2:
        step(*pair)  # warm-up
    times: dict[tuple[str, int], list[float]] = {pair: [] for pair in pairs}
    for r in range(args.rounds):
        for pair in (pairs if r % 2 == 0 else pairs[::-1]):
            times[pair].append(step(*pair))
    med = {pair: statistics.median(t) for pair, t in times.items()}
    base = args.keys[0]
    print(f"attention forward + backward, B {args.batch} x h {args.heads} x Lq {args.queries} x d {args.head_size}, "
          f"dropout {P_DROP}, {args.threads} threads, malloc {args.malloc}, {args.rounds} rounds (medians, ms)")
    print(f"| keys | composite | fused | fused / composite | composite / composite at {base} | fused / fused at {base} |")
    print("|---|---|---|---|---|---|")
    rows = []
    for keys in args.keys:
        row = {"keys": keys, "composite_ms": 1e3 * med[("composite", keys)], "fused_ms": 1e3 * med[("fused", keys)],
               "fused_over_composite": paired_median(times[("fused", keys)], times[("composite", keys)]),
               "composite_vs_base": med[("composite", keys)] / med[("composite", base)],
               "fused_vs_base": med[("fused", keys)] / med[("fused", base)]}
        rows.append(row)
        print(f"| {keys} | {row['composite_ms']:.1f} | {row['fused_ms']:.1f} | {row['fused_over_composite']:.3f} | "
              f"{row['composite_vs_base']:.3f} | {row['fused_vs_base']:.3f} |")
    write_json(Path(args.output), {"args": vars(args), "machine": {"platform": platform.platform(), "torch": torch.__version__},
                                   "rows": rows, "times_s": {f"{m}/{k}": t for (m, k), t in times.items()}})


if __name__ == "__main__":
    main()
