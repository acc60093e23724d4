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
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python benchmarks/adapters_speed.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import DATA, MODEL, RESULTS
from benchmarks.adapterhub_runner import PROTOCOL, answer_commands, emit, make_inputs, peak_rss_delta_mib, step_gflop
from benchmarks.configs import (
    FLOOR,
    build_hf_mtl,
    build_local,
    library_of,
    peft_prefix_tuning_status,
    placement_of,
    wanted_configs,
)
from benchmarks.runner import (
    InlineSource,
    LazyBenches,
    Runner,
    adapterhub_memory,
    add_shape_args,
    ensure_venv,
    local_memory,
    peak_cuda_delta_mib,
    runner_env,
    start_adapterhub,
    start_local,
    time_rounds,
)
from benchmarks.speed_report import assemble, quality_variant, summarize_quality
from hf_mtl import Task
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.backbone import load_backbone_config, load_tokenizer, resolve_model_path
from hf_mtl.ops import cpu_memory


QUALITY_VARIANTS = ((None, True), (None, False), (0.0, True))  # (backbone_dropout, fast_dropout); None: the model's own


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(parser, rounds=10)
    parser.add_argument("--steps", type=int, default=1, help="measured steps per configuration per round (their median)")
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
    assemble(prefix)


if __name__ == "__main__":
    main()
