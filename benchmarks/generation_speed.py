"""Mixed-task generation speed: hf_mtl's one-call `generate` over rows of 4 LoRA tasks against the same rows as one
single-task batch, against 4 separate single-task calls, and against PEFT's `generate(adapter_names=...)` on the same
weights (issue 23, the generation half of its speed benchmark).

    python benchmarks/generation_speed.py                 # SmolLM2-135M-Instruct (offline copy), float32, CPU
    python benchmarks/generation_speed.py --quick         # a tiny random Llama (CI smoke: shapes and finite numbers)

Every row generates exactly `--new-tokens` tokens (`min_new_tokens` = `max_new_tokens`), greedy and with 2 beams.
Configurations are timed in interleaved rounds (each round runs every configuration once, in a rotated order);
ratios are paired medians over rounds with bootstrap 90% intervals. Time to first token is a 1-token generation of
the same rows. Writes `results.json`, `table.md` and `plot.png` under `--out`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python benchmarks/generation_speed.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.report import fmt, pyplot, write_json
from benchmarks.stats import paired, paired_ci, verdict


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TASKS = ("sentiment", "topic", "places", "summary")
CONFIGS = ("hf_mtl_mixed", "hf_mtl_single", "hf_mtl_separate", "peft_mixed")
GOALS = {("hf_mtl_mixed", "hf_mtl_single"): 1.05, ("hf_mtl_mixed", "peft_mixed"): 1.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SMOLLM2, help="A causal LM (Hub id, folder, or the packaged SmolLM2 id).")
    parser.add_argument("--quick", action="store_true", help="A tiny random Llama, 2 rounds: a smoke run.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/generation_speed")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.prompts, args.new_tokens = 2, 8, 4
    return args


def build_models(args: argparse.Namespace, workdir: Path) -> tuple[Any, Any]:
    """The hf_mtl model (one LoRA adapter per task, B initialised at random so tasks differ) and PEFT's PeftModel
    holding the same four adapters, loaded from the store's task folders (plain PEFT adapters)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hf_mtl import MultiTaskModel, Task
    from hf_mtl.modeling.backbone import resolve_model_path

    torch.manual_seed(0)
    path = tiny_model(workdir) if args.quick else resolve_model_path(args.model)
    tasks = [Task(name, kind="causal_lm", prompt_template="Text: {text}\nAnswer:", target_column="target")
             for name in TASKS]
    model = MultiTaskModel.from_backbone(path, tasks, adapter_method="lora", adapter_config={"r": 8}).eval()
    with torch.no_grad():
        for name in TASKS:
            for p in model.adapter.task_parameters(name):
                p.normal_(0, 0.02)
    store = workdir / "store"
    model.save_pretrained(str(store))
    base = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    peft = PeftModel.from_pretrained(base, str(store / TASKS[0]), adapter_name=TASKS[0])
    for name in TASKS[1:]:
        peft.load_adapter(str(store / name), adapter_name=name)
    return model, peft.eval()


def tiny_model(workdir: Path) -> str:
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    tok = ByT5Tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None)
    folder = workdir / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def workload(model: Any, count: int) -> tuple[list[list[int]], list[str]]:
    """`count` prompts of different lengths, the tasks in turn (a mixed batch of 4 tasks)."""
    from hf_mtl.generation import prompt_ids

    words = "the film was long but the ending made up for every slow minute of it".split()
    names = [TASKS[i % len(TASKS)] for i in range(count)]
    texts = [" ".join(words[: 4 + (i * 5) % len(words)]) for i in range(count)]
    return [prompt_ids(model, model.tasks[n], t, 256) for n, t in zip(names, texts)], names


def runners(model: Any, peft: Any, prompts: list[list[int]], names: list[str], tokens: int,
            beams: int) -> dict[str, Any]:
    """One callable per configuration; each generates every row with exactly `tokens` new tokens."""
    from hf_mtl.data.collators import pad_rows
    from hf_mtl.generation import generate_ids

    options = {"max_new_tokens": tokens, "min_new_tokens": tokens, "num_beams": beams}
    size = len(prompts)
    ids = pad_rows(prompts, model.tokenizer.pad_token_id or 0, "left")
    mask = pad_rows([[1] * len(p) for p in prompts], 0, "left")

    def separate() -> None:
        for task in TASKS:
            rows = [i for i, n in enumerate(names) if n == task]
            generate_ids(model, [prompts[i] for i in rows], [task] * len(rows), batch_size=size, **options)

    def peft_mixed() -> list[list[int]]:
        with torch.no_grad():
            out = peft.generate(input_ids=ids, attention_mask=mask, adapter_names=names, do_sample=False,
                                pad_token_id=model.tokenizer.pad_token_id or 0, **options)
        return out[:, ids.shape[1]:].tolist()

    return {
        "hf_mtl_mixed": lambda: generate_ids(model, prompts, names, batch_size=size, **options),
        "hf_mtl_single": lambda: generate_ids(model, prompts, [TASKS[0]] * size, batch_size=size, **options),
        "hf_mtl_separate": separate,
        "peft_mixed": peft_mixed,
    }


