"""Where a train step's time goes: torch.profiler over a few steps of chosen `adapters_speed.py` configurations.

Prints, per configuration, the step time, the number of kernel launches and host<->device synchronizations per
step (on a GPU), and the operators with the most self time (CPU, and CUDA on a GPU). On a GPU a small
model's step is bound by the host launching kernels, so launches and synchronizations per step say more
than FLOPs.

    python benchmarks/profile_step.py --device cuda --bf16 --configs hf_mtl/floor hf_mtl/hyperformer
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/profile_step.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import MODEL
from benchmarks.adapterhub_runner import make_inputs
from benchmarks.configs import Placement, build_local
from benchmarks.runner import LazyBenches
from hf_mtl.modeling.backbone import load_backbone_config


SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy", "cudaEventSynchronize")


def profile_config(bench, steps: int, gpu: bool, top: int) -> dict:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        times = bench.run(steps)
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    syncs = {e.key: e.count / steps for e in events if e.key.startswith(SYNC_CALLS)}
    by_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    out = {"step_ms": 1000 * sorted(times)[len(times) // 2], "kernel_launches_per_step": launches / steps,
           "syncs_per_step": syncs,
           "top_self_cpu_ms_per_step": {e.key: round(e.self_cpu_time_total / 1000 / steps, 3) for e in by_cpu}}
    if gpu:
        by_gpu = sorted(events, key=lambda e: getattr(e, "self_device_time_total", 0), reverse=True)[:top]
        out["top_self_cuda_ms_per_step"] = {e.key: round(e.self_device_time_total / 1000 / steps, 3) for e in by_gpu}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True, help="configuration names as in adapters_speed.py")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    where = Placement(args.device, args.bf16)
    inputs = make_inputs(args.batch, args.seq, load_backbone_config(args.model).vocab_size)
    names = set(args.configs) | {c.removesuffix("/mixed") for c in args.configs}  # a mixed batch shares its model
    benches = LazyBenches(build_local(args.model, inputs, names, where), warmup=2)
    results = {}
    for name in args.configs:
        results[name] = profile_config(benches[name], args.steps, where.device.startswith("cuda"), args.top)
        r = results[name]
        print(f"== {name}: {r['step_ms']:.1f} ms/step, {r['kernel_launches_per_step']:.0f} kernel launches/step, "
              f"syncs/step {r['syncs_per_step']}")
        for key in ("top_self_cpu_ms_per_step", "top_self_cuda_ms_per_step"):
            if key in r:
                print(f"   {key}: " + ", ".join(f"{k} {v}" for k, v in r[key].items()))
    if args.output:
        Path(args.output).write_text(json.dumps({"args": vars(args), "device": where.describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
