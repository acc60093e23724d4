"""Inference with many tasks on one base: switching, mixed-task batches, and pulling one task.

1. Switching task: `MultiTaskModel.set_task` vs PEFT's `PeftModel.set_adapter` (4 LoRA adapters on the
   same base) vs loading the task's adapter + head from disk, and PEFT's `load_adapter` from disk.
   AdapterHub's `set_active_adapters` (0.68 ms on MiniLM) needs its own venv (STACK.md): quoted only.
2. A 32-row batch mixing 4 tasks, in ONE forward of a per-row method (`bottleneck`), vs a 32-row
   single-task forward, vs 4 single-task forwards of 8 rows (what a method without per-row routing
   must do), and the same for the head-only method `none`.
3. Bytes downloaded when pulling 1 task of an 8-task repo vs the whole repo, through the local
   Hub-compatible server (tests/hub_server/) with the unmodified huggingface_hub client.

all-MiniLM-L6-v2, batch 32 x 128 tokens, torch.set_num_threads(2); the configurations of each part
run interleaved, and ratios are paired medians over the rounds (STACK.md: single timings swing).

    python benchmarks/inference.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/inference.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from benchmarks import MODEL, RESULTS, ROOT
from benchmarks.report import pyplot
from benchmarks.stats import paired_median
from hf_mtl import Task
from hf_mtl.io_utils import load_tensors
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.backbone import resolve_model_path


BATCH, SEQ, N_TASKS = 32, 128, 4


def tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", labels=["neg", "pos"]) for i in range(n)]


def perturbed(model: MultiTaskModel) -> MultiTaskModel:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in [*model.heads.parameters(), *model.adapter.parameters()]:
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def batch(tokenizer) -> dict[str, torch.Tensor]:
    words = "the film was good bad great terrible and it really made me think about a long story of city life".split()
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(words[int(i)] for i in torch.randint(len(words), (SEQ,), generator=g)) for _ in range(BATCH)]
    return dict(tokenizer(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="pt"))


def per_call(fn, calls: int) -> float:
    """Seconds per call of `fn`, timed over `calls` calls."""
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls


# ---------------------------------------------------------------------------------------------------- 1. switching
def switching(rounds: int, tmp: Path) -> dict[str, list[float]]:
    names = [t.name for t in tasks(N_TASKS)]
    model = perturbed(MultiTaskModel.from_backbone(MODEL, tasks(N_TASKS), adapter_method="bottleneck"))
    model.save_pretrained(str(tmp / "store"))
    peft = get_peft_model(AutoModel.from_pretrained(resolve_model_path(MODEL)), LoraConfig(r=8, target_modules=["query", "value"]),
                          adapter_name=names[0])
    for name in names[1:]:
        peft.add_adapter(name, LoraConfig(r=8, target_modules=["query", "value"]))
    peft.save_pretrained(str(tmp / "peft"))  # <dir>/<adapter>/ for every adapter but the first

    def load_from_disk(i: int) -> None:
        name = names[i % N_TASKS]
        model.adapter.load_task_state_dict(name, load_tensors(tmp / "store" / name / "adapter_model.safetensors", name))
        model.heads[name].load_state_dict(load_tensors(tmp / "store" / name / "head.safetensors", name))
        model.set_task(name)

    def peft_load(i: int) -> None:
        name = names[1 + i % (N_TASKS - 1)]
        peft.delete_adapter(name)
        peft.load_adapter(str(tmp / "peft" / name), adapter_name=name)
        peft.set_adapter(name)

    out: dict[str, list[float]] = {"hf_mtl set_task": [], "PEFT set_adapter": [], "hf_mtl load from disk": [],
                                   "PEFT load_adapter from disk": []}
    for _ in range(rounds):
        out["hf_mtl set_task"].append(per_call(lambda i: model.set_task(names[i % N_TASKS]), 20000))
        out["PEFT set_adapter"].append(per_call(lambda i: peft.set_adapter(names[i % N_TASKS]), 50))
        out["hf_mtl load from disk"].append(per_call(load_from_disk, 20))
        out["PEFT load_adapter from disk"].append(per_call(peft_load, 10))
    return out


# ---------------------------------------------------------------------------------------------------- 2. mixed batch
def mixed_batches(rounds: int) -> dict[str, dict[str, list[float]]]:
    out = {}
    for method in ("bottleneck", "none"):
        model = perturbed(MultiTaskModel.from_backbone(MODEL, tasks(N_TASKS), adapter_method=method))
        inputs = batch(model.tokenizer)
        mixed = [f"t{i % N_TASKS}" for i in range(BATCH)]  # 8 rows of each task, interleaved
        quarter = {k: v[: BATCH // N_TASKS] for k, v in inputs.items()}
        runs = {
            "single-task forward (32 rows)": lambda: model(**inputs, task="t0"),
            "mixed 4 tasks, one forward (32 rows)": lambda: model(**inputs, task=mixed),
            "4 single-task forwards (4 x 8 rows)": lambda: [model(**quarter, task=f"t{i}") for i in range(N_TASKS)],
        }
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        with torch.no_grad():
            for fn in runs.values():
                fn()  # warm-up
            order = list(runs)
            for r in range(rounds):
                for name in order[r % len(order):] + order[: r % len(order)]:  # rotated: no configuration always runs first
                    fn = runs[name]
                    start, start_cpu = time.perf_counter(), time.process_time()
                    fn()
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
        out[method] = {"wall": wall, "cpu": cpu}
    return out


# ---------------------------------------------------------------------------------------------------- 3. pulling
def pulling(tmp: Path) -> dict[str, object]:
    sys.path.insert(0, str(ROOT / "tests"))
    from hf_mtl.hub import pull, push
    from hub_server import ALICE_TOKEN, HubServer

    model = perturbed(MultiTaskModel.from_backbone(MODEL, tasks(8), adapter_method="bottleneck"))
    model.save_pretrained(str(tmp / "store8"))
    with HubServer(root=tmp / "hub") as hub, hub.patch_client(tmp / "hf_home", token=ALICE_TOKEN):
        push(tmp / "store8", "alice/eight", token=ALICE_TOKEN)
        sizes = {path: len(hub.read_file("alice/eight", path)) for path in hub.list_files("alice/eight")}
        result = {}
        for label, selected in (("1 task of 8", ["t3"]), ("all 8 tasks", None)):
            hub.clear_requests()
            pull("alice/eight", tasks=selected, local_dir=tmp / f"pull-{label.replace(' ', '_')}")
            fetched = sorted(hub.downloaded_files("alice/eight"))
            result[label] = {"files": fetched, "bytes": sum(sizes[p] for p in fetched)}
        result["repo_bytes"] = sum(v for k, v in sizes.items() if k != ".gitattributes")
    return result


# ---------------------------------------------------------------------------------------------------- report
def report(switch: dict, mixed: dict, pulled: dict, rounds: int) -> dict:
    print(f"machine load average (1, 5, 15 min): {os.getloadavg()}")
    print(f"\n1. Switching task (MiniLM, {N_TASKS} tasks; medians over {rounds} rounds)")
    print(f"{'operation':34s} {'ms / switch':>12s}")
    for name, values in switch.items():
        print(f"{name:34s} {statistics.median(values) * 1e3:12.4f}")
    print(f"{'AdapterHub set_active_adapters':34s} {0.68:12.4f}   (quoted, other venv)")

    print(f"\n2. Batch {BATCH} x {SEQ} (medians over {rounds} interleaved rounds; ratios are paired medians of wall "
          f"time and of this process's CPU time, which other load on the machine disturbs less)")
    print(f"{'method':11s} {'configuration':40s} {'wall s':>8s} {'x single':>9s} {'cpu s':>8s} {'x single':>9s}")
    ratios: dict[str, dict[str, float]] = {"wall": {}, "cpu": {}}
    for method, clocks in mixed.items():
        for name in clocks["wall"]:
            cells = []
            for clock in ("wall", "cpu"):
                values, single = clocks[clock][name], clocks[clock]["single-task forward (32 rows)"]
                ratios[clock][f"{method}: {name}"] = paired_median(values, single)
                cells.append(f"{statistics.median(values):8.3f} {ratios[clock][f'{method}: {name}']:9.3f}")
            print(f"{method:11s} {name:40s} {' '.join(cells)}")

    print("\n3. Pulling from an 8-task repo (bottleneck adapters + heads) through the local Hub server")
    for label in ("1 task of 8", "all 8 tasks"):
        entry = pulled[label]
        print(f"{label:12s} {entry['bytes']:>10,d} bytes  {len(entry['files'])} files: {', '.join(entry['files'][:6])}"
              + (" ..." if len(entry["files"]) > 6 else ""))
    summary = {
        "switch_ms": {k: statistics.median(v) * 1e3 for k, v in switch.items()},
        "batch_seconds": {m: {clock: {k: statistics.median(v) for k, v in t[clock].items()} for clock in t}
                          for m, t in mixed.items()},
        "batch_ratio_to_single": ratios,
        "pull": pulled,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),  # other processes on the machine (this one uses 2 threads)
    }
    return summary


def plot(summary: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(19, 5))
    switch = dict(summary["switch_ms"], **{"AdapterHub set_active_adapters\n(quoted)": 0.68})
    axes[0].barh(list(switch), list(switch.values()), color="tab:blue")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("ms per switch (log)")
    axes[0].set_title("Switching task")
    labels = list(summary["batch_ratio_to_single"]["wall"])
    y = range(len(labels))
    for offset, clock, color in ((-0.2, "wall", "tab:orange"), (0.2, "cpu", "tab:red")):
        axes[1].barh([i + offset for i in y], [summary["batch_ratio_to_single"][clock][k] for k in labels], height=0.4,
                     color=color, label=f"{clock} time")
    axes[1].set_yticks(list(y), labels, fontsize=7)
    axes[1].axvline(1.05, color="gray", linestyle="--", label="goal 1.05x")
    axes[1].set_xlabel("time / single-task 32-row forward")
    axes[1].set_title(f"Batch {BATCH} x {SEQ}")
    axes[1].legend()
    pulled = summary["pull"]
    axes[2].bar(["1 task of 8", "all 8 tasks"], [pulled["1 task of 8"]["bytes"] / 1e6, pulled["all 8 tasks"]["bytes"] / 1e6],
                color="tab:green")
    axes[2].set_ylabel("MB downloaded")
    axes[2].set_title("Pulling from the Hub")
    fig.suptitle("hf_mtl inference: all-MiniLM-L6-v2, 2 threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    hf_logging.set_verbosity_error()  # model loads print a LOAD REPORT table each
    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        switch = switching(args.rounds, Path(tmp))
        mixed = mixed_batches(args.rounds)
        pulled = pulling(Path(tmp))
    summary = report(switch, mixed, pulled, args.rounds)
    (RESULTS / "inference.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, RESULTS / "inference.png")
    print(f"\nwrote {RESULTS / 'inference.json'} and {RESULTS / 'inference.png'}")


if __name__ == "__main__":
    main()
