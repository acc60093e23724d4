"""Overhead of MultiTaskTrainer: 1 task vs a plain `Trainer`, and 4 tasks vs 1 task.

Same backbone (all-MiniLM-L6-v2, full fine-tuning), same batch, same number of steps. The plain
Trainer trains `AutoModelForSequenceClassification` (BERT's pooler + classifier: the same FLOPs as
hf_mtl's dense + tanh + linear head). Step times are read by a callback (on_step_begin ->
on_step_end), the configurations run interleaved in one process, and ratios are paired medians over
the rounds, as ../shared/STACK.md advises (single timings swing ±10-30% with other load).

    python benchmarks/overhead.py [--rounds 10] [--steps 6] [--batch 16] [--seq 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/overhead.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets
import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from benchmarks import MODEL, RESULTS
from benchmarks.report import pyplot, write_json
from benchmarks.stats import paired_median
from hf_mtl import Task
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.backbone import load_tokenizer, resolve_model_path
from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.training_args import MultiTaskTrainingArguments


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def sentences(n: int, seq: int, seed: int) -> list[str]:
    words = "the film was good bad great terrible and it really made me think about a long story of city life".split()
    g = torch.Generator().manual_seed(seed)
    return [" ".join(words[int(i)] for i in torch.randint(len(words), (seq,), generator=g)) for _ in range(n)]


def common_args(out: str, steps: int, batch: int) -> dict:
    return dict(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-5,
                save_strategy="no", report_to=[], disable_tqdm=True, logging_strategy="no", use_cpu=True,
                dataloader_pin_memory=False, seed=0)


def run_plain(tok, data: datasets.Dataset, steps: int, batch: int, seq: int) -> list[float]:
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(MODEL), num_labels=2)
    enc = data.map(lambda b: tok(b["text"], truncation=True, max_length=seq), batched=True, remove_columns=["text"])
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=TrainingArguments(**common_args(out, steps, batch)), train_dataset=enc,
                          data_collator=DataCollatorWithPadding(tok), callbacks=[timer])
        trainer.train()
    return timer.times


def run_mtl(tok, data: datasets.Dataset, n_tasks: int, steps: int, batch: int, seq: int) -> list[float]:
    tasks = [Task(f"t{i}", labels=["0", "1"]) for i in range(n_tasks)]
    model = MultiTaskModel.from_backbone(MODEL, tasks, tokenizer=tok, freeze_backbone=False)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = MultiTaskTrainingArguments(**common_args(out, steps, batch), max_seq_length=seq, sampling_strategy="round_robin")
        trainer = MultiTaskTrainer(model=model, args=args, tasks=tasks, train_dataset={t.name: data for t in tasks},
                                   callbacks=[timer])
        trainer.train()
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=6, help="steps per run; the first 2 are warm-up and dropped")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    tok = load_tokenizer(MODEL)
    # every row has exactly `seq` words so every batch has the same length
    data = datasets.Dataset.from_dict({"text": sentences(args.batch * args.steps * 4, args.seq, 0),
                                       "label": [i % 2 for i in range(args.batch * args.steps * 4)]})
    configs = {
        "plain Trainer (1 task)": lambda: run_plain(tok, data, args.steps, args.batch, args.seq),
        "MultiTaskTrainer, 1 task": lambda: run_mtl(tok, data, 1, args.steps, args.batch, args.seq),
        "MultiTaskTrainer, 4 tasks": lambda: run_mtl(tok, data, 4, args.steps, args.batch, args.seq),
    }
    medians: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, fn in configs.items():
            times = fn()[2:]
            medians[name].append(statistics.median(times))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n}: {m[-1]:.3f}s" for n, m in medians.items()), flush=True)
    names = list(configs)
    ratio_1 = paired_median(medians[names[1]], medians[names[0]])
    ratio_4 = paired_median(medians[names[2]], medians[names[1]])
    rows = [(n, statistics.median(m)) for n, m in medians.items()]
    print(f"\nall-MiniLM-L6-v2 full fine-tuning, batch {args.batch} x {args.seq} tokens, {args.threads} threads, "
          f"{args.rounds} interleaved rounds (median step time per round, then median over rounds)\n")
    print("| configuration | step time (s) |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.3f} |")
    print("\n| ratio (paired median) | value | goal |\n|---|---|---|")
    print(f"| MultiTaskTrainer 1 task / plain Trainer | {ratio_1:.3f} | <= 1.03 |")
    print(f"| MultiTaskTrainer 4 tasks / 1 task | {ratio_4:.3f} | <= 1.05 |")
    result = {"step_time_s": dict(rows), "ratio_mtl1_vs_plain": ratio_1,
              "ratio_mtl4_vs_mtl1": ratio_4, "per_round": medians, "args": vars(args)}
    write_json(RESULTS / "overhead.json", result)
    _plot(medians, RESULTS / "overhead.png")


def _plot(medians: dict[str, list[float]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in medians.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("median step time (s)")
    ax.set_title("MultiTaskTrainer overhead (all-MiniLM-L6-v2, CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
