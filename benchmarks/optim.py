"""Multi-task optimization: what gradient surgery costs per step, and how the weightings and schedulers
compare on a real 4-task slice of ../shared/data.

Part 1, speed. One optimizer step of `sampling_strategy: all_tasks` (one batch of every task per step)
with `gradient_surgery` none / pcgrad / gradvac: all-MiniLM-L6-v2 fully fine-tuned (so the surgery has
the whole backbone to act on), 4 tasks x `--speed-batch` rows x `--seq` tokens, 2 threads. The three trainers
start from the same weights and take the same batch in each round; the rounds interleave the
configurations, and the reported ratio is the median over rounds of t(surgery) / t(plain) (paired
medians, as ../shared/STACK.md advises: single timings swing with other load). A step is
`training_step` (forward, backward(s), surgery), gradient clipping and the optimizer step.

Part 2, quality. SST-2 (accuracy), STS-B en (Pearson), RTE (accuracy) and UD EWT UPOS (token accuracy),
`--train-rows` training and `--eval-rows` validation rows each, all-MiniLM-L6-v2 fully fine-tuned,
`--steps` optimizer steps of 4·`--batch` rows, seed 42 for every run; the dev slices are evaluated
every `--eval-every` steps (the per-task curves of the plot). Runs: every loss weighting under
`all_tasks`, PCGrad and GradVac under `all_tasks`, and the schedulers (proportional, temperature,
bandit, uncertainty, sequential stages) with static weights and single batches of 4·`--batch` rows.

    python benchmarks/optim.py [--part all|speed|quality] [--rounds 10] [--speed-batch 8] [--batch 4] [--seq 64] [--steps 40]

Writes benchmarks/results/optim.json, optim_speed.png and optim_quality.png, and prints both tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python benchmarks/optim.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import DATA, MODEL, RESULTS
from benchmarks.report import pyplot
from benchmarks.stats import quartiles
from hf_mtl import Task
from hf_mtl.data.dataset import load_raw_splits
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.training_args import MultiTaskTrainingArguments


SEED = 42
PRIMARY = {"sst2": "accuracy", "stsb": "pearson", "rte": "accuracy", "upos": "accuracy"}
UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT", "SCONJ",
        "SYM", "VERB", "X"]  # the 17 UD tags: a small training slice need not hold them all


def real_tasks(train_rows: int, eval_rows: int) -> list[Task]:
    """SST-2, STS-B en, RTE and UD English EWT UPOS (formats: each folder's SOURCE.md)."""
    limits = dict(max_train_samples=train_rows, max_eval_samples=eval_rows)
    return [
        Task("sst2", train_file=str(DATA / "glue_sst2/train.tsv"), validation_file=str(DATA / "glue_sst2/dev.tsv"),
             text_column="sentence", **limits),
        Task("stsb", kind="regression", train_file=str(DATA / "stsb_multi_mt/stsb-en-train.csv"),
             validation_file=str(DATA / "stsb_multi_mt/stsb-en-dev.csv"), text_column="sentence1",
             text_pair_column="sentence2", label_column="score",
             extra={"column_names": ["sentence1", "sentence2", "score"]}, **limits),
        Task("rte", train_file=str(DATA / "glue_rte/train.parquet"), validation_file=str(DATA / "glue_rte/validation.parquet"),
             text_column="sentence1", text_pair_column="sentence2", **limits),
        Task("upos", kind="token_classification", train_file=str(DATA / "ud_english_ewt/en_ewt-ud-train.conllu"),
             validation_file=str(DATA / "ud_english_ewt/en_ewt-ud-dev.conllu"), label_column="upos", labels=UPOS,
             **limits),
    ]


def make_trainer(tasks: list[Task], data: dict, out: str, seq: int, **fields: Any) -> MultiTaskTrainer:
    torch.manual_seed(SEED)
    tasks = copy.deepcopy(tasks)  # a trainer records the labels it infers on its tasks
    model = MultiTaskModel.from_backbone(MODEL, tasks, freeze_backbone=False)
    args = dict(output_dir=out, per_device_eval_batch_size=64, learning_rate=1e-4, save_strategy="no", report_to=[],
                disable_tqdm=True, use_cpu=True, dataloader_pin_memory=False, seed=SEED, max_seq_length=seq,
                overwrite_output_dir=True)
    args.update(fields)
    return MultiTaskTrainer(model=model, args=MultiTaskTrainingArguments(**args), train_dataset=data["train"],
                            eval_dataset=data["validation"])


# ---------------------------------------------------------------------------------------------- part 1: speed

SPEED = {"all_tasks": {}, "all_tasks + pcgrad": {"gradient_surgery": "pcgrad"},
         "all_tasks + gradvac": {"gradient_surgery": "gradvac"}}


def timed_step(trainer: MultiTaskTrainer, batch: dict[str, Any]) -> float:
    """One optimizer step as the Trainer's loop takes it (no gradient accumulation)."""
    start = time.perf_counter()
    trainer.training_step(trainer.model, batch)
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.model.zero_grad()
    return time.perf_counter() - start


def run_speed(tasks: list[Task], data: dict, rounds: int, batch: int, seq: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: make_trainer(tasks, data, f"{tmp}/{i}", seq, sampling_strategy="all_tasks",
                                       per_device_train_batch_size=batch, **options)
                    for i, (name, options) in enumerate(SPEED.items())}
        for trainer in trainers.values():
            trainer.create_optimizer()
            trainer.current_gradient_accumulation_steps = 1
            trainer.model.train()
        loader = iter(next(iter(trainers.values())).get_train_dataloader())
        times: dict[str, list[float]] = {name: [] for name in trainers}
        warm = next(loader)
        for trainer in trainers.values():
            timed_step(trainer, warm)  # allocator and kernel warm-up
        for r in range(rounds):
            batch_r = next(loader)
            order = list(trainers) if r % 2 == 0 else list(reversed(trainers))  # no configuration always first
            for name in order:
                times[name].append(timed_step(trainers[name], batch_r))
            print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in trainers), flush=True)
    base = times["all_tasks"]
    out = {"rounds": rounds, "batch_per_task": batch, "tasks": len(tasks), "seq": seq, "configs": {}}
    for name, values in times.items():
        ratios = sorted(t / b for t, b in zip(values, base))
        q1, q3 = quartiles(ratios)
        out["configs"][name] = {"median_s": statistics.median(values), "ratio_median": statistics.median(ratios),
                                "ratio_q1": q1, "ratio_q3": q3, "times": values}
    return out