def time_rounds(calls: dict[str, Any], rounds: int) -> list[dict[str, float]]:
    """Seconds of each configuration per round; the order rotates each round (no configuration always goes first)."""
    names = list(calls)
    for call in calls.values():  # warm-up: first-call allocations and lazy imports stay out of the rounds
        call()
    results = []
    for r in range(rounds):
        timings = {}
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            calls[name]()
            timings[name] = time.perf_counter() - start
        results.append(timings)
    return results


def summarize(rounds: list[dict[str, float]], rows: int, tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": {}, "tokens_per_s": {}, "ratios": {}}
    for name in CONFIGS:
        median = statistics.median(r[name] for r in rounds)
        out["seconds"][name] = median
        out["tokens_per_s"][name] = rows * tokens / median
    for other in CONFIGS[1:]:
        value, ci = paired(rounds, "hf_mtl_mixed", other), paired_ci(rounds, "hf_mtl_mixed", other)
        goal = GOALS.get(("hf_mtl_mixed", other))
        out["ratios"][f"hf_mtl_mixed / {other}"] = {
            "median": value, "ci90": ci, "goal": goal,
            "verdict": verdict(value, ci, goal) if goal is not None else None}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="hf_mtl-genspeed-") as tmp:
        model, peft = build_models(args, Path(tmp))
        prompts, names = workload(model, args.prompts)
        results: dict[str, Any] = {"model": "tiny random Llama" if args.quick else args.model, "rows": args.prompts,
                                   "new_tokens": args.new_tokens, "rounds": args.rounds, "threads": args.threads,
                                   "device": "cpu", "dtype": "float32", "runs": {}}
        for beams in (1, 2):
            label = "greedy" if beams == 1 else "beam 2"
            calls = runners(model, peft, prompts, names, args.new_tokens, beams)
            rounds = time_rounds(calls, args.rounds)
            first = time_rounds(runners(model, peft, prompts, names, 1, beams), args.rounds)
            summary = summarize(rounds, args.prompts, args.new_tokens)
            summary["first_token_s"] = {n: statistics.median(r[n] for r in first) for n in CONFIGS}
            summary["rounds"] = rounds
            # the same weights in both libraries: the mixed batches must generate the same tokens
            summary["same_tokens_as_peft"] = calls["hf_mtl_mixed"]() == calls["peft_mixed"]()
            results["runs"][label] = summary
    write_json(out_dir / "results.json", results)
    table = render_table(results)
    (out_dir / "table.md").write_text(table)
    plot(results, out_dir / "plot.png")
    print(table)
    return results


def render_table(results: dict[str, Any]) -> str:
    lines = [f"Generation of {results['rows']} rows (4 LoRA tasks mixed), {results['new_tokens']} new tokens each, "
             f"{results['model']}, {results['dtype']} on the {results['device']} ({results['threads']} threads), "
             f"{results['rounds']} interleaved rounds.", "",
             "| decoding | configuration | seconds | tokens/s | first token (s) | hf_mtl mixed / this (90% CI) | goal |",
             "|---|---|---|---|---|---|---|"]
    same = {label: run["same_tokens_as_peft"] for label, run in results["runs"].items()}
    lines.insert(1, f"hf_mtl's mixed batch generates the same tokens as PEFT's: {same}.")
    for label, run in results["runs"].items():
        for name in CONFIGS:
            ratio = run["ratios"].get(f"hf_mtl_mixed / {name}")
            cell, goal = "-", "-"
            if ratio is not None:
                ci = ratio["ci90"]
                cell = fmt(ratio["median"], 3) + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
                if ratio["goal"] is not None:
                    goal = f"≤ {ratio['goal']}: {ratio['verdict']}"
            lines.append(f"| {label} | {name} | {fmt(run['seconds'][name], 3)} | {fmt(run['tokens_per_s'][name], 1)} | "
                         f"{fmt(run['first_token_s'][name], 3)} | {cell} | {goal} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = list(results["runs"])
    width = 0.8 / len(CONFIGS)
    for i, name in enumerate(CONFIGS):
        values = [results["runs"][label]["tokens_per_s"][name] for label in labels]
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks([x + width * (len(CONFIGS) - 1) / 2 for x in range(len(labels))], labels)
    ax.set_ylabel("new tokens / s")
    ax.set_title(f"Mixed-task generation, {results['model']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def finite(results: dict[str, Any]) -> bool:
    """Every time, rate and ratio of `results` is a finite number (what the smoke test checks)."""
    values = [v for run in results["runs"].values() for part in ("seconds", "tokens_per_s", "first_token_s")
              for v in run[part].values()]
    values += [r["median"] for run in results["runs"].values() for r in run["ratios"].values()]
    return all(isinstance(v, float) and math.isfinite(v) for v in values)


if __name__ == "__main__":
    main()