# ---------------------------------------------------------------------------------------------- part 2: quality

def quality_runs(batch: int, steps: int) -> dict[str, dict[str, Any]]:
    single = 4 * batch  # single-task schedulers take as many rows per step as all_tasks (M x batch)
    all_tasks = {"sampling_strategy": "all_tasks", "per_device_train_batch_size": batch}
    scheduled = {"per_device_train_batch_size": single}
    return {
        "static": {**all_tasks},
        "equal": {**all_tasks, "loss_weighting": "equal"},
        "size": {**all_tasks, "loss_weighting": "size"},
        "uncertainty_w": {**all_tasks, "loss_weighting": "uncertainty"},
        "dwa": {**all_tasks, "loss_weighting": "dwa", "loss_weighting_options": {"window_steps": max(1, steps // 8)}},
        "tchebycheff": {**all_tasks, "loss_weighting": "tchebycheff"},
        "curriculum": {**all_tasks, "loss_weighting": "curriculum",
                       "loss_weighting_options": {"unit": "step", "midpoints": {"rte": steps / 2, "stsb": steps / 4},
                                                  "alpha": steps / 10, "linear": ["sst2"]}},
        "pcgrad": {**all_tasks, "gradient_surgery": "pcgrad"},
        "gradvac": {**all_tasks, "gradient_surgery": "gradvac"},
        "proportional": {**scheduled, "sampling_strategy": "proportional"},
        "temperature": {**scheduled, "sampling_strategy": "temperature", "sampling_temperature": 2.0},
        "bandit": {**scheduled, "sampling_strategy": "bandit",
                   "sampling_options": {"reward_every": max(1, steps // 8), "eval_samples": 32, "reward": "average", "tau": 0.05}},
        "uncertainty_s": {**scheduled, "sampling_strategy": "uncertainty"},
        "sequential": {**scheduled, "sampling_strategy": "sequential",
                       "sampling_options": {"stages": [{"step": 0, "tasks": ["upos"]}, {"step": steps // 4, "tasks": "all"}]}},
    }


GROUPS = {"weightings and surgery (all_tasks)": ["static", "equal", "size", "uncertainty_w", "dwa", "tchebycheff",
                                                 "curriculum", "pcgrad", "gradvac"],
          "schedulers (static weights)": ["static", "proportional", "temperature", "bandit", "uncertainty_s", "sequential"]}


def run_quality(tasks: list[Task], data: dict, batch: int, steps: int, eval_every: int, seq: int,
                only: list[str] | None, results: dict[str, Any], save: Any) -> dict[str, Any]:
    """Train every run (or those in `only`) into `results`, calling `save()` after each one."""
    for name, options in quality_runs(batch, steps).items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            trainer = make_trainer(tasks, data, tmp, seq, max_steps=steps, eval_strategy="steps", eval_steps=eval_every,
                                   logging_steps=eval_every, **options)
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
        history = trainer.state.log_history
        curves = {t: [(e["step"], e[f"eval_{t}_{PRIMARY[t]}"]) for e in history if f"eval_{t}_{PRIMARY[t]}" in e] for t in PRIMARY}
        final = {t: points[-1][1] for t, points in curves.items() if points}
        decided = [e for e in history if any(k.startswith(("weight_", "prob_")) for k in e)]
        results[name] = {"options": options, "seconds": seconds, "curves": curves, "final": final,
                         "average": sum(final.values()) / len(final),
                         "last_weights": {k: v for k, v in (decided[-1] if decided else {}).items()
                                          if k.startswith(("weight_", "prob_"))}}
        print(f"  {name:14s} {seconds:7.1f}s  " + "  ".join(f"{t} {v:.3f}" for t, v in final.items())
              + f"  avg {results[name]['average']:.3f}", flush=True)
        save()  # a long run keeps what it has measured
    return results


# ---------------------------------------------------------------------------------------------- report

def speed_table(speed: dict[str, Any]) -> str:
    lines = [f"Step time, all_tasks ({speed['tasks']} tasks x {speed['batch_per_task']} rows x {speed['seq']} tokens), "
             f"all-MiniLM-L6-v2 full fine-tuning, {torch.get_num_threads()} threads, {speed['rounds']} interleaved rounds",
             f"{'configuration':22s} {'median step':>12s} {'ratio (paired median)':>22s} {'IQR':>14s}"]
    for name, row in speed["configs"].items():
        lines.append(f"{name:22s} {row['median_s']:>11.2f}s {row['ratio_median']:>21.2f}x "
                     f"{row['ratio_q1']:>6.2f}-{row['ratio_q3']:.2f}")
    return "\n".join(lines)


def quality_table(quality: dict[str, Any], steps: int, batch: int) -> str:
    lines = [f"Dev scores after {steps} steps of {4 * batch} rows (seed {SEED}); sst2/rte/upos accuracy, stsb Pearson"]
    for group, names in GROUPS.items():
        lines.append(f"-- {group}")
        lines.append(f"{'run':14s} " + " ".join(f"{t:>7s}" for t in PRIMARY) + f" {'average':>8s} {'time':>7s}  last weights / probabilities")
        for name in names:
            if name not in quality:
                continue
            row = quality[name]
            decided = " ".join(f"{k}={v:.2f}" for k, v in row["last_weights"].items())
            lines.append(f"{name:14s} " + " ".join(f"{row['final'].get(t, float('nan')):>7.3f}" for t in PRIMARY)
                         + f" {row['average']:>8.3f} {row['seconds']:>6.0f}s  {decided}")
    return "\n".join(lines)


def plot(result: dict[str, Any]) -> None:
    plt = pyplot()
    if "speed" in result:
        speed = result["speed"]["configs"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(speed)
        medians = [speed[n]["ratio_median"] for n in names]
        errors = [[m - speed[n]["ratio_q1"] for n, m in zip(names, medians)], [speed[n]["ratio_q3"] - m for n, m in zip(names, medians)]]
        ax.bar(names, medians, yerr=errors, capsize=4, color=["#888", "#4a7", "#47a"])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_ylabel("step time / all_tasks (paired median, IQR)")
        ax.set_title("Cost of gradient surgery per optimizer step")
        fig.tight_layout()
        fig.savefig(RESULTS / "optim_speed.png", dpi=120)
        plt.close(fig)
    if "quality" in result:
        quality = result["quality"]
        fig, axes = plt.subplots(len(GROUPS), len(PRIMARY), figsize=(16, 7), squeeze=False)
        for r, (group, names) in enumerate(GROUPS.items()):
            for c, task in enumerate(PRIMARY):
                ax = axes[r][c]
                for name in names:
                    if name in quality and quality[name]["curves"][task]:
                        steps, values = zip(*quality[name]["curves"][task])
                        ax.plot(steps, values, marker="o", ms=3, label=name)
                ax.set_title(f"{task} ({PRIMARY[task]})" if r == 0 else task, fontsize=9)
                ax.set_xlabel("step", fontsize=8)
                if c == 0:
                    ax.set_ylabel(group, fontsize=8)
            axes[r][-1].legend(fontsize=7, loc="lower right")
        fig.suptitle("Per-task dev curves: loss weightings, gradient surgery and task schedulers (same steps, same seed)")
        fig.tight_layout()
        fig.savefig(RESULTS / "optim_quality.png", dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "speed", "quality"], default="all")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--speed-batch", type=int, default=8, help="rows per task in a timed all_tasks step")
    parser.add_argument("--batch", type=int, default=4, help="rows per task in an all_tasks step of the quality runs")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--eval-rows", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="quality runs to do (default: all)")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tasks = real_tasks(a.train_rows, a.eval_rows)
    data = {split: load_raw_splits(tasks, split) for split in ("train", "validation")}
    result: dict[str, Any] = {"args": vars(a)}
    out = RESULTS / "optim.json"
    if out.is_file():  # keep the other part's numbers when one part is rerun
        result = {**json.loads(out.read_text()), "args": vars(a)}
    if a.part in ("all", "speed"):
        print("Part 1: step time of gradient surgery", flush=True)
        result["speed"] = run_speed(tasks, data, a.rounds, a.speed_batch, a.seq)
        print(speed_table(result["speed"]), flush=True)
    save = lambda: out.write_text(json.dumps(result, indent=1))  # noqa: E731
    save()
    if a.part in ("all", "quality"):
        print("Part 2: weightings and schedulers on SST-2, STS-B, RTE, UPOS", flush=True)
        result.setdefault("quality", {})
        run_quality(tasks, data, a.batch, a.steps, a.eval_every, a.seq, a.only, result["quality"], save)
        print(quality_table(result["quality"], a.steps, a.batch), flush=True)
    save()
    plot(result)


if __name__ == "__main__":
    main()
